import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../../src/config-parse.js';
import { parseBackendArg, probeSource } from '../../../src/doctor/probe.js';

const CONFIG = parseConfig('[[intercept.targets]]\ncidr = "198.18.2.0/24"\nports = ["9000-9010", 8080]\n\n[[intercept.targets]]\ncidr = "fd00:18:2::/64"\nports = [443]\n');

describe('--backend', () => {
  it('takes ADDR:PORT, [ADDR6]:PORT, or an address whose target gives the port', () => {
    expect(parseBackendArg('198.18.2.2:8081', CONFIG)).toEqual({ address: '198.18.2.2', port: 8081 });
    expect(parseBackendArg('[fd00:18:2::2]:8443', CONFIG)).toEqual({ address: 'fd00:18:2::2', port: 8443 });
    expect(parseBackendArg('198.18.2.2', CONFIG)).toEqual({ address: '198.18.2.2', port: 8080 });
    expect(parseBackendArg('fd00:18:2::2', CONFIG)).toEqual({ address: 'fd00:18:2::2', port: 443 });
  });

  it('refuses what it cannot use, as a usage error', () => {
    expect(() => parseBackendArg('backend.example:80', CONFIG)).toThrow(expect.objectContaining({ code: 'ERR_USAGE' }));
    expect(() => parseBackendArg('198.18.2.2:70000', CONFIG)).toThrow(/out of range/);
    expect(() => parseBackendArg('198.18.9.9', CONFIG)).toThrow(/no intercept.targets entry.*--backend 198.18.9.9:PORT/);
  });
});

describe('--probe-source', () => {
  it('defaults to a documentation address of the backend\'s family', () => {
    expect(probeSource(undefined, { address: '198.18.2.2', port: 80 })).toBe('192.0.2.1');
    expect(probeSource(undefined, { address: 'fd00:18:2::2', port: 80 })).toBe('2001:db8::1');
    expect(probeSource('198.18.1.77', { address: '198.18.2.2', port: 80 })).toBe('198.18.1.77');
  });

  it('must be of the backend\'s family and not an address of this host', () => {
    expect(() => probeSource('fd00::1', { address: '198.18.2.2', port: 80 })).toThrow(/not an IPv4 address/);
    expect(() => probeSource('127.0.0.1', { address: '198.18.2.2', port: 80 })).toThrow(/is an address of this host/);
  });
});
