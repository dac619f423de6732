import { describe, expect, it } from 'vitest';
import { hasTemplate, lookup, resolveTemplates } from './templates.js';

const ctx = {
  item: { id: 7, tags: ['a', 'b'] },
  item_index: 3,
  input: { text: 'hello', n: 2 },
  steps: { redact: { output: { redacted_text: 'Email me at [EMAIL]', counts: { email: 1 } } } },
};

describe('templates', () => {
  it.each([
    ['{{item}}', ctx.item],
    ['{{ item_index }}', 3],
    ['{{input.n}}', 2],
    ['{{steps.redact.output.counts}}', { email: 1 }],
    ['{{item.tags[1]}}', 'b'],
  ])('templates - whole-string %s keeps the JSON type', (tpl, expected) => {
    expect(resolveTemplates(tpl, ctx)).toEqual(expected);
  });

  it('templates - inside a longer string values are stringified', () => {
    expect(resolveTemplates('n={{input.n}} item={{item}} text={{input.text}}', ctx)).toBe('n=2 item={"id":7,"tags":["a","b"]} text=hello');
  });

  it('templates - resolves through nested objects and arrays and leaves other values alone', () => {
    expect(resolveTemplates({ a: ['{{item_index}}', 1, null, true], b: { c: '{{steps.redact.output.redacted_text}}' } }, ctx)).toEqual({
      a: [3, 1, null, true],
      b: { c: 'Email me at [EMAIL]' },
    });
  });

  it.each([['{{input.missing}}'], ['{{steps.nope.output}}'], ['x {{item.tags[5]}} y']])(
    'templates - %s fails with FM_ERR_TEMPLATE naming the path',
    (tpl) => {
      let err: unknown;
      try {
        resolveTemplates(tpl, ctx);
      } catch (e) {
        err = e;
      }
      expect(err).toMatchObject({ code: 'FM_ERR_TEMPLATE' });
      expect((err as Error).message).toContain(tpl.replace(/^.*?\{\{\s*|\s*\}\}.*$/g, ''));
    },
  );

  it('templates - lookup does not reach inherited properties', () => {
    expect(() => lookup(ctx, 'input.constructor')).toThrow(/does not resolve/);
  });

  it('templates - hasTemplate finds templates anywhere in a value', () => {
    expect(hasTemplate({ a: [1, { b: 'x{{y}}' }] })).toBe(true);
    expect(hasTemplate({ a: [1, { b: 'plain' }] })).toBe(false);
  });
});
