// RegisterCvm's JSON body, parsed as dstack's gateway parses it (prpc JSON of RegisterCvmRequest).
import { describe, expect, it } from 'vitest';
import { AttestedRejection } from '../../../src/attested/errors.js';
import { parseRegisterCvmBody } from '../../../src/attested/request.js';
import { serializePolicy } from '../../../src/registry/policy.js';

function parsed(body: unknown) {
  const r = parseRegisterCvmBody(typeof body === 'string' ? body : JSON.stringify(body));
  return { key: r.clientPublicKey, policy: r.portPolicy === null ? null : serializePolicy(r.portPolicy) };
}

function refused(body: unknown): AttestedRejection {
  try {
    parseRegisterCvmBody(typeof body === 'string' ? body : JSON.stringify(body));
  } catch (err) {
    expect(err).toBeInstanceOf(AttestedRejection);
    return err as AttestedRejection;
  }
  throw new Error('expected an AttestedRejection');
}

describe('parseRegisterCvmBody', () => {
  it("takes dstack's request as the guest sends it", () => {
    expect(parsed({ client_public_key: 'AAAA', port_policy: { ports: [{ port: 8080, pp: true }, { port: 443 }], restrict_mode: false } })).toEqual({
      key: 'AAAA',
      policy: { ports: [{ port: 443, pp: false }, { port: 8080, pp: true }], restrict_mode: false },
    });
  });

  it('port_policy absent or null: not reported; {} : reported empty', () => {
    expect(parsed({ client_public_key: 'k' }).policy).toBeNull();
    expect(parsed({ port_policy: null }).policy).toBeNull();
    expect(parsed({ port_policy: {} }).policy).toEqual({ ports: [], restrict_mode: false });
    expect(parsed({ port_policy: { ports: [], restrict_mode: true } }).policy).toEqual({ ports: [], restrict_mode: true });
  });

  it('client_public_key is optional; unknown keys are ignored (serde)', () => {
    expect(parsed({ future: 1, port_policy: { ports: [{ port: 1, pp: false, future: 2 }], other: 3 } })).toEqual({ key: null, policy: { ports: [{ port: 1, pp: false }], restrict_mode: false } });
  });

  it('a port listed twice: the last entry wins (BTreeMap collect upstream)', () => {
    expect(parsed({ port_policy: { ports: [{ port: 80, pp: true }, { port: 80, pp: false }] } }).policy?.ports).toEqual([{ port: 80, pp: false }]);
  });

  it('the body is not JSON', () => {
    const err = refused('{"port_policy": ');
    expect(err.reason).toBe('body_not_json');
    expect(err.status).toBe(400);
    expect(refused('').reason).toBe('body_not_json');
  });

  it.each([
    ['[]', '(body)'],
    ['null', '(body)'],
    [{ client_public_key: 5 }, 'client_public_key'],
    [{ client_public_key: null }, 'client_public_key'],
    [{ port_policy: [] }, 'port_policy'],
    [{ port_policy: 'open' }, 'port_policy'],
    [{ port_policy: { ports: null } }, 'port_policy.ports'],
    [{ port_policy: { ports: {} } }, 'port_policy.ports'],
    [{ port_policy: { restrict_mode: 'yes' } }, 'port_policy.restrict_mode'],
    [{ port_policy: { restrict_mode: null } }, 'port_policy.restrict_mode'],
    [{ port_policy: { ports: [8080] } }, 'port_policy.ports[0]'],
    [{ port_policy: { ports: [{ port: 80 }, { pp: true }] } }, 'port_policy.ports[1].port'],
    [{ port_policy: { ports: [{ port: 0 }] } }, 'port_policy.ports[0].port'],
    [{ port_policy: { ports: [{ port: 65536 }] } }, 'port_policy.ports[0].port'],
    [{ port_policy: { ports: [{ port: -1 }] } }, 'port_policy.ports[0].port'],
    [{ port_policy: { ports: [{ port: 80.5 }] } }, 'port_policy.ports[0].port'],
    [{ port_policy: { ports: [{ port: '8080' }] } }, 'port_policy.ports[0].port'],
    [{ port_policy: { ports: [{ port: 8080, pp: 'true' }] } }, 'port_policy.ports[0].pp'],
    [{ port_policy: { ports: [{ port: 8080, pp: null }] } }, 'port_policy.ports[0].pp'],
  ])('schema error %j names %s', (body, field) => {
    const err = refused(body);
    expect(err.reason).toBe('body_invalid');
    expect(err.code).toBe('ERR_ATTESTED_BODY_INVALID');
    expect(err.field).toBe(field);
    expect(err.message).toContain(field);
  });
});
