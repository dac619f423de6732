// Tests for the pii_redact tool: detectors, checksums, replacement styles and its JSON schemas.
import { Ajv } from 'ajv';
import { describe, expect, it } from 'vitest';
import { isFieldmeshError } from '../../core/errors.js';
import { ibanValid, luhnValid, PII_KINDS, type PiiKind, piiRedactTool, redactPii, ssnValid } from './pii-redact.js';
import type { ToolContext } from './types.js';

// These tools never touch state documents, so the context has none.
const ctx = { node_id: 'node-a', task_id: 'task-1', attempt: 1, signal: new AbortController().signal } as ToolContext;
const ajv = new Ajv({ allErrors: true, useDefaults: false });
const validateInput = ajv.compile(piiRedactTool.input_schema);
const validateOutput = ajv.compile(piiRedactTool.output_schema);

function countsWith(partial: Partial<Record<PiiKind, number>>): Record<PiiKind, number> {
  return { email: 0, phone: 0, credit_card: 0, iban: 0, ipv4: 0, ssn: 0, ...partial };
}

describe('pii_redact - checksums', () => {
  it.each([
    ['4111 1111 1111 1111', true],
    ['5500-0000-0000-0004', true],
    ['378282246310005', true],
    ['6011111111111117', true],
    ['4111 1111 1111 1112', false],
    ['378282246310006', false],
    ['4111-1111-1111-111a', false],
  ])('luhnValid(%s) is %s', (value, expected) => {
    expect(luhnValid(value)).toBe(expected);
  });

  it.each([
    ['GB82 WEST 1234 5698 7654 32', true],
    ['GB82WEST12345698765432', true],
    ['DE89370400440532013000', true],
    ['DE89 3704 0044 0532 0130 00', true],
    ['FR1420041010050500013M02606', true],
    ['NL91ABNA0417164300', true],
    ['NO9386011117947', true],
    ['gb82 west 1234 5698 7654 32', true],
    ['GB82 WEST 1234 5698 7654 33', false],
    ['DE89370400440532013001', false],
    ['GB82', false],
    ['1234567890123456', false],
  ])('ibanValid(%s) is %s', (value, expected) => {
    expect(ibanValid(value)).toBe(expected);
  });

  it.each([
    ['123-45-6789', true],
    ['078-05-1120', true],
    ['000-12-3456', false],
    ['666-12-3456', false],
    ['900-12-3456', false],
    ['999-12-3456', false],
    ['123-00-4567', false],
    ['123-45-0000', false],
    ['123456789', false],
  ])('ssnValid(%s) is %s', (value, expected) => {
    expect(ssnValid(value)).toBe(expected);
  });
});

describe('pii_redact - detection with labels', () => {
  it.each<[string, string, string, Partial<Record<PiiKind, number>>]>([
    ['seed example', 'Email me at john@example.com', 'Email me at [EMAIL]', { email: 1 }],
    ['emails with dots, plus and subdomains', 'a.b+tag@mail.example.co.uk, X_Y@host-1.io.', '[EMAIL], [EMAIL].', { email: 2 }],
    ['not an email', 'user@localhost and @handle', 'user@localhost and @handle', {}],
    ['Visa with spaces', 'Card 4111 1111 1111 1111 on file', 'Card [CREDIT_CARD] on file', { credit_card: 1 }],
    ['Mastercard with dashes', 'Pay with 5500-0000-0000-0004.', 'Pay with [CREDIT_CARD].', { credit_card: 1 }],
    ['Amex without separators', 'amex 378282246310005', 'amex [CREDIT_CARD]', { credit_card: 1 }],
    ['Luhn-invalid card is kept', 'Card 4111 1111 1111 1112 on file', 'Card 4111 1111 1111 1112 on file', {}],
    ['card followed by expiry', 'Card 4111 1111 1111 1111 12 27', 'Card [CREDIT_CARD] 12 27', { credit_card: 1 }],
    ['grouped IBAN', 'IBAN: GB82 WEST 1234 5698 7654 32.', 'IBAN: [IBAN].', { iban: 1 }],
    ['compact IBAN', 'Send to DE89370400440532013000 today', 'Send to [IBAN] today', { iban: 1 }],
    ['IBAN followed by an upper-case word', 'GB82 WEST 1234 5698 7654 32 PLEASE', '[IBAN] PLEASE', { iban: 1 }],
    ['bad-checksum IBAN is kept whole', 'IBAN GB82 WEST 1234 5698 7654 33', 'IBAN GB82 WEST 1234 5698 7654 33', {}],
    ['bad-checksum compact IBAN', 'DE89370400440532013001', 'DE89370400440532013001', {}],
    ['IPv4 addresses', 'from 192.168.1.10 to 8.8.8.8.', 'from [IPV4] to [IPV4].', { ipv4: 2 }],
    ['IPv4 edge octets', '0.0.0.0 and 255.255.255.255', '[IPV4] and [IPV4]', { ipv4: 2 }],
    ['octet above 255', 'bad 256.1.1.1 and 1.2.3.999', 'bad 256.1.1.1 and 1.2.3.999', {}],
    ['version strings with more parts', 'version 1.2.3.4.5', 'version 1.2.3.4.5', {}],
    ['valid SSN', 'SSN 123-45-6789.', 'SSN [SSN].', { ssn: 1 }],
    [
      'invalid SSN areas and groups',
      '000-12-3456 666-12-3456 900-12-3456 123-00-4567 123-45-0000',
      '000-12-3456 666-12-3456 900-12-3456 123-00-4567 123-45-0000',
      {},
    ],
    ['US phone with parentheses', 'Call (415) 555-2671 now', 'Call [PHONE] now', { phone: 1 }],
    ['US phone with dashes and dots', '415-555-2671 or 415.555.2671', '[PHONE] or [PHONE]', { phone: 2 }],
    ['US toll-free with 1 prefix', 'Dial 1-800-555-1234.', 'Dial [PHONE].', { phone: 1 }],
    ['international UK', 'London: +44 20 7946 0958', 'London: [PHONE]', { phone: 1 }],
    ['international US', 'Office +1 (415) 555-2671.', 'Office [PHONE].', { phone: 1 }],
    ['international compact', 'Mobile +4915112345678', 'Mobile [PHONE]', { phone: 1 }],
    ['UK national', 'Ring 020 7946 0958', 'Ring [PHONE]', { phone: 1 }],
    ['French national', 'Tél 06 12 34 56 78', 'Tél [PHONE]', { phone: 1 }],
    [
      'years and short numbers are not phones',
      'In 2024 we sold 1234567 units at 42 sites',
      'In 2024 we sold 1234567 units at 42 sites',
      {},
    ],
    ['dates are not phones', 'on 01.02.2023 12 people and 2023-01-02', 'on 01.02.2023 12 people and 2023-01-02', {}],
  ])('%s', (_name, input, expected, counts) => {
    const result = redactPii(input);
    expect(result.redacted_text).toBe(expected);
    expect(result.counts).toEqual(countsWith(counts));
  });

  it('counts a card as a card, not a phone, and every kind in one text', () => {
    const text =
      'Jane (jane.doe@example.org, +1 415 555 2671) paid with 4111-1111-1111-1111 from GB82 WEST 1234 5698 7654 32 ' +
      'at 10.0.0.1; SSN 123-45-6789.';
    const result = redactPii(text);
    expect(result.redacted_text).toBe('Jane ([EMAIL], [PHONE]) paid with [CREDIT_CARD] from [IBAN] at [IPV4]; SSN [SSN].');
    expect(result.counts).toEqual(countsWith({ email: 1, phone: 1, credit_card: 1, iban: 1, ipv4: 1, ssn: 1 }));
  });

  it('keeps text without PII unchanged and reports every kind as zero', () => {
    const result = redactPii('Nothing to see here, version 3.14 of 2025.');
    expect(result.redacted_text).toBe('Nothing to see here, version 3.14 of 2025.');
    expect(Object.keys(result.counts).sort()).toEqual([...PII_KINDS].sort());
    expect(Object.values(result.counts).every((n) => n === 0)).toBe(true);
  });
});

describe('pii_redact - long inputs', () => {
  // Quadratic matching (an unbounded lookbehind over digit groups) once made these take minutes; the test timeout guards it,
  // and the assertions check that every repeat is still found.
  it('redacts every card in 20,000 repeats', () => {
    const result = redactPii('4111 1111 1111 1111, '.repeat(20_000));
    expect(result.counts.credit_card).toBe(20_000);
    expect(result.redacted_text).not.toMatch(/\d/);
  });

  it.each([['0123 4567 8901 2345 6789 '], ['!?'.repeat(50) + ' ']])('leaves 20,000 repeats of non-PII %j untouched', (chunk) => {
    const text = chunk.repeat(20_000);
    const result = redactPii(text);
    expect(result.redacted_text).toBe(text);
    expect(Object.values(result.counts).every((n) => n === 0)).toBe(true);
  });
});

describe('pii_redact - mask style', () => {
  it.each([
    ['Email me at john@example.com', 'Email me at ****************'],
    ['Card 4111 1111 1111 1111!', 'Card *******************!'],
    ['SSN 123-45-6789 and 10.1.2.3', 'SSN *********** and ********'],
  ])('masks %s with same-length stars', (input, expected) => {
    const result = redactPii(input, 'mask');
    expect(result.redacted_text).toBe(expected);
    expect(result.redacted_text).toHaveLength(input.length);
  });
});

describe('pii_redact - tool', () => {
  it('runs through the ToolDefinition and defaults to labels', async () => {
    const out = await piiRedactTool.run({ text: 'Email me at john@example.com' }, ctx);
    expect(out).toEqual({ redacted_text: 'Email me at [EMAIL]', counts: countsWith({ email: 1 }) });
  });

  it('rejects a bad replacement_style when called directly', () => {
    try {
      piiRedactTool.run({ text: 'x', replacement_style: 'hash' as 'mask' }, ctx);
      expect.unreachable();
    } catch (err) {
      expect(isFieldmeshError(err) && err.code).toBe('FM_ERR_INVALID_ARGS');
    }
  });

  it.each([[{ text: 'hello' }], [{ text: '', replacement_style: 'label' }], [{ text: 'a@b.co', replacement_style: 'mask' }]])(
    'input schema accepts %j',
    (input) => {
      expect(validateInput(input)).toBe(true);
    },
  );

  it.each([[{}], [{ text: 42 }], [{ text: 'x', replacement_style: 'hash' }], [{ text: 'x', extra: true }], ['just a string']])(
    'input schema rejects %j',
    (input) => {
      expect(validateInput(input)).toBe(false);
    },
  );

  it.each([
    ['Email me at john@example.com'],
    ['Call +44 20 7946 0958 or use 4111 1111 1111 1111, GB82 WEST 1234 5698 7654 32, 10.0.0.1, 123-45-6789'],
    [''],
  ])('output for %j matches the output schema', async (text) => {
    const out = await piiRedactTool.run({ text }, ctx);
    expect(validateOutput(out), JSON.stringify(validateOutput.errors)).toBe(true);
  });

  it('output schema rejects a result missing a count', () => {
    expect(validateOutput({ redacted_text: '', counts: { email: 0 } })).toBe(false);
  });
});
