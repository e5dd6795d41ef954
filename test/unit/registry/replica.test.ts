// A replica fed only by subscribe() (through the serialized form, as over IPC) decides exactly
// like its primary, through every kind of change, undos included.
import { describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { Registry } from '../../../src/registry/registry.js';
import { parsePolicyString, serializeInstance, deserializeInstance } from '../../../src/registry/policy.js';
import type { InstanceRecord } from '../../../src/registry/types.js';

/** The instance decide() finds at an address (what the address index holds). */
function holderOf(r: Registry, ip: string): InstanceRecord | undefined {
  const id = r.decide(ip, 1).decision.instanceId;
  return id === null ? undefined : r.get(id);
}

const H1 = 'a'.repeat(64);
const H2 = 'b'.repeat(64);

function pair(): { primary: Registry; replica: Registry; changes: number } {
  const logger = pino({ level: 'silent' });
  const primary = new Registry({ logger });
  const replica = new Registry({ logger });
  const state = { primary, replica, changes: 0 };
  primary.subscribe((id, record) => {
    state.changes++;
    const wire = JSON.parse(JSON.stringify(record ? serializeInstance(record) : null)) as unknown;
    replica.replicate(id, wire === null ? undefined : deserializeInstance(wire));
  });
  return state;
}

function expectSameDecisions(a: Registry, b: Registry, ips: string[]): void {
  for (const ip of ips) {
    for (const port of [22, 443, 8080, 8081, 9000]) {
      expect(b.decide(ip, port).decision, `${ip}:${port}`).toEqual(a.decide(ip, port).decision);
    }
  }
  expect(b.list().map(serializeInstance)).toEqual(a.list().map(serializeInstance));
}

describe('registry replica', () => {
  it('follows registrations, overrides, learned policies, ip moves and removals', () => {
    const s = pair();
    const ips = ['198.18.2.2', '198.18.2.3', 'fd00:18:2::2'];
    s.primary.register({ instanceId: 'a', appId: 'app', ip: '198.18.2.2', composeHash: H1, policy: parsePolicyString('8080:pp,8081', false) });
    s.primary.register({ instanceId: 'b', appId: 'app', ip: 'fd00:18:2::2', composeHash: H1, restrict: true });
    expectSameDecisions(s.primary, s.replica, ips);
    s.primary.setOverride('a', parsePolicyString('443:pp', true));
    s.primary.learnPolicy('b', H1, parsePolicyString('9000:pp', false));
    expectSameDecisions(s.primary, s.replica, ips);
    // A changed compose hash drops the learned policy; the instance moves to another ip.
    s.primary.register({ instanceId: 'b', appId: 'app', ip: '198.18.2.3', composeHash: H2 });
    expectSameDecisions(s.primary, s.replica, ips);
    expect(holderOf(s.replica, 'fd00:18:2::2')).toBeUndefined();
    s.primary.remove('a');
    expectSameDecisions(s.primary, s.replica, ips);
    expect(s.replica.size).toBe(1);
  });

  it('follows an undo (a store write that failed)', () => {
    const s = pair();
    const first = s.primary.register({ instanceId: 'a', appId: 'app', ip: '198.18.2.2', policy: parsePolicyString('8080:pp', false) });
    const second = s.primary.register({ instanceId: 'a', appId: 'app', ip: '198.18.2.2', policy: parsePolicyString('8080', false) });
    expect(s.replica.decide('198.18.2.2', 8080).decision.kind).toBe('transparent');
    s.primary.restore(second.record, first.record);
    expect(s.replica.decide('198.18.2.2', 8080).decision.kind).toBe('proxy');
    const removed = s.primary.remove('a')!;
    s.primary.restore(removed, removed);
    expectSameDecisions(s.primary, s.replica, ['198.18.2.2']);
  });

  it('stops notifying after unsubscribe', () => {
    const s = pair();
    const logger = pino({ level: 'silent' });
    const other = new Registry({ logger });
    let calls = 0;
    const off = other.subscribe(() => calls++);
    other.register({ instanceId: 'x', appId: 'app', ip: '198.18.2.9' });
    off();
    other.remove('x');
    expect(calls).toBe(1);
    expect(s.changes).toBe(0);
  });
});
