// The native connection path: the addon accepts (acceptor.cc), JavaScript decides, the relay
// workers connect upstream, write the PROXY header and move the bytes (relay.cc). No net.Socket
// exists for such a connection. Connections from trusted sources (which start with an inbound
// PROXY header to parse) take the Node path of connection.ts instead.
import net from 'node:net';
import os from 'node:os';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import type { Decision } from '../registry/types.js';
import { encodeV1, encodeV2 } from '../pp/index.js';
import { monotonicUs, startAcceptor, stopAcceptor, type AcceptedConnection } from '../native/acceptor.js';
import {
  abortSpliceRelay,
  closeSpliceRelayWorkers,
  connectRelay,
  openSpliceRelayWorkers,
  resetConnection,
  type SpliceRelayCompletion,
} from '../native/relay.js';
import { closeFd, openTransparentListener } from '../native/sockets.js';
import { createShedReporter, type GuardRefusal } from './guard.js';
import { createStats, errorFields, handleConnection, type ConnectionDeps, type ProxyStats, type RelayStarter } from './connection.js';
import type { Interceptor } from './listener.js';
import { startRelay as startStreamRelay, type CloseReason, type Relay } from './relay.js';
import { ConnectTimeoutError } from './upstream.js';

type SocketError = Error & { code?: string };

interface LiveConnection {
  readonly acc: AcceptedConnection;
  readonly decision: Decision;
  readonly startedAt: number;
  /** monotonicUs() when the decision began, and when it was handed to the relay. */
  readonly decideUs: number;
  readonly handedUs: number;
  /** PROXY header bytes: counted by the relay as written upstream, but not the client's. */
  readonly headerLength: number;
  abortReason: CloseReason;
}

const isReset = (err: SocketError | null): boolean => err?.code === 'ECONNRESET' || err?.code === 'EPIPE';

/**
 * Where the time went (µs), as connection.ts logs it for the Node path: waiting in the accept
 * batch, decision + header, until a relay worker took it, the upstream connect, and the relay.
 * Stamps from different threads could disagree by a few µs: a phase never counts below 0.
 */
function phasesOf(conn: LiveConnection, c: SpliceRelayCompletion): Record<string, number> {
  const us = (from: number, to: number): number => Math.max(0, Math.round(to - from));
  const phasesUs: Record<string, number> = {
    accept: us(conn.acc.acceptedUs, conn.decideUs),
    decide: us(conn.decideUs, conn.handedUs),
    handoff: us(conn.handedUs, c.adoptedUs),
  };
  if (c.connectedUs > 0) {
    phasesUs.connect = us(c.adoptedUs, c.connectedUs);
    phasesUs.relay = us(c.connectedUs, c.endedUs);
  } else {
    phasesUs.connect = us(c.adoptedUs, c.endedUs);
  }
  return phasesUs;
}

/** The dependencies connection.ts needs, built as the stream listener builds them. */
export function nodePathDeps(opts: {
  logger: Logger;
  config: Config;
  decide: (ip: string, port: number) => Decision;
  guard: (ip: string, port: number) => GuardRefusal | null;
  isTrustedSource: (ip: string) => boolean;
  stats: ProxyStats;
  relays: Set<Relay>;
  startRelay?: RelayStarter;
}): ConnectionDeps {
  return {
    logger: opts.logger,
    decide: opts.decide,
    guard: opts.guard,
    isTrustedSource: opts.isTrustedSource,
    upstream: opts.config.upstream,
    inboundPp: opts.config.inboundPp,
    stats: opts.stats,
    relays: opts.relays,
    startRelay: opts.startRelay ?? startStreamRelay,
  };
}

/** A net.Socket over an accepted fd, paused like `pauseOnConnect`: nothing is read before the decision. */
export function socketFromFd(fd: number): net.Socket {
  // pauseOnCreate is what net.Server uses for pauseOnConnect.
  const socketOpts = { fd, allowHalfOpen: true, readable: true, writable: true, pauseOnCreate: true } as net.SocketConstructorOpts;
  const socket = new net.Socket(socketOpts);
  socket.setNoDelay(true);
  return socket;
}

export function createNativeInterceptor(opts: {
  logger: Logger;
  config: Config;
  decide: (ip: string, port: number) => Decision;
  guard: (ip: string, port: number) => GuardRefusal | null;
  isTrustedSource: (ip: string) => boolean;
  /** Connections held at once; past it new ones are reset at once (over_capacity). */
  maxConnections: number;
  /** For connections from trusted sources (the Node path); defaults to the stream relay. */
  startRelay?: RelayStarter;
  /** Relay worker threads; defaults to one per CPU. */
  threads?: number;
}): Interceptor {
  const { config, logger } = opts;
  const log = logger.child({ component: 'proxy' });
  const stats = createStats();
  const { upstream } = config;
  const threads = opts.threads ?? os.availableParallelism();
  const live = new Map<number, LiveConnection>();
  const nodeRelays = new Set<Relay>();
  const nodeConnections = new Set<Promise<void>>();
  const deps = nodePathDeps({ ...opts, logger: log, stats, relays: nodeRelays });
  const listeners: { fd: number; acceptor: number }[] = [];
  let workersOpen = false;
  let accepting = false;
  let onIdle: (() => void) | null = null;

  /** Counts a connection's end and logs it; `extra` is only built when the line is logged. */
  const closed = (acc: AcceptedConnection, decision: Decision | null, startedAt: number, reason: string, level: 'info' | 'warn', bytesIn: number, bytesOut: number, extra?: () => Record<string, unknown>): void => {
    stats.active--;
    stats.bytesFromClients += bytesIn;
    stats.bytesToClients += bytesOut;
    if (!log.isLevelEnabled(level)) return;
    const fields: Record<string, unknown> = {
      peer: `${acc.peerAddress}:${acc.peerPort}`,
      dst: `${acc.localAddress}:${acc.localPort}`,
      client: `${acc.peerAddress}:${acc.peerPort}`,
    };
    if (decision) {
      fields.path = decision.kind;
      fields.decision = decision.reason;
      if (decision.instanceId) fields.instance = decision.instanceId;
    }
    log[level]({ ...fields, reason, bytesIn, bytesOut, durationMs: Math.round(performance.now() - startedAt), ...extra?.() }, 'connection closed');
  };

  const onEnd = (c: SpliceRelayCompletion): void => {
    const conn = live.get(c.id);
    if (!conn) return;
    live.delete(c.id);
    const { acc, decision, startedAt } = conn;
    const bytesIn = Math.max(0, c.bytesAToB - conn.headerLength);
    if (c.end === 'connect-failed') {
      stats.connectFailed++;
      const err =
        c.error?.code === 'ETIMEDOUT' && c.error.syscall === 'connect'
          ? new ConnectTimeoutError({ address: acc.localAddress, port: acc.localPort }, upstream.connectTimeoutMs)
          : c.error;
      closed(acc, decision, startedAt, 'connect-failed', 'warn', bytesIn, c.bytesBToA, () => ({ err: errorFields(err), phasesUs: phasesOf(conn, c) }));
    } else {
      stats.completed++;
      let reason: CloseReason;
      switch (c.end) {
        case 'error-a':
          reason = isReset(c.error) ? 'client-reset' : 'client-error';
          break;
        case 'error-b':
          reason = isReset(c.error) ? 'upstream-reset' : 'upstream-error';
          break;
        case 'aborted':
          reason = conn.abortReason;
          break;
        default:
          reason = c.end;
      }
      const level = reason !== 'done' && reason !== 'client-reset' ? 'warn' : 'info';
      closed(acc, decision, startedAt, reason, level, bytesIn, c.bytesBToA, () => ({
        relay: 'splice',
        ...(c.error ? { err: errorFields(c.error) } : {}),
        phasesUs: phasesOf(conn, c),
      }));
    }
    if (live.size === 0) onIdle?.();
  };

  const nodePath = (fd: number): void => {
    let socket: net.Socket;
    try {
      socket = socketFromFd(fd);
    } catch (err) {
      closeFd(fd);
      log.error({ err }, 'connection handler failed');
      return;
    }
    const p = handleConnection(socket, deps).catch((err: unknown) => {
      log.error({ err }, 'connection handler failed');
      socket.destroy();
    });
    nodeConnections.add(p);
    void p.finally(() => nodeConnections.delete(p));
  };

  const shed = createShedReporter(log, opts.maxConnections);
  const onAccepted = (batch: AcceptedConnection[]): void => {
    for (const acc of batch) {
      if (!accepting) {
        resetConnection(acc.fd);
        continue;
      }
      if (live.size + nodeConnections.size >= opts.maxConnections) {
        // Accepted and reset at once: never left waiting in the accept queue.
        stats.overCapacity++;
        resetConnection(acc.fd);
        shed();
        continue;
      }
      if (opts.isTrustedSource(acc.peerAddress)) {
        nodePath(acc.fd);
        continue;
      }
      const startedAt = performance.now();
      const decideUs = monotonicUs();
      stats.accepted++;
      stats.active++;
      const refusal = opts.guard(acc.localAddress, acc.localPort);
      if (refusal !== null) {
        stats.refused++;
        resetConnection(acc.fd);
        closed(acc, null, startedAt, refusal, 'warn', 0, 0, () => ({ path: 'refuse' }));
        continue;
      }
      const decision = opts.decide(acc.localAddress, acc.localPort);
      if (decision.kind === 'refuse') {
        stats.refused++;
        resetConnection(acc.fd);
        closed(acc, decision, startedAt, 'refused', 'warn', 0, 0);
        continue;
      }
      let header: Buffer | undefined;
      if (decision.kind === 'proxy') {
        const source = { address: acc.peerAddress, port: acc.peerPort };
        const destination = { address: acc.localAddress, port: acc.localPort };
        header = upstream.ppVersion === 1 ? encodeV1(source, destination) : encodeV2({ source, destination });
      }
      const handedUs = monotonicUs();
      try {
        const id = connectRelay({
          clientFd: acc.fd,
          family: acc.family,
          sourceAddress: decision.kind === 'transparent' ? acc.peerAddress : null,
          sourcePort: upstream.keepClientPort ? acc.peerPort : 0,
          address: acc.localAddress,
          port: acc.localPort,
          connectTimeoutMs: upstream.connectTimeoutMs,
          idleTimeoutMs: upstream.idleTimeoutMs,
          firstBytes: header,
        });
        live.set(id, { acc, decision, startedAt, decideUs, handedUs, headerLength: header?.length ?? 0, abortReason: 'shutdown' });
      } catch (err) {
        // connectRelay reset the client.
        stats.connectFailed++;
        closed(acc, decision, startedAt, 'connect-failed', 'warn', 0, 0, () => ({ err: errorFields(err) }));
      }
    }
  };

  function listenOn(address: string): void {
    const fd = openTransparentListener(address, config.listen.port);
    try {
      listeners.push({ fd, acceptor: startAcceptor(fd, onAccepted) });
    } catch (err) {
      closeFd(fd);
      throw err;
    }
    logger.info({ address, port: config.listen.port, accept: 'native' }, 'transparent listener ready');
  }

  function closeListeners(): void {
    for (const l of listeners.splice(0)) {
      stopAcceptor(l.acceptor);
      closeFd(l.fd);
    }
  }

  return {
    stats,
    async start() {
      if (!workersOpen) {
        openSpliceRelayWorkers(threads, onEnd, upstream.pipeSize);
        workersOpen = true;
      }
      accepting = true;
      try {
        listenOn(config.listen.address);
        if (config.listen.address6) listenOn(config.listen.address6);
      } catch (err) {
        accepting = false;
        closeListeners();
        throw err;
      }
    },
    async stop(drainMs) {
      accepting = false;
      closeListeners();
      const count = live.size + nodeConnections.size;
      if (count > 0) {
        logger.info({ live: count, drainMs }, 'draining connections');
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([
          Promise.allSettled([
            new Promise<void>((resolve) => {
              if (live.size === 0) resolve();
              else onIdle = resolve;
            }),
            ...nodeConnections,
          ]),
          new Promise<void>((resolve) => (timer = setTimeout(resolve, drainMs))),
        ]);
        clearTimeout(timer);
      }
      const aborted = live.size + nodeRelays.size;
      if (live.size > 0) {
        const allEnded = new Promise<void>((resolve) => (onIdle = resolve));
        for (const [id, conn] of live) {
          conn.abortReason = 'shutdown';
          abortSpliceRelay(id);
        }
        await allEnded;
      }
      onIdle = null;
      for (const relay of [...nodeRelays]) relay.abort('shutdown');
      await Promise.allSettled([...nodeConnections]);
      if (workersOpen) {
        workersOpen = false;
        const unreported = closeSpliceRelayWorkers();
        if (unreported > 0) logger.warn({ unreported }, 'native relays closed without a report');
      }
      return { drained: count - aborted, aborted };
    },
  };
}
