import { describe, expect, it } from 'vitest';
import { constants } from 'node:os';
import { ConfigError, systemError } from '../../src/errors.js';

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
