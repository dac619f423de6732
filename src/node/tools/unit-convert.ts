// The unit_convert built-in tool: converts a value between units of length, mass, volume, temperature, speed, area, time and data size.
import { FieldmeshError } from '../../core/errors.js';
import type { ToolDefinition } from './types.js';

export type Quantity = 'length' | 'mass' | 'volume' | 'temperature' | 'speed' | 'area' | 'time' | 'data size';

export interface UnitConvertArgs {
  value: number;
  from_unit: string;
  to_unit: string;
}

export interface UnitConvertResult {
  value: number;
  unit: string;
}

interface UnitSpec {
  /** Canonical symbol, returned as `unit` in the output. */
  symbol: string;
  quantity: Quantity;
  /** Size of one unit in the quantity's base unit (m, kg, m3, m/s, m2, s, bit); for temperature, the kelvin scale factor. */
  factor: number;
  /** Kelvin at zero of this unit; only temperatures have one. */
  offset?: number;
  /** Names matched in any case. */
  names: string[];
  /** Names whose case carries meaning (B is a byte, b a bit, NM a nautical mile but nm a nanometre): matched exactly only. */
  exactNames: string[];
}

type UnitRow = [symbol: string, factor: number, aliases?: string[], exactAliases?: string[]];

/** Builds specs from rows; with `exactSymbols` the symbols themselves only match in their exact case. */
function rows(quantity: Quantity, list: UnitRow[], exactSymbols = false): UnitSpec[] {
  return list.map(([symbol, factor, aliases = [], exactAliases = []]) => ({
    symbol,
    quantity,
    factor,
    names: exactSymbols ? aliases : [symbol, ...aliases],
    exactNames: exactSymbols ? [symbol, ...exactAliases] : exactAliases,
  }));
}

function temperature(symbol: string, factor: number, offset: number, names: string[]): UnitSpec {
  return { symbol, quantity: 'temperature', factor, offset, names: [symbol, ...names], exactNames: [] };
}

const INCH = 0.0254;
const FOOT = 0.3048;
const MILE = 1609.344;
const US_GALLON = 3.785411784e-3;
const POUND = 0.45359237;
const DAY = 86_400;

// Exact definitions (international yard and pound of 1959, US customary volumes from the 231 in3 gallon).
const UNITS: UnitSpec[] = [
  ...rows('length', [
    ['m', 1, ['meter', 'meters', 'metre', 'metres']],
    ['km', 1e3, ['kilometer', 'kilometers', 'kilometre', 'kilometres']],
    ['cm', 1e-2, ['centimeter', 'centimeters', 'centimetre', 'centimetres']],
    ['mm', 1e-3, ['millimeter', 'millimeters', 'millimetre', 'millimetres']],
    ['um', 1e-6, ['µm', 'μm', 'micrometer', 'micrometers', 'micrometre', 'micrometres', 'micron', 'microns']],
    ['mi', MILE, ['mile', 'miles']],
    ['yd', 0.9144, ['yard', 'yards']],
    ['ft', FOOT, ['foot', 'feet']],
    ['in', INCH, ['inch', 'inches']],
    ['nmi', 1852, ['nautical_mile', 'nautical_miles'], ['NM']],
  ]),
  // Navigation writes nautical miles as NM, so nanometres only match as "nm".
  ...rows('length', [['nm', 1e-9, ['nanometer', 'nanometers', 'nanometre', 'nanometres']]], true),
  ...rows('mass', [
    ['kg', 1, ['kilogram', 'kilograms', 'kilo', 'kilos']],
    ['g', 1e-3, ['gram', 'grams']],
    ['mg', 1e-6, ['milligram', 'milligrams']],
    ['t', 1e3, ['tonne', 'tonnes', 'metric_ton', 'metric_tons']],
    ['lb', POUND, ['lbs', 'pound', 'pounds']],
    ['oz', POUND / 16, ['ounce', 'ounces']],
    ['st', POUND * 14, ['stone', 'stones']],
  ]),
  ...rows('volume', [
    ['l', 1e-3, ['L', 'liter', 'liters', 'litre', 'litres']],
    ['ml', 1e-6, ['mL', 'milliliter', 'milliliters', 'millilitre', 'millilitres']],
    ['m3', 1, ['m^3', 'm³', 'cubic_meter', 'cubic_meters', 'cubic_metre', 'cubic_metres']],
    ['cm3', 1e-6, ['cm^3', 'cm³', 'cc', 'cubic_centimeter', 'cubic_centimeters', 'cubic_centimetre', 'cubic_centimetres']],
    ['gal', US_GALLON, ['gallon', 'gallons', 'us_gal', 'us_gallon', 'us_gallons']],
    ['qt', US_GALLON / 4, ['quart', 'quarts']],
    ['pt', US_GALLON / 8, ['pint', 'pints']],
    ['cup', US_GALLON / 16, ['cups']],
    ['fl_oz', US_GALLON / 128, ['floz', 'fluid_ounce', 'fluid_ounces']],
    ['imp_gal', 4.54609e-3, ['imperial_gallon', 'imperial_gallons', 'uk_gal', 'uk_gallon', 'uk_gallons']],
  ]),
  ...rows('speed', [
    ['m/s', 1, ['mps', 'meters_per_second', 'metres_per_second']],
    ['km/h', 1 / 3.6, ['kph', 'kmh', 'km/hr', 'kilometers_per_hour', 'kilometres_per_hour']],
    ['mph', MILE / 3600, ['mi/h', 'miles_per_hour']],
    ['kn', 1852 / 3600, ['kt', 'kts', 'knot', 'knots']],
    ['ft/s', FOOT, ['fps', 'feet_per_second']],
  ]),
  ...rows('area', [
    ['m2', 1, ['m^2', 'm²', 'sq_m', 'square_meter', 'square_meters', 'square_metre', 'square_metres']],
    ['km2', 1e6, ['km^2', 'km²', 'sq_km', 'square_kilometer', 'square_kilometers', 'square_kilometre', 'square_kilometres']],
    ['cm2', 1e-4, ['cm^2', 'cm²', 'sq_cm', 'square_centimeter', 'square_centimeters', 'square_centimetre', 'square_centimetres']],
    ['ha', 1e4, ['hectare', 'hectares']],
    ['acre', 4046.8564224, ['acres', 'ac']],
    ['ft2', FOOT * FOOT, ['ft^2', 'ft²', 'sq_ft', 'square_foot', 'square_feet']],
    ['mi2', MILE * MILE, ['mi^2', 'mi²', 'sq_mi', 'square_mile', 'square_miles']],
    ['in2', INCH * INCH, ['in^2', 'in²', 'sq_in', 'square_inch', 'square_inches']],
  ]),
  ...rows('time', [
    ['s', 1, ['sec', 'secs', 'second', 'seconds']],
    ['ms', 1e-3, ['millisecond', 'milliseconds']],
    ['min', 60, ['mins', 'minute', 'minutes']],
    ['h', 3600, ['hr', 'hrs', 'hour', 'hours']],
    ['day', DAY, ['d', 'days']],
    ['week', 7 * DAY, ['wk', 'weeks']],
    // A Julian year, the usual astronomical and SI-adjacent convention.
    ['year', 365.25 * DAY, ['yr', 'yrs', 'years']],
  ]),
  temperature('K', 1, 0, ['kelvin', 'kelvins']),
  temperature('C', 1, 273.15, ['°C', 'degC', 'deg_c', 'celsius', 'centigrade']),
  temperature('F', 5 / 9, 273.15 - (32 * 5) / 9, ['°F', 'degF', 'deg_f', 'fahrenheit']),
  // Data symbols differ only by case (B byte, b bit, MB megabyte, Mb megabit), so they are never matched case-insensitively.
  ...rows(
    'data size',
    [
      ['b', 1, ['bit', 'bits']],
      ['B', 8, ['byte', 'bytes', 'octet', 'octets']],
      ['kB', 8e3, ['kilobyte', 'kilobytes']],
      ['MB', 8e6, ['megabyte', 'megabytes']],
      ['GB', 8e9, ['gigabyte', 'gigabytes']],
      ['TB', 8e12, ['terabyte', 'terabytes']],
      ['KiB', 8 * 2 ** 10, ['kibibyte', 'kibibytes']],
      ['MiB', 8 * 2 ** 20, ['mebibyte', 'mebibytes']],
      ['GiB', 8 * 2 ** 30, ['gibibyte', 'gibibytes']],
      ['TiB', 8 * 2 ** 40, ['tebibyte', 'tebibytes']],
      ['kbit', 1e3, ['kilobit', 'kilobits'], ['kb']],
      ['Mbit', 1e6, ['megabit', 'megabits'], ['Mb']],
      ['Gbit', 1e9, ['gigabit', 'gigabits'], ['Gb']],
      ['Tbit', 1e12, ['terabit', 'terabits'], ['Tb']],
    ],
    true,
  ),
];

const exactIndex = new Map<string, UnitSpec>();
const foldedIndex = new Map<string, UnitSpec[]>();

function addFolded(name: string, unit: UnitSpec): void {
  const key = name.toLowerCase();
  const list = foldedIndex.get(key) ?? [];
  if (!list.includes(unit)) list.push(unit);
  foldedIndex.set(key, list);
}

for (const unit of UNITS) {
  for (const name of [...unit.names, ...unit.exactNames]) {
    if (exactIndex.has(name)) throw new Error(`unit_convert: duplicate unit name "${name}"`);
    exactIndex.set(name, unit);
    addFolded(name, unit);
  }
}

function normalizeName(raw: string): string {
  // Spaces and hyphens in long names ("nautical mile", "fl-oz") are spelled with underscores in the table.
  return raw.trim().replace(/[\s-]+/g, '_');
}

function knownUnitsHint(): string {
  const byQuantity = new Map<Quantity, string[]>();
  for (const unit of UNITS) {
    const list = byQuantity.get(unit.quantity) ?? [];
    if (!list.includes(unit.symbol)) list.push(unit.symbol);
    byQuantity.set(unit.quantity, list);
  }
  return [...byQuantity].map(([q, symbols]) => `${q} (${symbols.join(', ')})`).join('; ');
}

/** Resolves a unit name to its spec, or throws FM_ERR_UNKNOWN_UNIT with the known units and any near miss. */
export function resolveUnit(raw: string): UnitSpec {
  const name = normalizeName(raw);
  const exact = exactIndex.get(name);
  if (exact) return exact;
  // Case-insensitive lookup only succeeds when the spelling names one unit and that unit accepts any case; otherwise the
  // case-variants become suggestions ("mb" could be MB or Mb).
  const candidates = foldedIndex.get(name.toLowerCase()) ?? [];
  const only = candidates.length === 1 ? candidates[0] : undefined;
  if (only?.names.some((n) => n.toLowerCase() === name.toLowerCase())) return only;

  const suggestions = candidates.map((u) => u.symbol);
  const hint = suggestions.length > 0 ? `; did you mean ${suggestions.map((s) => `"${s}"`).join(' or ')}?` : '';
  throw new FieldmeshError('FM_ERR_UNKNOWN_UNIT', `Unknown unit "${raw}"${hint}; known units: ${knownUnitsHint()}`, {
    details: suggestions.length > 0 ? { unit: raw, suggestions } : { unit: raw },
  });
}

/** Rounds to 12 significant digits so results like 0.30000000000000004 come out as 0.3. */
export function roundSignificant(value: number, digits = 12): number {
  if (value === 0 || !Number.isFinite(value)) return value;
  return Number(value.toPrecision(digits));
}

/** Converts `value` from one unit to another; the returned unit is the canonical symbol of `to`. */
export function convertUnits(value: number, from: string, to: string): UnitConvertResult {
  if (typeof value !== 'number' || !Number.isFinite(value)) {
    throw new FieldmeshError('FM_ERR_INVALID_ARGS', `unit_convert: "value" must be a finite number, got ${String(value)}`, {
      details: { value: String(value) },
    });
  }
  const source = resolveUnit(from);
  const target = resolveUnit(to);
  if (source.quantity !== target.quantity) {
    throw new FieldmeshError(
      'FM_ERR_INCOMPATIBLE_UNITS',
      `Incompatible units: cannot convert ${source.quantity} (${from}) to ${target.quantity} (${to})`,
      { details: { from_unit: from, to_unit: to, from_quantity: source.quantity, to_quantity: target.quantity } },
    );
  }

  let result: number;
  if (source.quantity === 'temperature') {
    const kelvin = value * source.factor + (source.offset ?? 0);
    // A tolerance keeps -273.15 C and -459.67 F, which land a hair below 0 K in floating point, valid.
    if (kelvin < -1e-9) {
      throw new FieldmeshError('FM_ERR_INVALID_ARGS', `${value} ${from} is below absolute zero`, {
        details: { value, unit: from, kelvin },
      });
    }
    result = (Math.max(kelvin, 0) - (target.offset ?? 0)) / target.factor;
  } else {
    result = (value * source.factor) / target.factor;
  }
  if (!Number.isFinite(result)) {
    throw new FieldmeshError('FM_ERR_INVALID_ARGS', `unit_convert: ${value} ${from} in ${to} is out of the representable range`, {
      details: { value, from_unit: from, to_unit: to },
    });
  }
  return { value: roundSignificant(result), unit: target.symbol };
}

export const unitConvertTool: ToolDefinition<UnitConvertArgs, UnitConvertResult> = {
  name: 'unit_convert',
  description:
    'Converts a number between units of the same quantity: length, mass, volume, temperature, speed, area, time or data size. ' +
    'Accepts symbols and long names ("km", "kilometres", "miles"); "B" is a byte and "b" a bit. Results are rounded to 12 significant digits.',
  input_schema: {
    type: 'object',
    properties: {
      value: { type: 'number', description: 'The amount to convert.' },
      from_unit: { type: 'string', minLength: 1, maxLength: 64, description: 'Unit of `value`, e.g. "mi", "kg", "C", "GiB".' },
      to_unit: { type: 'string', minLength: 1, maxLength: 64, description: 'Unit to convert to, of the same quantity as `from_unit`.' },
    },
    required: ['value', 'from_unit', 'to_unit'],
    additionalProperties: false,
  },
  output_schema: {
    type: 'object',
    properties: {
      value: { type: 'number', description: 'The converted amount, rounded to 12 significant digits.' },
      unit: { type: 'string', description: 'Canonical symbol of the target unit, e.g. "km".' },
    },
    required: ['value', 'unit'],
    additionalProperties: false,
  },
  // Microseconds of pure arithmetic: a worker thread hand-off would cost more than the call.
  inline: true,
  run(args) {
    if (typeof args?.from_unit !== 'string' || typeof args.to_unit !== 'string') {
      throw new FieldmeshError('FM_ERR_INVALID_ARGS', 'unit_convert: "from_unit" and "to_unit" must be strings');
    }
    return convertUnits(args.value, args.from_unit, args.to_unit);
  },
};
