// Typed, throwing wrappers over the addon's native connection path: the acceptor (accept4 on a
// native thread, batches to JS) and the relay's own upstream connect (relayConnect), so that a
// connection needs no net.Socket at all. JavaScript only decides.
import { systemError, type SystemError } from '../errors.js';
import { loadAddon } from './addon.js';

export interface AcceptedConnection {
  /** The accepted socket (non-blocking, close-on-exec); the receiver owns it. */
  readonly fd: number;
  readonly family: 4 | 6;
  readonly peerAddress: string;
  readonly peerPort: number;
  /** Under tproxy: the client's original destination. */
  readonly localAddress: string;
  readonly localPort: number;
}

export type NativeRelayEnd = 'done' | 'error-a' | 'error-b' | 'idle-timeout' | 'aborted' | 'connect-failed';

export interface NativeRelayCompletion {
  readonly id: number;
  readonly end: NativeRelayEnd;
  /** error-a / error-b: the failed socket (syscall `splice`...); connect-failed: `socket`, `bind`, `connect` (ETIMEDOUT for the timeout). */
  readonly error: SystemError | null;
  /** Bytes written to the upstream (including `firstBytes`) and to the client. */
  readonly bytesAToB: number;
  readonly bytesBToA: number;
}

function invalidArg(name: string, value: unknown, expected: string): TypeError {
  return Object.assign(new TypeError(`${name} must be ${expected}, got ${JSON.stringify(value)}`), {
    code: 'ERR_INVALID_ARG_VALUE',
  });
}

function isFd(fd: unknown): fd is number {
  return Number.isInteger(fd) && (fd as number) >= 0 && (fd as number) <= 0x7fffffff;
}

/**
 * Starts accepting on `listenFd` (a listening, non-blocking socket; still the caller's to close).
 * `onAccepted` runs on the JS thread with each batch and owns every fd in it. Returns the id.
 */
export function startAcceptor(listenFd: number, onAccepted: (batch: AcceptedConnection[]) => void): number {
  if (!isFd(listenFd)) throw invalidArg('listenFd', listenFd, 'a file descriptor');
  if (typeof onAccepted !== 'function') throw invalidArg('onAccepted', onAccepted, 'a function');
  const rc = loadAddon().acceptorStart(listenFd, (flat) => {
    const batch: AcceptedConnection[] = new Array(flat.length / 6);
    for (let i = 0, k = 0; i < flat.length; i += 6, k++) {
      batch[k] = {
        fd: flat[i] as number,
        family: flat[i + 1] as 4 | 6,
        peerAddress: flat[i + 2] as string,
        peerPort: flat[i + 3] as number,
        localAddress: flat[i + 4] as string,
        localPort: flat[i + 5] as number,
      };
    }
    onAccepted(batch);
  });
  if (rc < 0) throw systemError(rc, 'acceptorStart');
  return rc;
}

/** Stops accepting; connections accepted and not yet delivered are closed. */
export function stopAcceptor(id: number): void {
  const rc = loadAddon().acceptorStop(id);
  if (rc < 0) throw systemError(rc, 'acceptorStop');
}

/**
 * Starts the relay's worker threads (one set per process, shared with the splice relay's
 * `relayStart`): `onEnd` runs on the JS thread once per relay. Throws EBUSY when already running.
 */
export function openNativeRelayWorkers(threads: number, onEnd: (c: NativeRelayCompletion) => void): void {
  if (!Number.isInteger(threads) || threads < 1 || threads > 256) throw invalidArg('threads', threads, 'an integer in 1..256');
  const addon = loadAddon();
  const e = addon.relayEnd;
  const ends: NativeRelayEnd[] = [];
  ends[e.DONE] = 'done';
  ends[e.ERROR_A] = 'error-a';
  ends[e.ERROR_B] = 'error-b';
  ends[e.IDLE_TIMEOUT] = 'idle-timeout';
  ends[e.ABORTED] = 'aborted';
  ends[e.CONNECT_FAILED] = 'connect-failed';
  const rc = addon.relayInit(threads, (id, end, negErrno, syscall, bytesAToB, bytesBToA) => {
    onEnd({
      id,
      end: ends[end] ?? 'aborted',
      error: negErrno < 0 ? systemError(negErrno, syscall ?? 'splice') : null,
      bytesAToB,
      bytesBToA,
    });
  });
  if (rc < 0) throw systemError(rc, 'relayInit');
}

export interface RelayConnectOptions {
  readonly clientFd: number;
  readonly family: 4 | 6;
  /** Spoof this source address (the transparent path); null connects from our own address. */
  readonly sourceAddress: string | null;
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
