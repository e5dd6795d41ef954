// The conflict rule of attested registration: nothing is taken from another instance, nothing
// moves unless the operator allowed it.
import { describe, expect, it } from 'vitest';
import { admit, type AdmissionInput } from '../../../src/attested/admission.js';
import { AttestedRejection } from '../../../src/attested/errors.js';
import type { InstanceRecord } from '../../../src/registry/types.js';

function record(instanceId: string, appId: string, ip: string): InstanceRecord {
  return { instanceId, appId, ip, composeHash: null, reportedPolicy: null, policySource: null, policyComposeHash: null, restricted: false, override: null, registeredAt: 1, updatedAt: 1 };
}

const base: AdmissionInput = { instanceId: 'i1', appId: 'a1', address: '198.18.2.2', current: undefined, holder: undefined, allowAddressChange: false };

function refusal(input: AdmissionInput): AttestedRejection {
  try {
    admit(input);
  } catch (err) {
    expect(err).toBeInstanceOf(AttestedRejection);
    expect((err as AttestedRejection).status).toBe(409);
    return err as AttestedRejection;
  }
  throw new Error('expected a 409');
}

describe('admit', () => {
  it('a new instance at a free address', () => {
    expect(admit(base)).toEqual({ movedFrom: null, reregistration: false });
  });

  it('the same instance again, from the same address', () => {
    const r = record('i1', 'a1', '198.18.2.2');
    expect(admit({ ...base, current: r, holder: r })).toEqual({ movedFrom: null, reregistration: true });
  });

  it('an address held by another instance is never taken, even with moves allowed', () => {
    const other = record('i2', 'a1', '198.18.2.2');
    for (const allowAddressChange of [false, true]) {
      const err = refusal({ ...base, holder: other, allowAddressChange });
      expect(err.reason).toBe('address_in_use');
      expect(err.message).toContain('instances remove i2');
    }
  });

  it('an instance registered from a new address (a restart with a new IP) is refused by default', () => {
    const err = refusal({ ...base, address: '198.18.2.9', current: record('i1', 'a1', '198.18.2.2') });
    expect(err.reason).toBe('instance_address_conflict');
    expect(err.message).toContain('198.18.2.2');
    expect(err.message).toContain('allow_address_change');
  });

  it('with allow_address_change the instance moves, and says from where', () => {
    expect(admit({ ...base, address: '198.18.2.9', current: record('i1', 'a1', '198.18.2.2'), allowAddressChange: true })).toEqual({ movedFrom: '198.18.2.2', reregistration: true });
  });

  it('an instance id registered to another app is refused (as upstream)', () => {
    const r = record('i1', 'other-app', '198.18.2.2');
    expect(refusal({ ...base, current: r, holder: r, allowAddressChange: true }).reason).toBe('instance_app_conflict');
  });
});
