// The decision table: what the loop threads need to decide a connection without JavaScript,
// compiled from the targets, this host's addresses, the trusted PROXY-header sources and every
// registered instance's DecisionEntry into one immutable buffer (native/table.h documents the
// layout and reads it). `decideReference` is the same decision written plainly over the same
// input: the differential test holds the native reader to it.
import type { Target } from '../config.js';
import { keyInPrefix, parseCidr } from '../net/cidr.js';
import { ipKey } from '../net/ip.js';
import type { DecisionEntry, RefuseReason } from '../registry/types.js';
import { InterceptorError } from '../errors.js';

export interface TableSpec {
  /** Grows with every table: events and stats name the table they came from. */
  readonly generation: number;
  readonly targets: readonly Target[];
  /** This host's addresses and the listeners' (exact). */
  readonly localAddresses: readonly string[];
  /** Networks that are always this host's (loopback, unspecified). */
  readonly localNetworks: readonly string[];
  /** Peers whose connections start with a PROXY header (inbound_pp.trusted_sources). */
  readonly trustedSources: readonly string[];
  readonly entries: Iterable<DecisionEntry>;
}

export type DecisionKind = 'transparent' | 'proxy' | 'refuse';

/** Why a connection got its decision: how it passed, or the RefuseReason. */
export type DecisionReasonCode =
  | 'unregistered' // no registered instance at the destination: transparent
  | 'policy' // the instance's reported or learned policy
  | 'override' // the operator's override
  | RefuseReason;

/** Reason codes by their number in the table and the events (native/table.h `Reason`). */
export const REASON_CODES: ReadonlyMap<number, DecisionReasonCode> = new Map<number, DecisionReasonCode>([
  [0, 'unregistered'],
  [1, 'policy'],
  [2, 'override'],
  [10, 'policy_unknown'],
  [11, 'fetch_failed'],
  [12, 'policy_unattested'],
  [13, 'port_not_allowed'],
  [14, 'not_a_target'],
  [15, 'local_destination'],
  [16, 'over_capacity'],
]);

export const KINDS: readonly DecisionKind[] = ['transparent', 'proxy', 'refuse'];

export interface TableDecision {
  readonly kind: DecisionKind;
  readonly reason: DecisionReasonCode;
  readonly instanceId: string | null;
}

// ---- the reference ----------------------------------------------------------------------------

/**
 * The decision for a connection to (ip, port), written plainly: local destination, then target,
 * then the instance's entry. `ip` in any spelling; an IPv4-mapped address is IPv4.
 */
export function decideReference(spec: TableSpec, ip: string, port: number): TableDecision {
  const k = ipKey(ip);
  if (k === null) return { kind: 'refuse', reason: 'not_a_target', instanceId: null };
  const key = Buffer.from(k.key).toString('hex');
  const byKey = new Map<string, DecisionEntry>();
  for (const e of spec.entries) byKey.set(Buffer.from(ipKey(e.ip)!.key).toString('hex'), e);
  const entry = byKey.get(key);
  const local =
    spec.localAddresses.some((a) => Buffer.from(ipKey(a)!.key).toString('hex') === key) ||
    spec.localNetworks.some((n) => {
      const c = parseCidr(n);
      return c.family === k.family && keyInPrefix(c.key, c.keyPrefix, k.key);
    });
  // The guard comes first: an instance is consulted only for a destination that may be relayed.
  if (local) return { kind: 'refuse', reason: 'local_destination', instanceId: null };
  const inTargets = spec.targets.some((t) => {
    const c = parseCidr(t.cidr);
    return c.family === k.family && keyInPrefix(c.key, c.keyPrefix, k.key) && t.ports.some((r) => port >= r.from && port <= r.to);
  });
  if (!inTargets) return { kind: 'refuse', reason: 'not_a_target', instanceId: null };
  if (entry === undefined) return { kind: 'transparent', reason: 'unregistered', instanceId: null };
  const id = entry.instanceId;
  if (entry.refuseAll !== null) return { kind: 'refuse', reason: entry.refuseAll, instanceId: id };
  const by: DecisionReasonCode = entry.source === 'override' ? 'override' : 'policy';
  const pp = entry.ports.get(port);
  if (pp === undefined) return entry.restrictMode ? { kind: 'refuse', reason: 'port_not_allowed', instanceId: id } : { kind: 'transparent', reason: by, instanceId: id };
  return { kind: pp ? 'proxy' : 'transparent', reason: by, instanceId: id };
}

/** Is `ip` one of the trusted sources? (The reference of the table's trusted list.) */
export function isTrustedReference(spec: TableSpec, ip: string): boolean {
  const k = ipKey(ip);
  if (k === null) return false;
  return spec.trustedSources.some((n) => {
    const c = parseCidr(n);
    return c.family === k.family && keyInPrefix(c.key, c.keyPrefix, k.key);
  });
}

// ---- the compiler -----------------------------------------------------------------------------

const MAGIC = 0x54445054; // "TPDT"
const VERSION = 1;
const HEADER = 80;
const CIDR = 32;
const SLOT = 48;
const REFUSE_ALL = { policy_unknown: 1, fetch_failed: 2, policy_unattested: 3 } as const;

/** The table's hash of a 16-byte key: native/table.cc KeyHash, with the same 32-bit arithmetic. */
export function keyHash(key: Uint8Array): number {
  const dv = new DataView(key.buffer, key.byteOffset, 16);
  let h = 0x9e3779b9;
  for (let i = 0; i < 4; i++) {
    h = Math.imul(h ^ dv.getUint32(4 * i, true), 0x85ebca6b);
    h ^= h >>> 13;
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x7feb352d);
  h ^= h >>> 15;
  h = Math.imul(h, 0x846ca68b);
  h ^= h >>> 16;
  return h >>> 0;
}

const align8 = (n: number): number => (n + 7) & ~7;

interface SlotInput {
  key: Uint8Array;
  local: boolean;
  entry: DecisionEntry | null;
}

/**
 * The table for `spec`. Throws ERR_TABLE when two entries claim one address (the registry
 * never lets that happen) or an entry's address or port is invalid.
 */
export function compileTable(spec: TableSpec): Buffer {
  const slotsByKey = new Map<string, SlotInput>();
  const slotFor = (key: Uint8Array): SlotInput => {
    const hex = Buffer.from(key).toString('hex');
    let s = slotsByKey.get(hex);
    if (s === undefined) {
      s = { key, local: false, entry: null };
      slotsByKey.set(hex, s);
    }
    return s;
  };
  for (const a of spec.localAddresses) {
    const k = ipKey(a);
    if (k === null) throw new InterceptorError('ERR_TABLE', `local address ${JSON.stringify(a)} is not an IP address`);
    slotFor(k.key).local = true;
  }
  let portCount = 0;
  let stringsLength = 0;
  for (const e of spec.entries) {
    const k = ipKey(e.ip);
    if (k === null) throw new InterceptorError('ERR_TABLE', `instance ${e.instanceId}: ${JSON.stringify(e.ip)} is not an IP address`);
    const s = slotFor(k.key);
    if (s.entry !== null) throw new InterceptorError('ERR_TABLE', `instances ${s.entry.instanceId} and ${e.instanceId} share the address ${e.ip}`);
    if (e.refuseAll === null && e.source === null) throw new InterceptorError('ERR_TABLE', `instance ${e.instanceId}: neither refused nor decided by a policy (source is null)`);
    for (const port of e.ports.keys()) {
      if (!Number.isInteger(port) || port < 1 || port > 65535) throw new InterceptorError('ERR_TABLE', `instance ${e.instanceId}: port ${port} is not in 1..65535`);
    }
    s.entry = e;
    portCount += e.ports.size;
    stringsLength += Buffer.byteLength(e.instanceId, 'latin1');
  }
  const targets = spec.targets.map((t) => ({ cidr: parseCidr(t.cidr), ports: t.ports }));
  const rangeCount = targets.reduce((n, t) => n + t.ports.length, 0);
  const localNets = spec.localNetworks.map((n) => parseCidr(n));
  const trusted = spec.trustedSources.map((n) => parseCidr(n));
  // A power of two, at most half full: short probe sequences, and always an empty slot.
  let slotCount = 8;
  while (slotCount < 2 * (slotsByKey.size + 1)) slotCount *= 2;

  const targetsOff = HEADER;
  const rangesOff = targetsOff + targets.length * CIDR;
  const localOff = align8(rangesOff + rangeCount * 4);
  const trustedOff = localOff + localNets.length * CIDR;
  const slotsOff = trustedOff + trusted.length * CIDR;
  const portsOff = slotsOff + slotCount * SLOT;
  const stringsOff = align8(portsOff + portCount * 4);
  const total = align8(stringsOff + stringsLength);
  const buf = Buffer.alloc(total);
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const header = [MAGIC, VERSION, spec.generation >>> 0, total, targetsOff, targets.length, rangesOff, rangeCount, localOff, localNets.length,
    trustedOff, trusted.length, slotsOff, slotCount, portsOff, portCount, stringsOff, stringsLength];
  header.forEach((v, i) => dv.setUint32(4 * i, v, true));

  const writeCidr = (at: number, c: ReturnType<typeof parseCidr>, firstRange: number, ranges: number): void => {
    buf.set(c.key, at);
    buf[at + 16] = c.family;
    buf[at + 17] = c.keyPrefix;
    dv.setUint32(at + 20, firstRange, true);
    dv.setUint32(at + 24, ranges, true);
  };
  let range = 0;
  targets.forEach((t, i) => {
    writeCidr(targetsOff + i * CIDR, t.cidr, range, t.ports.length);
    for (const r of t.ports) {
      dv.setUint16(rangesOff + range * 4, r.from, true);
      dv.setUint16(rangesOff + range * 4 + 2, r.to, true);
      range++;
    }
  });
  localNets.forEach((c, i) => writeCidr(localOff + i * CIDR, c, 0, 0));
  trusted.forEach((c, i) => writeCidr(trustedOff + i * CIDR, c, 0, 0));

  let port = 0;
  let string = 0;
  let index = 0;
  for (const s of slotsByKey.values()) {
    let i = keyHash(s.key) & (slotCount - 1);
    while (buf[slotsOff + i * SLOT + 16] !== 0) i = (i + 1) & (slotCount - 1);
    const at = slotsOff + i * SLOT;
    buf.set(s.key, at);
    const e = s.entry;
    buf[at + 16] = 1 | (s.local ? 2 : 0) | (e !== null ? 4 : 0);
    if (e !== null) {
      buf[at + 17] = e.refuseAll === null ? 0 : REFUSE_ALL[e.refuseAll];
      buf[at + 18] = e.restrictMode ? 1 : 0;
      buf[at + 19] = e.source === 'override' ? 1 : e.source === 'policy' ? 2 : 0;
      dv.setUint32(at + 20, port, true);
      dv.setUint32(at + 24, e.ports.size, true);
      for (const [p, pp] of [...e.ports].sort((a, b) => a[0] - b[0])) dv.setUint32(portsOff + 4 * port++, (p << 1) | (pp ? 1 : 0), true);
      const written = buf.write(e.instanceId, stringsOff + string, 'latin1');
      dv.setUint32(at + 28, string, true);
      dv.setUint32(at + 32, written, true);
      string += written;
    }
    dv.setUint32(at + 36, index++, true);
  }
  return buf;
}
