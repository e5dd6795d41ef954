// A worker process (listen.workers > 1): accepts and relays connections with its own transparent
// listener (SO_REUSEPORT) and a registry replica. Started and stopped by the primary only.
import type { Config } from './config.js';
import { createLogger } from './logger.js';
import { compileCidrMatcher } from './net/cidr.js';
import { getOpenFilesLimit } from './native/limits.js';
import { createDestinationGuard, defaultMaxConnections } from './proxy/guard.js';
import { createInterceptor, type Interceptor } from './proxy/listener.js';
import { createSpliceRelayStarter } from './proxy/splice-relay.js';
import type { FromWorker, ToWorker } from './proxy/workers.js';
import { deserializeInstance } from './registry/policy.js';
import { Registry } from './registry/registry.js';

// A fetch request per instance at most this often: decisions run per connection.
const FETCH_REQUEST_INTERVAL_MS = 1000;

const send = (msg: FromWorker): void => {
  if (process.connected) process.send!(msg);
};

let interceptor: Interceptor | undefined;
let closeSplice: (() => Promise<void>) | undefined;
let registry: Registry | undefined;
let stopping: Promise<void> | undefined;

function stop(drainMs: number): Promise<void> {
  stopping ??= (async () => {
    const result = interceptor ? await interceptor.stop(drainMs) : { drained: 0, aborted: 0 };
    await closeSplice?.();
    send({ type: 'stopped', ...result });
    process.disconnect?.();
    process.exit(0);
  })();
  return stopping;
}

async function init(index: number, config: Config, records: unknown[]): Promise<void> {
  const logger = createLogger(config.log.level).child({ worker: index });
  registry = new Registry({ logger });
  registry.load(records.map((r) => deserializeInstance(r)));
  const replica = registry;
  const asked = new Map<string, number>();
  const splice = config.upstream.relay === 'splice' ? createSpliceRelayStarter({ logger, threads: 1, pipeSize: config.upstream.pipeSize }) : null;
  closeSplice = splice ? () => splice.close() : undefined;
  const { listen } = config;
  const guard = createDestinationGuard({ targets: config.intercept.targets, listenAddresses: [listen.address, ...(listen.address6 ? [listen.address6] : [])] });
  interceptor = createInterceptor({
    logger,
    config,
    reusePort: true,
    guard: guard.check,
    // Each worker its share; derived, from its own descriptor table.
    maxConnections: listen.maxConnections !== null ? Math.ceil(listen.maxConnections / listen.workers) : defaultMaxConnections(getOpenFilesLimit().soft, 1),
    isTrustedSource: compileCidrMatcher([...config.inboundPp.trustedSources]),
    decide(ip, port) {
      const { decision, fetch } = replica.decide(ip, port);
      if (fetch !== null) {
        const now = Date.now();
        if ((asked.get(fetch) ?? 0) + FETCH_REQUEST_INTERVAL_MS <= now) {
          asked.set(fetch, now);
          send({ type: 'fetch', id: fetch });
        }
      }
      return decision;
    },
    ...(splice ? { startRelay: splice.start } : {}),
  });
  await interceptor.start();
}

// Signals go to the whole process group (Ctrl-C): the primary decides when workers stop.
process.on('SIGINT', () => {});
process.on('SIGTERM', () => {});
// The primary is gone (crashed or killed): stop accepting and end quickly.
process.on('disconnect', () => void stop(1000));

process.on('message', (msg: ToWorker) => {
  switch (msg.type) {
    case 'init':
      init(msg.index, msg.config, msg.records).then(
        () => send({ type: 'ready' }),
        (err: { code?: string; message?: string }) => {
          send({ type: 'failed', error: { code: err.code ?? 'ERR_WORKER_INIT', message: err.message ?? String(err) } });
          process.exit(1);
        },
      );
      break;
    case 'change':
      registry?.replicate(msg.id, msg.record === null ? undefined : deserializeInstance(msg.record));
      break;
    case 'stop':
      void stop(msg.drainMs);
      break;
  }
});
