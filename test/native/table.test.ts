// The decision table as the loop threads read it (native/table.cc) against the reference
// decision (src/datapath/table.ts decideReference) over random registries, targets, local
// addresses and trusted sources: same kind, same reason, same instance, for every destination
// that matters and random ones.
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config-parse.js';
import { compileTable, decideReference, isTrustedReference, KINDS, REASON_CODES, type TableSpec } from '../../src/datapath/table.js';
import { loadAddon } from '../../src/native/addon.js';
import { ipKey } from '../../src/net/ip.js';
import { ALWAYS_LOCAL } from '../../src/proxy/guard.js';
import type { DecisionEntry } from '../../src/registry/types.js';

function rng(seed: number): (n: number) => number {
  let x = seed;
  return (n) => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return Math.floor(((x >>> 0) / 2 ** 32) * n);
  };
}

const pick = <T>(r: (n: number) => number, a: readonly T[]): T => a[r(a.length)]!;

function randomSpec(r: (n: number) => number, generation: number): TableSpec {
  const v4 = (): string => `198.18.${r(4)}.${r(256)}`;
  const v6 = (): string => `fd00:18:${r(4).toString(16)}::${r(0x10000).toString(16)}`;
  const ports = [22, 80, 443, 8080, 8081, 9000, 9001, 65535];
  const targetToml = [
    `[[intercept.targets]]\ncidr = "${pick(r, ["198.18.0.0/23", "198.18.0.0/24", "198.18.1.0/24"])}"\nports = [80, 8080, "9000-9010"]`,
    `[[intercept.targets]]\ncidr = "198.18.3.0/24"\nports = [443]`,
    `[[intercept.targets]]\ncidr = "fd00:18::/${pick(r, [32, 46, 48])}"\nports = [80, 443, 8081]`,
  ].filter(() => r(4) !== 0);
  const { targets } = parseConfig(targetToml.join('\n')).intercept;
  const entries: DecisionEntry[] = [];
  const used = new Set<string>();
  const n = r(200);
  for (let i = 0; i < n; i++) {
    const ip = r(2) === 0 ? v4() : v6();
    const key = Buffer.from(ipKey(ip)!.key).toString('hex');
    if (used.has(key)) continue;
    used.add(key);
    const refuse = r(5) === 0 ? pick(r, ['policy_unknown', 'fetch_failed', 'policy_unattested'] as const) : null;
    const map = new Map<number, boolean>();
    for (const p of ports) if (r(3) === 0) map.set(p, r(2) === 0);
    entries.push({
      instanceId: `inst-${generation}-${i}`,
      ip,
      refuseAll: refuse,
      restrictMode: r(2) === 0,
      ports: refuse ? new Map() : map,
      source: refuse ? null : pick(r, ['override', 'policy'] as const),
    });
  }
  const localAddresses = Array.from({ length: r(6) }, () => (r(2) === 0 ? v4() : v6()));
  if (entries.length > 0 && r(2) === 0) localAddresses.push(entries[r(entries.length)]!.ip);
  return {
    generation,
    targets,
    localAddresses,
    localNetworks: ALWAYS_LOCAL,
    trustedSources: r(2) === 0 ? ['198.18.1.0/24', 'fd00:18:1::/64'] : [],
    entries,
  };
}

describe('the native table reader = the reference decision', () => {
  it('agrees on 150 random tables, 200 destinations each', () => {
    const addon = loadAddon();
    const r = rng(20261130);
    let checked = 0;
    const reasons = new Set<string>();
    for (let t = 1; t <= 150; t++) {
      const spec = randomSpec(r, t);
      const table = compileTable(spec);
      const candidates = [
        ...spec.entries.map((e) => e.ip),
        ...spec.localAddresses,
        '127.0.0.1',
        '::1',
        '0.0.0.0',
        '::',
        '::ffff:198.18.0.7',
        '198.18.1.7',
        'fd00:18:1::9',
      ];
      for (let i = 0; i < 200; i++) {
        const ip = i < candidates.length && r(3) !== 0 ? candidates[i]! : r(2) === 0 ? `198.18.${r(5)}.${r(256)}` : `fd00:18:${r(5).toString(16)}::${r(0x10000).toString(16)}`;
        const port = pick(r, [22, 80, 443, 8080, 8081, 9000, 9005, 9011, 65535, 1 + r(65535)]);
        const k = ipKey(ip)!;
        const got = addon.tableDecide(table, Buffer.from(k.key), k.family, port);
        expect(got).not.toBeNull();
        const [kind, reason, id, trusted] = got!;
        const want = decideReference(spec, ip, port);
        expect({ kind: KINDS[kind], reason: REASON_CODES.get(reason), instanceId: id === '' ? null : id }, `${ip}:${port} in table ${t}`).toEqual(want);
        expect(trusted, `${ip} trusted?`).toBe(isTrustedReference(spec, ip));
        reasons.add(want.reason);
        checked++;
      }
    }
    expect(checked).toBe(30_000);
    // Every reason a table can give was reached.
    for (const reason of ['unregistered', 'policy', 'override', 'policy_unknown', 'fetch_failed', 'policy_unattested', 'port_not_allowed', 'not_a_target', 'local_destination']) {
      expect([...reasons], reason).toContain(reason);
    }
  });

  it('refuses a malformed table instead of reading it', () => {
    const addon = loadAddon();
    const good = compileTable(randomSpec(rng(3), 1));
    const ip = Buffer.from(ipKey('198.18.0.1')!.key);
    expect(addon.tableDecide(good, ip, 4, 80)).not.toBeNull();
    const r = rng(11);
    for (let i = 0; i < 2000; i++) {
      const bad = Buffer.from(good);
      // Corrupt the header or a slot; truncate now and then.
      bad[r(Math.min(bad.length, 80 + 48 * 4))] ^= 1 << r(8);
      const cut = r(4) === 0 ? bad.subarray(0, r(bad.length)) : bad;
      // Either rejected, or (a harmless bit) still answering: never a crash or an endless probe.
      addon.tableDecide(cut, ip, 4, 80);
    }
    expect(addon.tableDecide(good.subarray(0, 79), ip, 4, 80)).toBeNull();
  });
});
