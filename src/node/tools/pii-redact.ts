// The pii_redact built-in tool: finds and redacts emails, phones, card numbers, IBANs, IPv4 addresses and US SSNs in text.
import { FieldmeshError } from '../../core/errors.js';
import type { ToolDefinition } from './types.js';

export type PiiKind = 'email' | 'phone' | 'credit_card' | 'iban' | 'ipv4' | 'ssn';
export type ReplacementStyle = 'label' | 'mask';

export interface PiiRedactArgs {
  text: string;
  replacement_style?: ReplacementStyle;
}

export interface PiiRedactResult {
  redacted_text: string;
  counts: Record<PiiKind, number>;
}

export const PII_KINDS: readonly PiiKind[] = ['email', 'phone', 'credit_card', 'iban', 'ipv4', 'ssn'];

const LABELS: Record<PiiKind, string> = {
  email: '[EMAIL]',
  phone: '[PHONE]',
  credit_card: '[CREDIT_CARD]',
  iban: '[IBAN]',
  ipv4: '[IPV4]',
  ssn: '[SSN]',
};

/** Luhn checksum over the digits of `value`; separators are ignored, any other character fails. */
export function luhnValid(value: string): boolean {
  const digits = value.replace(/[ -]/g, '');
  if (!/^\d+$/.test(digits)) return false;
  let sum = 0;
  for (let i = 0; i < digits.length; i++) {
    let d = digits.charCodeAt(digits.length - 1 - i) - 48;
    if (i % 2 === 1) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
  }
  return sum % 10 === 0;
}

/** ISO 13616 check: country code, two check digits, up to 30 alphanumerics, and the whole thing mod 97 equal to 1. */
export function ibanValid(value: string): boolean {
  const iban = value.replace(/ /g, '').toUpperCase();
  if (!/^[A-Z]{2}\d{2}[A-Z0-9]{11,30}$/.test(iban)) return false;
  const rearranged = iban.slice(4) + iban.slice(0, 4);
  // Folding digit by digit keeps the remainder small, so no BigInt is needed for 34-character IBANs.
  let remainder = 0;
  for (const ch of rearranged) {
    const code = ch.charCodeAt(0);
    const chunk = code >= 65 ? String(code - 55) : ch;
    for (const digit of chunk) remainder = (remainder * 10 + (digit.charCodeAt(0) - 48)) % 97;
  }
  return remainder === 1;
}

/** A US SSN in ddd-dd-dddd form with an area, group and serial the SSA could have issued. */
export function ssnValid(value: string): boolean {
  const m = /^(\d{3})-(\d{2})-(\d{4})$/.exec(value);
  if (!m) return false;
  const [, area = '', group = '', serial = ''] = m;
  if (area === '000' || area === '666' || area.startsWith('9')) return false;
  return group !== '00' && serial !== '0000';
}

interface Span {
  start: number;
  end: number;
  kind: PiiKind;
}

/** Returns the sub-range of a regex match to redact, or undefined when the candidate fails validation. */
type Validator = (match: string) => { start: number; end: number } | undefined;

interface Detector {
  kind: PiiKind;
  pattern: RegExp;
  validate: Validator;
}

const whole: Validator = (match) => ({ start: 0, end: match.length });

/** Offsets of the groups of a run like "4111 1111 1111 1111", so shorter runs can be tried on group boundaries. */
function groupsOf(match: string): { start: number; end: number }[] {
  const groups: { start: number; end: number }[] = [];
  for (const m of match.matchAll(/[^- ]+/g)) groups.push({ start: m.index, end: m.index + m[0].length });
  return groups;
}

const validateCard: Validator = (match) => {
  const groups = groupsOf(match);
  // A card number is often followed by its expiry or CVV; dropping up to two short trailing groups finds it, while a
  // free search over every sub-run of a long number would pass Luhn by chance far too often.
  for (let drop = 0; drop <= 2 && drop < groups.length; drop++) {
    const dropped = groups.slice(groups.length - drop);
    if (dropped.some((g) => g.end - g.start > 4)) break;
    const end = groups[groups.length - 1 - drop]!.end;
    const digits = match.slice(0, end).replace(/[- ]/g, '');
    if (digits.length >= 13 && digits.length <= 19 && luhnValid(digits)) return { start: 0, end };
  }
  return undefined;
};

const validateIban: Validator = (match) => {
  // The regex may swallow an upper-case word after a space-grouped IBAN, so shorten on group boundaries until the checksum holds.
  const groups = groupsOf(match);
  for (let len = groups.length; len >= 1; len--) {
    const end = groups[len - 1]!.end;
    if (ibanValid(match.slice(0, end))) return { start: 0, end };
  }
  return undefined;
};

function digitCount(s: string): number {
  return s.replace(/\D/g, '').length;
}

const validatePhone: Validator = (match) => {
  // An SSN with an area or group the SSA never issues (000-12-3456) is still SSN-shaped, not a phone number.
  if (/^\d{3}-\d{2}-\d{4}$/.test(match)) return undefined;
  const digits = digitCount(match);
  if (match.startsWith('+')) return digits >= 7 && digits <= 15 ? whole(match) : undefined;
  if (match.startsWith('0') || match.startsWith('(0')) {
    // European national numbers have 9-12 digits; dd.mm.yyyy dates followed by a number look alike, so those are refused.
    if (digits < 9 || digits > 12) return undefined;
    if (/^\d{1,2}[./-]\d{1,2}[./-](?:19|20)\d{2}(?!\d)/.test(match)) return undefined;
  }
  return whole(match);
};

// Lookarounds keep a match from starting or ending inside a longer run of digits or word characters. The digit groups
// of a space-grouped IBAN whose checksum failed must not turn into a card or a phone either.
// The group count is bounded (an IBAN has at most 30 characters after its check digits) so the lookbehind cannot scan a
// long run of digit groups back to its start at every position.
const NOT_IN_IBAN = String.raw`(?<![A-Z]{2}\d{2}(?: [A-Z0-9]{4}){0,7} )`;
const NOT_AFTER_DIGITS = String.raw`(?<![\w+.\-])(?<!\d[ ./\-])${NOT_IN_IBAN}`;
const NOT_BEFORE_DIGITS = String.raw`(?!\w)(?![ ./\-]\d)`;

const PHONE_PATTERN = new RegExp(
  [
    // International: +country code then groups, e.g. +44 20 7946 0958, +1 (415) 555-2671, +4915112345678.
    // Every digit run is maximal (a separator or bracket must follow), which keeps matching linear on long digit strings.
    String.raw`\+\d+(?:(?:[ .\-]?\(\d{1,4}\)[ .\-]?|[ .\-])\d+)*${NOT_BEFORE_DIGITS}`,
    // NANP: (415) 555-2671, 415-555-2671, 415.555.2671, 1-800-555-1234. Its fixed 3-3-4 shape is distinctive enough
    // to allow a number after a space ("call 415-555-2671 2 times").
    String.raw`(?:1[ .\-])?(?:\([2-9]\d{2}\) ?|[2-9]\d{2}[ .\-])[2-9]\d{2}[ .\-]\d{4}(?!\w)(?![./\-]\d)`,
    // European national formats with a trunk 0: 020 7946 0958, 030 12345678, 06 12 34 56 78, (030) 1234567.
    String.raw`(?:\(0\d{1,4}\)|0\d{1,4})(?:[ ./\-]\d{2,8}){1,4}${NOT_BEFORE_DIGITS}`,
  ]
    .map((alt) => `${NOT_AFTER_DIGITS}(?:${alt})`)
    .join('|'),
  'g',
);

const OCTET = String.raw`(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)`;

// Order matters: earlier detectors claim their spans first, so a card or IBAN is never also counted as a phone.
const DETECTORS: readonly Detector[] = [
  {
    kind: 'email',
    pattern:
      /(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,63}(?![\w-])/g,
    validate: whole,
  },
  {
    kind: 'iban',
    pattern: /(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,40}(?![A-Za-z0-9])/g,
    validate: validateIban,
  },
  {
    kind: 'credit_card',
    pattern: new RegExp(String.raw`(?<![\w+.\-])${NOT_IN_IBAN}\d(?:[ \-]?\d){12,30}(?![\w\-])`, 'g'),
    validate: validateCard,
  },
  {
    kind: 'ssn',
    pattern: /(?<![\w-])\d{3}-\d{2}-\d{4}(?![\w-])/g,
    validate: (match) => (ssnValid(match) ? whole(match) : undefined),
  },
  {
    kind: 'ipv4',
    pattern: new RegExp(String.raw`(?<![\w.])(?:${OCTET}\.){3}${OCTET}(?!\w|\.\d)`, 'g'),
    validate: whole,
  },
  { kind: 'phone', pattern: PHONE_PATTERN, validate: validatePhone },
];

/** Redacts every detected PII item in `text`; pure and deterministic. */
export function redactPii(text: string, style: ReplacementStyle = 'label'): PiiRedactResult {
  const spans: Span[] = [];
  // One flag per character makes the overlap test proportional to the match, not to the number of earlier matches.
  const claimed = new Uint8Array(text.length);
  for (const detector of DETECTORS) {
    for (const m of text.matchAll(detector.pattern)) {
      const range = detector.validate(m[0]);
      if (!range) continue;
      const start = m.index + range.start;
      const end = m.index + range.end;
      if (claimed.subarray(start, end).includes(1)) continue;
      claimed.fill(1, start, end);
      spans.push({ start, end, kind: detector.kind });
    }
  }
  spans.sort((a, b) => a.start - b.start);

  const counts: Record<PiiKind, number> = { email: 0, phone: 0, credit_card: 0, iban: 0, ipv4: 0, ssn: 0 };
  let out = '';
  let pos = 0;
  for (const span of spans) {
    out += text.slice(pos, span.start);
    out += style === 'mask' ? '*'.repeat(span.end - span.start) : LABELS[span.kind];
    pos = span.end;
    counts[span.kind]++;
  }
  out += text.slice(pos);
  return { redacted_text: out, counts };
}

const countsSchema = {
  type: 'object',
  description: 'How many items of each kind were redacted.',
  properties: Object.fromEntries(PII_KINDS.map((k) => [k, { type: 'integer', minimum: 0, description: `Number of ${k} items redacted.` }])),
  required: [...PII_KINDS],
  additionalProperties: false,
};

export const piiRedactTool: ToolDefinition<PiiRedactArgs, PiiRedactResult> = {
  name: 'pii_redact',
  description:
    'Redacts personal data from text: emails, phone numbers, Luhn-valid card numbers, mod-97-valid IBANs, IPv4 addresses and US SSNs. ' +
    'Returns the redacted text and a count per kind.',
  input_schema: {
    type: 'object',
    properties: {
      text: { type: 'string', description: 'Text to redact.' },
      replacement_style: {
        type: 'string',
        enum: ['label', 'mask'],
        default: 'label',
        description: '"label" replaces each item with a tag such as [EMAIL]; "mask" replaces it with the same number of "*".',
      },
    },
    required: ['text'],
    additionalProperties: false,
  },
  output_schema: {
    type: 'object',
    properties: {
      redacted_text: { type: 'string', description: 'The input with every detected item replaced.' },
      counts: countsSchema,
    },
    required: ['redacted_text', 'counts'],
    additionalProperties: false,
  },
  run(args) {
    if (typeof args?.text !== 'string') throw new FieldmeshError('FM_ERR_INVALID_ARGS', 'pii_redact: "text" must be a string');
    const style = args.replacement_style ?? 'label';
    if (style !== 'label' && style !== 'mask') {
      throw new FieldmeshError('FM_ERR_INVALID_ARGS', 'pii_redact: "replacement_style" must be "label" or "mask"', {
        details: { replacement_style: style },
      });
    }
    return redactPii(args.text, style);
  },
};
