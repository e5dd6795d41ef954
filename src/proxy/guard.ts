// What the destination guard and the connection cap are made of. A connection reaches the
// listener with its original destination as the socket's local address. Two kinds must never be
// relayed: a destination outside intercept.targets (the listener was reached some other way:
// straight to a wildcard listener, or by a rule we do not own), and an address of this host
// (connecting there would hand the connection back to the listener itself: one client connection
// nested thousands deep until the descriptors ran out). The loop threads apply both from the
// decision table (src/datapath/table.ts); this file says what this host's addresses are and how
// many connections fit. Pure, except `hostAddresses`, which reads this host's interfaces, and
// `warnTargetsContainingLocal`, which logs.
import { networkInterfaces } from 'node:os';
import type { Logger } from 'pino';
import type { ListenConfig, Target } from '../config.js';
import { compileCidrMatcher } from '../net/cidr.js';

/** Networks that are always this host's, whatever the interfaces say. */
export const ALWAYS_LOCAL = ['127.0.0.0/8', '::1/128', '0.0.0.0/32', '::/128'] as const;

/** Every address configured on this host's interfaces (in the current network namespace). */
export function hostAddresses(): string[] {
  const out = new Set<string>();
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) out.add(a.address);
  }
  return [...out].sort();
}

/** The listeners' addresses: listen.address, then listen.address6 unless IPv6 is disabled. */
export function listenAddresses(listen: Pick<ListenConfig, 'address' | 'address6'>): string[] {
  return [listen.address, ...(listen.address6 ? [listen.address6] : [])];
}

/** Targets that contain addresses of this host: `run` warns about them (see README). */
export function targetsContainingLocal(targets: readonly Target[], localAddresses: readonly string[]): Array<{ cidr: string; addresses: string[] }> {
  const out: Array<{ cidr: string; addresses: string[] }> = [];
  for (const t of targets) {
    const contains = compileCidrMatcher([t.cidr]);
    const addresses = [...ALWAYS_LOCAL.map((c) => c.slice(0, c.indexOf('/'))), ...localAddresses].filter((a) => contains(a));
    if (addresses.length > 0) out.push({ cidr: t.cidr, addresses: [...new Set(addresses)] });
  }
  return out;
}

/** The warning `run` logs for each of them, at start and at each reload. */
export function warnTargetsContainingLocal(logger: Logger, targets: readonly Target[], localAddresses: readonly string[]): void {
  for (const t of targetsContainingLocal(targets, localAddresses)) {
    logger.warn(
      { cidr: t.cidr, addresses: t.addresses, reason: 'local_destination' },
      'a target contains addresses of this host: connections to them are refused (local_destination), never relayed',
    );
  }
}

/** Descriptors kept out of the connection budget: admin socket and its clients, store, logs, listeners, epoll. */
const FD_RESERVE_BASE = 256;
/** And per relay thread: its pool of empty pipes (64 pipes, two descriptors each). */
const FD_RESERVE_PER_THREAD = 128;

/**
 * The default connection cap: each connection holds two sockets, so
 * floor((open-files soft limit - 256 - 128 x threads) / 2). Pipes (two descriptors per direction
 * with bytes in flight) come out of the reserve; when none can be had a direction waits for one
 * rather than failing. At least 1.
 */
export function defaultMaxConnections(openFilesSoftLimit: number, threads: number): number {
  const budget = openFilesSoftLimit - FD_RESERVE_BASE - FD_RESERVE_PER_THREAD * threads;
  return Math.max(1, Math.floor(budget / 2));
}
