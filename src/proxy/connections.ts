// The one owner of a connection's end: the close reason (mapped here and nowhere else), its log
// line (a `conn` id on every line, a debug line at open, the source port the backend sees), the
// counters, and the events metrics subscribe to. Fed by the loop threads' event batches
// (src/datapath/events.ts); nothing here runs on a connection's path.
import { EventEmitter } from 'node:events';
import { getSystemErrorName } from 'node:util';
import type { Logger } from 'pino';
import {
  decodeEvent,
  nextRecord,
  recordBytesIn,
  recordBytesOut,
  recordEnd,
  recordErrno,
  recordKind,
  recordPpFailure,
  recordReason,
  recordSyscall,
  recordType,
  type ConnectionEvent,
  type EndCode,
} from '../datapath/events.js';
import type { DecisionKind, DecisionReasonCode } from '../datapath/table.js';
import { systemError } from '../errors.js';
import type { RefuseReason } from '../registry/types.js';

export type CloseReason =
  | 'done'
  | 'client-reset'
  | 'upstream-reset'
  | 'client-error'
  | 'upstream-error'
  | 'idle-timeout'
  | 'connect-failed'
  | 'pp-rejected'
  | 'shutdown'
  | RefuseReason;

/** What `end` listeners receive: one connection, as its log line tells it. */
export interface ConnectionEnd {
  readonly id: number;
  readonly peer: string;
  readonly client: string;
  readonly destination: string;
  /** null when it ended before its decision (a rejected inbound header). */
  readonly path: DecisionKind | null;
  readonly decision: DecisionReasonCode | null;
  readonly instanceId: string | null;
  readonly reason: CloseReason;
  readonly bytesIn: number;
  readonly bytesOut: number;
  readonly durationMs: number;
  /** µs per phase: `inboundPp` or `decide`, then `connect` and `relay` as far as it got. */
  readonly phasesUs: Readonly<Record<string, number>>;
  /** The source port the backend saw (0: no upstream socket). */
  readonly upstreamPort: number;
  readonly error: { readonly code: string; readonly message: string } | null;
}

export interface ConnectionCounters {
  /** Ended connections by close reason (refusals by their RefuseReason). */
  readonly closed: Readonly<Record<string, number>>;
  /** Decisions by path. */
  readonly transparent: number;
  readonly proxy: number;
  readonly refused: number;
  readonly overCapacity: number;
  readonly bytesIn: number;
  readonly bytesOut: number;
}

export interface Connections {
  /**
   * 'open' (ConnectionEnd-shaped, at connect start, only with debug logs), 'end' (ConnectionEnd),
   * 'over-capacity' (count), 'batch' (each event batch as the engine delivered it, once, before
   * its records are handled: for counting in place, src/metrics/tally.ts).
   */
  readonly events: EventEmitter;
  /** Decodes and handles one batch from the engine. */
  onBatch(batch: Buffer): void;
  /** Connections the engine reset over capacity since the last call (they have no event each). */
  onOverCapacity(count: number, maxConnections: number): void;
  /** Instances refused for an unknown policy are passed here (at most once a second each). */
  onUnknownPolicy(handler: (instanceId: string) => void): void;
  /** The records that answer a status snapshot (`live`, `snapshot-done`) are passed here. */
  onSnapshotRecord(handler: (batch: Buffer, at: number) => void): void;
  counters(): ConnectionCounters;
}

const isReset = (errno: number): boolean => errno === 104 /* ECONNRESET */ || errno === 32; /* EPIPE */

/** The close reason of an ended connection: the one mapping from what the loop saw. */
export function closeReason(e: Pick<ConnectionEvent, 'end' | 'errno' | 'reason'>): CloseReason {
  return closeReasonOf(e.end, e.errno, e.reason);
}

function closeReasonOf(end: EndCode, errno: number, reason: DecisionReasonCode | null): CloseReason {
  switch (end) {
    case 'done':
      return 'done';
    case 'client-error':
      return isReset(errno) ? 'client-reset' : 'client-error';
    case 'upstream-error':
      return isReset(errno) ? 'upstream-reset' : 'upstream-error';
    case 'idle-timeout':
      return 'idle-timeout';
    case 'aborted':
      return 'shutdown';
    case 'connect-failed':
      return 'connect-failed';
    case 'pp-rejected':
      return 'pp-rejected';
    case 'refused':
      return (reason ?? 'not_a_target') as RefuseReason;
  }
}

const levelOf = (reason: CloseReason): 'info' | 'warn' => (reason === 'done' || reason === 'client-reset' || reason === 'shutdown' ? 'info' : 'warn');

/**
 * The error code of an ended connection (null: none): its PROXY failure, ERR_CONNECT_TIMEOUT, or
 * the errno's name. The one mapping, for the log line and for counting in place (metrics).
 */
function errorCodeOf(end: EndCode, errno: number, syscall: string, ppFailure: string | null): string | null {
  if (end === 'pp-rejected') return ppFailure ?? 'PP_ERR_NOT_PROXY';
  if (errno === 0) return null;
  if (end === 'connect-failed' && errno === 110 /* ETIMEDOUT */ && syscall === 'connect') return 'ERR_CONNECT_TIMEOUT';
  return getSystemErrorName(-errno);
}

/** The close reason of the `end` record at `at` of a batch, read in place. */
export function recordCloseReason(batch: Buffer, at: number): CloseReason {
  return closeReasonOf(recordEnd(batch, at), recordErrno(batch, at), recordReason(batch, at));
}

/** The error code of the `end` record at `at` of a batch (null: it ended without one), read in place. */
export function recordErrorCode(batch: Buffer, at: number): string | null {
  const end = recordEnd(batch, at);
  return errorCodeOf(end, recordErrno(batch, at), recordSyscall(batch, at), end === 'pp-rejected' ? recordPpFailure(batch, at) : null);
}

function errorOf(e: ConnectionEvent): { code: string; message: string } | null {
  const code = errorCodeOf(e.end, e.errno, e.syscall, e.ppFailure);
  if (code === null) return null;
  if (e.end === 'pp-rejected') {
    const message =
      code === 'ERR_PP_TIMEOUT' ? 'no complete PROXY header in time from a trusted source'
      : code === 'ERR_PP_INCOMPLETE' ? 'the connection ended inside its PROXY header'
      : `invalid PROXY header from a trusted source (${code})`;
    return { code, message };
  }
  if (code === 'ERR_CONNECT_TIMEOUT') return { code, message: `connect to ${e.destination.address}:${e.destination.port} timed out` };
  return { code, message: systemError(-e.errno, e.syscall || 'splice').message };
}

const us = (from: number, to: number): number => Math.max(0, Math.round(to - from));

function phasesOf(e: ConnectionEvent): Record<string, number> {
  const phases: Record<string, number> = {};
  const decided = e.decidedUs > 0 ? e.decidedUs : e.endedUs;
  phases[e.inboundVersion !== 0 || e.end === 'pp-rejected' ? 'inboundPp' : 'decide'] = us(e.acceptedUs, decided);
  if (e.decidedUs > 0 && (e.connectedUs > 0 || e.end === 'connect-failed')) {
    phases.connect = us(e.decidedUs, e.connectedUs > 0 ? e.connectedUs : e.endedUs);
  }
  if (e.connectedUs > 0) phases.relay = us(e.connectedUs, e.endedUs);
  return phases;
}

const text = (p: { address: string; port: number }): string => `${p.address}:${p.port}`;

function endOf(e: ConnectionEvent): ConnectionEnd {
  return {
    id: e.id,
    peer: text(e.peer),
    client: text(e.client),
    destination: text(e.destination),
    path: e.kind,
    decision: e.reason,
    instanceId: e.instanceId,
    reason: closeReason(e),
    bytesIn: e.bytesIn,
    bytesOut: e.bytesOut,
    durationMs: Math.round((e.endedUs - e.acceptedUs) / 1000),
    phasesUs: phasesOf(e),
    upstreamPort: e.upstreamPort,
    error: errorOf(e),
  };
}

export function createConnections(opts: { logger: Logger }): Connections {
  const log = opts.logger.child({ component: 'proxy' });
  const events = new EventEmitter();
  const closed: Record<string, number> = {};
  const c = { transparent: 0, proxy: 0, refused: 0, overCapacity: 0, bytesIn: 0, bytesOut: 0 };
  let unknownPolicy: (id: string) => void = () => {};
  let snapshotRecord: (batch: Buffer, at: number) => void = () => {};

  const fields = (e: ConnectionEvent, end: ConnectionEnd): Record<string, unknown> => {
    const f: Record<string, unknown> = { conn: end.id, peer: end.peer, dst: end.destination };
    if (e.inboundVersion !== 0) f.inbound = `v${e.inboundVersion} ${e.inboundLocal ? 'LOCAL' : 'PROXY'}`;
    f.client = end.client;
    if (end.path !== null) f.path = end.path;
    if (end.decision !== null) f.decision = end.decision;
    if (end.instanceId !== null) f.instance = end.instanceId;
    if (end.upstreamPort !== 0) f.upstreamPort = end.upstreamPort;
    return f;
  };

  // Counted in place; decoded into objects only when a line is logged or someone listens: under
  // load that is the difference between a few hundred ns per connection and a young generation
  // that grows with every burst (and stays grown).
  const onEnd = (batch: Buffer, at: number): void => {
    const kind = recordKind(batch, at);
    if (kind === 'transparent') c.transparent++;
    else if (kind === 'proxy') c.proxy++;
    else if (kind === 'refuse') c.refused++;
    c.bytesIn += recordBytesIn(batch, at);
    c.bytesOut += recordBytesOut(batch, at);
    const reason = recordCloseReason(batch, at);
    closed[reason] = (closed[reason] ?? 0) + 1;
    const level = levelOf(reason);
    const wanted = log.isLevelEnabled(level);
    if (!wanted && events.listenerCount('end') === 0) return;
    const e = decodeEvent(batch, at);
    const end = endOf(e);
    if (wanted) {
      log[level](
        {
          ...fields(e, end),
          reason,
          bytesIn: end.bytesIn,
          bytesOut: end.bytesOut,
          durationMs: end.durationMs,
          phasesUs: end.phasesUs,
          ...(end.error ? { err: end.error } : {}),
        },
        'connection closed',
      );
    }
    events.emit('end', end);
  };

  return {
    events,
    onBatch(batch) {
      if (events.listenerCount('batch') > 0) events.emit('batch', batch);
      for (let at = 0; at < batch.length; at = nextRecord(batch, at)) {
        const type = recordType(batch, at);
        if (type === 'end') {
          onEnd(batch, at);
        } else if (type === 'live' || type === 'snapshot-done') {
          snapshotRecord(batch, at);
        } else if (type === 'unknown-policy') {
          const e = decodeEvent(batch, at);
          if (e.instanceId !== null) unknownPolicy(e.instanceId);
        } else if (type === 'open') {
          const e = decodeEvent(batch, at);
          const open = endOf(e);
          log.debug({ ...fields(e, open) }, 'connection open');
          events.emit('open', open);
        }
      }
    },
    onOverCapacity(count, maxConnections) {
      if (count <= 0) return;
      c.overCapacity += count;
      closed.over_capacity = (closed.over_capacity ?? 0) + count;
      // One line per interval, not per connection: under overload that would cost more than the refusal.
      log.warn({ reason: 'over_capacity', refused: count, refusedTotal: c.overCapacity, maxConnections }, 'connections refused: over capacity');
      events.emit('over-capacity', count);
    },
    onUnknownPolicy(handler) {
      unknownPolicy = handler;
    },
    onSnapshotRecord(handler) {
      snapshotRecord = handler;
    },
    counters: () => ({ ...c, closed: { ...closed } }),
  };
}
