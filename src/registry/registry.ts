// The in-memory instance registry and the per-connection decision. Synchronous, no I/O: the store
// persists what this holds, the fetcher fills in what it does not know. Each instance's record is
// compiled into a DecisionEntry (entry.ts); decide() and the data path's native table both read
// those entries, and subscribeEntries() reports every change to them.
import type { Logger } from 'pino';
import { InterceptorError } from '../errors.js';
import { deriveEntry, fetchWanted } from './entry.js';
import { normalizeComposeHash, normalizeIp } from './policy.js';
import {
  IpInUseError,
  RegistrationError,
  UnknownInstanceError,
  validatePolicy,
  validateRegistration,
  type AddressRule,
  type RegistrationInput,
} from './registration.js';
import type { Decision, DecisionEntry, InstanceRecord, PortPolicy } from './types.js';

export interface DecideResult {
  readonly decision: Decision;
  /** An instance id whose policy should be fetched, or null. */
  readonly fetch: string | null;
}

export interface EntryChange {
  readonly instanceId: string;
  /** The entry now; undefined when the instance was removed. */
  readonly entry: DecisionEntry | undefined;
  /** The entry before (its `ip` is the key to drop when the address moved); undefined when new. */
  readonly previous: DecisionEntry | undefined;
}

export type EntryListener = (change: EntryChange) => void;
export type ChangeListener = (instanceId: string, record: InstanceRecord | undefined) => void;

export interface RegistryOptions {
  logger: Logger;
  now?: () => number;
  /** registry.trust_agent_compose_hash (default false). */
  trustAgentComposeHash?: boolean;
  /** Applied to registrations (not to load() or replicate()); none = any address. */
  addressRule?: AddressRule;
}

const UNREGISTERED: DecideResult = Object.freeze({
  decision: Object.freeze({ kind: 'transparent', instanceId: null, reason: 'unregistered' }),
  fetch: null,
});

function result(decision: Decision, fetch: string | null): DecideResult {
  return Object.freeze({ decision: Object.freeze(decision), fetch });
}

/** Policies with at most this many ports are held inside the slot itself. */
const INLINE_PORTS = 4;

/**
 * A record, its DecisionEntry, and everything decide() needs, derived once per change. With many
 * instances decide() is bound by cache misses, not instructions: small port lists sit inline
 * (`port << 1 | pp`, 0 = unused) instead of behind a Map, and the results it can return are
 * built up front, next to the entry, and reused.
 */
class Slot {
  readonly record: InstanceRecord;
  readonly entry: DecisionEntry;
  readonly fetchFailed: boolean;
  /** Set when every port is refused: the one result decide() returns. */
  readonly all: DecideResult | null;
  readonly restrictMode: boolean;
  readonly p0: number;
  readonly p1: number;
  readonly p2: number;
  readonly p3: number;
  /** Only for policies with more than INLINE_PORTS ports. */
  readonly ports: ReadonlyMap<number, boolean> | null;
  readonly transparent: DecideResult | null;
  readonly proxy: DecideResult | null;
  readonly refuse: DecideResult | null;

  constructor(record: InstanceRecord, entry: DecisionEntry, fetchFailed: boolean) {
    const id = record.instanceId;
    this.record = record;
    this.entry = entry;
    this.fetchFailed = fetchFailed;
    this.restrictMode = entry.restrictMode;
    const inline = [0, 0, 0, 0];
    let anyPp = false;
    let i = 0;
    for (const [port, pp] of entry.ports) {
      if (i < INLINE_PORTS) inline[i++] = (port << 1) | (pp ? 1 : 0);
      anyPp ||= pp;
    }
    const big = entry.ports.size > INLINE_PORTS;
    this.p0 = big ? 0 : (inline[0] as number);
    this.p1 = big ? 0 : (inline[1] as number);
    this.p2 = big ? 0 : (inline[2] as number);
    this.p3 = big ? 0 : (inline[3] as number);
    this.ports = big ? entry.ports : null;
    if (entry.refuseAll !== null) {
      // A fetch can only help while the policy is unknown or its fetch failed; an unattested
      // instance would not trust what it learned.
      const fetch = entry.refuseAll === 'policy_unattested' ? null : id;
      this.all = result({ kind: 'refuse', instanceId: id, reason: entry.refuseAll }, fetch);
      this.transparent = this.proxy = this.refuse = null;
      return;
    }
    const reason = entry.source === 'override' ? 'override' : 'policy';
    this.all = null;
    this.transparent = result({ kind: 'transparent', instanceId: id, reason }, null);
    this.proxy = anyPp ? result({ kind: 'proxy', instanceId: id, reason }, null) : null;
    this.refuse = entry.restrictMode ? result({ kind: 'refuse', instanceId: id, reason: 'port_not_allowed' }, null) : null;
  }
}

function sameEntry(a: DecisionEntry, b: DecisionEntry): boolean {
  if (a.ip !== b.ip || a.refuseAll !== b.refuseAll || a.restrictMode !== b.restrictMode || a.source !== b.source) return false;
  if (a.ports.size !== b.ports.size) return false;
  for (const [port, pp] of a.ports) if (b.ports.get(port) !== pp) return false;
  return true;
}

export class Registry {
  readonly #logger: Logger;
  readonly #now: () => number;
  readonly #trust: boolean;
  readonly #addressRule: AddressRule | undefined;
  #byId = new Map<string, Slot>();
  #byIp = new Map<string, Slot>();
  readonly #listeners = new Set<ChangeListener>();
  readonly #entryListeners = new Set<EntryListener>();

  constructor(opts: RegistryOptions) {
    this.#logger = opts.logger;
    this.#now = opts.now ?? Date.now;
    this.#trust = opts.trustAgentComposeHash === true;
    this.#addressRule = opts.addressRule;
  }

  get size(): number {
    return this.#byId.size;
  }

  /** registry.trust_agent_compose_hash as this registry applies it. */
  get trustAgentComposeHash(): boolean {
    return this.#trust;
  }

  /** Replaces the contents (startup). Two records with one id or one ip: ERR_STORE_CORRUPT, nothing replaced. */
  load(records: Iterable<InstanceRecord>): void {
    const byId = new Map<string, Slot>();
    const byIp = new Map<string, Slot>();
    for (const record of records) {
      if (byId.has(record.instanceId)) {
        throw new InterceptorError('ERR_STORE_CORRUPT', `instance ${record.instanceId} stored twice`);
      }
      const other = byIp.get(record.ip);
      if (other !== undefined) {
        throw new InterceptorError(
          'ERR_STORE_CORRUPT',
          `ip ${record.ip} stored for both ${other.record.instanceId} and ${record.instanceId}`,
        );
      }
      const slot = this.#slot(record, false, undefined);
      byId.set(record.instanceId, slot);
      byIp.set(record.ip, slot);
    }
    this.#byId = byId;
    this.#byIp = byIp;
    this.#logger.debug({ instances: byId.size }, 'registry loaded');
  }

  register(input: RegistrationInput): { record: InstanceRecord; previous: InstanceRecord | undefined; fetchNeeded: boolean } {
    const { instanceId, appId, ip, composeHash: hash, policy: reported } = validateRegistration(input, this.#addressRule);
    const holder = this.#byIp.get(ip);
    if (holder !== undefined && holder.record.instanceId !== instanceId) throw new IpInUseError(ip, holder.record.instanceId);

    const previous = this.#byId.get(instanceId)?.record;
    // A new attested compose means new app code: what it declared before no longer holds.
    const hashChanged =
      previous !== undefined &&
      hash !== null &&
      ((previous.composeHash !== null && previous.composeHash !== hash) ||
        (previous.policyComposeHash !== null && previous.policyComposeHash !== hash));

    let reportedPolicy: PortPolicy | null = null;
    let policySource: InstanceRecord['policySource'] = null;
    let policyComposeHash: string | null = null;
    if (reported !== null) {
      reportedPolicy = reported;
      policySource = 'registration';
      policyComposeHash = hash;
    } else if (previous !== undefined && previous.reportedPolicy !== null && !hashChanged) {
      // Not reported this time: the cached policy stays (as upstream).
      reportedPolicy = previous.reportedPolicy;
      policySource = previous.policySource;
      policyComposeHash = previous.policyComposeHash;
    }
    if (hashChanged && previous.reportedPolicy !== null) {
      this.#logger.info(
        {
          instanceId,
          oldComposeHash: previous.composeHash ?? previous.policyComposeHash,
          newComposeHash: hash,
          policyReported: reported !== null,
        },
        'compose hash changed: cached port policy dropped',
      );
    }

    const now = this.#now();
    const record: InstanceRecord = Object.freeze({
      instanceId,
      appId,
      ip,
      composeHash: hash,
      reportedPolicy,
      policySource,
      policyComposeHash,
      override: previous?.override ?? null,
      // First registration time; a re-registration only moves updatedAt.
      registeredAt: previous?.registeredAt ?? now,
      updatedAt: now,
    });
    // A registration starts the policy's story afresh: the fetch it queues has not failed yet.
    this.#put(record, previous, false);
    return { record, previous, fetchNeeded: fetchWanted(record, this.#trust) };
  }

  remove(instanceId: string): InstanceRecord | undefined {
    const slot = this.#byId.get(instanceId);
    if (slot === undefined) return undefined;
    this.#byId.delete(instanceId);
    if (this.#byIp.get(slot.record.ip) === slot) this.#byIp.delete(slot.record.ip);
    this.#notify(instanceId, undefined);
    this.#notifyEntry(instanceId, undefined, slot.entry);
    return slot.record;
  }

  /**
   * Observes every record change after load(): (id, new record) or (id, undefined) for a
   * removal, including undos. Worker processes' replicas follow the primary through it.
   */
  subscribe(listener: ChangeListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * Observes every change of a DecisionEntry after load(), whatever caused it (a registration,
   * an override, a learned policy, a failed fetch, a removal). A record change that leaves the
   * entry as it was is not reported.
   */
  subscribeEntries(listener: EntryListener): () => void {
    this.#entryListeners.add(listener);
    return () => this.#entryListeners.delete(listener);
  }

  /** Every instance's entry (a snapshot, in no particular order). */
  entries(): DecisionEntry[] {
    return [...this.#byId.values()].map((s) => s.entry);
  }

  entry(instanceId: string): DecisionEntry | undefined {
    return this.#byId.get(instanceId)?.entry;
  }

  /** Applies a change observed on another registry verbatim (a replica following its primary). */
  replicate(instanceId: string, record: InstanceRecord | undefined): void {
    if (record === undefined) {
      this.remove(instanceId);
      return;
    }
    const previous = this.#byId.get(instanceId)?.record;
    const holder = this.#byIp.get(record.ip);
    // The primary moved the ip from another instance: that instance's change arrives separately.
    if (holder !== undefined && holder.record.instanceId !== instanceId) this.#byIp.delete(record.ip);
    this.#put(record, previous, false);
  }

  /** Sets (or with null clears) the operator override. */
  setOverride(instanceId: string, policy: PortPolicy | null): InstanceRecord {
    const slot = this.#byId.get(instanceId);
    if (slot === undefined) throw new UnknownInstanceError(instanceId);
    const override = policy === null ? null : validatePolicy(policy, 'override');
    const record: InstanceRecord = Object.freeze({ ...slot.record, override, updatedAt: this.#now() });
    this.#put(record, slot.record, slot.fetchFailed);
    return record;
  }

  /**
   * A policy learned from the instance's guest agent, its app_compose hashing to `composeHash`.
   * Ignored (undefined) when the instance is gone, or was re-registered with another compose
   * hash while the fetch was in flight, or has no attested hash and the agent's is not trusted.
   */
  learnPolicy(instanceId: string, composeHash: string, policy: PortPolicy): InstanceRecord | undefined {
    const previous = this.#byId.get(instanceId)?.record;
    if (previous === undefined) return undefined;
    const hash = normalizeComposeHash(composeHash);
    if (hash === null) throw new RegistrationError('composeHash', 'must be 64 hex digits');
    if (previous.composeHash === null ? !this.#trust : previous.composeHash !== hash) {
      this.#logger.info(
        { instanceId, composeHash: previous.composeHash, learnedComposeHash: hash },
        'learned policy ignored: it is not for the attested compose hash (changed meanwhile, or none attested)',
      );
      return undefined;
    }
    const record: InstanceRecord = Object.freeze({
      ...previous,
      reportedPolicy: validatePolicy(policy),
      policySource: 'agent',
      policyComposeHash: hash,
      updatedAt: this.#now(),
    });
    this.#put(record, previous, false);
    return record;
  }

  /**
   * What the fetcher found for the record whose compose hash is `composeHash`: failed = its last
   * attempt failed (the instance's connections are then refused with `fetch_failed` instead of
   * `policy_unknown`). Ignored when the instance is gone or its compose hash changed since.
   */
  markFetch(instanceId: string, composeHash: string | null, failed: boolean): void {
    const slot = this.#byId.get(instanceId);
    if (slot === undefined || slot.record.composeHash !== composeHash || slot.fetchFailed === failed) return;
    this.#put(slot.record, slot.record, failed);
  }

  /**
   * Undoes one mutation whose persisting failed: `record` is what the mutation stored,
   * `previous` what was there before (undefined: nothing; for a removal pass the removed
   * record as both). Skipped, with a warning, when the registry has moved on since.
   */
  restore(record: InstanceRecord, previous: InstanceRecord | undefined): void {
    const id = record.instanceId;
    const current = this.#byId.get(id);
    if (current?.record !== record && !(current === undefined && previous !== undefined)) {
      this.#logger.warn({ instanceId: id }, 'restore skipped: the instance changed again since');
      return;
    }
    if (previous === undefined) {
      this.remove(id);
      return;
    }
    const holder = this.#byIp.get(previous.ip);
    if (holder !== undefined && holder.record.instanceId !== id) {
      this.#logger.warn({ instanceId: id, ip: previous.ip, heldBy: holder.record.instanceId }, 'restore skipped: ip taken since');
      return;
    }
    this.#put(previous, current?.record, current?.fetchFailed ?? false);
  }

  get(instanceId: string): InstanceRecord | undefined {
    return this.#byId.get(instanceId)?.record;
  }

  /** The instance registered at an address (any spelling of it: normalised first). */
  byIp(ip: string): InstanceRecord | undefined {
    const n = normalizeIp(ip);
    return n === null ? undefined : this.#byIp.get(n)?.record;
  }

  /** All records, sorted by instance id. */
  list(): InstanceRecord[] {
    return [...this.#byId.values()].map((e) => e.record).sort((a, b) => (a.instanceId < b.instanceId ? -1 : a.instanceId > b.instanceId ? 1 : 0));
  }

  /** Would fetching this instance's policy change anything (see entry.ts)? */
  fetchWanted(instanceId: string): boolean {
    const slot = this.#byId.get(instanceId);
    return slot !== undefined && fetchWanted(slot.record, this.#trust);
  }

  /**
   * The per-connection decision for a connection to `ip`:`port`, read from the entries. O(1),
   * allocation-free: it returns frozen results built with the entry. `ip` is what the socket
   * reports (libuv's canonical text); only an IPv4-mapped IPv6 form is rewritten.
   */
  decide(ip: string, port: number): DecideResult {
    let e = this.#byIp.get(ip);
    if (e === undefined) {
      if (ip.length > 7 && ip.charCodeAt(0) === 58 /* : */ && isMappedPrefix(ip) && ip.indexOf('.', 7) !== -1) {
        e = this.#byIp.get(ip.slice(7));
      }
      if (e === undefined) return UNREGISTERED;
    }
    if (e.all !== null) return e.all;
    // v: the listed `port << 1 | pp`, or 0 when the port is not listed.
    let v = 0;
    if (e.ports === null) {
      const k = (port << 1) | 1;
      v = (e.p0 | 1) === k ? e.p0 : (e.p1 | 1) === k ? e.p1 : (e.p2 | 1) === k ? e.p2 : (e.p3 | 1) === k ? e.p3 : 0;
    } else {
      const pp = e.ports.get(port);
      if (pp !== undefined) v = pp ? 3 : 2;
    }
    if (v !== 0) return ((v & 1) === 1 ? e.proxy : e.transparent) as DecideResult;
    return (e.restrictMode ? e.refuse : e.transparent) as DecideResult;
  }

  #slot(record: InstanceRecord, fetchFailed: boolean, before: Slot | undefined): Slot {
    let entry = deriveEntry(record, { fetchFailed, trustAgentComposeHash: this.#trust });
    // Keep the old entry object when nothing a decision reads has changed.
    if (before !== undefined && sameEntry(before.entry, entry)) entry = before.entry;
    return new Slot(record, entry, fetchFailed);
  }

  #put(record: InstanceRecord, previous: InstanceRecord | undefined, fetchFailed: boolean): void {
    const before = this.#byId.get(record.instanceId);
    if (previous !== undefined && previous.ip !== record.ip && this.#byIp.get(previous.ip)?.record === previous) {
      this.#byIp.delete(previous.ip);
    }
    const slot = this.#slot(record, fetchFailed, before);
    this.#byId.set(record.instanceId, slot);
    this.#byIp.set(record.ip, slot);
    if (before?.record !== record) this.#notify(record.instanceId, record);
    if (before?.entry !== slot.entry) this.#notifyEntry(record.instanceId, slot.entry, before?.entry);
  }

  #notify(instanceId: string, record: InstanceRecord | undefined): void {
    for (const listener of this.#listeners) listener(instanceId, record);
  }

  #notifyEntry(instanceId: string, entry: DecisionEntry | undefined, previous: DecisionEntry | undefined): void {
    if (this.#entryListeners.size === 0) return;
    const change: EntryChange = Object.freeze({ instanceId, entry, previous });
    for (const listener of this.#entryListeners) listener(change);
  }
}

function isMappedPrefix(ip: string): boolean {
  const p = ip.slice(0, 7);
  return p === '::ffff:' || p === '::FFFF:';
}
