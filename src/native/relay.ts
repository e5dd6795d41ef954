// Typed, throwing wrappers over the addon's splice relay: native worker threads that move bytes
// between two TCP sockets with splice(2), either handed over connected (relayStart) or with the
// upstream connected by the worker itself (relayConnect). One set of workers per process.
import { readFileSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { InterceptorError, systemError, type SystemError } from '../errors.js';
import { loadAddon } from './addon.js';
import { checkFd, invalidArg, isFd } from './args.js';

export type SpliceRelayEnd = 'done' | 'error-a' | 'error-b' | 'idle-timeout' | 'aborted' | 'connect-failed';

export interface SpliceRelayCompletion {
  readonly id: number;
  readonly end: SpliceRelayEnd;
  /** error-a / error-b: the failure of socket A or B (syscall `splice`, or `epoll_ctl`); connect-failed: `socket`, `bind`, `connect` (ETIMEDOUT for the timeout). */
  readonly error: SystemError | null;
  /** Bytes written to B that came from A (including `pendingToB`), and the reverse. */
  readonly bytesAToB: number;
  readonly bytesBToA: number;
  /** CLOCK_MONOTONIC µs (see acceptor.ts monotonicUs): a worker took the relay, the upstream connected (relayConnect only; 0 otherwise), the relay ended. */
  readonly adoptedUs: number;
  readonly connectedUs: number;
  readonly endedUs: number;
}

/** A close-on-exec duplicate of `fd`: the open socket then outlives `fd` being closed. */
export function dupFd(fd: number): number {
  checkFd('fd', fd);
  const rc = loadAddon().dup(fd);
  if (rc < 0) throw systemError(rc, 'dup');
  return rc;
}

/**
 * Starts `threads` worker threads. `onEnd` runs on the JS thread once per relay. `pipeSize`: bytes
 * per splice pipe, 0 for the kernel's default (64 KiB); the kernel rounds it up to a power of two
 * pages. Throws EBUSY when the workers are already running (one set per process), and
 * ERR_PIPE_SIZE when the kernel refuses a pipe of that size.
 */
export function openSpliceRelayWorkers(threads: number, onEnd: (c: SpliceRelayCompletion) => void, pipeSize = 0): void {
  if (!Number.isInteger(threads) || threads < 1 || threads > 256) throw invalidArg('threads', threads, 'an integer in 1..256');
  if (!Number.isInteger(pipeSize) || pipeSize < 0 || pipeSize > 0x7fffffff) throw invalidArg('pipeSize', pipeSize, 'an integer number of bytes');
  const addon = loadAddon();
  const e = addon.relayEnd;
  const ends = new Map<number, SpliceRelayEnd>([
    [e.DONE, 'done'],
    [e.ERROR_A, 'error-a'],
    [e.ERROR_B, 'error-b'],
    [e.IDLE_TIMEOUT, 'idle-timeout'],
    [e.ABORTED, 'aborted'],
    [e.CONNECT_FAILED, 'connect-failed'],
  ]);
  const rc = addon.relayInit(threads, (id, end, negErrno, syscall, bytesAToB, bytesBToA, adoptedUs, connectedUs, endedUs) => {
    onEnd({
      id,
      end: ends.get(end) ?? 'aborted',
      error: negErrno < 0 ? systemError(negErrno, syscall ?? 'splice') : null,
      bytesAToB,
      bytesBToA,
      adoptedUs,
      connectedUs,
      endedUs,
    });
  }, pipeSize);
  if (rc < 0 && rc !== -osConstants.errno.EBUSY && pipeSize > 0) {
    const cause = systemError(rc, 'fcntl');
    throw new InterceptorError(
      'ERR_PIPE_SIZE',
      `upstream.pipe_size ${pipeSize} was refused by the kernel (${cause.code}): it may not exceed fs.pipe-max-size ` +
        `(${readSysctl('fs/pipe-max-size')} here) nor, without CAP_SYS_RESOURCE, push the user's pipes past ` +
        `fs.pipe-user-pages-soft (${readSysctl('fs/pipe-user-pages-soft')} pages); lower upstream.pipe_size or set it to 0 for the kernel's default`,
      { cause },
    );
  }
  if (rc < 0) throw systemError(rc, 'relayInit');
}

function readSysctl(name: string): string {
  try {
    return readFileSync(`/proc/sys/${name}`, 'utf8').trim();
  } catch {
    return 'unknown';
  }
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
  /** Bytes a new pipe gets (the kernel's default when no size was asked for); 0 when stopped. */
  readonly pipeSize: number;
  /** New pipes the kernel refused that size (fs.pipe-user-pages-soft): they kept its default. */
  readonly pipeSizeRefused: number;
}

/** Live relays, worker threads, and the pipes (in use, pooled) behind them. */
export function spliceRelayStats(): SpliceRelayStats {
  return loadAddon().relayStats();
}

/** Stops the workers. Returns how many relays were still open: closed, never reported. */
export function closeSpliceRelayWorkers(): number {
  return loadAddon().relayShutdown();
}

export interface RelayConnectOptions {
  readonly clientFd: number;
  readonly family: 4 | 6;
  /** Spoof this source address (the transparent path); null connects from our own address. */
  readonly sourceAddress: string | null;
  /** With sourceAddress: keep this port (falls back to an ephemeral one if in use); 0 = ephemeral. */
  readonly sourcePort?: number;
  readonly address: string;
  readonly port: number;
  /** 0 = no limit beyond the kernel's. */
  readonly connectTimeoutMs: number;
  readonly idleTimeoutMs: number;
  /** Written to the upstream before any client byte (the PROXY header). */
  readonly firstBytes?: Buffer | undefined;
}

/**
 * Hands the client to a relay worker, which connects the upstream itself. Returns the relay id;
 * its completion reports `connect-failed` (client reset) or how the relay ended. Takes ownership
 * of `clientFd`, also when it throws (the client is then reset).
 */
export function connectRelay(opts: RelayConnectOptions): number {
  const addon = loadAddon();
  const c = addon.constants;
  if (!isFd(opts.clientFd)) throw invalidArg('clientFd', opts.clientFd, 'a file descriptor');
  const rc = addon.relayConnect(
    opts.clientFd,
    opts.family === 6 ? c.AF_INET6 : c.AF_INET,
    opts.sourceAddress ?? '',
    opts.sourcePort ?? 0,
    opts.address,
    opts.port,
    opts.connectTimeoutMs,
    opts.idleTimeoutMs,
    opts.firstBytes,
  );
  if (rc < 0) throw systemError(rc, 'relayConnect', { address: opts.address, port: opts.port });
  return rc;
}

/** Closes `fd` with a RST: the client of a refused connection sees ECONNRESET, not an empty reply. */
export function resetConnection(fd: number): void {
  if (!isFd(fd)) throw invalidArg('fd', fd, 'a file descriptor');
  loadAddon().relayReset(fd);
}
