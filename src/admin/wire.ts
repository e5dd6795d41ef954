// The admin API's wire format: the paths, and every JSON shape that crosses the socket, with the
// conversions both ways. The server writes these shapes, the client reads them, the CLI prints
// them (`--json`): one definition for all three.
import { InterceptorError } from '../errors.js';
import { deserializeInstance, deserializePolicy, serializeInstance, serializePolicy, type SerializedInstance, type SerializedPolicy } from '../registry/policy.js';
import type { RegistrationInput } from '../registry/registration.js';
import type { FetchState, FetchStatus } from '../registry/fetcher.js';
import type { InstanceStatus } from '../registry/explain.js';
import type { DecisionEntry, InstanceRecord, PortPolicy } from '../registry/types.js';

export const PATHS = {
  instances: '/v1/instances',
  instance: (id: string): string => `/v1/instances/${encodeURIComponent(id)}`,
  override: (id: string): string => `/v1/instances/${encodeURIComponent(id)}/override`,
  // dstack gateway's Admin RPC names, as its operators call them (`POST /prpc/Admin.<Method>?json`).
  setInstancePortPolicy: '/prpc/Admin.SetInstancePortPolicy',
  clearInstancePortPolicy: '/prpc/Admin.ClearInstancePortPolicy',
  getInstancePortPolicy: '/prpc/Admin.GetInstancePortPolicy',
  // The daemon itself: `tproxy-interceptor reload` and `status`.
  reload: '/v1/reload',
  status: '/v1/status',
} as const;

export type WireInstance = SerializedInstance;
export type WirePolicy = SerializedPolicy;

export interface WireError {
  error: { code: string; message: string };
}

/** POST /v1/instances */
export interface WireRegistration {
  instance_id: string;
  app_id: string;
  ip: string;
  compose_hash?: string | null;
  /** Absent or null: not reported (learned from the guest agent). An object, even with no ports: reported. */
  policy?: WirePolicy | null;
}

/** Where the policy that decides comes from. */
export type EffectiveSource = 'override' | 'registration' | 'agent' | null;

export interface WirePortDecision {
  port: number;
  kind: 'transparent' | 'proxy' | 'refuse';
  reason: string;
}

export interface WireFetchStatus {
  state: FetchState;
  attempts: number;
  last_error: { code: string; message: string; permanent: boolean } | null;
  next_attempt_at: number | null;
  learned_at: number | null;
}

/** Why every port is refused (when it is), and what an operator can do about it. */
export interface WireStatus {
  refuse_all: DecisionEntry['refuseAll'];
  why: string;
  action: string | null;
}

/** GET /v1/instances/:id (`instances show`) */
export interface WireDetails {
  instance: WireInstance;
  effective_policy: { source: EffectiveSource; policy: WirePolicy | null };
  status: WireStatus;
  /** The decision for each port of the effective policy. */
  decisions: WirePortDecision[];
  /** The decision for a port the effective policy does not list. */
  unlisted_ports: { kind: WirePortDecision['kind']; reason: string } | null;
  fetch: WireFetchStatus | null;
}

/**
 * Admin.GetInstancePortPolicy, in the dstack gateway's shape (`source`: "admin" | "instance" |
 * "none"), plus `refuse_all`: why every port is refused, if it is (ours).
 */
export interface WirePortPolicyView {
  effective: WirePolicy | null;
  source: 'admin' | 'instance' | 'none';
  instance_reported: WirePolicy | null;
  admin_override: WirePolicy | null;
  refuse_all: WireStatus['refuse_all'];
}

export function protocolError(problem: string): InterceptorError {
  return new InterceptorError('ERR_ADMIN_PROTOCOL', `unexpected admin API answer: ${problem}`);
}

function fromWire<T>(parse: () => T): T {
  try {
    return parse();
  } catch (err) {
    if (err instanceof InterceptorError) throw protocolError(err.message);
    throw err;
  }
}

export function field(json: unknown, key: string): unknown {
  if (typeof json !== 'object' || json === null || !(key in json)) throw protocolError(`no "${key}"`);
  return (json as Record<string, unknown>)[key];
}

export const instanceToWire = (r: InstanceRecord): WireInstance => serializeInstance(r);
export const instanceFromWire = (json: unknown): InstanceRecord => fromWire(() => deserializeInstance(json));
export const policyToWire = (p: PortPolicy): WirePolicy => serializePolicy(p);
export const policyFromWire = (json: unknown): PortPolicy => fromWire(() => deserializePolicy(json));

export function registrationToWire(input: RegistrationInput): WireRegistration {
  const body: WireRegistration = { instance_id: input.instanceId, app_id: input.appId, ip: input.ip };
  if (input.composeHash !== undefined) body.compose_hash = input.composeHash;
  if (input.policy !== undefined && input.policy !== null) body.policy = policyToWire(input.policy);
  return body;
}

/** `instances show` as the server builds it and the client reads it back. */
export interface InstanceDetails {
  readonly record: InstanceRecord;
  readonly effectivePolicy: { readonly source: EffectiveSource; readonly policy: PortPolicy | null };
  readonly status: InstanceStatus;
  readonly decisions: readonly WirePortDecision[];
  readonly unlistedPorts: WireDetails['unlisted_ports'];
  readonly fetch: FetchStatus | null;
}

export function detailsToWire(d: InstanceDetails): WireDetails {
  const f = d.fetch;
  return {
    instance: instanceToWire(d.record),
    effective_policy: { source: d.effectivePolicy.source, policy: d.effectivePolicy.policy ? policyToWire(d.effectivePolicy.policy) : null },
    status: { refuse_all: d.status.refuseAll, why: d.status.why, action: d.status.action },
    decisions: [...d.decisions],
    unlisted_ports: d.unlistedPorts,
    fetch:
      f === null
        ? null
        : { state: f.state, attempts: f.attempts, last_error: f.lastError, next_attempt_at: f.nextAttemptAt, learned_at: f.learnedAt },
  };
}

export function detailsFromWire(json: unknown): InstanceDetails {
  const eff = field(json, 'effective_policy') as WireDetails['effective_policy'] | null;
  const decisions = field(json, 'decisions');
  if (!Array.isArray(decisions)) throw protocolError('"decisions" is not an array');
  const status = field(json, 'status') as WireStatus | null;
  if (typeof status !== 'object' || status === null || typeof status.why !== 'string') throw protocolError('"status" is not a status');
  const f = field(json, 'fetch') as WireFetchStatus | null;
  return {
    record: instanceFromWire(field(json, 'instance')),
    effectivePolicy: { source: eff?.source ?? null, policy: eff?.policy ? policyFromWire(eff.policy) : null },
    status: { refuseAll: status.refuse_all ?? null, why: status.why, action: status.action ?? null },
    decisions: decisions as WirePortDecision[],
    unlistedPorts: field(json, 'unlisted_ports') as WireDetails['unlisted_ports'],
    fetch:
      f === null
        ? null
        : { state: f.state, attempts: f.attempts, lastError: f.last_error, nextAttemptAt: f.next_attempt_at, learnedAt: f.learned_at },
  };
}

/** The client's view of Admin.GetInstancePortPolicy. */
export interface PortPolicyView {
  effective: PortPolicy | null;
  source: WirePortPolicyView['source'];
  instanceReported: PortPolicy | null;
  adminOverride: PortPolicy | null;
  refuseAll: WireStatus['refuse_all'];
}

export function portPolicyViewFromWire(json: unknown): PortPolicyView {
  const policy = (key: string): PortPolicy | null => {
    const v = field(json, key);
    return v === null ? null : policyFromWire(v);
  };
  const source = field(json, 'source');
  if (source !== 'admin' && source !== 'instance' && source !== 'none') throw protocolError('"source" is not admin, instance or none');
  return {
    effective: policy('effective'),
    source,
    instanceReported: policy('instance_reported'),
    adminOverride: policy('admin_override'),
    refuseAll: field(json, 'refuse_all') as WireStatus['refuse_all'],
  };
}

export function portPolicyViewToWire(v: PortPolicyView): WirePortPolicyView {
  const p = (x: PortPolicy | null): WirePolicy | null => (x === null ? null : policyToWire(x));
  return {
    effective: p(v.effective),
    source: v.source,
    instance_reported: p(v.instanceReported),
    admin_override: p(v.adminOverride),
    refuse_all: v.refuseAll,
  };
}

/** POST /v1/reload: what the reload applied (errors answer like every other route). */
export interface WireReload {
  config: string;
  changed: string[];
  firewall: boolean;
}

/** One live connection in GET /v1/status. */
export interface WireLiveConnection {
  id: number;
  thread: number;
  peer: string;
  client: string;
  destination: string;
  path: 'transparent' | 'proxy' | 'refuse' | null;
  decision: string | null;
  instance: string | null;
  state: 'reading-header' | 'connecting' | 'relaying';
  upstream_port: number;
  bytes_in: number;
  bytes_out: number;
  age_ms: number;
}

/** GET /v1/status[?limit=N] (`tproxy-interceptor status --json`). */
export interface WireDaemonStatus {
  config: string;
  pid: number;
  started_at: number;
  uptime_ms: number;
  backend: string;
  rules_installed: boolean;
  accepting: boolean;
  engine: {
    threads: number;
    live: number;
    accepted: number;
    over_capacity: number;
    pipes_in_use: number;
    pipes_pooled: number;
    table_generation: number;
  };
  /** Ended connections since start (counted from the loop threads' reports). */
  counters: {
    transparent: number;
    proxy: number;
    refused: number;
    over_capacity: number;
    bytes_in: number;
    bytes_out: number;
    closed: Record<string, number>;
  };
  registry: { instances: number; store: { kind: string; state: string; since: number; error: string | null } | null };
  reloads: { ok: number; failed: number };
  /** Live connections, oldest first: at most `limit` per loop thread. */
  connections: WireLiveConnection[];
  /** Connections held when the threads answered (more than `connections` holds when limited). */
  live: number;
}
