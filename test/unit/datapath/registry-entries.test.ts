// The table's reference decision over the registry's DecisionEntries must be the registry's own
// decision (Registry.decide), for every instance and port of random registries: the two read the
// same entries, and the native table is checked against the reference (test/native/table.test.ts).
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../../src/config-parse.js';
import { decideReference } from '../../../src/datapath/table.js';
import { makePolicy } from '../../../src/registry/policy.js';
import { Registry } from '../../../src/registry/registry.js';

function rng(seed: number): (n: number) => number {
  let x = seed;
  return (n) => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return ((x >>> 0) / 2 ** 32) * n | 0;
  };
}

const HASH = 'a'.repeat(64);
const OTHER_HASH = 'b'.repeat(64);
// Every address and port is a target here: only the instances decide.
const { targets } = parseConfig('[[intercept.targets]]\ncidr = "0.0.0.0/0"\nports = ["1-65535"]\n[[intercept.targets]]\ncidr = "::/0"\nports = ["1-65535"]\n').intercept;

describe('the registry entries and the table reference', () => {
  it('decide alike for every instance and port of 200 random registries, every reason reached', () => {
    const r = rng(7);
    const ports = [80, 443, 8080, 8081, 9000];
    const randomPolicy = () => makePolicy(ports.filter(() => r(2) === 0).map((p) => [p, r(2) === 0] as const), r(3) === 0);
    const reasons = new Set<string>();
    let checked = 0;
    for (let round = 0; round < 200; round++) {
      const registry = new Registry({ logger: pino({ level: 'silent' }), trustAgentComposeHash: r(4) === 0 });
      const n = 1 + r(12);
      for (let i = 0; i < n; i++) {
        const id = `i-${round}-${i}`;
        const ip = r(2) === 0 ? `198.18.${r(4)}.${1 + r(250)}` : `fd00:18::${(1 + r(0xfff)).toString(16)}`;
        if (registry.byIp(ip)) continue;
        const attested = r(4) !== 0;
        registry.register({ instanceId: id, appId: 'app', ip, composeHash: attested ? HASH : null, policy: r(3) === 0 ? null : randomPolicy() });
        if (r(4) === 0) registry.setOverride(id, randomPolicy());
        if (r(5) === 0) registry.learnPolicy(id, HASH, randomPolicy());
        if (r(5) === 0) registry.markFetch(id, attested ? HASH : null, true);
        // A re-registration with a new compose hash drops what was learned for the old one.
        if (r(6) === 0) registry.register({ instanceId: id, appId: 'app', ip, composeHash: OTHER_HASH });
      }
      const spec = { generation: 1, targets, localAddresses: [], localNetworks: [], trustedSources: [], entries: registry.entries() };
      for (const record of registry.list()) {
        for (const port of [...ports, 1, 65535]) {
          const { decision } = registry.decide(record.ip, port);
          expect(decideReference(spec, record.ip, port)).toEqual({ kind: decision.kind, reason: decision.reason, instanceId: decision.instanceId });
          reasons.add(decision.reason);
          checked++;
        }
      }
      const { decision } = registry.decide('203.0.113.9', 80);
      expect(decideReference(spec, '203.0.113.9', 80)).toEqual({ kind: decision.kind, reason: decision.reason, instanceId: null });
      reasons.add(decision.reason);
    }
    expect(checked).toBeGreaterThan(5000);
    expect([...reasons].sort()).toEqual(['fetch_failed', 'override', 'policy', 'policy_unattested', 'policy_unknown', 'port_not_allowed', 'unregistered']);
  });
});
