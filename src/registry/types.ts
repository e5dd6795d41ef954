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
  /** What the registration reported or what was learned from the guest agent; null = not known. */
  readonly reportedPolicy: PortPolicy | null;
  readonly policySource: PolicySource | null;
  /** The compose hash the reported policy was learned against (null: reported without one). */
  readonly policyComposeHash: string | null;
  /** Operator override: wins over the reported policy, survives compose hash changes. */
  readonly override: PortPolicy | null;
  readonly registeredAt: number;
  readonly updatedAt: number;
}

/** Why an admitted connection was admitted. */
export type AdmitReason =
  | 'unregistered' // no instance at the destination address: transparent, as upstream
  | 'policy' // the reported or learned policy decided
  | 'override'; // the operator override decided

/** What the per-connection decision returns. */
export type Decision =
  | { readonly kind: 'transparent'; readonly instanceId: string | null; readonly reason: AdmitReason }
  | { readonly kind: 'proxy'; readonly instanceId: string; readonly reason: 'policy' | 'override' }
  | { readonly kind: 'refuse'; readonly instanceId: string; readonly reason: RefuseReason };

// ---------------------------------------------------------------------------------------------
// The contract between the registry (which owns the decision's semantics) and the data path
// (which applies it per connection, natively, without calling into JavaScript).

/**
 * Why a connection is refused: stable codes, logged as the connection's `reason` and counted in
 * metrics. The first four come from the registry, the last three from the destination guard and
 * the connection cap of the data path.
 */
export type RefuseReason =
  | 'policy_unknown' // a registered instance whose policy is not learned yet (fetch queued / in flight)
  | 'fetch_failed' // a registered instance whose last policy fetch failed (retrying, retries exhausted, or permanent)
  | 'policy_unattested' // a registered instance with no attested compose hash: a learned policy is not trusted
  | 'port_not_allowed' // policy known, restrict_mode on, port not listed
  | 'not_a_target' // the original destination is not in intercept.targets
  | 'local_destination' // the original destination is an address of this host (or the listener itself)
  | 'over_capacity'; // the connection cap is reached

/**
 * Everything the per-connection decision reads about one registered instance, derived from its
 * record (and the fetcher's state) by the registry. The data path compiles these into its own
 * table; `Registry.decide()` in TypeScript must give the same answer from the same entries.
 */
export interface DecisionEntry {
  readonly instanceId: string;
  /** Normalised address (see the IP parser); the connection's original destination IP. */
  readonly ip: string;
  /**
   * null: the effective policy is known and `ports`/`restrictMode` decide. Otherwise every port
   * of this instance is refused with this reason (fail-closed) and the data path reports the
   * refusal so that a fetch can be queued.
   */
  readonly refuseAll: 'policy_unknown' | 'fetch_failed' | 'policy_unattested' | null;
  readonly restrictMode: boolean;
  /** port (1..65535) -> pp. Unlisted ports: pp=false, or refused under restrictMode. */
  readonly ports: ReadonlyMap<number, boolean>;
  /** Where the effective policy comes from (null while refuseAll is set). */
  readonly source: 'override' | 'policy' | null;
}
