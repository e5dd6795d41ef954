// Why an instance's connections are treated the way they are, and what an operator can do about
// it: the text `instances show` prints. Pure.
import type { FetchStatus } from './fetcher.js';
import type { DecisionEntry, InstanceRecord } from './types.js';

export interface InstanceStatus {
  /** Set when every port of the instance is refused. */
  readonly refuseAll: DecisionEntry['refuseAll'];
  readonly why: string;
  /** What would change it; null when nothing needs doing. */
  readonly action: string | null;
}

export function explainStatus(entry: DecisionEntry, record: InstanceRecord, fetch: FetchStatus | undefined): InstanceStatus {
  const id = record.instanceId;
  const setPolicy = `or set its policy yourself: tproxy-interceptor instances set-port-policy ${id} --policy "..."`;
  switch (entry.refuseAll) {
    case 'policy_unattested':
      return {
        refuseAll: entry.refuseAll,
        why:
          'every port is refused: the instance was registered without an attested compose hash, so a policy ' +
          "learned from its guest agent would only prove that the agent agrees with itself" +
          (record.reportedPolicy !== null ? ' (the policy learned earlier is not trusted for the same reason)' : ''),
        action:
          `re-register it with the compose hash measured into its RTMR3 (instances add ${id} ... --compose-hash <hex>), ` +
          `${setPolicy}, or accept agents' own hashes with registry.trust_agent_compose_hash = true`,
      };
    case 'policy_unknown':
      return {
        refuseAll: entry.refuseAll,
        why: `every port is refused until the policy is learned from the guest agent at ${record.ip} (fetch ${fetch?.state ?? 'not started'})`,
        action: `wait for the fetch (it is queued by the first refused connection at the latest), ${setPolicy}`,
      };
    case 'fetch_failed': {
      const last = fetch?.lastError;
      const error = last ? `${last.code}${last.permanent ? ' (permanent)' : ''}: ${last.message}` : 'no detail';
      const retry = fetch?.nextAttemptAt ? `the next attempt is due at ${new Date(fetch.nextAttemptAt).toISOString()}` : 'the next refused connection starts a new attempt';
      return {
        refuseAll: entry.refuseAll,
        why: `every port is refused: the policy could not be learned from the guest agent at ${record.ip}: ${error}`,
        action: `fix the guest agent or the app (${retry}), ${setPolicy}`,
      };
    }
    case null:
      return {
        refuseAll: null,
        why:
          entry.source === 'override'
            ? 'the operator override decides'
            : `the ${record.policySource === 'agent' ? 'policy learned from the guest agent' : 'policy reported at registration'} decides`,
        action: null,
      };
  }
}
