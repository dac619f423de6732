// Tests for the unit_convert tool: every quantity, unit spelling rules, rounding, errors and its JSON schemas.
import { Ajv } from 'ajv';
import { describe, expect, it } from 'vitest';
import { type ErrorCode, isFieldmeshError } from '../../core/errors.js';
import type { ToolContext } from './types.js';
import { convertUnits, roundSignificant, unitConvertTool } from './unit-convert.js';

// These tools never touch state documents, so the context has none.
const ctx = { node_id: 'node-a', task_id: 'task-1', attempt: 1, signal: new AbortController().signal } as ToolContext;
const ajv = new Ajv({ allErrors: true });
const validateInput = ajv.compile(unitConvertTool.input_schema);
const validateOutput = ajv.compile(unitConvertTool.output_schema);

function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  throw new Error('expected a throw');
}

describe('unit_convert - conversions', () => {
  it.each<[number, string, string, number, string]>([
    // length
    [10, 'miles', 'km', 16.09344, 'km'],
    [1, 'mi', 'ft', 5280, 'ft'],
    [1, 'ft', 'in', 12, 'in'],
    [1, 'yd', 'm', 0.9144, 'm'],
    [1, 'in', 'cm', 2.54, 'cm'],
    [1, 'nmi', 'm', 1852, 'm'],
    [1, 'nautical mile', 'km', 1.852, 'km'],
    [1, 'mm', 'um', 1000, 'um'],
    [1, 'um', 'nm', 1000, 'nm'],
    [2.5, 'Kilometres', 'm', 2500, 'm'],
    [3, 'feet', 'inches', 36, 'in'],
    // mass
    [1, 'kg', 'lb', 2.20462262185, 'lb'],
    [1, 'lb', 'oz', 16, 'oz'],
    [1, 'st', 'lb', 14, 'lb'],
    [1, 't', 'kg', 1000, 'kg'],
    [1, 'tonne', 'g', 1e6, 'g'],
    [500, 'mg', 'g', 0.5, 'g'],
    [1, 'pound', 'g', 453.59237, 'g'],
    [8, 'ounces', 'lbs', 0.5, 'lb'],
    // volume
    [1, 'gal', 'l', 3.785411784, 'l'],
    [1, 'gal', 'qt', 4, 'qt'],
    [1, 'qt', 'pt', 2, 'pt'],
    [1, 'pt', 'cup', 2, 'cup'],
    [1, 'cup', 'fl_oz', 8, 'fl_oz'],
    [1, 'imp_gal', 'l', 4.54609, 'l'],
    [1, 'm3', 'L', 1000, 'l'],
    [1, 'liter', 'ml', 1000, 'ml'],
    [1, 'ml', 'cm3', 1, 'cm3'],
    [1, 'fl oz', 'ml', 29.5735295625, 'ml'],
    // temperature
    [100, 'C', 'F', 212, 'F'],
    [0, 'C', 'F', 32, 'F'],
    [-40, 'celsius', 'fahrenheit', -40, 'F'],
    [0, 'K', 'C', -273.15, 'C'],
    [32, 'F', 'K', 273.15, 'K'],
    [98.6, 'F', 'C', 37, 'C'],
    [-273.15, 'C', 'K', 0, 'K'],
    [-459.67, 'F', 'C', -273.15, 'C'],
    [300, 'kelvin', 'celsius', 26.85, 'C'],
    // speed
    [100, 'km/h', 'm/s', 27.7777777778, 'm/s'],
    [60, 'mph', 'km/h', 96.56064, 'km/h'],
    [1, 'knot', 'km/h', 1.852, 'km/h'],
    [10, 'm/s', 'kph', 36, 'km/h'],
    [1, 'ft/s', 'm/s', 0.3048, 'm/s'],
    [20, 'kn', 'mph', 23.0155889605, 'mph'],
    // area
    [1, 'ha', 'm2', 10_000, 'm2'],
    [1, 'km2', 'ha', 100, 'ha'],
    [1, 'acre', 'ft2', 43_560, 'ft2'],
    [1, 'mi2', 'acre', 640, 'acre'],
    [1, 'm2', 'cm2', 10_000, 'cm2'],
    [1, 'ft2', 'in2', 144, 'in2'],
    [2, 'hectares', 'acres', 4.94210762934, 'acre'],
    // time
    [1, 'h', 'min', 60, 'min'],
    [1, 'day', 'h', 24, 'h'],
    [1, 'week', 'day', 7, 'day'],
    [1, 'year', 'day', 365.25, 'day'],
    [1500, 'ms', 's', 1.5, 's'],
    [2, 'hours', 'seconds', 7200, 's'],
    [1, 'hr', 'ms', 3_600_000, 'ms'],
    // data size
    [1, 'GiB', 'B', 1_073_741_824, 'B'],
    [1, 'GB', 'MB', 1000, 'MB'],
    [8, 'bit', 'B', 1, 'B'],
    [8, 'b', 'B', 1, 'B'],
    [1, 'B', 'b', 8, 'b'],
    [1, 'KiB', 'B', 1024, 'B'],
    [1, 'MiB', 'KiB', 1024, 'KiB'],
    [1, 'TiB', 'GiB', 1024, 'GiB'],
    [1, 'TB', 'GB', 1000, 'GB'],
    [1, 'kB', 'B', 1000, 'B'],
    [1, 'MB', 'Mbit', 8, 'Mbit'],
    [1, 'Mb', 'MB', 0.125, 'MB'],
    [1, 'Gbit', 'Mbit', 1000, 'Mbit'],
    [1, 'kbit', 'b', 1000, 'b'],
    [1, 'GB', 'GiB', 0.931322574615, 'GiB'],
    [3, 'Megabytes', 'BYTES', 3e6, 'B'],
  ])('%d %s -> %s = %d', (value, from, to, expected, unit) => {
    const result = convertUnits(value, from, to);
    expect(result).toEqual({ value: expected, unit });
  });

  it.each([
    ['KM', 'km'],
    ['Kg', 'kg'],
    ['c', 'C'],
    [' km ', 'km'],
    ['NM', 'nmi'],
  ])('unit name %j resolves to %s', (name, symbol) => {
    expect(convertUnits(1, name, name).unit).toBe(symbol);
  });

  it.each([
    [0.1 + 0.2, 0.3],
    [16.093440000000001, 16.09344],
    [1 / 3, 0.333333333333],
    [-2.0000000000000004, -2],
    [0, 0],
  ])('roundSignificant(%d) is %d', (value, expected) => {
    expect(roundSignificant(value)).toBe(expected);
  });
});

describe('unit_convert - errors', () => {
  it.each<[number, string, string, ErrorCode]>([
    [1, 'furlongz', 'm', 'FM_ERR_UNKNOWN_UNIT'],
    [1, 'm', '', 'FM_ERR_UNKNOWN_UNIT'],
    // Case carries meaning for data units, so these are not guessed.
    [1, 'mb', 'B', 'FM_ERR_UNKNOWN_UNIT'],
    [1, 'gib', 'B', 'FM_ERR_UNKNOWN_UNIT'],
    [1, 'Nm', 'm', 'FM_ERR_UNKNOWN_UNIT'],
    [1, 'km', 'kg', 'FM_ERR_INCOMPATIBLE_UNITS'],
    [1, 'C', 'm/s', 'FM_ERR_INCOMPATIBLE_UNITS'],
    [1, 'GB', 's', 'FM_ERR_INCOMPATIBLE_UNITS'],
    [-1, 'K', 'C', 'FM_ERR_INVALID_ARGS'],
    [-274, 'C', 'F', 'FM_ERR_INVALID_ARGS'],
    [-460, 'F', 'K', 'FM_ERR_INVALID_ARGS'],
    [Number.NaN, 'm', 'km', 'FM_ERR_INVALID_ARGS'],
    [Number.POSITIVE_INFINITY, 'm', 'km', 'FM_ERR_INVALID_ARGS'],
    [1e308, 'TiB', 'b', 'FM_ERR_INVALID_ARGS'],
  ])('%d %j -> %j throws %s', (value, from, to, code) => {
    const err = thrown(() => convertUnits(value, from, to));
    expect(isFieldmeshError(err)).toBe(true);
    expect((err as { code: string }).code).toBe(code);
  });

  it('names the unknown unit and the known ones', () => {
    const err = thrown(() => convertUnits(1, 'furlongz', 'm')) as { message: string; details: unknown };
    expect(err.message).toMatch(/^Unknown unit "furlongz"; known units: length \(m, km/);
    expect(err.message).toContain('data size (b, B, kB');
    expect(err.details).toEqual({ unit: 'furlongz' });
  });

  it('suggests the case variants of an ambiguous data unit', () => {
    const err = thrown(() => convertUnits(1, 'mb', 'B')) as { message: string; details: unknown };
    expect(err.message).toContain('did you mean "MB" or "Mbit"?');
    expect(err.details).toEqual({ unit: 'mb', suggestions: ['MB', 'Mbit'] });
  });

  it('names both units and their quantities when they are incompatible', () => {
    const err = thrown(() => convertUnits(1, 'km', 'kg')) as { message: string; details: unknown };
    expect(err.message).toContain('cannot convert length (km) to mass (kg)');
    expect(err.details).toEqual({ from_unit: 'km', to_unit: 'kg', from_quantity: 'length', to_quantity: 'mass' });
  });
});

describe('unit_convert - tool', () => {
  it('runs through the ToolDefinition', async () => {
    expect(await unitConvertTool.run({ value: 10, from_unit: 'miles', to_unit: 'km' }, ctx)).toEqual({ value: 16.09344, unit: 'km' });
  });

  it.each([[{ value: 10, from_unit: 'mi', to_unit: 'km' }], [{ value: -40.5, from_unit: 'C', to_unit: 'F' }]])(
    'input schema accepts %j',
    (input) => {
      expect(validateInput(input)).toBe(true);
    },
  );

  it.each([
    [{ value: '10', from_unit: 'mi', to_unit: 'km' }],
    [{ value: 10, from_unit: 'mi' }],
    [{ value: 10, from_unit: '', to_unit: 'km' }],
    [{ value: 10, from_unit: 'mi', to_unit: 5 }],
    [{ value: 10, from_unit: 'mi', to_unit: 'km', precision: 2 }],
  ])('input schema rejects %j', (input) => {
    expect(validateInput(input)).toBe(false);
  });

  it.each<[number, string, string]>([
    [10, 'miles', 'km'],
    [0, 'K', 'C'],
    [1, 'GiB', 'B'],
    [72, 'F', 'celsius'],
  ])('output of %d %s -> %s matches the output schema', async (value, from_unit, to_unit) => {
    const out = await unitConvertTool.run({ value, from_unit, to_unit }, ctx);
    expect(validateOutput(out), JSON.stringify(validateOutput.errors)).toBe(true);
  });

  it('output schema rejects extra properties and a string value', () => {
    expect(validateOutput({ value: 1, unit: 'km', note: 'x' })).toBe(false);
    expect(validateOutput({ value: '1', unit: 'km' })).toBe(false);
  });
});
