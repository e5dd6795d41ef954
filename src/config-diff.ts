// What a reload changes: every config key, by its TOML name, and whether a running daemon can
// apply it (live) or only a restart can (the listeners, the firewall's identity, the store...).
// Pure: two Configs in, the changed keys out. A key missing from KEYS is a bug that
// test/unit/config-diff.test.ts catches, so a new key cannot slip through a reload unapplied.
import type { Config } from './config.js';

export type Applied = 'live' | 'restart';

/**
 * Every leaf of Config (its path in Config) → its TOML key and how a reload applies it. Objects
 * listed here are compared whole (optional sections).
 *
 * Live: a new decision table (targets, trusted sources), one firewall transaction (targets,
 * fail_closed), the loop threads' settings for new connections (timeouts, PROXY version, source
 * port), the log level. Restart: what the running listeners, firewall rules, routes, store,
 * admin socket or registration listener were built from: applying it would mean tearing them
 * down, which is what a restart does, in the order it knows.
 */
export const KEYS: Readonly<Record<string, { readonly key: string; readonly applied: Applied }>> = {
  'listen.address': { key: 'listen.address', applied: 'restart' },
  'listen.address6': { key: 'listen.address6', applied: 'restart' },
  'listen.port': { key: 'listen.port', applied: 'restart' },
  'listen.threads': { key: 'listen.threads', applied: 'restart' },
  'listen.allowWildcard': { key: 'listen.allow_wildcard', applied: 'restart' },
  'listen.maxConnections': { key: 'listen.max_connections', applied: 'restart' },
  'intercept.backend': { key: 'intercept.backend', applied: 'restart' },
  'intercept.iptablesVariant': { key: 'intercept.iptables_variant', applied: 'restart' },
  'intercept.table': { key: 'intercept.table', applied: 'restart' },
  'intercept.mark': { key: 'intercept.mark', applied: 'restart' },
  'intercept.mask': { key: 'intercept.mask', applied: 'restart' },
  'intercept.routeTable': { key: 'intercept.route_table', applied: 'restart' },
  'intercept.failClosed': { key: 'intercept.fail_closed', applied: 'live' },
  'intercept.localBackends': { key: 'intercept.local_backends', applied: 'restart' },
  'intercept.targets': { key: 'intercept.targets', applied: 'live' },
  'upstream.connectTimeoutMs': { key: 'upstream.connect_timeout', applied: 'live' },
  'upstream.idleTimeoutMs': { key: 'upstream.idle_timeout', applied: 'live' },
  'upstream.ppVersion': { key: 'upstream.pp_version', applied: 'live' },
  'upstream.keepClientPort': { key: 'upstream.keep_client_port', applied: 'live' },
  'upstream.pipeSize': { key: 'upstream.pipe_size', applied: 'restart' },
  'log.level': { key: 'log.level', applied: 'live' },
  'registry.path': { key: 'registry.path', applied: 'restart' },
  'registry.adminSocket': { key: 'registry.admin_socket', applied: 'restart' },
  'registry.agentPort': { key: 'registry.agent_port', applied: 'restart' },
  'registry.trustAgentComposeHash': { key: 'registry.trust_agent_compose_hash', applied: 'restart' },
  'registry.fetch.timeoutMs': { key: 'registry.fetch.timeout', applied: 'restart' },
  'registry.fetch.maxRetries': { key: 'registry.fetch.max_retries', applied: 'restart' },
  'registry.fetch.backoffInitialMs': { key: 'registry.fetch.backoff_initial', applied: 'restart' },
  'registry.fetch.backoffMaxMs': { key: 'registry.fetch.backoff_max', applied: 'restart' },
  'registry.fetch.maxResponseBytes': { key: 'registry.fetch.max_response_bytes', applied: 'restart' },
  'registry.store': { key: 'registry.store', applied: 'restart' },
  'registry.etcd': { key: 'registry.etcd', applied: 'restart' },
  'registry.attested': { key: 'registry.attested', applied: 'restart' },
  'inboundPp.trustedSources': { key: 'inbound_pp.trusted_sources', applied: 'live' },
  'inboundPp.timeoutMs': { key: 'inbound_pp.timeout', applied: 'live' },
  'inboundPp.maxV2Length': { key: 'inbound_pp.max_v2_length', applied: 'restart' },
  'metrics.listen': { key: 'metrics.listen', applied: 'restart' },
};

/** Config paths whose change needs a new firewall transaction. */
const FIREWALL = new Set(['intercept.targets', 'intercept.failClosed']);

export interface ConfigDiff {
  /** Changed keys (TOML names, sorted) a reload applies. */
  readonly live: readonly string[];
  /** Changed keys (TOML names, sorted) only a restart applies. */
  readonly restart: readonly string[];
  /** Whether the firewall rules change. */
  readonly firewall: boolean;
}

const isPlainObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

/** Every leaf of a config as [path, value]; KEYS entries that are objects are leaves. */
export function configLeaves(config: Config): Array<[string, unknown]> {
  const out: Array<[string, unknown]> = [];
  const walk = (value: unknown, path: string): void => {
    if (isPlainObject(value) && !(path in KEYS)) {
      for (const [k, v] of Object.entries(value)) walk(v, path === '' ? k : `${path}.${k}`);
    } else {
      out.push([path, value]);
    }
  };
  walk(config, '');
  return out;
}

export function diffConfig(running: Config, next: Config): ConfigDiff {
  const before = new Map(configLeaves(running));
  const live = new Set<string>();
  const restart = new Set<string>();
  let firewall = false;
  for (const [path, value] of configLeaves(next)) {
    if (JSON.stringify(before.get(path)) === JSON.stringify(value)) continue;
    const k = KEYS[path];
    // A key this table does not know is treated as needing a restart: never silently ignored.
    if (k === undefined || k.applied === 'restart') restart.add(k?.key ?? path);
    else live.add(k.key);
    if (FIREWALL.has(path)) firewall = true;
  }
  return { live: [...live].sort(), restart: [...restart].sort(), firewall };
}
