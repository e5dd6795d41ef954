import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { composeHash, PolicyFetchError, policyFromAppCompose, policyFromInfoResponse } from '../../../src/registry/compose.js';
import type { PortPolicy } from '../../../src/registry/types.js';

const noWarn = (): void => {};

function entries(p: PortPolicy): [number, boolean][] {
  return [...p.ports].map(([port, r]) => [port, r.pp] as [number, boolean]).sort((a, b) => a[0] - b[0]);
}

/** app-compose.json as dstack writes it (byte-exact text matters: it is hashed as is). */
const APP_COMPOSE = `{
  "manifest_version": 2,
  "name": "web",
  "runner": "docker-compose",
  "docker_compose_file": "services:\\n  web:\\n    image: nginx\\n",
  "public_tcbinfo": true,
  "port_policy": {"ports": [{"port": 8080, "pp": true}, {"port": 443, "pp": false}], "restrict_mode": false}
}`;

function infoBody(opts: { appCompose?: unknown; composeHash?: unknown; tcbInfo?: unknown; tcbComposeHash?: unknown } = {}): Buffer {
  const appCompose = opts.appCompose ?? APP_COMPOSE;
  const hash = typeof appCompose === 'string' ? composeHash(appCompose) : 'f'.repeat(64);
  const tcbInfo =
    'tcbInfo' in opts
      ? opts.tcbInfo
      : JSON.stringify({
          mrtd: '00'.repeat(48),
          rtmr0: '11'.repeat(48),
          rtmr1: '22'.repeat(48),
          rtmr2: '33'.repeat(48),
          rtmr3: '44'.repeat(48),
          compose_hash: 'tcbComposeHash' in opts ? opts.tcbComposeHash : hash,
          event_log: [],
          app_compose: appCompose,
        });
  return Buffer.from(
    JSON.stringify({
      app_id: 'ab'.repeat(20),
      instance_id: 'cd'.repeat(20),
      compose_hash: 'composeHash' in opts ? opts.composeHash : hash,
      app_name: 'web',
      device_id: 'ef'.repeat(32),
      tcb_info: tcbInfo,
    }),
  );
}

function codeOf(fn: () => unknown): { code: string; permanent: boolean } | undefined {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(PolicyFetchError);
    const e = err as PolicyFetchError;
    return { code: e.code, permanent: e.permanent };
  }
  return undefined;
}

describe('composeHash', () => {
  it('is SHA-256 of the raw bytes, lowercase hex, no normalisation', () => {
    const expected = createHash('sha256').update(Buffer.from(APP_COMPOSE, 'utf8')).digest('hex');
    expect(composeHash(APP_COMPOSE)).toBe(expected);
    expect(composeHash(Buffer.from(APP_COMPOSE))).toBe(expected);
    expect(composeHash(`${APP_COMPOSE}\n`)).not.toBe(expected);
    expect(composeHash('é')).toBe(createHash('sha256').update(Buffer.from([0xc3, 0xa9])).digest('hex'));
  });
});

describe('policyFromAppCompose', () => {
  it('reads the merged port_policy form', () => {
    const p = policyFromAppCompose(APP_COMPOSE, noWarn);
    expect(entries(p)).toEqual([
      [443, false],
      [8080, true],
    ]);
    expect(p.restrictMode).toBe(false);
  });

  it('reads restrict_mode from port_policy', () => {
    const p = policyFromAppCompose('{"port_policy":{"ports":[{"port":22}],"restrict_mode":true}}', noWarn);
    expect(p.restrictMode).toBe(true);
    expect(entries(p)).toEqual([[22, false]]);
  });

  it('reads the earlier top-level ports form (restrict_mode false)', () => {
    const p = policyFromAppCompose('{"ports":[{"port":8080,"pp":true}],"restrict_mode":true}', noWarn);
    expect(entries(p)).toEqual([[8080, true]]);
    expect(p.restrictMode).toBe(false);
  });

  it('port_policy wins over top-level ports', () => {
    const p = policyFromAppCompose('{"ports":[{"port":1,"pp":true}],"port_policy":{"ports":[{"port":2,"pp":true}]}}', noWarn);
    expect(entries(p)).toEqual([[2, true]]);
  });

  it('neither form: empty policy', () => {
    const p = policyFromAppCompose('{"name":"x"}', noWarn);
    expect(p.ports.size).toBe(0);
    expect(p.restrictMode).toBe(false);
  });

  it('skips bad entries with warnings', () => {
    const warnings: string[] = [];
    const p = policyFromAppCompose(
      '{"port_policy":{"ports":[{"port":"8080"},{"port":8081,"pp":"yes"},{"port":65536},{"port":9000,"pp":true}]}}',
      (m) => warnings.push(m),
    );
    expect(entries(p)).toEqual([[9000, true]]);
    expect(warnings).toHaveLength(3);
  });

  it.each(['not json', '[]', '"x"', 'null', '42'])('%j is ERR_COMPOSE_INVALID (permanent)', (text) => {
    expect(codeOf(() => policyFromAppCompose(text, noWarn))).toEqual({ code: 'ERR_COMPOSE_INVALID', permanent: true });
  });
});

describe('policyFromInfoResponse', () => {
  const hash = composeHash(APP_COMPOSE);

  it('learns the policy attested by the response compose_hash', () => {
    const { policy, composeHash: h } = policyFromInfoResponse(infoBody(), { composeHash: null }, noWarn);
    expect(h).toBe(hash);
    expect(entries(policy)).toEqual([
      [443, false],
      [8080, true],
    ]);
  });

  it('learns the policy attested by the registered hash', () => {
    expect(policyFromInfoResponse(infoBody(), { composeHash: hash }, noWarn).composeHash).toBe(hash);
  });

  it('normalises 0x-prefixed and uppercase hashes', () => {
    const body = infoBody({ composeHash: `0x${hash.toUpperCase()}` });
    expect(policyFromInfoResponse(body, { composeHash: hash.toUpperCase() }, noWarn).composeHash).toBe(hash);
  });

  it('app_compose that does not hash to the registered hash: permanent mismatch with both hashes', () => {
    const other = 'b'.repeat(64);
    let err: PolicyFetchError | undefined;
    try {
      policyFromInfoResponse(infoBody({ composeHash: other }), { composeHash: other }, noWarn);
    } catch (e) {
      err = e as PolicyFetchError;
    }
    expect(err).toMatchObject({ code: 'ERR_COMPOSE_HASH_MISMATCH', permanent: true, expectedHash: other, actualHash: hash });
  });

  it('response compose_hash differing from the registered one: mismatch', () => {
    expect(codeOf(() => policyFromInfoResponse(infoBody(), { composeHash: 'c'.repeat(64) }, noWarn))).toEqual({
      code: 'ERR_COMPOSE_HASH_MISMATCH',
      permanent: true,
    });
  });

  it('response compose_hash not matching its own app_compose: mismatch', () => {
    expect(codeOf(() => policyFromInfoResponse(infoBody({ composeHash: 'd'.repeat(64) }), { composeHash: null }, noWarn))).toEqual({
      code: 'ERR_COMPOSE_HASH_MISMATCH',
      permanent: true,
    });
  });

  it('tcb_info.compose_hash not matching app_compose: mismatch', () => {
    expect(
      codeOf(() => policyFromInfoResponse(infoBody({ tcbComposeHash: 'e'.repeat(64) }), { composeHash: hash }, noWarn)),
    ).toEqual({ code: 'ERR_COMPOSE_HASH_MISMATCH', permanent: true });
  });

  it('empty tcb_info (public_tcbinfo false): empty policy', () => {
    const { policy, composeHash: h } = policyFromInfoResponse(infoBody({ tcbInfo: '' }), { composeHash: null }, noWarn);
    expect(policy.ports.size).toBe(0);
    expect(policy.restrictMode).toBe(false);
    expect(h).toBe(hash);
  });

  it('empty tcb_info still checks the response hash against the registered one', () => {
    expect(
      codeOf(() => policyFromInfoResponse(infoBody({ tcbInfo: '' }), { composeHash: 'c'.repeat(64) }, noWarn)),
    ).toEqual({ code: 'ERR_COMPOSE_HASH_MISMATCH', permanent: true });
  });

  it.each([
    ['not JSON', Buffer.from('<html>'), 'ERR_AGENT_BAD_RESPONSE', false],
    ['an array', Buffer.from('[]'), 'ERR_AGENT_BAD_RESPONSE', false],
    ['null', Buffer.from('null'), 'ERR_AGENT_BAD_RESPONSE', false],
    ['deeply nested', Buffer.from(`${'['.repeat(100_000)}${']'.repeat(100_000)}`), 'ERR_AGENT_BAD_RESPONSE', false],
    ['without any compose hash', infoBody({ composeHash: undefined }), 'ERR_AGENT_BAD_RESPONSE', false],
    ['with a malformed compose_hash', infoBody({ composeHash: 12 }), 'ERR_AGENT_BAD_RESPONSE', false],
    ['with tcb_info a number', infoBody({ tcbInfo: 42 }), 'ERR_AGENT_TCB_INFO', true],
    ['without tcb_info', infoBody({ tcbInfo: undefined }), 'ERR_AGENT_TCB_INFO', true],
    ['with tcb_info not JSON', infoBody({ tcbInfo: '{oops' }), 'ERR_AGENT_TCB_INFO', true],
    ['with tcb_info a JSON array', infoBody({ tcbInfo: '[1]' }), 'ERR_AGENT_TCB_INFO', true],
    ['with no app_compose', infoBody({ tcbInfo: '{"mrtd":"00"}' }), 'ERR_AGENT_NO_APP_COMPOSE', true],
    ['with app_compose an object', infoBody({ tcbInfo: '{"app_compose":{}}' }), 'ERR_AGENT_NO_APP_COMPOSE', true],
  ])('a response %s is %s', (_what, body, code, permanent) => {
    expect(codeOf(() => policyFromInfoResponse(body, { composeHash: null }, noWarn))).toEqual({ code, permanent });
  });

  it('app_compose that hashes correctly but is not JSON: permanent ERR_COMPOSE_INVALID', () => {
    expect(codeOf(() => policyFromInfoResponse(infoBody({ appCompose: 'not json' }), { composeHash: null }, noWarn))).toEqual({
      code: 'ERR_COMPOSE_INVALID',
      permanent: true,
    });
  });

  it('wrong types inside app_compose are skipped with warnings, not fatal', () => {
    const appCompose = '{"port_policy":{"ports":[{"port":"8080"},{"port":8081,"pp":"yes"},{"port":8082,"pp":true}]}}';
    const warnings: string[] = [];
    const { policy } = policyFromInfoResponse(infoBody({ appCompose }), { composeHash: composeHash(appCompose) }, (m) =>
      warnings.push(m),
    );
    expect(entries(policy)).toEqual([[8082, true]]);
    expect(warnings).toHaveLength(2);
  });
});
