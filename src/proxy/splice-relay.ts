// The splice relay (issue 5): same Relay interface as the stream relay, but after a hand-off the
// bytes move kernel-side, socket -> pipe -> socket, on native worker threads, and never reach
// JavaScript. Node keeps the part before: accept, decide, connect, PROXY header.
import type net from 'node:net';
import os from 'node:os';
import type { Logger } from 'pino';
import { InterceptorError } from '../errors.js';
import {
  abortSpliceRelay,
  closeSpliceRelayWorkers,
  dupFd,
  openSpliceRelayWorkers,
  startSpliceRelay,
  type SpliceRelayCompletion,
} from '../native/relay.js';
import { closeFd } from '../native/sockets.js';
import type { RelayStarter } from './connection.js';
import { startRelay as startStreamRelay, type CloseReason, type Relay, type RelayResult } from './relay.js';

export interface SpliceRelayStarter {
  readonly start: RelayStarter;
  /** Ends live relays (reason `shutdown`), waits for them, stops the worker threads. */
  close(): Promise<void>;
}

type SocketError = Error & { code?: string };

const isReset = (err: SocketError | null): boolean => err?.code === 'ECONNRESET' || err?.code === 'EPIPE';

/** libuv's descriptor for a connected TCP socket (Linux), or -1. */
function socketFd(socket: net.Socket): number {
  const handle = (socket as unknown as { _handle?: { fd?: unknown } | null })._handle;
  return typeof handle?.fd === 'number' ? handle.fd : -1;
}

/** Resolves once every write queued so far has reached the kernel (callbacks run in order). */
function flushed(socket: net.Socket): Promise<void> {
  if (socket.writableLength === 0 || socket.destroyed) return Promise.resolve();
  return new Promise((resolve) => socket.write(Buffer.alloc(0), () => resolve()));
}

/** Whatever Node has read from the socket and not yet handed out. */
function takeBuffered(socket: net.Socket): Buffer | undefined {
  const chunks: Buffer[] = [];
  for (let chunk = socket.read() as Buffer | null; chunk !== null; chunk = socket.read() as Buffer | null) chunks.push(chunk);
  if (chunks.length === 0) return undefined;
  return chunks.length === 1 ? chunks[0] : Buffer.concat(chunks);
}

export function createSpliceRelayStarter(opts: { threads?: number; pipeSize?: number; logger: Logger }): SpliceRelayStarter {
  const threads = opts.threads ?? os.availableParallelism();
  if (!Number.isInteger(threads) || threads < 1 || threads > 256) {
    throw Object.assign(new TypeError(`threads must be an integer in 1..256, got ${threads}`), { code: 'ERR_INVALID_ARG_VALUE' });
  }
  const log = opts.logger.child({ component: 'splice-relay' });
  const byId = new Map<number, (c: SpliceRelayCompletion) => void>();
  const live = new Set<Relay>();
  let workersOpen = false;
  let closed = false;

  const onEnd = (c: SpliceRelayCompletion): void => {
    const settle = byId.get(c.id);
    byId.delete(c.id);
    settle?.(c);
  };

  const start: RelayStarter = (client, upstream, idleTimeoutMs) => {
    let settle!: (r: RelayResult) => void;
    const done = new Promise<RelayResult>((resolve) => (settle = resolve));
    let phase: 'hand-off' | 'native' | 'stream' | 'finished' = 'hand-off';
    let nativeId = 0;
    let abortReason: CloseReason = 'shutdown';
    let fallback: Relay | null = null;

    // Results of the stream fallback say 'stream'; everything else ended on the splice path.
    const finish = (r: Omit<RelayResult, 'relay'> & { relay?: RelayResult['relay'] }): void => {
      if (phase === 'finished') return;
      phase = 'finished';
      live.delete(relay);
      settle({ relay: 'splice', ...r });
    };
    // Until the hand-off the sockets are Node's; a failure then ends like in the stream relay.
    // The listeners stay: a late 'error' after finish() must not become an uncaught exception.
    const onClientError = (err: SocketError): void => {
      upstream.resetAndDestroy();
      client.destroy();
      finish({ reason: isReset(err) ? 'client-reset' : 'client-error', error: err });
    };
    const onUpstreamError = (err: SocketError): void => {
      client.resetAndDestroy();
      upstream.destroy();
      finish({ reason: isReset(err) ? 'upstream-reset' : 'upstream-error', error: err });
    };

    const relay: Relay = {
      done,
      abort(reason) {
        if (phase === 'hand-off') {
          client.destroy();
          upstream.destroy();
          finish({ reason, error: null });
        } else if (phase === 'native') {
          abortReason = reason;
          abortSpliceRelay(nativeId);
        } else if (phase === 'stream') {
          fallback?.abort(reason);
        }
      },
    };
    live.add(relay);
    client.on('error', onClientError);
    upstream.on('error', onUpstreamError);

    const useStreamRelay = (err: unknown, toUpstream: Buffer | undefined, toClient: Buffer | undefined): void => {
      log.warn({ err }, 'splice relay unavailable; stream relay for this connection');
      if (toUpstream) upstream.write(toUpstream);
      if (toClient) client.write(toClient);
      client.removeListener('error', onClientError);
      upstream.removeListener('error', onUpstreamError);
      phase = 'stream';
      fallback = startStreamRelay(client, upstream, idleTimeoutMs);
      void fallback.done.then(finish);
    };

    const handOff = (): void => {
      if (phase !== 'hand-off') return;
      if (closed) {
        relay.abort('shutdown');
        return;
      }
      if (client.destroyed || upstream.destroyed) {
        const which = client.destroyed ? 'client' : 'upstream';
        // A pending 'error' (emitted on next tick) wins: it carries the real cause.
        setImmediate(() => {
          client.destroy();
          upstream.destroy();
          finish({
            reason: which === 'client' ? 'client-error' : 'upstream-error',
            error: new InterceptorError('ERR_SOCKET_CLOSED', `${which} socket closed before the splice hand-off`),
          });
        });
        return;
      }
      // From here to destroy() everything is synchronous: libuv reads nothing more meanwhile, so
      // what Node holds now is all it will ever have read.
      const toUpstream = takeBuffered(client);
      const toClient = takeBuffered(upstream);
      const clientRead = client.bytesRead;
      const clientWritten = client.bytesWritten;
      const clientFd = socketFd(client);
      const upstreamFd = socketFd(upstream);
      let ownedDup = -1;
      try {
        if (!workersOpen) {
          openSpliceRelayWorkers(threads, onEnd, opts.pipeSize ?? 0);
          workersOpen = true;
          log.debug({ threads, pipeSize: opts.pipeSize ?? 0 }, 'splice relay workers started');
        }
        if (clientFd < 0 || upstreamFd < 0) throw new InterceptorError('ERR_NO_SOCKET_FD', 'no file descriptor behind the socket');
        // Options live on the kernel socket and survive the hand-off.
        client.setNoDelay(true);
        upstream.setNoDelay(true);
        ownedDup = dupFd(clientFd);
        const fdA = ownedDup;
        const fdB = dupFd(upstreamFd);
        ownedDup = -1; // startSpliceRelay owns both from here, also when it throws
        nativeId = startSpliceRelay(fdA, fdB, idleTimeoutMs, { toB: toUpstream, toA: toClient });
      } catch (err) {
        if (ownedDup >= 0) closeFd(ownedDup);
        useStreamRelay(err, toUpstream, toClient);
        return;
      }
      phase = 'native';
      byId.set(nativeId, (c) => finish(resultOf(c)));
      // Safe: the kernel socket is one open file description; our dup keeps it alive, so
      // closing Node's descriptor sends nothing (no FIN, no RST). destroy() -> uv_close() removes
      // libuv's epoll registration explicitly (EPOLL_CTL_DEL, which matters because the description
      // outlives the fd), stops reading and closes its fd, synchronously: libuv never touches the
      // socket again. Node's queues are empty (writes flushed, readable buffer taken above), so
      // nothing is lost with them.
      client.destroy();
      upstream.destroy();

      function resultOf(c: SpliceRelayCompletion): Omit<RelayResult, 'relay'> {
        const bytes = {
          bytesFromClient: clientRead - (toUpstream?.length ?? 0) + c.bytesAToB,
          bytesToClient: clientWritten + c.bytesBToA,
        };
        switch (c.end) {
          case 'done':
            return { reason: 'done', error: null, ...bytes };
          case 'error-a':
            return { reason: isReset(c.error) ? 'client-reset' : 'client-error', error: c.error, ...bytes };
          case 'error-b':
          case 'connect-failed': // only relayConnect reports it; relayStart gets a connected upstream
            return { reason: isReset(c.error) ? 'upstream-reset' : 'upstream-error', error: c.error, ...bytes };
          case 'idle-timeout':
            return { reason: 'idle-timeout', error: null, ...bytes };
          case 'aborted':
            return { reason: abortReason, error: null, ...bytes };
        }
      }
    };

    // The PROXY header and early client bytes that connection.ts wrote must reach the kernel
    // before the relay writes to the same socket; destroy() would drop them otherwise.
    void Promise.all([flushed(upstream), flushed(client)]).then(handOff);
    return relay;
  };

  return {
    start(client, upstream, idleTimeoutMs) {
      if (closed) {
        client.destroy();
        upstream.destroy();
        return { done: Promise.resolve({ relay: 'splice', reason: 'shutdown', error: null }), abort: () => {} };
      }
      return start(client, upstream, idleTimeoutMs);
    },
    async close() {
      closed = true;
      const relays = [...live];
      for (const relay of relays) relay.abort('shutdown');
      await Promise.allSettled(relays.map((r) => r.done));
      if (workersOpen) {
        workersOpen = false;
        const unreported = closeSpliceRelayWorkers();
        if (unreported > 0) log.warn({ unreported }, 'splice relays closed without a report');
        log.debug('splice relay workers stopped');
      }
    },
  };
}
