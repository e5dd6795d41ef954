// The transparent listeners (IPv4 and optionally IPv6) and the set of live connections.
import net from 'node:net';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import type { Decision } from '../registry/types.js';
import { openTransparentListener, closeFd } from '../native/sockets.js';
import { createShedReporter, type GuardRefusal } from './guard.js';
import { handleConnection, createStats, type ProxyStats, type ConnectionDeps, type RelayStarter } from './connection.js';
import { startRelay, type Relay } from './relay.js';

export interface Interceptor {
  readonly stats: ProxyStats;
  /** Opens the listeners; throws a system error (EPERM without CAP_NET_ADMIN, EADDRINUSE...). */
  start(): Promise<void>;
  /** Stops accepting, waits up to `drainMs` for live connections, then ends the rest. */
  stop(drainMs: number): Promise<{ drained: number; aborted: number }>;
}

export function createInterceptor(opts: {
  logger: Logger;
  config: Config;
  decide: (ip: string, port: number) => Decision;
  guard: (ip: string, port: number) => GuardRefusal | null;
  isTrustedSource: (ip: string) => boolean;
  /** Connections held at once; past it new ones are reset at once (over_capacity). */
  maxConnections: number;
  /** Defaults to the stream relay. */
  startRelay?: RelayStarter;
  /** Set by worker processes that share the listening address. */
  reusePort?: boolean;
}): Interceptor {
  const { config, logger } = opts;
  const stats = createStats();
  const relays = new Set<Relay>();
  const pendingConnections = new Set<Promise<void>>();
  const servers: net.Server[] = [];
  const deps: ConnectionDeps = {
    logger: logger.child({ component: 'proxy' }),
    decide: opts.decide,
    guard: opts.guard,
    isTrustedSource: opts.isTrustedSource,
    upstream: config.upstream,
    inboundPp: config.inboundPp,
    stats,
    relays,
    startRelay: opts.startRelay ?? startRelay,
  };

  const shed = createShedReporter(logger.child({ component: 'proxy' }), opts.maxConnections);
  const onConnection = (socket: net.Socket): void => {
    if (stats.active >= opts.maxConnections) {
      // Accepted and reset at once: never left waiting in the accept queue.
      stats.overCapacity++;
      socket.resetAndDestroy();
      shed();
      return;
    }
    socket.setNoDelay(true);
    const p = handleConnection(socket, deps).catch((err: unknown) => {
      logger.error({ err }, 'connection handler failed');
      socket.destroy();
    });
    pendingConnections.add(p);
    void p.finally(() => pendingConnections.delete(p));
  };

  async function listenOn(address: string): Promise<void> {
    const fd = openTransparentListener(address, config.listen.port, { reusePort: opts.reusePort === true });
    // pauseOnConnect: nothing is read from a client before the decision is made.
    const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, onConnection);
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen({ fd }, () => {
          server.removeListener('error', reject);
          resolve();
        });
      });
    } catch (err) {
      closeFd(fd);
      throw err;
    }
    server.on('error', (err) => logger.error({ err, address }, 'listener error'));
    servers.push(server);
    logger.info({ address, port: config.listen.port }, 'transparent listener ready');
  }

  return {
    stats,
    async start() {
      await listenOn(config.listen.address);
      if (config.listen.address6) await listenOn(config.listen.address6);
    },
    async stop(drainMs) {
      // close() stops accepting at once, but its callback waits for every connection to end:
      // the drain below must not wait for it.
      const closed = servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve())));
      servers.length = 0;
      const live = pendingConnections.size;
      if (live > 0) {
        logger.info({ live, drainMs }, 'draining connections');
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([
          Promise.allSettled([...pendingConnections]),
          new Promise<void>((resolve) => (timer = setTimeout(resolve, drainMs))),
        ]);
        clearTimeout(timer);
      }
      const aborted = relays.size;
      for (const relay of [...relays]) relay.abort('shutdown');
      await Promise.allSettled([...pendingConnections]);
      await Promise.all(closed);
      return { drained: live - aborted, aborted };
    },
  };
}
