// Tests for compileNodeOptions: defaults, parsing and the errors that name the bad option.
import { availableParallelism } from 'node:os';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FieldmeshError } from '../core/errors.js';
import { silentLogger } from '../core/logger.js';
import { compileNodeOptions, defaultPlatform, type NodeOptions } from './options.js';

const base: NodeOptions = { gateway: '10.0.0.5:7443', id: 'node-a', dataDir: 'tmp/node-a', logger: silentLogger };

function compileError(opts: Partial<NodeOptions> & Record<string, unknown>): FieldmeshError {
  try {
    compileNodeOptions({ ...base, ...opts } as NodeOptions);
  } catch (err) {
    expect(err).toBeInstanceOf(FieldmeshError);
    return err as FieldmeshError;
  }
  throw new Error('expected compileNodeOptions to throw');
}

describe('node options - defaults', () => {
  it('node options - fills every default', () => {
    const o = compileNodeOptions(base);
    expect(o.gateway).toEqual({ host: '10.0.0.5', port: 7443 });
    expect(o.gatewayAddress).toBe('10.0.0.5:7443');
    expect(o.name).toBe('node-a');
    expect(o.platform).toBe(defaultPlatform());
    expect(o.capabilities).toEqual([]);
    expect(o.location).toBeNull();
    expect(o.dataDir).toBe(resolve('tmp/node-a'));
    expect(o.maxConcurrency).toBe(Math.min(availableParallelism(), 4096));
    expect(o.heartbeatIntervalMs).toBe(1000);
    expect(o.toolModules).toEqual([]);
    expect(o.gatewayCaFile).toBeUndefined();
    expect(o.reconnectMinMs).toBe(250);
    expect(o.reconnectMaxMs).toBe(30_000);
    expect(o.maxFrameBytes).toBe(1024 * 1024);
    expect(o.workerMemoryMb).toBe(256);
    expect(o.logger).toBe(silentLogger);
  });

  it('node options - maps os platform names', () => {
    expect(defaultPlatform('darwin')).toBe('macos');
    expect(defaultPlatform('win32')).toBe('windows');
    expect(defaultPlatform('linux')).toBe('linux');
    expect(defaultPlatform('android')).toBe('android');
    expect(defaultPlatform('freebsd')).toBe('freebsd');
  });

  it('node options - keeps explicit values and resolves paths', () => {
    const o = compileNodeOptions({
      ...base,
      name: 'Pump house',
      platform: 'linux-arm64',
      capabilities: ['gpio', 'camera'],
      maxConcurrency: 3,
      heartbeatIntervalMs: 500,
      toolModules: ['tools/custom.js'],
      gatewayCaFile: 'ca.crt',
      reconnectMinMs: 100,
      reconnectMaxMs: 5000,
      maxFrameBytes: 65_536,
      workerMemoryMb: 128,
    });
    expect(o.name).toBe('Pump house');
    expect(o.platform).toBe('linux-arm64');
    expect(o.capabilities).toEqual(['gpio', 'camera']);
    expect(o.maxConcurrency).toBe(3);
    expect(o.heartbeatIntervalMs).toBe(500);
    expect(o.toolModules).toEqual([resolve('tools/custom.js')]);
    expect(o.gatewayCaFile).toBe(resolve('ca.crt'));
    expect(o.reconnectMinMs).toBe(100);
    expect(o.reconnectMaxMs).toBe(5000);
    expect(o.maxFrameBytes).toBe(65_536);
    expect(o.workerMemoryMb).toBe(128);
  });

  it('node options - a bare :PORT gateway means localhost', () => {
    expect(compileNodeOptions({ ...base, gateway: ':7443' }).gateway).toEqual({ host: '127.0.0.1', port: 7443 });
    expect(compileNodeOptions({ ...base, gateway: '[::1]:7443' }).gateway).toEqual({ host: '::1', port: 7443 });
  });

  it('node options - a larger reconnectMinMs lifts the default maximum', () => {
    expect(compileNodeOptions({ ...base, reconnectMinMs: 60_000 }).reconnectMaxMs).toBe(60_000);
  });
});

describe('node options - location', () => {
  it('node options - parses "LAT,LON" strings', () => {
    expect(compileNodeOptions({ ...base, location: '37.7749,-122.4194' }).location).toEqual({ lat: 37.7749, lon: -122.4194 });
    expect(compileNodeOptions({ ...base, location: ' -33.9 , 151.2 ' }).location).toEqual({ lat: -33.9, lon: 151.2 });
  });

  it('node options - accepts objects and null', () => {
    expect(compileNodeOptions({ ...base, location: { lat: 52.52, lon: 13.405 } }).location).toEqual({ lat: 52.52, lon: 13.405 });
    expect(compileNodeOptions({ ...base, location: null }).location).toBeNull();
  });

  it.each([['abc'], ['91,0'], ['0,181'], ['37.7749'], ['1,2,3']])(
    'node options - rejects location %s naming the option, value and range',
    (value) => {
      const err = compileError({ location: value });
      expect(err.code).toBe('FM_ERR_INVALID_OPTION');
      expect(err.message).toContain('node.location');
      expect(err.message).toContain(`"${value}"`);
      expect(err.message).toContain('-90 to 90');
      expect(err.message).toContain('-180 to 180');
    },
  );

  it('node options - rejects out-of-range location objects', () => {
    const err = compileError({ location: { lat: 10, lon: -200 } });
    expect(err.code).toBe('FM_ERR_INVALID_OPTION');
    expect(err.message).toContain('node.location');
    expect(err.message).toContain('-200');
  });
});

describe('node options - errors', () => {
  it('node options - names the gateway option on a bad port', () => {
    const err = compileError({ gateway: 'x:99999' });
    expect(err.code).toBe('FM_ERR_INVALID_OPTION');
    expect(err.message).toContain('node.gateway: "x:99999" is not a valid port');
    expect(err.details).toEqual({ option: 'node.gateway', value: 'x:99999' });
  });

  it('node options - rejects port 0 and a missing port', () => {
    expect(compileError({ gateway: 'gw:0' }).message).toContain('node.gateway');
    expect(compileError({ gateway: 'gw' }).message).toContain('node.gateway');
  });

  it.each([['-leading-dash'], ['has space'], [''], ['a'.repeat(129)], ['ümlaut']])('node options - rejects node id %s', (id) => {
    const err = compileError({ id });
    expect(err.code).toBe('FM_ERR_INVALID_OPTION');
    expect(err.message).toMatch(/^node\.id: /);
  });

  it('node options - accepts ids using every allowed punctuation', () => {
    expect(compileNodeOptions({ ...base, id: 'site-1/pump:a_b.c@x' }).id).toBe('site-1/pump:a_b.c@x');
    expect(compileNodeOptions({ ...base, id: 'a'.repeat(128) }).id).toHaveLength(128);
  });

  it('node options - requires a data dir', () => {
    expect(compileError({ dataDir: '' }).message).toMatch(/^node\.dataDir: /);
    expect(compileError({ dataDir: undefined }).message).toMatch(/^node\.dataDir: /);
  });

  it.each([
    ['maxConcurrency', 0],
    ['maxConcurrency', 1.5],
    ['maxConcurrency', 5000],
    ['heartbeatIntervalMs', 5],
    ['reconnectMinMs', -1],
    ['maxFrameBytes', 100],
    ['workerMemoryMb', '256'],
  ])('node options - rejects %s = %s', (key, value) => {
    const err = compileError({ [key]: value });
    expect(err.code).toBe('FM_ERR_INVALID_OPTION');
    expect(err.message).toContain(`node.${key}: `);
    expect(err.message).toContain('must be an integer');
  });

  it('node options - rejects reconnectMaxMs below reconnectMinMs', () => {
    const err = compileError({ reconnectMinMs: 1000, reconnectMaxMs: 500 });
    expect(err.message).toContain('node.reconnectMaxMs: 500 must not be below node.reconnectMinMs (1000)');
  });

  it('node options - rejects bad capabilities, tool modules and names', () => {
    expect(compileError({ capabilities: ['gpio', ''] }).message).toContain('node.capabilities[1]');
    expect(compileError({ capabilities: 'gpio' as unknown as string[] }).message).toContain('node.capabilities');
    expect(compileError({ toolModules: [''] }).message).toContain('node.toolModules[0]');
    expect(compileError({ name: '' }).message).toContain('node.name');
    expect(compileError({ platform: 'x'.repeat(65) }).message).toContain('node.platform');
    expect(compileError({ gatewayCaFile: '' }).message).toContain('node.gatewayCaFile');
  });
});
