// The data path's lifecycle, once: listeners for every loop thread, the engine, the decision
// table kept current (registry changes, this host's addresses), the connections' events handed to
// connections.ts, and drain/stop. Connections themselves never pass through here: each one runs on
// the loop thread that accepted it (native/loop.cc).
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import { compileTable } from '../datapath/table.js';
import type { DecisionSource } from '../datapath/source.js';
import {
  abortEngineConnections,
  checkPipeSize,
  engineStats,
  requestEngineSnapshot,
  setEngineSettings,
  setEngineTable,
  shutdownEngine,
  startEngine,
  stopEngineAccepting,
  takeEngineEvents,
  type EngineSettings,
  type EngineStats,
} from '../native/engine.js';
import { closeFd, openTransparentListener } from '../native/sockets.js';
import { createConnections, type Connections } from './connections.js';
import { ALWAYS_LOCAL, hostAddresses, listenAddresses } from './guard.js';
import { createSnapshots, type Snapshot } from './snapshot.js';

export interface Interceptor {
  readonly connections: Connections;
  /** Opens the listeners and starts the threads; throws a system error (EPERM without CAP_NET_ADMIN, EADDRINUSE...). */
  start(): Promise<void>;
  /** Stops accepting, waits up to `drainMs` for live connections, then ends the rest. */
  stop(drainMs: number): Promise<{ drained: number; aborted: number }>;
  /** Started and not stopping: the listeners accept. */
  readonly accepting: boolean;
  /**
   * A reload: a new decision table (the config's targets and trusted sources) now, and its
   * timeouts, PROXY version and source-port rule for the connections accepted from now on
   * (established ones keep theirs). Throws, with nothing changed, when the table cannot be built.
   * The keys only a restart changes (listen.*, upstream.pipe_size, ...) are not read.
   */
  reconfigure(config: Config): void;
  /** The live connections, at most `limitPerThread` per loop thread (ERR_STATUS_TIMEOUT if a thread does not answer). */
  snapshot(limitPerThread: number): Promise<Snapshot>;
  /** null before start and after stop. */
  stats(): EngineStats | null;
}

/** How often this host's addresses are re-read, and the over-capacity count summarised. */
const REFRESH_MS = 1000;
/** How often stop() looks whether the connections have ended. */
const POLL_MS = 20;
/** How long stop() waits for aborted connections to report. */
const ABORT_WAIT_MS = 5000;

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export function createInterceptor(opts: {
  logger: Logger;
  config: Config;
  source: DecisionSource;
  maxConnections: number;
}): Interceptor {
  const { logger, source } = opts;
  let config = opts.config;
  const { listen, upstream, inboundPp } = config;
  const connections = createConnections({ logger });
  const snapshots = createSnapshots({ request: requestEngineSnapshot, threads: () => engineStats()?.threads ?? 0 });
  connections.onSnapshotRecord((batch, at) => snapshots.onRecord(batch, at));
  const listeners = listenAddresses(listen);
  let generation = 0;
  let knownLocal = '';
  let localAddresses: string[] = [];
  let running = false;
  let stopping = false;
  let compileQueued = false;
  let overCapacitySeen = 0;
  let timer: NodeJS.Timeout | undefined;
  let unsubscribe: (() => void) | undefined;

  connections.onUnknownPolicy((id) => source.requestFetch(id));

  const table = (c: Config): Buffer =>
    compileTable({
      generation: ++generation,
      targets: c.intercept.targets,
      localAddresses,
      localNetworks: ALWAYS_LOCAL,
      trustedSources: c.inboundPp.trustedSources,
      entries: source.entries(),
    });
  const publish = (): void => {
    compileQueued = false;
    if (!running) return;
    try {
      setEngineTable(table(config));
    } catch (err) {
      // The previous table stays in force: connections keep their last known decisions.
      logger.error({ err }, 'decision table not updated');
    }
  };
  // Changes come in bursts (a store load, a batch of registrations): one table per tick.
  const schedule = (): void => {
    if (compileQueued) return;
    compileQueued = true;
    setImmediate(publish);
  };
  const readLocal = (): boolean => {
    const addresses = [...new Set([...hostAddresses(), ...listeners])].sort();
    const key = addresses.join(',');
    if (key === knownLocal) return false;
    knownLocal = key;
    localAddresses = addresses;
    return true;
  };
  const tick = (): void => {
    if (readLocal()) schedule();
    const stats = engineStats();
    if (stats !== null && stats.overCapacity > overCapacitySeen) {
      connections.onOverCapacity(stats.overCapacity - overCapacitySeen, opts.maxConnections);
      overCapacitySeen = stats.overCapacity;
    }
  };

  const settings = (c: Config): EngineSettings => ({
    connectTimeoutMs: c.upstream.connectTimeoutMs,
    idleTimeoutMs: c.upstream.idleTimeoutMs,
    headerTimeoutMs: c.inboundPp.timeoutMs,
    ppVersion: c.upstream.ppVersion,
    keepClientPort: c.upstream.keepClientPort,
    reportOpen: logger.isLevelEnabled('debug'),
  });

  return {
    connections,
    get accepting() {
      return running && !stopping;
    },
    reconfigure(next) {
      if (!running) throw new Error('reconfigure: the interceptor is not running');
      setEngineTable(table(next));
      setEngineSettings(settings(next));
      config = next;
    },
    snapshot: (limitPerThread) => snapshots.take(limitPerThread),
    stats: () => engineStats(),
    async start() {
      checkPipeSize(upstream.pipeSize);
      // One listener per family, shared by every thread: the addon gives each thread its own
      // descriptor of it, and each thread's epoll waits on it with EPOLLEXCLUSIVE, so a new
      // connection wakes a thread that is idle instead of queueing behind a busy one.
      const shared: number[] = [];
      try {
        for (const address of listeners) shared.push(openTransparentListener(address, listen.port));
      } catch (err) {
        for (const fd of shared) closeFd(fd);
        throw err;
      }
      const fds = Array.from({ length: listen.threads }, () => shared);
      startEngine(
        {
          ...settings(config),
          pipeSize: upstream.pipeSize,
          maxV2Length: inboundPp.maxV2Length,
          maxConnections: opts.maxConnections,
        },
        fds,
        (batch) => connections.onBatch(batch),
      );
      running = true;
      readLocal();
      publish();
      unsubscribe = source.subscribe(schedule);
      timer = setInterval(tick, REFRESH_MS);
      timer.unref();
      for (const address of listeners) logger.info({ address, port: listen.port, threads: listen.threads }, 'transparent listener ready');
    },
    async stop(drainMs) {
      if (!running) return { drained: 0, aborted: 0 };
      stopping = true;
      unsubscribe?.();
      clearInterval(timer);
      stopEngineAccepting();
      const live = (): number => engineStats()?.live ?? 0;
      const count = live();
      if (count > 0) logger.info({ live: count, drainMs }, 'draining connections');
      const deadline = Date.now() + drainMs;
      while (live() > 0 && Date.now() < deadline) await sleep(POLL_MS);
      const aborted = live();
      if (aborted > 0) {
        abortEngineConnections();
        const until = Date.now() + ABORT_WAIT_MS;
        while (live() > 0 && Date.now() < until) await sleep(POLL_MS);
      }
      running = false;
      tick();
      // What the threads still hold, then the threads themselves.
      connections.onBatch(takeEngineEvents());
      const unreported = shutdownEngine();
      if (unreported > 0) logger.warn({ unreported }, 'connections closed without a report');
      return { drained: count - aborted, aborted };
    },
  };
}
