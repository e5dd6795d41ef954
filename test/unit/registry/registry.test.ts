import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { parsePolicyString } from '../../../src/registry/policy.js';
import type { RegistrationInput } from '../../../src/registry/registration.js';
import { Registry, type EntryChange } from '../../../src/registry/registry.js';
import type { InstanceRecord } from '../../../src/registry/types.js';

/** The instance decide() finds at an address (what the address index holds). */
function holderOf(r: Registry, ip: string): InstanceRecord | undefined {
  const id = r.decide(ip, 1).decision.instanceId;
  return id === null ? undefined : r.get(id);
}

const H1 = '1'.repeat(64);
const H2 = '2'.repeat(64);

function makeRegistry(opts: { trustAgentComposeHash?: boolean } = {}): { registry: Registry; tick: (ms?: number) => void } {
  let t = 1_000;
  const registry = new Registry({ logger: pino({ level: 'silent' }), now: () => t, ...opts });
  return { registry, tick: (ms = 1) => void (t += ms) };
}

function reg(overrides: Partial<RegistrationInput> = {}): RegistrationInput {
  return { instanceId: 'i1', appId: 'app1', ip: '198.18.0.1', ...overrides };
}

const P_8080 = parsePolicyString('8080:pp,443', false);
const P_RESTRICT = parsePolicyString('8080:pp,22', true);

function fieldOf(fn: () => unknown): { code: string; field?: string } {
  try {
    fn();
  } catch (err) {
    const e = err as { code: string; field?: string };
    return e.field === undefined ? { code: e.code } : { code: e.code, field: e.field };
  }
  throw new Error('did not throw');
}

describe('Registry.register', () => {
  it('stores a frozen record and normalises ip and compose hash', () => {
    const { registry } = makeRegistry();
    const { record, previous, fetchNeeded } = registry.register(
      reg({ ip: 'FD00:0:0:0:0:0:0:1', composeHash: `0x${H1.toUpperCase().replace(/1/g, 'A')}` }),
    );
    expect(previous).toBeUndefined();
    expect(fetchNeeded).toBe(true);
    expect(record).toMatchObject({
      instanceId: 'i1',
      appId: 'app1',
      ip: 'fd00::1',
      composeHash: 'a'.repeat(64),
      reportedPolicy: null,
      policySource: null,
      policyComposeHash: null,
      override: null,
      registeredAt: 1000,
      updatedAt: 1000,
    });
    expect(Object.isFrozen(record)).toBe(true);
    expect(registry.get('i1')).toBe(record);
    expect(registry.size).toBe(1);
  });

  it('maps IPv4-mapped IPv6 to IPv4', () => {
    const { registry } = makeRegistry();
    expect(registry.register(reg({ ip: '::ffff:198.18.0.9' })).record.ip).toBe('198.18.0.9');
  });

  it('replaces records on change; the old object is untouched', () => {
    const { registry, tick } = makeRegistry();
    const first = registry.register(reg()).record;
    tick();
    const { record, previous } = registry.register(reg({ policy: P_8080 }));
    expect(previous).toBe(first);
    expect(record).not.toBe(first);
    expect(first.reportedPolicy).toBeNull();
    expect(record.reportedPolicy?.ports.get(8080)).toEqual({ pp: true });
    expect(record.updatedAt).toBe(1001);
  });

  it('copies the reported policy: mutating the caller map later changes nothing', () => {
    const { registry } = makeRegistry();
    const ports = new Map([[8080, { pp: true }]]);
    registry.register(reg({ policy: { ports, restrictMode: false } }));
    ports.set(8080, { pp: false });
    expect(registry.decide('198.18.0.1', 8080).decision.kind).toBe('proxy');
  });

  it.each<[Partial<RegistrationInput>, string]>([
    [{ instanceId: '' }, 'instanceId'],
    [{ instanceId: 'a'.repeat(129) }, 'instanceId'],
    [{ instanceId: 'bad id' }, 'instanceId'],
    [{ instanceId: 'x/y' }, 'instanceId'],
    [{ appId: '' }, 'appId'],
    [{ ip: '198.18.0.256' }, 'ip'],
    [{ ip: 'example.com' }, 'ip'],
    [{ ip: 'fe80::1%eth0' }, 'ip'],
    [{ composeHash: 'abc' }, 'composeHash'],
    [{ composeHash: 'g'.repeat(64) }, 'composeHash'],
    [{ policy: { ports: new Map([[70000, { pp: true }]]), restrictMode: false } }, 'policy'],
    [{ policy: { ports: new Map([[0, { pp: true }]]), restrictMode: false } }, 'policy'],
  ])('rejects %j naming the field', (overrides, field) => {
    const { registry } = makeRegistry();
    expect(fieldOf(() => registry.register(reg(overrides)))).toEqual({ code: 'ERR_INVALID_REGISTRATION', field });
    expect(registry.size).toBe(0);
  });

  it('accepts 128-character ids with the allowed punctuation', () => {
    const { registry } = makeRegistry();
    const id = `a.b_c:d-${'x'.repeat(120)}`;
    expect(registry.register(reg({ instanceId: id })).record.instanceId).toBe(id);
  });

  it('ips are unique: another instance at the same ip is ERR_IP_IN_USE naming the holder', () => {
    const { registry } = makeRegistry();
    registry.register(reg());
    let err: unknown;
    try {
      registry.register(reg({ instanceId: 'i2', ip: '::ffff:198.18.0.1' }));
    } catch (e) {
      err = e;
    }
    expect(err).toMatchObject({ code: 'ERR_IP_IN_USE', heldBy: 'i1', ip: '198.18.0.1' });
    expect((err as Error).message).toContain('i1');
    expect(registry.get('i2')).toBeUndefined();
  });

  it('an instance moving to a new ip frees the old one', () => {
    const { registry } = makeRegistry();
    registry.register(reg());
    registry.register(reg({ ip: '198.18.0.2' }));
    expect(holderOf(registry, '198.18.0.1')).toBeUndefined();
    expect(holderOf(registry, '198.18.0.2')?.instanceId).toBe('i1');
    expect(registry.register(reg({ instanceId: 'i2', ip: '198.18.0.1' })).record.ip).toBe('198.18.0.1');
  });

  it('fetchNeeded: true while the reported policy is unknown and a learned one would count, false once reported (even empty)', () => {
    const { registry } = makeRegistry();
    // No attested hash: a learned policy would not count, so nothing is fetched.
    expect(registry.register(reg()).fetchNeeded).toBe(false);
    expect(registry.register(reg({ composeHash: H1 })).fetchNeeded).toBe(true);
    expect(registry.register(reg({ policy: parsePolicyString('', false) })).fetchNeeded).toBe(false);
    expect(registry.get('i1')?.reportedPolicy?.ports.size).toBe(0);
    // Not reported (null is the same as omitted): the cached one is kept.
    expect(registry.register(reg({ policy: null })).fetchNeeded).toBe(false);
  });

  it('re-registration without a policy keeps the cached one while the compose hash is unchanged', () => {
    const { registry } = makeRegistry();
    registry.register(reg({ composeHash: H1, policy: P_8080 }));
    const { record, fetchNeeded } = registry.register(reg({ composeHash: H1 }));
    expect(fetchNeeded).toBe(false);
    expect(record.reportedPolicy).toBe(registry.get('i1')?.reportedPolicy);
    expect(record.reportedPolicy?.ports.get(8080)).toEqual({ pp: true });
    expect(record.policySource).toBe('registration');
    expect(record.policyComposeHash).toBe(H1);
  });

  it('re-registration keeps the first registration time and moves updatedAt', () => {
    const { registry, tick } = makeRegistry();
    registry.register(reg());
    tick(500);
    const { record } = registry.register(reg({ appId: 'app2' }));
    expect(record).toMatchObject({ appId: 'app2', registeredAt: 1000, updatedAt: 1500 });
  });

  it('re-registration without a hash keeps the cached policy (no claim of a change)', () => {
    const { registry } = makeRegistry();
    registry.register(reg({ composeHash: H1, policy: P_8080 }));
    const { record, fetchNeeded } = registry.register(reg());
    expect(fetchNeeded).toBe(false);
    expect(record.composeHash).toBeNull();
    expect(record.reportedPolicy?.ports.get(8080)).toEqual({ pp: true });
  });

  it('a changed compose hash drops the reported policy but keeps the override', () => {
    const { registry } = makeRegistry();
    registry.register(reg({ composeHash: H1, policy: P_8080 }));
    registry.setOverride('i1', parsePolicyString('9000:pp', false));
    const { record, fetchNeeded } = registry.register(reg({ composeHash: H2 }));
    // The override decides: nothing to fetch until it is cleared.
    expect(fetchNeeded).toBe(false);
    expect(record.reportedPolicy).toBeNull();
    expect(record.policySource).toBeNull();
    expect(record.policyComposeHash).toBeNull();
    expect(record.override?.ports.get(9000)).toEqual({ pp: true });
    expect(record.composeHash).toBe(H2);
  });

  it('a policy learned against another hash is dropped when a hash is registered', () => {
    const { registry } = makeRegistry({ trustAgentComposeHash: true });
    registry.register(reg()); // no hash
    registry.learnPolicy('i1', H1, P_8080);
    expect(registry.get('i1')?.policyComposeHash).toBe(H1);
    expect(registry.register(reg({ composeHash: H1 })).record.reportedPolicy).not.toBeNull();
    const { record, fetchNeeded } = registry.register(reg({ composeHash: H2 }));
    expect(fetchNeeded).toBe(true);
    expect(record.reportedPolicy).toBeNull();
  });

  it('a changed hash with a newly reported policy takes the new policy', () => {
    const { registry } = makeRegistry();
    registry.register(reg({ composeHash: H1, policy: P_8080 }));
    const { record } = registry.register(reg({ composeHash: H2, policy: parsePolicyString('7000:pp', false) }));
    expect([...(record.reportedPolicy?.ports.keys() ?? [])]).toEqual([7000]);
    expect(record.policyComposeHash).toBe(H2);
  });

  it('override survives re-registration', () => {
    const { registry } = makeRegistry();
    registry.register(reg());
    registry.setOverride('i1', P_8080);
    expect(registry.register(reg({ policy: P_RESTRICT })).record.override?.ports.get(8080)).toEqual({ pp: true });
  });
});

describe('Registry.setOverride / learnPolicy / remove', () => {
  it('setOverride on an unknown instance is ERR_UNKNOWN_INSTANCE', () => {
    const { registry } = makeRegistry();
    expect(fieldOf(() => registry.setOverride('nope', P_8080))).toEqual({ code: 'ERR_UNKNOWN_INSTANCE' });
  });

  it('setOverride sets and clears, replacing the record', () => {
    const { registry, tick } = makeRegistry();
    const first = registry.register(reg()).record;
    tick(5);
    const withOverride = registry.setOverride('i1', P_8080);
    expect(withOverride).not.toBe(first);
    expect(withOverride.updatedAt).toBe(1005);
    expect(withOverride.registeredAt).toBe(1000);
    expect(registry.setOverride('i1', null).override).toBeNull();
  });

  it('learnPolicy records the source and hash', () => {
    const { registry } = makeRegistry();
    registry.register(reg({ composeHash: H1 }));
    const record = registry.learnPolicy('i1', H1.toUpperCase(), P_8080);
    expect(record).toMatchObject({ policySource: 'agent', policyComposeHash: H1 });
    expect(registry.get('i1')).toBe(record);
  });

  it('learnPolicy is ignored when the instance is gone', () => {
    const { registry } = makeRegistry();
    expect(registry.learnPolicy('i1', H1, P_8080)).toBeUndefined();
    expect(registry.size).toBe(0);
  });

  it('learnPolicy is ignored when the compose hash changed meanwhile', () => {
    const { registry } = makeRegistry();
    registry.register(reg({ composeHash: H2 }));
    expect(registry.learnPolicy('i1', H1, P_8080)).toBeUndefined();
    expect(registry.get('i1')?.reportedPolicy).toBeNull();
  });

  it('learnPolicy without an attested hash is ignored, unless the agent\'s own hash is trusted', () => {
    const { registry } = makeRegistry();
    registry.register(reg());
    expect(registry.learnPolicy('i1', H1, P_8080)).toBeUndefined();
    const trusting = makeRegistry({ trustAgentComposeHash: true }).registry;
    trusting.register(reg());
    expect(trusting.learnPolicy('i1', H1, P_8080)?.policyComposeHash).toBe(H1);
    expect(trusting.decide('198.18.0.1', 8080).decision).toEqual({ kind: 'proxy', instanceId: 'i1', reason: 'policy' });
  });

  it('remove returns the record and frees the ip', () => {
    const { registry } = makeRegistry();
    const { record } = registry.register(reg());
    expect(registry.remove('i1')).toBe(record);
    expect(registry.remove('i1')).toBeUndefined();
    expect(holderOf(registry, '198.18.0.1')).toBeUndefined();
    expect(registry.decide('198.18.0.1', 80).decision.reason).toBe('unregistered');
  });
});

describe('Registry.restore', () => {
  it('undoes a first registration', () => {
    const { registry } = makeRegistry();
    const { record, previous } = registry.register(reg());
    registry.restore(record, previous);
    expect(registry.get('i1')).toBeUndefined();
    expect(holderOf(registry, '198.18.0.1')).toBeUndefined();
  });

  it('undoes a re-registration, ip included', () => {
    const { registry } = makeRegistry();
    const first = registry.register(reg({ policy: P_8080 })).record;
    const { record, previous } = registry.register(reg({ ip: '198.18.0.2', composeHash: H1 }));
    registry.restore(record, previous);
    expect(registry.get('i1')).toBe(first);
    expect(holderOf(registry, '198.18.0.1')).toBe(first);
    expect(holderOf(registry, '198.18.0.2')).toBeUndefined();
    expect(registry.decide('198.18.0.1', 8080).decision.kind).toBe('proxy');
  });

  it('undoes a removal (the removed record passed as both)', () => {
    const { registry } = makeRegistry();
    registry.register(reg());
    const removed = registry.remove('i1');
    if (removed === undefined) throw new Error('not removed');
    registry.restore(removed, removed);
    expect(registry.get('i1')).toBe(removed);
    expect(holderOf(registry, '198.18.0.1')).toBe(removed);
  });

  it('undoes an override', () => {
    const { registry } = makeRegistry();
    const previous = registry.register(reg()).record;
    const record = registry.setOverride('i1', P_8080);
    registry.restore(record, previous);
    expect(registry.get('i1')?.override).toBeNull();
  });

  it('does nothing when the instance changed again since', () => {
    const { registry } = makeRegistry();
    const { record, previous } = registry.register(reg());
    const later = registry.register(reg({ policy: P_8080 })).record;
    registry.restore(record, previous);
    expect(registry.get('i1')).toBe(later);
  });
});

describe('Registry.load / get / byIp / list', () => {
  it('load replaces the contents', () => {
    const { registry } = makeRegistry();
    const a = registry.register(reg()).record;
    const b = registry.register(reg({ instanceId: 'i0', ip: 'fd00::2' })).record;
    const other = makeRegistry().registry;
    other.register(reg({ instanceId: 'zzz', ip: '198.18.1.1' }));
    other.load([a, b]);
    expect(other.size).toBe(2);
    expect(other.get('zzz')).toBeUndefined();
    expect(other.list().map((r) => r.instanceId)).toEqual(['i0', 'i1']);
    expect(holderOf(other, 'fd00::2')).toBe(b);
    expect(holderOf(other, 'not an ip')).toBeUndefined();
  });

  it('load refuses duplicate ids or ips and keeps the old contents', () => {
    const { registry } = makeRegistry();
    const a = registry.register(reg()).record;
    const clash = { ...a, instanceId: 'i9' };
    expect(fieldOf(() => registry.load([a, clash]))).toEqual({ code: 'ERR_STORE_CORRUPT' });
    expect(fieldOf(() => registry.load([a, a]))).toEqual({ code: 'ERR_STORE_CORRUPT' });
    expect(registry.get('i1')).toBe(a);
  });
});

describe('Registry.decide', () => {
  function setup(): Registry {
    const { registry } = makeRegistry();
    registry.register(reg({ instanceId: 'open', ip: '198.18.0.1', policy: P_8080 }));
    registry.register(reg({ instanceId: 'strict', ip: '198.18.0.2', policy: P_RESTRICT }));
    registry.register(reg({ instanceId: 'unknown', ip: 'fd00::3', composeHash: H1 }));
    registry.register(reg({ instanceId: 'failed', ip: 'fd00::4', composeHash: H1 }));
    registry.markFetch('failed', H1, true);
    registry.register(reg({ instanceId: 'ovr', ip: 'fd00::5' }));
    registry.setOverride('ovr', parsePolicyString('9000:pp', true));
    registry.register(reg({ instanceId: 'unattested', ip: 'fd00::6' }));
    registry.register(reg({ instanceId: 'empty', ip: 'fd00::7', policy: parsePolicyString('', false) }));
    return registry;
  }

  // The decision table of the README, row by row.
  it.each([
    ['198.18.9.9', 80, { kind: 'transparent', instanceId: null, reason: 'unregistered' }, null],
    ['198.18.0.1', 8080, { kind: 'proxy', instanceId: 'open', reason: 'policy' }, null],
    ['198.18.0.1', 443, { kind: 'transparent', instanceId: 'open', reason: 'policy' }, null],
    ['198.18.0.1', 9999, { kind: 'transparent', instanceId: 'open', reason: 'policy' }, null],
    ['198.18.0.2', 8080, { kind: 'proxy', instanceId: 'strict', reason: 'policy' }, null],
    ['198.18.0.2', 22, { kind: 'transparent', instanceId: 'strict', reason: 'policy' }, null],
    ['198.18.0.2', 23, { kind: 'refuse', instanceId: 'strict', reason: 'port_not_allowed' }, null],
    ['fd00::3', 80, { kind: 'refuse', instanceId: 'unknown', reason: 'policy_unknown' }, 'unknown'],
    ['fd00::3', 8080, { kind: 'refuse', instanceId: 'unknown', reason: 'policy_unknown' }, 'unknown'],
    ['fd00::4', 80, { kind: 'refuse', instanceId: 'failed', reason: 'fetch_failed' }, 'failed'],
    ['fd00::5', 9000, { kind: 'proxy', instanceId: 'ovr', reason: 'override' }, null],
    ['fd00::5', 9001, { kind: 'refuse', instanceId: 'ovr', reason: 'port_not_allowed' }, null],
    ['fd00::6', 80, { kind: 'refuse', instanceId: 'unattested', reason: 'policy_unattested' }, null],
    ['fd00::7', 80, { kind: 'transparent', instanceId: 'empty', reason: 'policy' }, null],
    ['::ffff:198.18.0.1', 8080, { kind: 'proxy', instanceId: 'open', reason: 'policy' }, null],
  ])('%s:%i', (ip, port, decision, fetch) => {
    expect(setup().decide(ip, port)).toEqual({ decision, fetch });
  });

  it('an override wins over the reported policy; port not listed is transparent/override', () => {
    const { registry } = makeRegistry();
    registry.register(reg({ policy: P_8080 }));
    registry.setOverride('i1', parsePolicyString('443:pp', false));
    expect(registry.decide('198.18.0.1', 443)).toEqual({
      decision: { kind: 'proxy', instanceId: 'i1', reason: 'override' },
      fetch: null,
    });
    expect(registry.decide('198.18.0.1', 8080)).toEqual({
      decision: { kind: 'transparent', instanceId: 'i1', reason: 'override' },
      fetch: null,
    });
  });

  it('with an override and an unknown policy no fetch is asked for', () => {
    const { registry } = makeRegistry();
    registry.register(reg());
    registry.setOverride('i1', parsePolicyString('', false));
    expect(registry.decide('198.18.0.1', 80).fetch).toBeNull();
  });

  it('follows record changes (no stale cached decisions)', () => {
    const { registry } = makeRegistry();
    registry.register(reg({ composeHash: H1 }));
    expect(registry.decide('198.18.0.1', 8080).decision.reason).toBe('policy_unknown');
    registry.markFetch('i1', H1, true);
    expect(registry.decide('198.18.0.1', 8080).decision.reason).toBe('fetch_failed');
    registry.learnPolicy('i1', H1, P_8080);
    expect(registry.decide('198.18.0.1', 8080).decision.kind).toBe('proxy');
    registry.setOverride('i1', parsePolicyString('', true));
    expect(registry.decide('198.18.0.1', 8080).decision).toMatchObject({ kind: 'refuse', reason: 'port_not_allowed' });
  });

  it('a learned policy invalidated by a new compose hash refuses every port again, and asks for a fetch', () => {
    const { registry } = makeRegistry();
    registry.register(reg({ composeHash: H1 }));
    registry.learnPolicy('i1', H1, P_8080);
    expect(registry.decide('198.18.0.1', 443).decision.kind).toBe('transparent');
    const { fetchNeeded } = registry.register(reg({ composeHash: H2 }));
    expect(fetchNeeded).toBe(true);
    expect(registry.decide('198.18.0.1', 443)).toEqual({ decision: { kind: 'refuse', instanceId: 'i1', reason: 'policy_unknown' }, fetch: 'i1' });
  });

  it('a policy learned before the agent\'s hash stopped being trusted no longer decides', () => {
    const trusting = makeRegistry({ trustAgentComposeHash: true }).registry;
    trusting.register(reg());
    const learned = trusting.learnPolicy('i1', H1, P_8080) as NonNullable<ReturnType<Registry['learnPolicy']>>;
    const { registry } = makeRegistry();
    registry.load([learned]);
    expect(registry.decide('198.18.0.1', 8080).decision).toEqual({ kind: 'refuse', instanceId: 'i1', reason: 'policy_unattested' });
    expect(registry.fetchWanted('i1')).toBe(false);
  });

  it('agrees with a reference decision for small (inline) and large policies, any port', () => {
    const { registry } = makeRegistry();
    let seed = 7;
    const rnd = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return seed % n;
    };
    const policies = Array.from({ length: 40 }, (_, i) => {
      const count = i % 9; // 0..8 ports: both sides of the inline limit
      const items = new Set<number>();
      while (items.size < count) items.add(1 + rnd(20));
      return parsePolicyString([...items].map((p) => (rnd(2) === 1 ? `${p}:pp` : `${p}`)).join(','), rnd(2) === 1);
    });
    policies.forEach((policy, i) => {
      registry.register(reg({ instanceId: `p${i}`, ip: `198.18.1.${i + 1}`, policy }));
    });
    policies.forEach((policy, i) => {
      for (const port of [0, -1, 65536, 70000, NaN, ...Array.from({ length: 22 }, (_, p) => p)]) {
        const rule = policy.ports.get(port);
        const kind = rule !== undefined ? (rule.pp ? 'proxy' : 'transparent') : policy.restrictMode ? 'refuse' : 'transparent';
        expect(registry.decide(`198.18.1.${i + 1}`, port).decision.kind, `p${i} port ${port}`).toBe(kind);
      }
    });
  });

  it('returns the same frozen result object for repeated lookups (no allocation on the hot path)', () => {
    const registry = setup();
    const a = registry.decide('198.18.0.1', 8080);
    expect(registry.decide('198.18.0.1', 8080)).toBe(a);
    expect(Object.isFrozen(a)).toBe(true);
    expect(Object.isFrozen(a.decision)).toBe(true);
    expect(registry.decide('198.18.9.9', 1)).toBe(registry.decide('198.18.9.8', 2));
  });
});

describe('Registry entries and their subscription', () => {
  function watch(registry: Registry): EntryChange[] {
    const seen: EntryChange[] = [];
    registry.subscribeEntries((c) => seen.push(c));
    return seen;
  }

  it('one entry per instance, from the same data decide() reads', () => {
    const { registry } = makeRegistry();
    registry.register(reg({ policy: P_RESTRICT }));
    registry.register(reg({ instanceId: 'i2', ip: 'fd00::2', composeHash: H1 }));
    const byId = new Map(registry.entries().map((e) => [e.instanceId, e]));
    expect(byId.get('i1')).toEqual({
      instanceId: 'i1',
      ip: '198.18.0.1',
      refuseAll: null,
      restrictMode: true,
      ports: new Map([[8080, true], [22, false]]),
      source: 'policy',
    });
    expect(byId.get('i2')).toMatchObject({ ip: 'fd00::2', refuseAll: 'policy_unknown', source: null });
    expect(Object.isFrozen(byId.get('i1'))).toBe(true);
  });

  it('reports every change: registration, fetch failure, learned policy, override, address move, removal', () => {
    const { registry } = makeRegistry();
    const seen = watch(registry);
    registry.register(reg({ composeHash: H1 }));
    registry.markFetch('i1', H1, true);
    registry.learnPolicy('i1', H1, P_8080);
    registry.setOverride('i1', P_RESTRICT);
    registry.register(reg({ composeHash: H1, ip: '198.18.0.9' }));
    registry.remove('i1');
    expect(seen.map((c) => [c.entry?.refuseAll ?? null, c.entry?.source ?? null, c.entry?.ip ?? null, c.previous?.ip ?? null])).toEqual([
      ['policy_unknown', null, '198.18.0.1', null],
      ['fetch_failed', null, '198.18.0.1', '198.18.0.1'],
      [null, 'policy', '198.18.0.1', '198.18.0.1'],
      [null, 'override', '198.18.0.1', '198.18.0.1'],
      [null, 'override', '198.18.0.9', '198.18.0.1'],
      [null, null, null, '198.18.0.9'],
    ]);
  });

  it('a record change that leaves the entry alone is not reported', () => {
    const { registry, tick } = makeRegistry();
    registry.register(reg({ policy: P_8080 }));
    const seen = watch(registry);
    tick();
    registry.register(reg({ appId: 'other-app' })); // cached policy kept: same decisions
    registry.markFetch('i1', null, false);
    expect(seen).toEqual([]);
  });

  it('markFetch ignores a result for another compose hash (re-registered meanwhile)', () => {
    const { registry } = makeRegistry();
    registry.register(reg({ composeHash: H2 }));
    registry.markFetch('i1', H1, true);
    expect(registry.entry('i1')?.refuseAll).toBe('policy_unknown');
    registry.markFetch('gone', H1, true);
    expect(registry.entry('gone')).toBeUndefined();
  });

  it('a new registration forgets an earlier failed fetch (its own fetch has not failed yet)', () => {
    const { registry } = makeRegistry();
    registry.register(reg({ composeHash: H1 }));
    registry.markFetch('i1', H1, true);
    registry.register(reg({ composeHash: H1 }));
    expect(registry.entry('i1')?.refuseAll).toBe('policy_unknown');
  });
});

describe('Registry address rule', () => {
  const host = [
    { address: '198.18.2.1', prefix: 24 },
    { address: '127.0.0.1', prefix: 8 },
    { address: '::1', prefix: 128 },
    { address: 'fd00:18:2::1', prefix: 64 },
  ];
  function withRule(allowLoopback: boolean): Registry {
    return new Registry({ logger: pino({ level: 'silent' }), addressRule: { allowLoopback, hostAddresses: () => host } });
  }

  it.each([
    ['0.0.0.0', /unicast/],
    ['0.1.2.3', /unicast/],
    ['255.255.255.255', /unicast/],
    ['240.0.0.1', /unicast/],
    ['224.0.0.1', /unicast/],
    ['239.255.255.250', /unicast/],
    ['::', /unicast/],
    ['ff02::1', /unicast/],
    ['fe80::1', /unicast/],
    ['127.0.0.1', /local_backends/],
    ['127.9.9.9', /local_backends/],
    ['::1', /local_backends/],
    ['::ffff:127.0.0.1', /local_backends/],
    ['198.18.2.1', /address of this host/],
    ['fd00:18:2::1', /address of this host/],
    ['198.18.2.255', /broadcast address of this host's network 198.18.2.1\/24/],
  ])('refuses %s', (ip, why) => {
    const registry = withRule(false);
    let err: { code?: string; field?: string; message?: string } = {};
    try {
      registry.register(reg({ ip }));
    } catch (e) {
      err = e as typeof err;
    }
    expect(err).toMatchObject({ code: 'ERR_INVALID_REGISTRATION', field: 'ip' });
    expect(err.message).toMatch(why);
    expect(registry.size).toBe(0);
  });

  it.each(['198.18.2.2', '198.18.2.254', '198.18.3.255', '169.254.0.5', 'fd00:18:2::2', '10.0.0.0'])('accepts the unicast host %s', (ip) => {
    expect(withRule(false).register(reg({ ip })).record.ip).toBe(ip);
  });

  it('loopback instances are accepted with local_backends, the host\'s loopback addresses included', () => {
    const registry = withRule(true);
    expect(registry.register(reg({ ip: '127.0.0.1' })).record.ip).toBe('127.0.0.1');
    expect(registry.register(reg({ instanceId: 'i2', ip: '::1' })).record.ip).toBe('::1');
    expect(() => registry.register(reg({ instanceId: 'i3', ip: '198.18.2.1' }))).toThrow(/address of this host/);
  });
});
