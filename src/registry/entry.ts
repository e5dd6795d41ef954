// From an instance record (and what the fetcher knows about it) to the DecisionEntry every
// decision reads: the semantics of dstack's gateway (gateway/src/proxy/port_policy.rs,
// is_port_allowed and should_send_pp), plus our rule that only an attested compose hash makes a
// learned policy count. Pure.
import type { DecisionEntry, InstanceRecord, PortPolicy } from './types.js';

export interface EntryContext {
  /** The last policy fetch for this record failed (and none has succeeded since). */
  readonly fetchFailed: boolean;
  /** registry.trust_agent_compose_hash: a policy learned without an attested hash counts. */
  readonly trustAgentComposeHash: boolean;
}

const NO_PORTS: ReadonlyMap<number, boolean> = new Map();

/**
 * The policy learned or reported for this record that may decide, or null. Reported at
 * registration: the operator said so. Learned from the agent: only when its app_compose hashed
 * to the compose hash the registration attested (or, with the switch, to the agent's own).
 */
export function trustedReportedPolicy(record: InstanceRecord, trustAgentComposeHash: boolean): PortPolicy | null {
  const p = record.reportedPolicy;
  if (p === null) return null;
  if (record.policySource !== 'agent') return p;
  if (record.composeHash !== null) return record.policyComposeHash === record.composeHash ? p : null;
  return trustAgentComposeHash && record.policyComposeHash !== null ? p : null;
}

/** Would a policy fetch for this record help (is the policy unknown, and may a learned one count)? */
export function fetchWanted(record: InstanceRecord, trustAgentComposeHash: boolean): boolean {
  return (
    record.override === null &&
    trustedReportedPolicy(record, trustAgentComposeHash) === null &&
    (record.composeHash !== null || trustAgentComposeHash)
  );
}

export function deriveEntry(record: InstanceRecord, ctx: EntryContext): DecisionEntry {
  const base = { instanceId: record.instanceId, ip: record.ip };
  let policy: PortPolicy | null = record.override;
  let source: DecisionEntry['source'] = 'override';
  if (policy === null) {
    policy = trustedReportedPolicy(record, ctx.trustAgentComposeHash);
    source = 'policy';
  }
  if (policy === null) {
    const refuseAll =
      record.composeHash === null && !ctx.trustAgentComposeHash ? 'policy_unattested' : ctx.fetchFailed ? 'fetch_failed' : 'policy_unknown';
    return Object.freeze({ ...base, refuseAll, restrictMode: false, ports: NO_PORTS, source: null });
  }
  const ports = new Map<number, boolean>();
  for (const [port, rule] of policy.ports) ports.set(port, rule.pp);
  return Object.freeze({ ...base, refuseAll: null, restrictMode: policy.restrictMode, ports, source });
}
