// Loads the addon on first use (never at import time) and reports every path it tried.
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { InterceptorError } from '../errors.js';

export interface NativeConstants {
  readonly AF_INET: number;
  readonly AF_INET6: number;
  readonly SOL_SOCKET: number;
  readonly SOL_IP: number;
  readonly SOL_IPV6: number;
  readonly SO_REUSEADDR: number;
  readonly SO_REUSEPORT: number;
  readonly IP_TRANSPARENT: number;
  readonly IPV6_TRANSPARENT: number;
  readonly IPV6_V6ONLY: number;
  readonly IP_BIND_ADDRESS_NO_PORT: number;
  readonly RLIMIT_NOFILE: number;
}

/** How a native relay ended (`relayEnd` constants). */
export interface NativeRelayEnds {
  readonly DONE: number;
  readonly ERROR_A: number;
  readonly ERROR_B: number;
  readonly IDLE_TIMEOUT: number;
  readonly ABORTED: number;
  /** relayConnect only: the upstream socket could not be opened or connected; the client was reset. */
  readonly CONNECT_FAILED: number;
}

/**
 * Called on the JS thread once per relay: `negErrno` is 0 unless `end` is ERROR_A/ERROR_B, and
 * `syscall` names the failed call then; bytes are those written to B (from A) and to A (from B).
 */
export type NativeRelayEndCallback = (
  id: number,
  end: number,
  negErrno: number,
  syscall: string | undefined,
  bytesAToB: number,
  bytesBToA: number,
  adoptedUs: number,
  connectedUs: number,
  endedUs: number,
) => void;

/** The raw addon: every function returns an fd, 0 or -errno. */
export interface NativeAddon {
  socket(family: number): number;
  setsockopt(fd: number, level: number, name: number, value: number): number;
  bind(fd: number, address: string, port: number): number;
  listen(fd: number, backlog: number): number;
  close(fd: number): number;
  dup(fd: number): number;
  /** Starts the splice relay's worker threads; -EBUSY when already running. */
  relayInit(threads: number, onEnd: NativeRelayEndCallback, pipeSize: number): number;
  /** Takes ownership of both fds, also on failure. Returns the relay id or -errno. */
  relayStart(fdA: number, fdB: number, idleTimeoutMs: number, pendingToB?: Buffer, pendingToA?: Buffer): number;
  relayAbort(id: number): number;
  /**
   * A worker opens and connects the upstream socket (spoofing `sourceAddress` unless "", from
   * `sourcePort` unless 0 or in use), writes `firstBytes` first, then relays. Takes ownership of
   * clientFd, also on failure. Id or -errno.
   */
  relayConnect(
    clientFd: number,
    family: number,
    sourceAddress: string,
    sourcePort: number,
    address: string,
    port: number,
    connectTimeoutMs: number,
    idleTimeoutMs: number,
    firstBytes?: Buffer,
  ): number;
  /** Closes the socket with a RST (SO_LINGER 0). 0 or -errno; the fd is closed either way. */
  relayReset(fd: number): number;
  /**
   * Accepts on `listenFd` from the JS thread's event loop (uv_poll); batches arrive as flat arrays
   * of [fd, family (4|6), peerAddress, peerPort, localAddress, localPort, acceptedUs, ...]. Id or
   * -errno.
   */
  acceptorStart(listenFd: number, onAccepted: (batch: Array<number | string>) => void): number;
  /** Stops accepting; the listening socket stays open. */
  acceptorStop(id: number): number;
  /**
   * Relays started and not yet reported; pipes held by relays (bytes in flight), empty pipes the
   * workers keep, and the most each worker keeps (descriptors: 2 per pipe).
   */
  relayStats(): { live: number; threads: number; pipesInUse: number; pipesPooled: number; pipePoolMax: number; pipeSize: number; pipeSizeRefused: number };
  /** Stops the workers; returns how many relays were still open (closed unreported). */
  relayShutdown(): number;
  /** [soft, hard], RLIM_INFINITY as Infinity; or -errno. */
  getrlimit(resource: number): [soft: number, hard: number] | number;
  /** Infinity means RLIM_INFINITY; -EINVAL for a negative or fractional limit. */
  setrlimit(resource: number, soft: number, hard: number): number;
  readonly relayEnd: NativeRelayEnds;
  readonly constants: NativeConstants;
}

let cached: NativeAddon | undefined;

export function loadAddon(): NativeAddon {
  if (cached) return cached;
  const require = createRequire(import.meta.url);
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
  const candidates = [
    process.env.TPROXY_INTERCEPTOR_ADDON,
    path.join(root, 'build', 'Release', 'tproxy_native.node'),
    path.join(root, 'build', 'Debug', 'tproxy_native.node'),
  ].filter((p): p is string => typeof p === 'string' && p.length > 0);
  const failures: string[] = [];
  for (const candidate of candidates) {
    try {
      cached = require(candidate) as NativeAddon;
      return cached;
    } catch (err) {
      failures.push(`  ${candidate}: ${(err as Error).message.split('\n')[0]}`);
    }
  }
  throw new InterceptorError(
    'ERR_ADDON_MISSING',
    `the native addon could not be loaded; run \`npm run build\`. Tried:\n${failures.join('\n')}`,
  );
}
