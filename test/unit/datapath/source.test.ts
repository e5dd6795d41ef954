// The adapter from today's registry records to DecisionEntries: the reference decision over the
// entries must be the registry's own decision, for every instance and port of random registries.
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../../src/config-parse.js';
import { decideReference, type DecisionReasonCode } from '../../../src/datapath/table.js';
import { entryFromRecord } from '../../../src/datapath/source.js';
import { makePolicy } from '../../../src/registry/policy.js';
import { Registry } from '../../../src/registry/registry.js';
import type { DecisionReason } from '../../../src/registry/types.js';

const REASON: Record<DecisionReason, DecisionReasonCode> = {
  'unknown-instance': 'no_instance',
  'policy-unknown': 'policy_pending',
  'policy-unknown-restricted': 'policy_unknown',
  override: 'override',
  policy: 'policy',
  'port-not-listed': 'port_not_allowed',
};

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
// Every address and port is a target here: only the instances decide.
const { targets } = parseConfig('[[intercept.targets]]\ncidr = "0.0.0.0/0"\nports = ["1-65535"]\n[[intercept.targets]]\ncidr = "::/0"\nports = ["1-65535"]\n').intercept;

describe('entryFromRecord', () => {
  it('gives the registry decision for every instance and port of 200 random registries', () => {
    const r = rng(7);
    const ports = [80, 443, 8080, 8081, 9000];
    const randomPolicy = () => makePolicy(ports.filter(() => r(2) === 0).map((p) => [p, r(2) === 0] as const), r(3) === 0);
    let checked = 0;
    for (let round = 0; round < 200; round++) {
      const registry = new Registry({ logger: pino({ level: 'silent' }) });
      const n = 1 + r(12);
      for (let i = 0; i < n; i++) {
        const ip = r(2) === 0 ? `198.18.${r(4)}.${1 + r(250)}` : `fd00:18::${(1 + r(0xfff)).toString(16)}`;
        if (registry.byIp(ip)) continue;
        registry.register({ instanceId: `i-${round}-${i}`, appId: 'app', ip, composeHash: HASH, policy: r(3) === 0 ? null : randomPolicy(), restrict: r(3) === 0 });
        if (r(4) === 0) registry.setOverride(`i-${round}-${i}`, randomPolicy());
        if (r(5) === 0) registry.learnPolicy(`i-${round}-${i}`, HASH, randomPolicy());
      }
      const spec = { generation: 1, targets, localAddresses: [], localNetworks: [], trustedSources: [], entries: registry.list().map(entryFromRecord) };
      for (const record of registry.list()) {
        for (const port of [...ports, 1, 65535]) {
          const { decision } = registry.decide(record.ip, port);
          expect(decideReference(spec, record.ip, port)).toEqual({ kind: decision.kind, reason: REASON[decision.reason], instanceId: decision.instanceId });
          checked++;
        }
      }
      const { decision } = registry.decide('203.0.113.9', 80);
      expect(decideReference(spec, '203.0.113.9', 80)).toEqual({ kind: decision.kind, reason: REASON[decision.reason], instanceId: null });
    }
    expect(checked).toBeGreaterThan(5000);
  });
});
