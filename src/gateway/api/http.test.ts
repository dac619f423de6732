// The router's reading of request targets: the quick split of plain paths agrees with WHATWG URL parsing, which
// still handles every target the split could get wrong.
import { describe, expect, it } from 'vitest';
import { requestUrl } from './http.js';

const viaUrl = (target: string) => {
  const u = new URL(target, 'http://gateway');
  return { pathname: u.pathname, query: [...u.searchParams] };
};
const mine = (target: string) => {
  const u = requestUrl(target);
  return { pathname: u.pathname, query: [...u.searchParams] };
};

describe('http - request targets', () => {
  it('http - plain and tricky targets read the same as WHATWG URL parsing reads them', () => {
    for (const target of [
      '/v1/tool_call',
      '/v1/nodes?status=online&limit=5',
      '/v1/tasks/task_1/',
      '/v1/tasks?x=a+b&y=&z',
      '/v1/tasks/a"b{c}',
      '/v1/tasks/node:a~b@c(1)',
      '/v1/tasks?q="x y"&r=%41',
      '/v1/../healthz',
      '/v1/./tasks',
      '/v1/tasks/%2e%2e',
      '/v1/tasks/ab%20c?since=2026-11-23T10:00:00.000Z',
      '//evil/v1/tasks',
      '/v1\\tasks',
      '/v1/tasks#frag',
      'http://other/v1/tasks?q=1',
      '/',
    ]) {
      expect(mine(target), target).toEqual(viaUrl(target));
    }
  });

  it('http - a missing target is the root', () => {
    expect(mine(undefined as unknown as string)).toEqual({ pathname: '/', query: [] });
  });
});
