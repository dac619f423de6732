/**
 * `{{…}}` templates in tool arguments, `for_each` and targets. A template
 * that is the whole string yields the referenced value with its JSON type; one
 * inside a longer string is replaced by its text. A missing reference fails
 * with FM_ERR_TEMPLATE naming the path.
 */
import { FieldmeshError } from '../core/errors.js';

const WHOLE = /^\s*\{\{\s*([^{}]+?)\s*\}\}\s*$/;
const PART = /\{\{\s*([^{}]+?)\s*\}\}/g;

export type TemplateContext = Record<string, unknown>;

function splitPath(path: string): string[] {
  const parts: string[] = [];
  for (const seg of path.split('.')) {
    const m = /^([^[\]]*)((?:\[\d+\])*)$/.exec(seg);
    if (!m) throw new FieldmeshError('FM_ERR_TEMPLATE', `Template path "${path}" is malformed`, { details: { path } });
    if (m[1]) parts.push(m[1]);
    for (const idx of (m[2] ?? '').matchAll(/\[(\d+)\]/g)) parts.push(idx[1]!);
  }
  return parts;
}

/** Looks a dotted path (`steps.a.output.items[0]`) up in the context. */
export function lookup(ctx: TemplateContext, path: string): unknown {
  let cur: unknown = ctx;
  for (const part of splitPath(path)) {
    if (cur !== null && typeof cur === 'object' && Object.hasOwn(cur, part)) {
      cur = (cur as Record<string, unknown>)[part];
    } else {
      throw new FieldmeshError('FM_ERR_TEMPLATE', `Template reference "{{${path}}}" does not resolve`, { details: { path } });
    }
  }
  if (cur === undefined)
    throw new FieldmeshError('FM_ERR_TEMPLATE', `Template reference "{{${path}}}" does not resolve`, { details: { path } });
  return cur;
}

export function hasTemplate(value: unknown): boolean {
  if (typeof value === 'string') return value.includes('{{');
  if (Array.isArray(value)) return value.some(hasTemplate);
  if (value !== null && typeof value === 'object') return Object.values(value).some(hasTemplate);
  return false;
}

/** Resolves every template in a JSON value, returning a new value. */
export function resolveTemplates(value: unknown, ctx: TemplateContext): unknown {
  if (typeof value === 'string') {
    if (!value.includes('{{')) return value;
    const whole = WHOLE.exec(value);
    if (whole) return lookup(ctx, whole[1]!);
    return value.replace(PART, (_m, path: string) => {
      const v = lookup(ctx, path);
      return typeof v === 'string' ? v : JSON.stringify(v);
    });
  }
  if (Array.isArray(value)) return value.map((v) => resolveTemplates(v, ctx));
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = resolveTemplates(v, ctx);
    return out;
  }
  return value;
}
