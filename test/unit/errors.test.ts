import { describe, expect, it } from 'vitest';
import { readdir, readFile } from 'node:fs/promises';
import { constants } from 'node:os';
import path from 'node:path';
import { ConfigError, ERROR_CODES, errorInfo, InterceptorError, isErrorCode, systemError } from '../../src/errors.js';

const SRC = path.resolve(import.meta.dirname, '..', '..', 'src');

describe('systemError', () => {
  it('turns a negative errno into a Node-shaped system error', () => {
    const err = systemError(-constants.errno.EPERM, 'setsockopt', { hint: 'IP_TRANSPARENT needs root or CAP_NET_ADMIN' });
    expect(err).toBeInstanceOf(Error);
    expect(err).toMatchObject({ code: 'EPERM', errno: -constants.errno.EPERM, syscall: 'setsockopt' });
    expect(err.message).toBe('setsockopt EPERM (IP_TRANSPARENT needs root or CAP_NET_ADMIN)');
    expect(err).not.toHaveProperty('address');
  });

  it('carries the address and port it was about', () => {
    const err = systemError(-constants.errno.EADDRINUSE, 'bind', { address: '198.18.1.2', port: 15001 });
    expect(err).toMatchObject({ code: 'EADDRINUSE', syscall: 'bind', address: '198.18.1.2', port: 15001 });
    expect(err.message).toBe('bind EADDRINUSE 198.18.1.2:15001');
  });

  it('names errnos the way Node does', () => {
    expect(systemError(-constants.errno.EADDRNOTAVAIL, 'bind').code).toBe('EADDRNOTAVAIL');
    expect(systemError(-constants.errno.ECONNREFUSED, 'connect').code).toBe('ECONNREFUSED');
    expect(systemError(-constants.errno.EMFILE, 'socket').code).toBe('EMFILE');
  });
});

describe('ConfigError', () => {
  it('names the key in a stable shape', () => {
    const err = new ConfigError('intercept.targets[0].cidr', 'host bits set');
    expect(err).toMatchObject({ code: 'ERR_CONFIG', key: 'intercept.targets[0].cidr', name: 'ConfigError' });
    expect(err.message).toBe('config: intercept.targets[0].cidr: host bits set');
  });
});

describe('the error catalogue', () => {
  it('is sorted, and each code has a status, a level and a description', () => {
    expect([...ERROR_CODES]).toEqual([...ERROR_CODES].sort());
    for (const code of ERROR_CODES) {
      const info = errorInfo(code);
      expect(info.status, code).toBeGreaterThanOrEqual(400);
      expect(info.status, code).toBeLessThan(600);
      expect(['debug', 'info', 'warn', 'error'], code).toContain(info.level);
      expect(info.description.length, code).toBeGreaterThan(10);
    }
  });

  it('holds every ERR_ code the sources raise', async () => {
    const files = (await readdir(SRC, { recursive: true })).filter((f) => f.endsWith('.ts'));
    const used = new Set<string>();
    for (const f of files) {
      const text = await readFile(path.join(SRC, f), 'utf8');
      for (const m of text.matchAll(/'(ERR_[A-Z0-9_]+)'/g)) used.add(m[1] as string);
    }
    // Built at run time from the tool's name (src/firewall/exec-file.ts).
    for (const tool of ['NFT', 'IP', 'IPTABLES']) for (const what of ['FAILED', 'MISSING']) used.add(`ERR_${tool}_${what}`);
    expect([...used].filter((c) => !isErrorCode(c))).toEqual([]);
  });

  it('user mistakes are 4xx, failures of the daemon or behind it 5xx; unknown codes count as internal', () => {
    expect(errorInfo('ERR_INVALID_REGISTRATION').status).toBe(400);
    expect(errorInfo('ERR_UNKNOWN_INSTANCE').status).toBe(404);
    expect(errorInfo('ERR_IP_IN_USE').status).toBe(409);
    expect(errorInfo('ERR_BODY_TOO_LARGE').status).toBe(413);
    expect(errorInfo('ERR_STORE_WRITE').status).toBe(500);
    expect(errorInfo('ERR_STORE_UNAVAILABLE').status).toBe(503);
    expect(errorInfo('ERR_NOT_IN_THE_CATALOGUE')).toMatchObject({ status: 500, level: 'error' });
  });

  it('InterceptorError carries the code and its class name', () => {
    const err = new InterceptorError('ERR_UNKNOWN_INSTANCE', 'no instance registered with id "x"');
    expect(err).toMatchObject({ code: 'ERR_UNKNOWN_INSTANCE', name: 'InterceptorError' });
  });
});
