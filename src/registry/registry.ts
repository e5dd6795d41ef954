// The in-memory instance registry and the per-connection decision. Synchronous, no I/O:
// the store persists what this holds, the fetcher fills in what it does not know.
import type { Logger } from 'pino';
import { InterceptorError } from '../errors.js';
import { ID_PATTERN, isValidPort, makePolicy, normalizeComposeHash, normalizeIp } from './policy.js';
import type { Decision, InstanceRecord, PortPolicy } from './types.js';

export interface RegistrationInput {
  instanceId: string;
  appId: string;
  ip: string;
  composeHash?: string | null;
  /** undefined (or null) = not reported; a PortPolicy, possibly with no ports = reported. */
  policy?: PortPolicy | null;
  restrict?: boolean;
}

export interface DecideResult {
  readonly decision: Decision;
  /** An instance id whose policy should be fetched, or null. */
  readonly fetch: string | null;
}

export class RegistrationError extends InterceptorError {
  /** The RegistrationInput field that is invalid. */
  readonly field: string;
  constructor(field: string, problem: string) {
    super('ERR_INVALID_REGISTRATION', `registration: ${field}: ${problem}`);
    this.field = field;
  }
}

export class IpInUseError extends InterceptorError {
  readonly ip: string;
  /** The instance that holds the address. */
  readonly heldBy: string;
  constructor(ip: string, heldBy: string) {
    super('ERR_IP_IN_USE', `ip ${ip} is already registered to instance ${heldBy}`);
    this.ip = ip;
    this.heldBy = heldBy;
  }
}

export class UnknownInstanceError extends InterceptorError {
  readonly instanceId: string;
  constructor(instanceId: string) {
    super('ERR_UNKNOWN_INSTANCE', `unknown instance ${instanceId}`);
    this.instanceId = instanceId;
  }
}

const UNKNOWN_INSTANCE: DecideResult = Object.freeze({
  decision: Object.freeze({ kind: 'transparent', instanceId: null, reason: 'unknown-instance' }),
  fetch: null,
});

function result(decision: Decision, fetch: string | null): DecideResult {
  return Object.freeze({ decision: Object.freeze(decision), fetch });
}

/** Policies with at most this many ports are held inside the entry itself. */
const INLINE_PORTS = 4;

/**
 * A record plus everything decide() needs, derived once per record. With many instances
 * decide() is bound by cache misses, not instructions: small port lists sit inline
 * (`port << 1 | pp`, 0 = unused) instead of behind a Map, and the results it can return are
 * built up front, next to the entry, and reused.
 */
class Entry {
  readonly record: InstanceRecord;
  readonly known: boolean;
  readonly restrictMode: boolean;
  readonly p0: number;
  readonly p1: number;
  readonly p2: number;
  readonly p3: number;
  /** Only for policies with more than INLINE_PORTS ports. */
  readonly ports: PortPolicy['ports'] | null;
  readonly transparent: DecideResult | null;
  readonly proxy: DecideResult | null;
  readonly refuse: DecideResult | null;
  readonly unknown: DecideResult | null;

  constructor(record: InstanceRecord) {
    const id = record.instanceId;
    const effective = record.override ?? record.reportedPolicy;
    const reason = record.override !== null ? 'override' : 'policy';
    this.record = record;
    this.known = effective !== null;
    this.restrictMode = effective !== null && effective.restrictMode;
    const inline = [0, 0, 0, 0];
    let anyPp = false;
    if (effective !== null) {
      let i = 0;
      for (const [port, rule] of effective.ports) {
        if (i < INLINE_PORTS) inline[i++] = (port << 1) | (rule.pp ? 1 : 0);
        anyPp ||= rule.pp;
      }
    }
    const big = effective !== null && effective.ports.size > INLINE_PORTS;
    this.p0 = big ? 0 : (inline[0] as number);
    this.p1 = big ? 0 : (inline[1] as number);
    this.p2 = big ? 0 : (inline[2] as number);
    this.p3 = big ? 0 : (inline[3] as number);
    this.ports = big ? (effective as PortPolicy).ports : null;
    this.transparent = effective !== null ? result({ kind: 'transparent', instanceId: id, reason }, null) : null;
    this.proxy = anyPp ? result({ kind: 'proxy', instanceId: id, reason }, null) : null;
    this.refuse = this.restrictMode ? result({ kind: 'refuse', instanceId: id, reason: 'port-not-listed' }, null) : null;
    this.unknown =
      effective !== null
        ? null
        : record.restricted
          ? result({ kind: 'refuse', instanceId: id, reason: 'policy-unknown-restricted' }, id)
          : result({ kind: 'transparent', instanceId: id, reason: 'policy-unknown' }, id);
  }
}

function makeEntry(record: InstanceRecord): Entry {
  return new Entry(record);
}

function checkPolicy(policy: unknown, field: string): PortPolicy {
  const p = policy as PortPolicy;
  if (typeof p !== 'object' || p === null || !(p.ports instanceof Map) || typeof p.restrictMode !== 'boolean') {
    throw new RegistrationError(field, 'not a port policy');
  }
  const ports: [number, boolean][] = [];
  for (const [port, rule] of p.ports) {
    if (!isValidPort(port)) throw new RegistrationError(field, `port ${String(port)} is not in 1..65535`);
    if (typeof rule?.pp !== 'boolean') throw new RegistrationError(field, `port ${port}: pp is not a boolean`);
    ports.push([port, rule.pp]);
  }
  // A private frozen copy: records are immutable, whatever the caller does with its map later.
  return makePolicy(ports, p.restrictMode);
}

export class Registry {
  readonly #logger: Logger;
  readonly #now: () => number;
  #byId = new Map<string, Entry>();
  #byIp = new Map<string, Entry>();
  readonly #listeners = new Set<ChangeListener>();

  constructor(opts: { logger: Logger; now?: () => number }) {
    this.#logger = opts.logger;
    this.#now = opts.now ?? Date.now;
  }

  get size(): number {
    return this.#byId.size;
  }

  /** Replaces the contents (startup). Two records with one id or one ip: ERR_STORE_CORRUPT, nothing replaced. */
  load(records: Iterable<InstanceRecord>): void {
    const byId = new Map<string, Entry>();
    const byIp = new Map<string, Entry>();
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
      const entry = makeEntry(record);
      byId.set(record.instanceId, entry);
      byIp.set(record.ip, entry);
    }
    this.#byId = byId;
    this.#byIp = byIp;
    this.#logger.debug({ instances: byId.size }, 'registry loaded');
  }

  register(input: RegistrationInput): { record: InstanceRecord; previous: InstanceRecord | undefined; fetchNeeded: boolean } {
    if (typeof input !== 'object' || input === null) throw new RegistrationError('(input)', 'not an object');
    const { instanceId, appId } = input;
    if (typeof instanceId !== 'string' || !ID_PATTERN.test(instanceId)) {
      throw new RegistrationError('instanceId', 'must be 1..128 characters of [A-Za-z0-9._:-]');
    }
    if (typeof appId !== 'string' || !ID_PATTERN.test(appId)) {
      throw new RegistrationError('appId', 'must be 1..128 characters of [A-Za-z0-9._:-]');
    }
    const ip = typeof input.ip === 'string' ? normalizeIp(input.ip) : null;
    if (ip === null) throw new RegistrationError('ip', 'not an IPv4 or IPv6 address');
    let hash: string | null = null;
    if (input.composeHash !== undefined && input.composeHash !== null) {
      hash = typeof input.composeHash === 'string' ? normalizeComposeHash(input.composeHash) : null;
      if (hash === null) throw new RegistrationError('composeHash', 'must be 64 hex digits (optionally 0x-prefixed)');
    }
    const reported = input.policy === undefined || input.policy === null ? null : checkPolicy(input.policy, 'policy');
    if (input.restrict !== undefined && typeof input.restrict !== 'boolean') {
      throw new RegistrationError('restrict', 'not a boolean');
    }
    const restrict = input.restrict === true;

    const holder = this.#byIp.get(ip);
    if (holder !== undefined && holder.record.instanceId !== instanceId) throw new IpInUseError(ip, holder.record.instanceId);

    const previous = this.#byId.get(instanceId)?.record;
    // A new attested compose means new app code: what it declared before no longer holds.
    const hashChanged =
      previous !== undefined &&
      hash !== null &&
      ((previous.composeHash !== null && previous.composeHash !== hash) ||
        (previous.policyComposeHash !== null && previous.policyComposeHash !== hash));

    let reportedPolicy: PortPolicy | null;
    let policySource: InstanceRecord['policySource'];
    let policyComposeHash: string | null;
    let restricted: boolean;
    if (reported !== null) {
      reportedPolicy = reported;
      policySource = 'registration';
      policyComposeHash = hash;
      restricted = restrict || reported.restrictMode;
    } else if (previous !== undefined && previous.reportedPolicy !== null && !hashChanged) {
      reportedPolicy = previous.reportedPolicy;
      policySource = previous.policySource;
      policyComposeHash = previous.policyComposeHash;
      restricted = restrict || previous.reportedPolicy.restrictMode;
    } else {
      reportedPolicy = null;
      policySource = null;
      policyComposeHash = null;
      // Sticky: an instance known to be restricted stays fail-closed until its policy is known again.
      restricted = restrict || (previous?.restricted ?? false);
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
      restricted,
      restrictRequested: restrict,
      override: previous?.override ?? null,
      // First registration time; a re-registration only moves updatedAt.
      registeredAt: previous?.registeredAt ?? now,
      updatedAt: now,
    });
    this.#put(record, previous);
    return { record, previous, fetchNeeded: reportedPolicy === null };
  }

  remove(instanceId: string): InstanceRecord | undefined {
    const entry = this.#byId.get(instanceId);
    if (entry === undefined) return undefined;
    this.#byId.delete(instanceId);
    if (this.#byIp.get(entry.record.ip) === entry) this.#byIp.delete(entry.record.ip);
    this.#notify(instanceId, undefined);
    return entry.record;
  }

  /**
   * Observes every change after load(): (id, new record) or (id, undefined) for a removal,
   * including undos. Worker processes' replicas follow the primary through it.
   */
  subscribe(listener: ChangeListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
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
    this.#put(record, previous);
  }

  #notify(instanceId: string, record: InstanceRecord | undefined): void {
    for (const listener of this.#listeners) listener(instanceId, record);
  }

  /** Sets (or with null clears) the operator override. */
  setOverride(instanceId: string, policy: PortPolicy | null): InstanceRecord {
    const previous = this.#byId.get(instanceId)?.record;
    if (previous === undefined) throw new UnknownInstanceError(instanceId);
    const override = policy === null ? null : checkPolicy(policy, 'override');
    const record: InstanceRecord = Object.freeze({ ...previous, override, updatedAt: this.#now() });
    this.#put(record, previous);
    return record;
  }

  /**
   * A policy learned from the instance's guest agent, attested by `composeHash`. Ignored
   * (undefined) when the instance is gone or was re-registered with another compose hash while
   * the fetch was in flight.
   */
  learnPolicy(instanceId: string, composeHash: string, policy: PortPolicy): InstanceRecord | undefined {
    const previous = this.#byId.get(instanceId)?.record;
    if (previous === undefined) return undefined;
    const hash = normalizeComposeHash(composeHash);
    if (hash === null) throw new RegistrationError('composeHash', 'must be 64 hex digits');
    if (previous.composeHash !== null && previous.composeHash !== hash) {
      this.#logger.info(
        { instanceId, composeHash: previous.composeHash, learnedComposeHash: hash },
        'learned policy ignored: compose hash changed meanwhile',
      );
      return undefined;
    }
    const learned = checkPolicy(policy, 'policy');
    const record: InstanceRecord = Object.freeze({
      ...previous,
      reportedPolicy: learned,
      policySource: 'agent',
      policyComposeHash: hash,
      restricted: previous.restrictRequested === true || learned.restrictMode,
      updatedAt: this.#now(),
    });
    this.#put(record, previous);
    return record;
  }

  /**
   * Undoes one mutation whose persisting failed: `record` is what the mutation stored,
   * `previous` what was there before (undefined: nothing; for a removal pass the removed
   * record as both). Skipped, with a warning, when the registry has moved on since.
   */
  restore(record: InstanceRecord, previous: InstanceRecord | undefined): void {
    const id = record.instanceId;
    const current = this.#byId.get(id)?.record;
    if (current !== record && !(current === undefined && previous !== undefined)) {
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
    this.#put(previous, current);
  }

  get(instanceId: string): InstanceRecord | undefined {
    return this.#byId.get(instanceId)?.record;
  }

  /** Lookup by any spelling of the address (normalised first). */
  byIp(ip: string): InstanceRecord | undefined {
    const n = normalizeIp(ip);
    return n === null ? undefined : this.#byIp.get(n)?.record;
  }

  /** All records, sorted by instance id. */
  list(): InstanceRecord[] {
    return [...this.#byId.values()].map((e) => e.record).sort((a, b) => (a.instanceId < b.instanceId ? -1 : a.instanceId > b.instanceId ? 1 : 0));
  }

  /**
   * The per-connection decision for a connection to `ip`:`port`. O(1), allocation-free: it
   * returns frozen results built with the entry. `ip` is what the socket reports (libuv's
   * canonical text); only an IPv4-mapped IPv6 form is rewritten.
   */
  decide(ip: string, port: number): DecideResult {
    let e = this.#byIp.get(ip);
    if (e === undefined) {
      if (ip.length > 7 && ip.charCodeAt(0) === 58 /* : */ && isMappedPrefix(ip) && ip.indexOf('.', 7) !== -1) {
        e = this.#byIp.get(ip.slice(7));
      }
      if (e === undefined) return UNKNOWN_INSTANCE;
    }
    if (!e.known) return e.unknown as DecideResult;
    // v: the listed `port << 1 | pp`, or 0 when the port is not listed.
    let v = 0;
    if (e.ports === null) {
      const k = (port << 1) | 1;
      v = (e.p0 | 1) === k ? e.p0 : (e.p1 | 1) === k ? e.p1 : (e.p2 | 1) === k ? e.p2 : (e.p3 | 1) === k ? e.p3 : 0;
    } else {
      const rule = e.ports.get(port);
      if (rule !== undefined) v = rule.pp ? 3 : 2;
    }
    if (v !== 0) return ((v & 1) === 1 ? e.proxy : e.transparent) as DecideResult;
    return (e.restrictMode ? e.refuse : e.transparent) as DecideResult;
  }

  #put(record: InstanceRecord, previous: InstanceRecord | undefined): void {
    if (previous !== undefined && previous.ip !== record.ip && this.#byIp.get(previous.ip)?.record === previous) {
      this.#byIp.delete(previous.ip);
    }
    const entry = makeEntry(record);
    this.#byId.set(record.instanceId, entry);
    this.#byIp.set(record.ip, entry);
    this.#notify(record.instanceId, record);
  }
}

export type ChangeListener = (instanceId: string, record: InstanceRecord | undefined) => void;

function isMappedPrefix(ip: string): boolean {
  const p = ip.slice(0, 7);
  return p === '::ffff:' || p === '::FFFF:';
}
