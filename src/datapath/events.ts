// The loop threads' event records (native/events.h writes them): decoded on the JavaScript
// thread, in batches, long after the connection stopped waiting for anything. Pure.
import { formatKey, ipKey } from '../net/ip.js';
import { KINDS, REASON_CODES, type DecisionKind, type DecisionReasonCode } from './table.js';

/** native/events.h `EventType`: `live` and `snapshot-done` answer a status snapshot. */
export type EventType = 'end' | 'open' | 'unknown-policy' | 'live' | 'snapshot-done';

const END_CODES = ['done', 'client-error', 'upstream-error', 'idle-timeout', 'aborted', 'connect-failed', 'refused', 'pp-rejected'] as const;
/** How a connection ended, as the loop saw it (connections.ts turns it into the close reason). */
export type EndCode = (typeof END_CODES)[number];
const TYPES: Readonly<Record<number, EventType>> = { 1: 'end', 2: 'open', 3: 'unknown-policy', 4: 'live', 5: 'snapshot-done' };
/** native/events.h `Syscall`. */
const SYSCALLS = ['', 'splice', 'socket', 'bind', 'setsockopt', 'connect', 'send', 'epoll_ctl', 'write', 'pipe2', 'getsockopt', 'recv'] as const;
/** native/pp.h `PpError`: the codec's codes (src/pp/errors.ts), then the connection's own two. */
export const PP_FAILURES = [
  '',
  'PP_ERR_NOT_PROXY',
  'PP_ERR_V1_TOO_LONG',
  'PP_ERR_V1_MALFORMED',
  'PP_ERR_V2_VERSION',
  'PP_ERR_V2_COMMAND',
  'PP_ERR_V2_FAMILY',
  'PP_ERR_V2_LENGTH',
  'PP_ERR_V2_TOO_LONG',
  'PP_ERR_TLV',
  'PP_ERR_CRC32C',
  'ERR_PP_TIMEOUT',
  'ERR_PP_INCOMPLETE',
] as const;

export interface Endpoint {
  readonly address: string;
  readonly port: number;
}

export interface ConnectionEvent {
  readonly type: EventType;
  /** Unique per process: the loop's index in its low 8 bits. */
  readonly id: number;
  /** null when the connection ended before its decision (a rejected inbound header). */
  readonly kind: DecisionKind | null;
  readonly reason: DecisionReasonCode | null;
  readonly end: EndCode;
  /** errno (client-error, upstream-error, connect-failed) or 0. */
  readonly errno: number;
  readonly syscall: string;
  /** pp-rejected: the PROXY failure code. */
  readonly ppFailure: string | null;
  /** The inbound PROXY header's version (0: none), whether it was a v2 LOCAL, and whether it named no client (the peer counts). */
  readonly inboundVersion: 0 | 1 | 2;
  readonly inboundLocal: boolean;
  readonly inboundNoClient: boolean;
  /** The source port the backend sees (0 before the upstream socket existed). */
  readonly upstreamPort: number;
  readonly peer: Endpoint;
  readonly destination: Endpoint;
  /** The peer, or the source of its PROXY header. */
  readonly client: Endpoint;
  readonly instanceId: string | null;
  /** Client bytes written to the upstream (our PROXY header excluded), and the reverse. */
  readonly bytesIn: number;
  readonly bytesOut: number;
  /** CLOCK_MONOTONIC µs (0 when the phase was not reached). */
  readonly acceptedUs: number;
  readonly decidedUs: number;
  readonly connectedUs: number;
  readonly endedUs: number;
}

const FIXED = 136;

function endpoint(buf: Buffer, at: number): Endpoint {
  if (buf[at + 18] === 0) return { address: '', port: 0 };
  return { address: formatKey(buf, at), port: buf.readUInt16LE(at + 16) };
}

/**
 * The offset of the record after the one at `at` (the batch's length at its end). Throws on a
 * truncated or malformed record (a bug).
 */
export function nextRecord(buf: Buffer, at: number): number {
  const size = buf.readUInt32LE(at);
  if (size < FIXED || at + size > buf.length) throw new Error(`event record at ${at} is malformed (size ${size}, batch ${buf.length})`);
  return at + size;
}

// What counters need, read in place: no object per connection when nothing logs or listens.
export const recordType = (buf: Buffer, at: number): EventType | null => TYPES[buf[at + 4]!] ?? null;
export const recordKind = (buf: Buffer, at: number): DecisionKind | null => KINDS[buf[at + 5]!] ?? null;
export const recordReason = (buf: Buffer, at: number): DecisionReasonCode | null => (buf[at + 5] === 255 ? null : (REASON_CODES.get(buf[at + 6]!) ?? null));
export const recordEnd = (buf: Buffer, at: number): EndCode => END_CODES[buf[at + 7]!] ?? 'aborted';
export const recordErrno = (buf: Buffer, at: number): number => (buf[at + 7] === 7 ? 0 : buf.readInt32LE(at + 16));
export const recordBytesIn = (buf: Buffer, at: number): number => buf.readDoubleLE(at + 88);
export const recordBytesOut = (buf: Buffer, at: number): number => buf.readDoubleLE(at + 96);
export const recordSyscall = (buf: Buffer, at: number): string => SYSCALLS[buf[at + 20]!] ?? '';
/** The inbound PROXY header's version (0: none). */
export const recordInbound = (buf: Buffer, at: number): number => buf[at + 21]! & 3;
export const recordAcceptedUs = (buf: Buffer, at: number): number => buf.readDoubleLE(at + 104);
export const recordDecidedUs = (buf: Buffer, at: number): number => buf.readDoubleLE(at + 112);
export const recordConnectedUs = (buf: Buffer, at: number): number => buf.readDoubleLE(at + 120);
export const recordEndedUs = (buf: Buffer, at: number): number => buf.readDoubleLE(at + 128);
/** pp-rejected: the PROXY failure code (the record's errno field carries its index). */
export const recordPpFailure = (buf: Buffer, at: number): string => PP_FAILURES[buf.readInt32LE(at + 16)] || 'PP_ERR_NOT_PROXY';

const LIVE_STATES = ['reading-header', 'connecting', 'relaying'] as const;
/** A live connection's state in a `live` record (native/events.h `LiveState`, in the `end` byte). */
export type LiveState = (typeof LIVE_STATES)[number];
export const recordLiveState = (buf: Buffer, at: number): LiveState => LIVE_STATES[buf[at + 7]!] ?? 'relaying';
/** live and snapshot-done: the number of the snapshot request they answer (in the errno field). */
export const recordSnapshotSeq = (buf: Buffer, at: number): number => buf.readInt32LE(at + 16);

/** The record at `at`, whole. */
export function decodeEvent(buf: Buffer, at: number): ConnectionEvent {
  const idLength = buf.readUInt32LE(at + 84);
  const end = recordEnd(buf, at);
  const inbound = buf[at + 21]!;
  return {
    type: recordType(buf, at) ?? 'end',
    id: buf.readDoubleLE(at + 8),
    kind: recordKind(buf, at),
    reason: recordReason(buf, at),
    end,
    errno: recordErrno(buf, at),
    syscall: recordSyscall(buf, at),
    ppFailure: end === 'pp-rejected' ? (PP_FAILURES[buf.readInt32LE(at + 16)] || null) : null,
    inboundVersion: (inbound & 3) as 0 | 1 | 2,
    inboundLocal: (inbound & 8) !== 0,
    inboundNoClient: (inbound & 4) !== 0,
    upstreamPort: buf.readUInt16LE(at + 22),
    peer: endpoint(buf, at + 24),
    destination: endpoint(buf, at + 44),
    client: endpoint(buf, at + 64),
    instanceId: idLength > 0 ? buf.toString('latin1', at + FIXED, at + FIXED + idLength) : null,
    bytesIn: recordBytesIn(buf, at),
    bytesOut: recordBytesOut(buf, at),
    acceptedUs: recordAcceptedUs(buf, at),
    decidedUs: recordDecidedUs(buf, at),
    connectedUs: recordConnectedUs(buf, at),
    endedUs: recordEndedUs(buf, at),
  };
}

/** Every record of a batch, in order. */
export function decodeEvents(buf: Buffer): ConnectionEvent[] {
  const out: ConnectionEvent[] = [];
  for (let at = 0; at < buf.length; at = nextRecord(buf, at)) out.push(decodeEvent(buf, at));
  return out;
}

const END_INDEX = new Map(END_CODES.map((c, i) => [c, i]));
const TYPE_INDEX = Object.fromEntries(Object.entries(TYPES).map(([n, t]) => [t, Number(n)])) as Readonly<Record<EventType, number>>;
const REASON_INDEX = new Map([...REASON_CODES].map(([n, r]) => [r, n]));

/**
 * One record as native/events.cc writes it, from its decoded form (tests and benchmarks feed
 * connections.ts with it; the engine tests hold the native writer to the same layout).
 */
export function encodeEvent(e: ConnectionEvent): Buffer {
  const id = Buffer.from(e.instanceId ?? '', 'latin1');
  const size = (FIXED + id.length + 7) & ~7;
  const buf = Buffer.alloc(size);
  const ep = (p: Endpoint, at: number): void => {
    if (p.address === '') return;
    const k = ipKey(p.address);
    if (k === null) throw new TypeError(`not an address: ${p.address}`);
    buf.set(k.key, at);
    buf.writeUInt16LE(p.port, at + 16);
    buf[at + 18] = k.family;
  };
  buf.writeUInt32LE(size, 0);
  buf[4] = TYPE_INDEX[e.type];
  buf[5] = e.kind === null ? 255 : KINDS.indexOf(e.kind);
  buf[6] = e.reason === null ? 0 : (REASON_INDEX.get(e.reason) ?? 0);
  buf[7] = END_INDEX.get(e.end) ?? 4;
  buf.writeDoubleLE(e.id, 8);
  buf.writeInt32LE(e.end === 'pp-rejected' ? Math.max(0, PP_FAILURES.indexOf(e.ppFailure as (typeof PP_FAILURES)[number])) : e.errno, 16);
  buf[20] = Math.max(0, SYSCALLS.indexOf(e.syscall as (typeof SYSCALLS)[number]));
  buf[21] = e.inboundVersion | (e.inboundNoClient ? 4 : 0) | (e.inboundLocal ? 8 : 0);
  buf.writeUInt16LE(e.upstreamPort, 22);
  ep(e.peer, 24);
  ep(e.destination, 44);
  ep(e.client, 64);
  buf.writeUInt32LE(id.length, 84);
  buf.writeDoubleLE(e.bytesIn, 88);
  buf.writeDoubleLE(e.bytesOut, 96);
  buf.writeDoubleLE(e.acceptedUs, 104);
  buf.writeDoubleLE(e.decidedUs, 112);
  buf.writeDoubleLE(e.connectedUs, 120);
  buf.writeDoubleLE(e.endedUs, 128);
  id.copy(buf, FIXED);
  return buf;
}
