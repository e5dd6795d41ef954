import { describe, expect, it } from 'vitest';
import {
  deserializeInstance,
  deserializePolicy,
  formatPolicy,
  makePolicy,
  normalizeIp,
  parsePolicyString,
  serializeInstance,
  serializePolicy,
} from '../../../src/registry/policy.js';
import type { InstanceRecord } from '../../../src/registry/types.js';

const HASH = 'a'.repeat(64);

function entries(p: { ports: ReadonlyMap<number, { pp: boolean }> }): [number, boolean][] {
  return [...p.ports].map(([port, r]) => [port, r.pp] as [number, boolean]).sort((a, b) => a[0] - b[0]);
}


describe('parsePolicyString', () => {
  it('parses :pp, bare and :nopp items', () => {
    const p = parsePolicyString('8080:pp,8081,443:nopp', false);
    expect(entries(p)).toEqual([
      [443, false],
      [8080, true],
      [8081, false],
    ]);
    expect(p.restrictMode).toBe(false);
  });

  it('tolerates whitespace around items and flags', () => {
    expect(entries(parsePolicyString(' 8080 : PP , 22 ', true))).toEqual([
      [22, false],
      [8080, true],
    ]);
  });

  it('"" is a reported-empty policy, carrying the restrict flag', () => {
    const p = parsePolicyString('', true);
    expect(p.ports.size).toBe(0);
    expect(p.restrictMode).toBe(true);
  });

  it.each([
    ['0', '0'],
    ['65536', '65536'],
    ['80,abc', 'abc'],
    ['80:proxy', '80:proxy'],
    ['80,,81', ''],
    ['80,', ''],
    ['-1', '-1'],
    ['8080.5', '8080.5'],
    ['80,80:pp', '80:pp'],
  ])('rejects %j naming the bad item', (text, item) => {
    let err: unknown;
    try {
      parsePolicyString(text, false);
    } catch (e) {
      err = e;
    }
    expect(err).toMatchObject({ code: 'ERR_POLICY_SYNTAX', item });
  });
});

describe('serializePolicy / deserializePolicy / formatPolicy', () => {
  it('round-trips, ports sorted', () => {
    const p = parsePolicyString('8081,443:pp,8080:pp', true);
    const json = serializePolicy(p);
    expect(json).toEqual({
      ports: [
        { port: 443, pp: true },
        { port: 8080, pp: true },
        { port: 8081, pp: false },
      ],
      restrict_mode: true,
    });
    const back = deserializePolicy(JSON.parse(JSON.stringify(json)));
    expect(entries(back)).toEqual(entries(p));
    expect(back.restrictMode).toBe(true);
  });

  it('formats as the CLI syntax', () => {
    expect(formatPolicy(parsePolicyString('8081,443:pp,8080:pp', false))).toBe('443:pp,8080:pp,8081');
    expect(formatPolicy(makePolicy([], false))).toBe('');
  });

  it.each([
    [null, 'policy'],
    [{ ports: [] }, 'policy.restrict_mode'],
    [{ ports: {}, restrict_mode: false }, 'policy.ports'],
    [{ ports: [{ port: 65536, pp: false }], restrict_mode: false }, 'policy.ports[0].port'],
    [{ ports: [{ port: 80 }], restrict_mode: false }, 'policy.ports[0].pp'],
    [{ ports: [{ port: 80, pp: true }, { port: 80, pp: true }], restrict_mode: false }, 'policy.ports[1].port'],
  ])('deserializePolicy is strict: %j', (json, field) => {
    expect(() => deserializePolicy(json)).toThrowError(expect.objectContaining({ code: 'ERR_POLICY_INVALID', field }));
  });
});

describe('serializeInstance / deserializeInstance', () => {
  const record: InstanceRecord = {
    instanceId: 'inst-1',
    appId: 'app.1',
    ip: 'fd00::1',
    composeHash: HASH,
    reportedPolicy: parsePolicyString('8080:pp', false),
    policySource: 'agent',
    policyComposeHash: HASH,
    override: parsePolicyString('22', true),
    registeredAt: 1000,
    updatedAt: 2000,
  };

  it('uses snake_case keys and round-trips', () => {
    const json = serializeInstance(record);
    expect(json).toEqual({
      instance_id: 'inst-1',
      app_id: 'app.1',
      ip: 'fd00::1',
      compose_hash: HASH,
      reported_policy: { ports: [{ port: 8080, pp: true }], restrict_mode: false },
      policy_source: 'agent',
      policy_compose_hash: HASH,
      override: { ports: [{ port: 22, pp: false }], restrict_mode: true },
      registered_at: 1000,
      updated_at: 2000,
    });
    const back = deserializeInstance(JSON.parse(JSON.stringify(json)));
    expect(serializeInstance(back)).toEqual(json);
    expect(Object.isFrozen(back)).toBe(true);
  });

  it('loads records written before every unknown policy failed closed (restricted, restrict_requested are ignored)', () => {
    const json = { ...serializeInstance(record), restricted: true, restrict_requested: false };
    const back = deserializeInstance(json);
    expect(serializeInstance(back)).toEqual(serializeInstance(record));
    expect(back).not.toHaveProperty('restricted');
  });

  it.each([
    ['instance_id', 'bad id!'],
    ['instance_id', 7],
    ['app_id', ''],
    ['ip', '10.0.0.256'],
    ['ip', 'FD00::1'],
    ['compose_hash', 'xyz'],
    ['policy_source', 'cli'],
    ['policy_compose_hash', 'A'.repeat(64)],
    ['restricted', 'yes'],
    ['restrict_requested', 1],
    ['registered_at', -1],
    ['updated_at', null],
  ])('rejects a bad %s (%j) naming the field', (field, value) => {
    const json = { ...serializeInstance(record), [field]: value };
    expect(() => deserializeInstance(json)).toThrowError(expect.objectContaining({ code: 'ERR_STORE_CORRUPT', field }));
  });

  it('names the nested field of a bad policy', () => {
    const json = { ...serializeInstance(record), override: { ports: [{ port: 0, pp: true }], restrict_mode: false } };
    expect(() => deserializeInstance(json)).toThrowError(
      expect.objectContaining({ code: 'ERR_STORE_CORRUPT', field: 'override.ports[0].port' }),
    );
  });

  it('rejects a policy_source inconsistent with reported_policy', () => {
    const json = { ...serializeInstance(record), reported_policy: null };
    expect(() => deserializeInstance(json)).toThrowError(expect.objectContaining({ code: 'ERR_STORE_CORRUPT' }));
  });

  it('rejects a non-object', () => {
    expect(() => deserializeInstance('x')).toThrowError(expect.objectContaining({ code: 'ERR_STORE_CORRUPT' }));
  });
});

describe('normalizeIp', () => {
  it.each([
    ['198.18.0.1', '198.18.0.1'],
    ['FD00:0:0:0:0:0:0:1', 'fd00::1'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
    ['::ffff:198.18.0.1', '198.18.0.1'],
    ['::FFFF:c612:0001', '198.18.0.1'],
    ['::1', '::1'],
  ])('%s -> %s', (input, out) => {
    expect(normalizeIp(input)).toBe(out);
  });

  it.each(['', 'localhost', '1.2.3', '01.2.3.4', '256.1.1.1', '1.2.3.4:80', 'fe80::1%eth0', '[::1]', 'fd00::/8', ':::'])(
    'rejects %j',
    (input) => {
      expect(normalizeIp(input)).toBeNull();
    },
  );
});
