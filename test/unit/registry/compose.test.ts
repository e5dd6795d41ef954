import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { attestedPolicy, InfoResponseReader, PolicyFetchError, type InfoFacts } from '../../../src/registry/compose.js';
import type { PortPolicy } from '../../../src/registry/types.js';

const composeHash = (text: string | Buffer): string => createHash('sha256').update(text).digest('hex');

function readInfoResponse(body: Buffer | string): InfoFacts {
  const reader = new InfoResponseReader();
  reader.write(Buffer.from(body));
  return reader.end();
}

const policyFromInfoResponse = (body: Buffer | string, attested: string | null) => attestedPolicy(readInfoResponse(body), attested);

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

function infoBody(opts: { appCompose?: unknown; composeHash?: unknown; tcbInfo?: unknown; tcbComposeHash?: unknown; extra?: string } = {}): Buffer {
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

describe('attestedPolicy of an Info response', () => {
  const hash = composeHash(APP_COMPOSE);

  it('learns the policy attested by the registered hash', () => {
    const { policy, composeHash: h } = policyFromInfoResponse(infoBody(), hash);
    expect(h).toBe(hash);
    expect(entries(policy)).toEqual([
      [443, false],
      [8080, true],
    ]);
  });

  it("with no registered hash (trust_agent_compose_hash), the response's own compose_hash attests", () => {
    expect(policyFromInfoResponse(infoBody(), null).composeHash).toBe(hash);
  });

  it('normalises 0x-prefixed and uppercase hashes in the response', () => {
    expect(policyFromInfoResponse(infoBody({ composeHash: `0x${hash.toUpperCase()}` }), hash).composeHash).toBe(hash);
  });

  it('hashes the app_compose bytes as they are, non-ASCII and escapes included', () => {
    const appCompose = '{"manifest_version":2,"name":"é 😀 \\u0041","runner":"x",\n"port_policy":{"ports":[{"port":1,"pp":true}]}}';
    const h = composeHash(appCompose);
    expect(entries(policyFromInfoResponse(infoBody({ appCompose }), h).policy)).toEqual([[1, true]]);
  });

  it('app_compose that does not hash to the registered hash: permanent mismatch with both hashes', () => {
    const other = 'b'.repeat(64);
    let err: PolicyFetchError | undefined;
    try {
      policyFromInfoResponse(infoBody({ composeHash: other }), other);
    } catch (e) {
      err = e as PolicyFetchError;
    }
    expect(err).toMatchObject({ code: 'ERR_COMPOSE_HASH_MISMATCH', permanent: true, expectedHash: other, actualHash: hash });
  });

  it('the hash is checked before the schema: a forged, unparsable compose is a mismatch', () => {
    expect(codeOf(() => policyFromInfoResponse(infoBody({ appCompose: '{"port_policy": null}', composeHash: hash }), hash))).toEqual({
      code: 'ERR_COMPOSE_HASH_MISMATCH',
      permanent: true,
    });
  });

  it('response compose_hash differing from the registered one: mismatch', () => {
    expect(codeOf(() => policyFromInfoResponse(infoBody(), 'c'.repeat(64)))).toEqual({ code: 'ERR_COMPOSE_HASH_MISMATCH', permanent: true });
  });

  it('response compose_hash not matching its own app_compose: mismatch', () => {
    expect(codeOf(() => policyFromInfoResponse(infoBody({ composeHash: 'd'.repeat(64) }), null))).toEqual({
      code: 'ERR_COMPOSE_HASH_MISMATCH',
      permanent: true,
    });
  });

  it('tcb_info.compose_hash not matching app_compose: mismatch', () => {
    expect(codeOf(() => policyFromInfoResponse(infoBody({ tcbComposeHash: 'e'.repeat(64) }), hash))).toEqual({
      code: 'ERR_COMPOSE_HASH_MISMATCH',
      permanent: true,
    });
  });

  it('empty tcb_info (public_tcbinfo false): an open policy, as upstream', () => {
    const { policy, composeHash: h } = policyFromInfoResponse(infoBody({ tcbInfo: '' }), hash);
    expect(policy.ports.size).toBe(0);
    expect(policy.restrictMode).toBe(false);
    expect(h).toBe(hash);
  });

  it('empty tcb_info still checks the response hash against the registered one', () => {
    expect(codeOf(() => policyFromInfoResponse(infoBody({ tcbInfo: '' }), 'c'.repeat(64)))).toEqual({
      code: 'ERR_COMPOSE_HASH_MISMATCH',
      permanent: true,
    });
  });

  it('two app_compose keys in tcb_info: the last one counts (serde_json Value)', () => {
    const decoy = '{"manifest_version":2,"name":"d","runner":"x","port_policy":{"ports":[{"port":9,"pp":true}]}}';
    const tcbInfo = `{"app_compose": ${JSON.stringify(decoy)}, "app_compose": ${JSON.stringify(APP_COMPOSE)}}`;
    expect(entries(policyFromInfoResponse(infoBody({ tcbInfo }), hash).policy)).toEqual([
      [443, false],
      [8080, true],
    ]);
  });

  // Transient: the response does not decode (upstream's Info() call fails). Permanent: it
  // decodes, but what tcb_info carries cannot become a policy.
  it.each([
    ['not JSON', Buffer.from('<html>'), 'ERR_AGENT_BAD_RESPONSE', false],
    ['an array', Buffer.from('[]'), 'ERR_AGENT_BAD_RESPONSE', false],
    ['null', Buffer.from('null'), 'ERR_AGENT_BAD_RESPONSE', false],
    ['empty', Buffer.from(''), 'ERR_AGENT_BAD_RESPONSE', false],
    ['not UTF-8', Buffer.concat([Buffer.from('{"tcb_info": "'), Buffer.from([0xc3, 0x28]), Buffer.from('"}')]), 'ERR_AGENT_BAD_RESPONSE', false],
    ['deeply nested', Buffer.from(`${'['.repeat(100_000)}${']'.repeat(100_000)}`), 'ERR_AGENT_BAD_RESPONSE', false],
    ['with a malformed compose_hash', infoBody({ composeHash: 12 }), 'ERR_AGENT_BAD_RESPONSE', false],
    ['with a compose_hash that is not hex', infoBody({ composeHash: 'zz' }), 'ERR_AGENT_BAD_RESPONSE', false],
    ['with tcb_info a number', infoBody({ tcbInfo: 42 }), 'ERR_AGENT_BAD_RESPONSE', false],
    ['without tcb_info', infoBody({ tcbInfo: undefined }), 'ERR_AGENT_BAD_RESPONSE', false],
    ['with tcb_info twice', Buffer.from('{"tcb_info": "", "tcb_info": ""}'), 'ERR_AGENT_BAD_RESPONSE', false],
    ['with tcb_info not JSON', infoBody({ tcbInfo: '{oops' }), 'ERR_AGENT_TCB_INFO', true],
    ['with tcb_info a JSON array', infoBody({ tcbInfo: '[1]' }), 'ERR_AGENT_NO_APP_COMPOSE', true],
    ['with no app_compose', infoBody({ tcbInfo: '{"mrtd":"00"}' }), 'ERR_AGENT_NO_APP_COMPOSE', true],
    ['with app_compose an object', infoBody({ tcbInfo: '{"app_compose":{}}' }), 'ERR_AGENT_NO_APP_COMPOSE', true],
  ])('a response %s is %s', (_what, body, code, permanent) => {
    expect(codeOf(() => policyFromInfoResponse(body, hash))).toEqual({ code, permanent });
  });

  it('with neither a registered nor a reported compose hash there is nothing to check against (transient)', () => {
    expect(codeOf(() => policyFromInfoResponse(infoBody({ composeHash: undefined }), null))).toEqual({
      code: 'ERR_AGENT_BAD_RESPONSE',
      permanent: false,
    });
  });

  it.each([
    ['not JSON', 'not json', ''],
    ['with only a top-level ports array and no name', '{"ports":[{"port":8080,"pp":true}]}', 'manifest_version'],
    ['with pp "yes"', `{"manifest_version":2,"name":"w","runner":"x","port_policy":{"ports":[{"port":1,"pp":"yes"}]}}`, 'port_policy.ports[0].pp'],
  ])('app_compose that hashes correctly but is %s: permanent ERR_COMPOSE_INVALID naming the field', (_what, appCompose, field) => {
    let err: PolicyFetchError | undefined;
    try {
      policyFromInfoResponse(infoBody({ appCompose }), composeHash(appCompose));
    } catch (e) {
      err = e as PolicyFetchError;
    }
    expect(err).toMatchObject({ code: 'ERR_COMPOSE_INVALID', permanent: true, field });
    expect(err?.message).toContain(field);
  });
});

describe('InfoResponseReader', () => {
  it('reads the same facts however the body is cut', () => {
    const body = infoBody({ appCompose: APP_COMPOSE.replace('"web"', '"wéb 😀"') });
    const whole = readInfoResponse(body);
    for (const size of [1, 2, 3, 7, 64, 1000]) {
      const r = new InfoResponseReader();
      for (let at = 0; at < body.length; at += size) r.write(body.subarray(at, at + size));
      expect(r.end(), `chunks of ${size}`).toEqual(whole);
    }
  });

  it('a 40 MiB app_compose (80 MiB of response) is hashed and checked chunk by chunk, never held whole', () => {
    const line = '    command: ["sh", "-c", "echo \\"hi\\" && sleep 1"]\n';
    const yaml = `services:\n${line.repeat(Math.ceil((40 * 1024 * 1024) / line.length))}`;
    const appCompose = JSON.stringify({ manifest_version: 2, name: 'big', runner: 'docker-compose', docker_compose_file: yaml, port_policy: { ports: [{ port: 8080, pp: true }], restrict_mode: true } });
    const h = composeHash(appCompose);
    const body = Buffer.from(JSON.stringify({ compose_hash: h, tcb_info: JSON.stringify({ compose_hash: h, app_compose: appCompose }) }));
    expect(appCompose.length).toBeGreaterThan(40 * 1024 * 1024);
    const used = (): number => process.memoryUsage().heapUsed;
    const before = used();
    let peak = before;
    const r = new InfoResponseReader();
    for (let at = 0; at < body.length; at += 64 * 1024) {
      r.write(body.subarray(at, at + 64 * 1024));
      peak = Math.max(peak, used());
    }
    const facts = r.end();
    expect(facts.appCompose?.sha256).toBe(h);
    expect(entries(facts.appCompose?.policy as PortPolicy)).toEqual([[8080, true]]);
    // Holding the compose once would take 40 MiB of heap on top; the reader's own working set
    // is a chunk per level and the garbage the young generation has not collected yet.
    expect(peak - before).toBeLessThan(40 * 1024 * 1024);
  });
});
