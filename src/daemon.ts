// Lifecycle. Start: store (a corrupt store stops us before any rule is touched) → listeners
// (EPERM surfaces before any rule exists) → metrics listener (a taken port, too) → routing → rules
// → admin API → attested registration listener. Stop: attested registration → admin API → stop
// accepting and drain → rules → routing → store → metrics listener. Rules go last on stop because
// draining connections still need the `socket transparent` rule and the policy route for their
// replies; the metrics listener answers /readyz (not ready) and /healthz until the end.
// Reload (reload.ts) and status are the daemon's, reached by SIGHUP and the admin API.
import type { Logger } from 'pino';
import type { Config } from './config.js';
import { InterceptorError } from './errors.js';
import { createFirewall, type Firewall } from './firewall/firewall.js';
import { createIpRouting, type Routing } from './routing/ip.js';
import { registrySource } from './datapath/source.js';
import { raiseOpenFilesLimit } from './native/limits.js';
import { defaultMaxConnections, hostAddresses, listenAddresses, warnTargetsContainingLocal } from './proxy/guard.js';
import { createInterceptor, type Interceptor } from './proxy/interceptor.js';
import { openRegistryStore } from './registry/store.js';
import { createRegistryService, type RegistryService } from './registry/service.js';
import { createAdminServer } from './admin/server.js';
import type { WireDaemonStatus, WireReload } from './admin/wire.js';
import { createAttestedServer } from './attested/server.js';
import { createMetricsRegistry } from './metrics/metrics.js';
import { startMetricsServer, type MetricsServer, type Readiness } from './metrics/server.js';
import { createTally } from './metrics/tally.js';
import { createReloader, type Reloader } from './reload.js';

export interface Daemon {
  readonly interceptor: Interceptor;
  readonly registry: RegistryService;
  /** Reads the config file again and applies what changed (see reload.ts); rejects with the reason when nothing was applied. */
  reload(): Promise<WireReload>;
  status(limitPerThread: number): Promise<WireDaemonStatus>;
  /** Where the metrics listener listens; null when [metrics] listen is not set. */
  readonly metricsAddress: { readonly address: string; readonly port: number } | null;
  stop(drainMs: number): Promise<void>;
}

export function firewallSpec(config: Config) {
  return {
    table: config.intercept.table,
    mark: config.intercept.mark,
    mask: config.intercept.mask,
    failClosed: config.intercept.failClosed,
    listen: config.listen,
    targets: config.intercept.targets,
  };
}

export function routingSpec(config: Config) {
  return {
    mark: config.intercept.mark,
    mask: config.intercept.mask,
    routeTable: config.intercept.routeTable,
    localBackends: config.intercept.localBackends,
    ipv6: config.listen.address6 !== null,
  };
}

export async function startDaemon(opts: {
  config: Config;
  /** The file `config` was read from: what a reload reads again. */
  configPath: string;
  logger: Logger;
  firewall?: Firewall;
  routing?: Routing;
}): Promise<Daemon> {
  const { config, logger } = opts;
  const startedAt = Date.now();
  if (config.intercept.targets.length === 0) {
    throw new InterceptorError('ERR_NO_TARGETS', 'config: intercept.targets: at least one [[intercept.targets]] entry is required to run');
  }
  const firewall =
    opts.firewall ?? createFirewall({ backend: config.intercept.backend, iptablesVariant: config.intercept.iptablesVariant, logger });
  const routing = opts.routing ?? createIpRouting({ logger: logger.child({ component: 'routing' }) });
  // Each relayed connection holds two descriptors (four while bytes move, with its splice pipes):
  // the default soft limit of 1024 would cap us at a few hundred connections.
  const limits = raiseOpenFilesLimit();
  const fdCap = defaultMaxConnections(limits.soft, config.listen.threads);
  const maxConnections = config.listen.maxConnections ?? fdCap;
  logger.info({ ...limits, maxConnections }, 'open files limit');
  if (maxConnections > fdCap) {
    logger.warn({ maxConnections, derived: fdCap, openFilesSoftLimit: limits.soft }, 'listen.max_connections is above what the open-files limit holds: connections past it may fail to open their upstream socket');
  }
  warnTargetsContainingLocal(logger, config.intercept.targets, [...hostAddresses(), ...listenAddresses(config.listen)]);

  const undo: Array<() => Promise<unknown>> = [];
  const rollback = async (): Promise<void> => {
    for (const step of undo.reverse()) {
      await step().catch((err: unknown) => logger.error({ err }, 'cleanup step failed'));
    }
  };

  try {
    const store = await openRegistryStore(config.registry, logger);
    const registry = await createRegistryService({
      logger,
      config: config.registry,
      store,
      allowLoopback: config.intercept.localBackends,
    });
    undo.push(() => registry.close());

    const interceptor = createInterceptor({ logger, config, source: registrySource(registry), maxConnections });
    await interceptor.start();
    undo.push(() => interceptor.stop(0));

    let rulesInstalled = false;
    let reloader: Reloader | null = null;
    let metricsServer: MetricsServer | null = null;
    const readiness = (): Readiness => {
      const missing: string[] = [];
      if (!rulesInstalled) missing.push('firewall rules and policy routing not installed');
      if (!interceptor.accepting) missing.push('listeners not accepting');
      return { ready: missing.length === 0, missing };
    };
    if (config.metrics.listen !== null) {
      const tally = createTally();
      // Once per event batch, counted in place: nothing per connection on the loop threads.
      interceptor.connections.events.on('batch', (batch: Buffer) => tally.add(batch));
      const metrics = createMetricsRegistry({
        tally,
        engine: () => interceptor.stats(),
        instances: () => registry.registry.size,
        fetches: () => ({ learned: registry.counters.fetchesLearned, failed: registry.counters.fetchesFailed }),
        store: () => registry.storeStatus(),
        storeKind: config.registry.store,
        rulesInstalled: () => rulesInstalled,
        backend: config.intercept.backend,
        reloads: () => reloader?.counts() ?? { ok: 0, failed: 0 },
      });
      const server = await startMetricsServer({ listen: config.metrics.listen, registry: metrics, readiness, logger });
      metricsServer = server;
      undo.push(() => server.close());
    }

    const rSpec = routingSpec(config);
    // The undo goes in first: an install that fails half-way leaves what it did, and removal
    // deletes exactly our own rules and routes, whichever of them exist.
    undo.push(() => routing.remove(rSpec));
    await routing.install(rSpec);
    const fSpec = firewallSpec(config);
    undo.push(() => firewall.remove(fSpec));
    await firewall.install(fSpec);
    rulesInstalled = true;
    logger.info({ backend: config.intercept.backend, table: config.intercept.table, targets: config.intercept.targets.length }, 'rules installed');

    const reload = createReloader({ configPath: opts.configPath, initial: config, logger, interceptor, firewall, firewallSpec });
    reloader = reload;
    const status = async (limitPerThread: number): Promise<WireDaemonStatus> => {
      const snapshot = await interceptor.snapshot(limitPerThread);
      const stats = interceptor.stats();
      const c = interceptor.connections.counters();
      return {
        config: opts.configPath,
        pid: process.pid,
        started_at: startedAt,
        uptime_ms: Date.now() - startedAt,
        backend: config.intercept.backend,
        rules_installed: rulesInstalled,
        accepting: interceptor.accepting,
        engine: {
          threads: stats?.threads ?? 0,
          live: stats?.live ?? 0,
          accepted: stats?.accepted ?? 0,
          over_capacity: stats?.overCapacity ?? 0,
          pipes_in_use: stats?.pipesInUse ?? 0,
          pipes_pooled: stats?.pipesPooled ?? 0,
          table_generation: stats?.generation ?? 0,
        },
        counters: { transparent: c.transparent, proxy: c.proxy, refused: c.refused, over_capacity: c.overCapacity, bytes_in: c.bytesIn, bytes_out: c.bytesOut, closed: { ...c.closed } },
        registry: { instances: registry.registry.size, store: registry.storeStatus() },
        reloads: reload.counts(),
        connections: snapshot.connections.map((l) => ({
          id: l.id,
          thread: l.thread,
          peer: l.peer,
          client: l.client,
          destination: l.destination,
          path: l.path,
          decision: l.decision,
          instance: l.instanceId,
          state: l.state,
          upstream_port: l.upstreamPort,
          bytes_in: l.bytesIn,
          bytes_out: l.bytesOut,
          age_ms: l.ageMs,
        })),
        live: snapshot.live,
      };
    };
    const reloadWire = async (): Promise<WireReload> => {
      const r = await reload.reload();
      return { config: r.config, changed: [...r.changed], firewall: r.firewall };
    };

    const admin = await createAdminServer({
      logger,
      socketPath: config.registry.adminSocket,
      service: registry,
      daemon: { reload: reloadWire, status },
    });
    undo.push(() => admin.close());

    // Instances register themselves only once everything they register into is up.
    const attested = config.registry.attested ? await createAttestedServer({ logger, config: config.registry.attested, service: registry }) : null;
    if (attested) undo.push(() => attested.close());

    let stopping: Promise<void> | undefined;
    return {
      interceptor,
      registry,
      reload: reloadWire,
      status,
      metricsAddress: metricsServer?.address ?? null,
      stop(drainMs) {
        stopping ??= (async () => {
          // A reload that would install rules after ours are removed must not run, nor still be running.
          await reload.close();
          await attested?.close();
          await admin.close();
          const { drained, aborted } = await interceptor.stop(drainMs);
          // The rules in force are those of the last reload (same table, chain and mark).
          await firewall.remove(firewallSpec(reload.current()));
          rulesInstalled = false;
          await routing.remove(rSpec);
          await registry.close();
          await metricsServer?.close();
          logger.info({ drained, aborted }, 'stopped; rules removed');
        })();
        return stopping;
      },
    };
  } catch (err) {
    await rollback();
    throw err;
  }
}
