// Lifecycle. Start: store (a corrupt store stops us before any rule is touched) → listeners
// (EPERM surfaces before any rule exists) → routing → rules → admin API → attested registration
// listener. Stop: attested registration → admin API →
// stop accepting and drain → rules → routing → store. Rules go last on stop because draining
// connections still need the `socket transparent` rule and the policy route for their replies.
import type { Logger } from 'pino';
import type { Config } from './config.js';
import { InterceptorError } from './errors.js';
import { createFirewall, type Firewall } from './firewall/firewall.js';
import { createIpRouting, type Routing } from './routing/ip.js';
import { registrySource } from './datapath/source.js';
import { raiseOpenFilesLimit } from './native/limits.js';
import { defaultMaxConnections, hostAddresses, targetsContainingLocal } from './proxy/guard.js';
import { createInterceptor, type Interceptor } from './proxy/interceptor.js';
import { openRegistryStore } from './registry/store.js';
import { createRegistryService, type RegistryService } from './registry/service.js';
import { createAdminServer } from './admin/server.js';
import { createAttestedServer } from './attested/server.js';

export interface Daemon {
  readonly interceptor: Interceptor;
  readonly registry: RegistryService;
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
  logger: Logger;
  firewall?: Firewall;
  routing?: Routing;
}): Promise<Daemon> {
  const { config, logger } = opts;
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
  const listenAddresses = [config.listen.address, ...(config.listen.address6 ? [config.listen.address6] : [])];
  for (const t of targetsContainingLocal(config.intercept.targets, [...hostAddresses(), ...listenAddresses])) {
    logger.warn(
      { cidr: t.cidr, addresses: t.addresses, reason: 'local_destination' },
      'a target contains addresses of this host: connections to them are refused (local_destination), never relayed',
    );
  }

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

    const rSpec = routingSpec(config);
    // The undo goes in first: an install that fails half-way leaves what it did, and removal
    // deletes exactly our own rules and routes, whichever of them exist.
    undo.push(() => routing.remove(rSpec));
    await routing.install(rSpec);
    const fSpec = firewallSpec(config);
    undo.push(() => firewall.remove(fSpec));
    await firewall.install(fSpec);
    logger.info({ backend: config.intercept.backend, table: config.intercept.table, targets: config.intercept.targets.length }, 'rules installed');

    const admin = await createAdminServer({
      logger,
      socketPath: config.registry.adminSocket,
      service: registry,
    });
    undo.push(() => admin.close());

    // Instances register themselves only once everything they register into is up.
    const attested = config.registry.attested ? await createAttestedServer({ logger, config: config.registry.attested, service: registry }) : null;
    if (attested) undo.push(() => attested.close());

    let stopping: Promise<void> | undefined;
    return {
      interceptor,
      registry,
      stop(drainMs) {
        stopping ??= (async () => {
          await attested?.close();
          await admin.close();
          const { drained, aborted } = await interceptor.stop(drainMs);
          await firewall.remove(fSpec);
          await routing.remove(rSpec);
          await registry.close();
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
