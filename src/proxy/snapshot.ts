// Live connections for `status`: the loop threads' answers to a snapshot request, gathered into
// one list. A request asks every thread (native/loop.cc `Snapshot`); each answers at its next
// wake-up, through the same event batches as the connections' ends, with a `live` record per
// connection and a `snapshot-done` record. Requests are taken one at a time: callers that come
// while one is out share the next one.
import { decodeEvent, recordEndedUs, recordLiveState, recordSnapshotSeq, recordBytesIn, recordType, type LiveState } from '../datapath/events.js';
import type { DecisionKind, DecisionReasonCode } from '../datapath/table.js';
import { InterceptorError } from '../errors.js';

export interface LiveConnection {
  readonly id: number;
  /** The loop thread that owns it (the id's low 8 bits). */
  readonly thread: number;
  readonly peer: string;
  /** The peer, or the source its trusted PROXY header named. */
  readonly client: string;
  /** The original destination. */
  readonly destination: string;
  /** null while a trusted source's header is awaited. */
  readonly path: DecisionKind | null;
  readonly decision: DecisionReasonCode | null;
  readonly instanceId: string | null;
  readonly state: LiveState;
  /** The source port the backend sees (0 before the upstream socket exists). */
  readonly upstreamPort: number;
  /** Client bytes written to the upstream so far, and the reverse. */
  readonly bytesIn: number;
  readonly bytesOut: number;
  readonly ageMs: number;
}

export interface Snapshot {
  /** At most `limit` per thread, oldest first. */
  readonly connections: readonly LiveConnection[];
  /** Connections the threads held when they answered (more than `connections` when limited). */
  readonly live: number;
  readonly threads: number;
}

export interface Snapshots {
  /** A fresh snapshot: taken after this call, at most `limitPerThread` connections per thread. */
  take(limitPerThread: number): Promise<Snapshot>;
  /** A `live` or `snapshot-done` record of an event batch (connections.ts hands them here). */
  onRecord(batch: Buffer, at: number): void;
}

interface Pending {
  readonly seq: number;
  readonly threads: number;
  answered: number;
  live: number;
  readonly connections: LiveConnection[];
  readonly resolve: (s: Snapshot) => void;
  readonly reject: (err: Error) => void;
  readonly timer: NodeJS.Timeout;
}

const text = (p: { address: string; port: number }): string => (p.address.includes(':') ? `[${p.address}]:${p.port}` : `${p.address}:${p.port}`);

export function createSnapshots(opts: {
  /** Asks the threads; returns the request's number, or throws when no engine runs. */
  request: (limitPerThread: number) => number;
  threads: () => number;
  timeoutMs?: number;
}): Snapshots {
  const timeoutMs = opts.timeoutMs ?? 5000;
  let current: Pending | null = null;
  let queued: { limit: number; waiters: Array<{ resolve: (s: Snapshot) => void; reject: (e: Error) => void }> } | null = null;

  const start = (limit: number): Promise<Snapshot> =>
    new Promise((resolve, reject) => {
      const threads = opts.threads();
      const seq = opts.request(limit);
      const timer = setTimeout(() => {
        finish(new InterceptorError('ERR_STATUS_TIMEOUT', `${threads - (current?.answered ?? 0)} of ${threads} loop threads did not answer the status request within ${timeoutMs} ms`));
      }, timeoutMs);
      timer.unref();
      current = { seq, threads, answered: 0, live: 0, connections: [], resolve, reject, timer };
    });

  const finish = (err: Error | null): void => {
    const p = current;
    if (p === null) return;
    current = null;
    clearTimeout(p.timer);
    if (err !== null) p.reject(err);
    else p.resolve({ connections: p.connections.sort((a, b) => b.ageMs - a.ageMs), live: p.live, threads: p.threads });
    const next = queued;
    queued = null;
    if (next !== null) {
      start(next.limit).then(
        (s) => next.waiters.forEach((w) => w.resolve(s)),
        (e: Error) => next.waiters.forEach((w) => w.reject(e)),
      );
    }
  };

  return {
    take(limitPerThread) {
      if (current === null) return start(limitPerThread);
      // One is out, and was asked for before this call: this caller waits for the next one.
      return new Promise((resolve, reject) => {
        queued ??= { limit: 0, waiters: [] };
        queued.limit = Math.max(queued.limit, limitPerThread);
        queued.waiters.push({ resolve, reject });
      });
    },
    onRecord(batch, at) {
      const p = current;
      // A late answer to a request that timed out is dropped.
      if (p === null || recordSnapshotSeq(batch, at) !== p.seq) return;
      if (recordType(batch, at) === 'snapshot-done') {
        p.live += recordBytesIn(batch, at);
        if (++p.answered === p.threads) finish(null);
        return;
      }
      const e = decodeEvent(batch, at);
      p.connections.push({
        id: e.id,
        thread: e.id % 256,
        peer: text(e.peer),
        client: text(e.client),
        destination: text(e.destination),
        path: e.kind,
        decision: e.kind === null ? null : e.reason,
        instanceId: e.instanceId,
        state: recordLiveState(batch, at),
        upstreamPort: e.upstreamPort,
        bytesIn: e.bytesIn,
        bytesOut: e.bytesOut,
        ageMs: Math.max(0, Math.round((recordEndedUs(batch, at) - e.acceptedUs) / 1000)),
      });
    },
  };
}
