// Typed, throwing wrappers over the addon's splice relay: native worker threads that move bytes
// between two connected TCP sockets with splice(2). One set of workers per process.
import { systemError, type SystemError } from '../errors.js';
import { loadAddon } from './addon.js';

export type SpliceRelayEnd = 'done' | 'error-a' | 'error-b' | 'idle-timeout' | 'aborted';

export interface SpliceRelayCompletion {
  readonly id: number;
  readonly end: SpliceRelayEnd;
  /** For error-a / error-b: the failure of socket A or B (syscall `splice`, or `epoll_ctl`). */
  readonly error: SystemError | null;
  /** Bytes written to B that came from A (including `pendingToB`), and the reverse. */
  readonly bytesAToB: number;
  readonly bytesBToA: number;
}

function invalidArg(name: string, value: unknown, expected: string): TypeError {
  return Object.assign(new TypeError(`${name} must be ${expected}, got ${JSON.stringify(value)}`), {
    code: 'ERR_INVALID_ARG_VALUE',
  });
}

function checkFd(name: string, fd: number): void {
  if (!Number.isInteger(fd) || fd < 0 || fd > 0x7fffffff) throw invalidArg(name, fd, 'a file descriptor');
}

/** A close-on-exec duplicate of `fd`: the open socket then outlives `fd` being closed. */
export function dupFd(fd: number): number {
  checkFd('fd', fd);
  const rc = loadAddon().dup(fd);
  if (rc < 0) throw systemError(rc, 'dup');
  return rc;
}

/**
 * Starts `threads` worker threads. `onEnd` runs on the JS thread once per relay. Throws EBUSY when
 * the workers are already running (one set per process).
 */
export function openSpliceRelayWorkers(threads: number, onEnd: (c: SpliceRelayCompletion) => void): void {
  if (!Number.isInteger(threads) || threads < 1 || threads > 256) throw invalidArg('threads', threads, 'an integer in 1..256');
  const addon = loadAddon();
  const e = addon.relayEnd;
  const ends = new Map<number, SpliceRelayEnd>([
    [e.DONE, 'done'],
    [e.ERROR_A, 'error-a'],
    [e.ERROR_B, 'error-b'],
    [e.IDLE_TIMEOUT, 'idle-timeout'],
    [e.ABORTED, 'aborted'],
  ]);
  const rc = addon.relayInit(threads, (id, end, negErrno, syscall, bytesAToB, bytesBToA) => {
    onEnd({
      id,
      end: ends.get(end) ?? 'aborted',
      error: negErrno < 0 ? systemError(negErrno, syscall ?? 'splice') : null,
      bytesAToB,
      bytesBToA,
    });
  });
  if (rc < 0) throw systemError(rc, 'relayInit');
}

/**
 * Hands two connected sockets to the workers and returns the relay's id. Takes ownership of both
 * fds, also when it throws. `pending.toB` / `pending.toA`: bytes already read from A / B (by Node),
 * written before anything the relay reads.
 */
export function startSpliceRelay(
  fdA: number,
  fdB: number,
  idleTimeoutMs: number,
  pending: { toB?: Buffer | undefined; toA?: Buffer | undefined } = {},
): number {
  const addon = loadAddon();
  try {
    checkFd('fdA', fdA);
    checkFd('fdB', fdB);
    if (!Number.isInteger(idleTimeoutMs) || idleTimeoutMs < 0 || idleTimeoutMs > 0xffffffff) {
      throw invalidArg('idleTimeoutMs', idleTimeoutMs, 'an integer in 0..2^32-1');
    }
  } catch (err) {
    if (Number.isInteger(fdA) && fdA >= 0) addon.close(fdA);
    if (Number.isInteger(fdB) && fdB >= 0) addon.close(fdB);
    throw err;
  }
  const rc = addon.relayStart(fdA, fdB, idleTimeoutMs, pending.toB, pending.toA);
  if (rc < 0) throw systemError(rc, 'relayStart');
  return rc;
}

/** Closes both sockets of a live relay; its completion then reports `aborted`. */
export function abortSpliceRelay(id: number): void {
  if (!Number.isSafeInteger(id) || id < 1) throw invalidArg('id', id, 'a relay id');
  loadAddon().relayAbort(id);
}

export interface SpliceRelayStats {
  /** Relays started and not yet reported. */
  readonly live: number;
  /** Worker threads; 0 when stopped. */
  readonly threads: number;
  /** Pipes held by relays: one per direction with bytes in flight (2 descriptors each). */
  readonly pipesInUse: number;
  /** Empty pipes the workers keep for reuse (2 descriptors each). */
  readonly pipesPooled: number;
  /** The most empty pipes each worker keeps; more are closed. */
  readonly pipePoolMax: number;
}

/** Live relays, worker threads, and the pipes (in use, pooled) behind them. */
export function spliceRelayStats(): SpliceRelayStats {
  return loadAddon().relayStats();
}

/** Stops the workers. Returns how many relays were still open: closed, never reported. */
export function closeSpliceRelayWorkers(): number {
  return loadAddon().relayShutdown();
}
