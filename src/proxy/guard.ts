// The destination guard and the connection cap: what the data path refuses before any decision.
// Pure, except `hostAddresses`, which reads this host's interfaces.
//
// A connection reaches the listener with its original destination as the socket's local
// address. Two kinds must never be relayed: a destination outside intercept.targets (the
// listener was reached some other way: straight to a wildcard listener, or by a rule we do not
// own), and an address of this host (connecting there would hand the connection back to the
// listener itself: one client connection nested thousands deep until the descriptors ran out).
import { networkInterfaces } from 'node:os';
import type { Target } from '../config.js';
import { compileCidrMatcher } from '../net/cidr.js';
import type { RefuseReason } from '../registry/types.js';

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

export interface GuardSpec {
  readonly targets: readonly Target[];
  /** This host's addresses and the listeners' (exact addresses, no prefix). */
  readonly localAddresses: readonly string[];
}

export type GuardRefusal = Extract<RefuseReason, 'not_a_target' | 'local_destination'>;

/**
 * The check every accepted connection passes before its decision: null when (ip, port) may be
 * relayed. A local destination is reported as such even when it is not a target either.
 */
export function compileDestinationGuard(spec: GuardSpec): (ip: string, port: number) => GuardRefusal | null {
  const isLocal = compileCidrMatcher([...ALWAYS_LOCAL, ...spec.localAddresses]);
  const targets = spec.targets.map((t) => ({ contains: compileCidrMatcher([t.cidr]), ports: t.ports }));
  return (ip, port) => {
    if (isLocal(ip)) return 'local_destination';
    for (const t of targets) {
      if (!t.contains(ip)) continue;
      for (const r of t.ports) if (port >= r.from && port <= r.to) return null;
    }
    return 'not_a_target';
  };
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

/** Descriptors kept out of the connection budget: admin socket and its clients, store, logs, listeners, epoll. */
export const FD_RESERVE_BASE = 256;
/** And per relay thread: its pool of empty pipes (64 pipes, two descriptors each). */
export const FD_RESERVE_PER_THREAD = 128;

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

export interface DestinationGuard {
  check(ip: string, port: number): GuardRefusal | null;
  /** Stops following the host's addresses. */
  close(): void;
}

/**
 * The guard over the host's current addresses: re-read every `refreshMs`, so that an address
 * added after start is refused too.
 */
export function createDestinationGuard(opts: { targets: readonly Target[]; listenAddresses: readonly string[]; refreshMs?: number }): DestinationGuard {
  let known = '';
  let check: (ip: string, port: number) => GuardRefusal | null = () => 'not_a_target';
  const refresh = (): void => {
    const localAddresses = [...new Set([...hostAddresses(), ...opts.listenAddresses])].sort();
    const key = localAddresses.join(',');
    if (key === known) return;
    known = key;
    check = compileDestinationGuard({ targets: opts.targets, localAddresses });
  };
  refresh();
  const timer = setInterval(refresh, opts.refreshMs ?? 2000);
  timer.unref();
  return {
    check: (ip, port) => check(ip, port),
    close: () => clearInterval(timer),
  };
}

/**
 * Refusals over capacity are counted and summarised at most once per `intervalMs` at warn
 * level: under overload a log line per refused connection would cost more than the refusal.
 */
export function createShedReporter(log: { warn(obj: object, msg: string): void }, maxConnections: number, intervalMs = 1000): () => void {
  let pending = 0;
  let total = 0;
  let timer: NodeJS.Timeout | null = null;
  const flush = (): void => {
    timer = null;
    if (pending === 0) return;
    log.warn({ reason: 'over_capacity', refused: pending, refusedTotal: total, maxConnections }, 'connections refused: over capacity');
    pending = 0;
  };
  return () => {
    pending++;
    total++;
    if (timer === null) {
      // The first refusal of a burst is reported at once, the rest once per interval.
      if (pending === 1) flush();
      timer = setTimeout(flush, intervalMs);
      timer.unref();
    }
  };
}
