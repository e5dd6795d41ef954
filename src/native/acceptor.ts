// Typed, throwing wrappers over the addon's acceptor: accept4 in batches from the event loop.
// With relayConnect (relay.ts) a connection needs no net.Socket at all: JavaScript only decides.
import { systemError } from '../errors.js';
import { loadAddon } from './addon.js';
import { invalidArg, isFd } from './args.js';

export interface AcceptedConnection {
  /** The accepted socket (non-blocking, close-on-exec); the receiver owns it. */
  readonly fd: number;
  readonly family: 4 | 6;
  readonly peerAddress: string;
  readonly peerPort: number;
  /** Under tproxy: the client's original destination. */
  readonly localAddress: string;
  readonly localPort: number;
  /** When accept4() returned it: CLOCK_MONOTONIC µs, the clock of `monotonicUs()`. */
  readonly acceptedUs: number;
}

/** CLOCK_MONOTONIC in µs (process.hrtime's clock), as the addon stamps its events. */
export function monotonicUs(): number {
  const [s, ns] = process.hrtime();
  return s * 1e6 + ns / 1e3;
}

/**
 * Starts accepting on `listenFd` (a listening, non-blocking socket; still the caller's to close).
 * `onAccepted` runs on the JS thread with each batch and owns every fd in it. Returns the id.
 */
export function startAcceptor(listenFd: number, onAccepted: (batch: AcceptedConnection[]) => void): number {
  if (!isFd(listenFd)) throw invalidArg('listenFd', listenFd, 'a file descriptor');
  if (typeof onAccepted !== 'function') throw invalidArg('onAccepted', onAccepted, 'a function');
  const rc = loadAddon().acceptorStart(listenFd, (flat) => {
    const batch: AcceptedConnection[] = new Array(flat.length / 7);
    for (let i = 0, k = 0; i < flat.length; i += 7, k++) {
      batch[k] = {
        fd: flat[i] as number,
        family: flat[i + 1] as 4 | 6,
        peerAddress: flat[i + 2] as string,
        peerPort: flat[i + 3] as number,
        localAddress: flat[i + 4] as string,
        localPort: flat[i + 5] as number,
        acceptedUs: flat[i + 6] as number,
      };
    }
    onAccepted(batch);
  });
  if (rc < 0) throw systemError(rc, 'acceptorStart');
  return rc;
}

/** Stops accepting; the listening socket stays open (the caller closes it). */
export function stopAcceptor(id: number): void {
  const rc = loadAddon().acceptorStop(id);
  if (rc < 0) throw systemError(rc, 'acceptorStop');
}
