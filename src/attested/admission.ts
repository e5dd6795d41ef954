// Whether an attested registration may change the registry, given what it holds. Pure. The rule
// (README, "Attested self-registration"): a registration never takes an address from another
// instance, never changes an instance's app, and moves an instance to a new address only when
// the operator allowed moves; everything else is refused with 409 and changes nothing.
import type { InstanceRecord } from '../registry/types.js';
import { AttestedRejection } from './errors.js';

export interface AdmissionInput {
  readonly instanceId: string;
  readonly appId: string;
  /** Where the instance would be registered (normalised). */
  readonly address: string;
  /** The record registered under instanceId, if any. */
  readonly current: InstanceRecord | undefined;
  /** The record registered at address, if any. */
  readonly holder: InstanceRecord | undefined;
  /** [registry.attested] allow_address_change. */
  readonly allowAddressChange: boolean;
}

export interface Admission {
  /** The address the instance leaves (and stops being decided at), or null. */
  readonly movedFrom: string | null;
  readonly reregistration: boolean;
}

/** Throws an AttestedRejection (409) when the registration must not be applied. */
export function admit(input: AdmissionInput): Admission {
  const { instanceId, appId, address, current, holder } = input;
  if (current !== undefined && current.appId !== appId) {
    throw new AttestedRejection(
      'instance_app_conflict',
      `instance ${instanceId} is registered to app ${current.appId}, and this certificate says app ${appId}; ` +
        `nothing changed (an operator can remove the old record: tproxy-interceptor instances remove ${instanceId})`,
    );
  }
  if (holder !== undefined && holder.instanceId !== instanceId) {
    throw new AttestedRejection(
      'address_in_use',
      `address ${address} is registered to instance ${holder.instanceId}; nothing changed ` +
        `(if that instance is gone, an operator removes it: tproxy-interceptor instances remove ${holder.instanceId})`,
    );
  }
  if (current !== undefined && current.ip !== address && !input.allowAddressChange) {
    throw new AttestedRejection(
      'instance_address_conflict',
      `instance ${instanceId} is registered at ${current.ip}, and this registration comes from ${address}; nothing changed ` +
        `(an operator confirms the move by removing the old record: tproxy-interceptor instances remove ${instanceId}, ` +
        'or allows moves with registry.attested.allow_address_change = true)',
    );
  }
  return {
    movedFrom: current !== undefined && current.ip !== address ? current.ip : null,
    reregistration: current !== undefined,
  };
}
