// The registry's data model. Plain data: records are what the store persists and what the
// admin API returns (after `serializeInstance`).

export interface PortRule {
  readonly pp: boolean;
}

export interface PortPolicy {
  /** port (1..65535) -> rule; ports not listed default to pp=false (or are refused under restrictMode) */
  readonly ports: ReadonlyMap<number, PortRule>;
  readonly restrictMode: boolean;
}

export type PolicySource = 'registration' | 'agent';

export interface InstanceRecord {
  readonly instanceId: string;
  readonly appId: string;
  /** The address the interceptor reaches the instance at: an intercepted connection's original destination IP. */
  readonly ip: string;
  /** Attested compose hash (lowercase hex), or null when the registration did not carry one. */
  readonly composeHash: string | null;
  /** What the instance reported or what was learned from its guest agent; null = unknown. */
  readonly reportedPolicy: PortPolicy | null;
  readonly policySource: PolicySource | null;
  /** The compose hash the reported policy was learned against. */
  readonly policyComposeHash: string | null;
  /**
   * Known to run in restrict mode (flagged at registration, or by the last policy learned):
   * while its policy is unknown, connections are refused rather than let through.
   */
  readonly restricted: boolean;
  /**
   * The last registration flagged restrict. Kept apart from `restricted` so that a policy
   * learned later can lower `restricted` to its own restrictMode without forgetting the flag.
   * Absent = false.
   */
  readonly restrictRequested?: boolean;
  /** Operator override: wins over the reported policy, survives compose hash changes. */
  readonly override: PortPolicy | null;
  readonly registeredAt: number;
  readonly updatedAt: number;
}

/** What the per-connection decision returns. */
export type Decision =
  | { readonly kind: 'transparent'; readonly instanceId: string | null; readonly reason: DecisionReason }
  | { readonly kind: 'proxy'; readonly instanceId: string; readonly reason: DecisionReason }
  | { readonly kind: 'refuse'; readonly instanceId: string; readonly reason: DecisionReason };

export type DecisionReason =
  | 'unknown-instance' // no instance at this IP: pp=false
  | 'policy-unknown' // registered, policy not known yet: pp=false, fetch queued
  | 'policy-unknown-restricted' // registered + restricted, policy not known: refused, fetch queued
  | 'override' // decided by the operator override
  | 'policy' // decided by the reported/learned policy
  | 'port-not-listed'; // restrict mode and the port is not in the policy: refused
