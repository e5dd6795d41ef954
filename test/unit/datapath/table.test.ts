import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../../src/config-parse.js';
import { compileTable, keyHash } from '../../../src/datapath/table.js';
import { ipKey } from '../../../src/net/ip.js';
import { ALWAYS_LOCAL } from '../../../src/proxy/guard.js';

const { targets } = parseConfig('[[intercept.targets]]\ncidr = "198.18.2.0/24"\nports = [8080, "9000-9010"]\n').intercept;
const entry = (id: string, ip: string) => ({ instanceId: id, ip, refuseAll: null, restrictMode: false, ports: new Map([[8080, true]]), source: 'policy' as const });

describe('compileTable', () => {
  it('writes the header native/table.h reads, with a power-of-two slot array at most half full', () => {
    const entries = Array.from({ length: 100 }, (_, i) => entry(`i${i}`, `198.18.2.${i + 1}`));
    const t = compileTable({ generation: 7, targets, localAddresses: ['198.18.2.1'], localNetworks: ALWAYS_LOCAL, trustedSources: ['10.0.0.0/8'], entries });
    const u32 = (i: number): number => t.readUInt32LE(4 * i);
    expect(u32(0)).toBe(0x54445054);
    expect(u32(1)).toBe(1);
    expect(u32(2)).toBe(7);
    expect(u32(3)).toBe(t.length);
    expect(t.length % 8).toBe(0);
    expect([u32(5), u32(7), u32(9), u32(11)]).toEqual([1, 2, ALWAYS_LOCAL.length, 1]);
    const slots = u32(13);
    expect(slots & (slots - 1)).toBe(0);
    expect(slots).toBeGreaterThanOrEqual(2 * 101);
    expect(u32(15)).toBe(100); // ports
  });

  it('refuses two instances at one address (any spelling) and invalid ports', () => {
    const spec = { generation: 1, targets, localAddresses: [], localNetworks: [], trustedSources: [] };
    expect(() => compileTable({ ...spec, entries: [entry('a', '198.18.2.9'), entry('b', '::ffff:198.18.2.9')] })).toThrow(/instances a and b share the address/);
    expect(() => compileTable({ ...spec, entries: [{ ...entry('a', '198.18.2.9'), ports: new Map([[0, true]]) }] })).toThrow(/port 0 is not in 1..65535/);
  });

  it('keyHash is a 32-bit unsigned hash that spreads neighbouring addresses', () => {
    const hashes = new Set<number>();
    for (let i = 0; i < 4096; i++) hashes.add(keyHash(ipKey(`198.18.${i >> 8}.${i & 255}`)!.key) & 8191);
    // Neighbouring addresses fill most buckets of an 8192-slot table (a poor hash clusters).
    expect(hashes.size).toBeGreaterThan(3000);
    expect(keyHash(ipKey('::1')!.key)).toBeLessThan(2 ** 32);
  });
});
