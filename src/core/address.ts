/** `host:port` parsing with errors that name the option and the value. */
import { FieldmeshError } from './errors.js';

export interface HostPort {
  host: string;
  port: number;
}

export function parseHostPort(option: string, value: string, defaultHost = '127.0.0.1'): HostPort {
  const text = value.trim().replace(/^[a-z]+:\/\//i, '');
  let host = defaultHost;
  let portText = text;
  const bracket = /^\[([^\]]+)\](?::(\d*))?$/.exec(text);
  if (bracket) {
    host = bracket[1] ?? defaultHost;
    portText = bracket[2] ?? '';
  } else if (text.includes(':')) {
    const i = text.lastIndexOf(':');
    host = text.slice(0, i) || defaultHost;
    portText = text.slice(i + 1);
  }
  const port = Number(portText);
  if (!/^\d+$/.test(portText) || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new FieldmeshError('FM_ERR_INVALID_OPTION', `${option}: "${value}" is not a valid port (expected HOST:PORT with 0-65535)`, {
      details: { option, value },
    });
  }
  return { host, port };
}

export function formatHostPort({ host, port }: HostPort): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}
