// Config: the typed, frozen result of parsing the TOML file. `parseConfig` (in config-parse.ts)
// builds it; everything else only reads it.

export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'silent';

/** Inclusive port range; a single port has from === to. */
export interface PortRange {
  readonly from: number;
  readonly to: number;
}

export interface Target {
  /** Normalised CIDR text, e.g. "198.18.2.0/24" or "fd00:2::/64". */
  readonly cidr: string;
  readonly family: 4 | 6;
  readonly ports: readonly PortRange[];
  /** Input interface to match (iifname); null = any. */
  readonly interface: string | null;
}

export interface ListenConfig {
  readonly address: string; // IPv4 listener address, default 127.0.0.1
  readonly address6: string | null; // IPv6 listener address, default ::1; null disables IPv6
  readonly port: number; // default 15001
  /** Loop threads, each with its own SO_REUSEPORT listener per family, running its connections to completion. */
  readonly threads: number; // default: available CPUs
  /** A wildcard address (0.0.0.0 / ::) was asked for explicitly (listen.allow_wildcard). */
  readonly allowWildcard: boolean; // default false
  /**
   * Connections held at once; past it new ones are accepted and reset (over_capacity). null =
   * derived at start from the open-files limit (src/proxy/guard.ts defaultMaxConnections).
   */
  readonly maxConnections: number | null; // default null
}

export interface InterceptConfig {
  readonly table: string; // nftables table name (family inet), default "tproxy_interceptor"
  readonly mark: number; // default 0x1
  readonly mask: number; // default 0x1; mark must fit in mask
  readonly routeTable: number; // default 100
  readonly failClosed: boolean; // default true
  readonly localBackends: boolean; // default false
  readonly targets: readonly Target[];
}

export interface UpstreamConfig {
  readonly connectTimeoutMs: number; // default 5s
  readonly idleTimeoutMs: number; // default 300s
  readonly ppVersion: 1 | 2; // default 2
  /** Keep the client's source port on the spoofed upstream (falls back to ephemeral on EADDRINUSE). */
  readonly keepClientPort: boolean; // default false
  /** Bytes per splice pipe; 0 = the kernel's default, 64 KiB. */
  readonly pipeSize: number; // default 256 KiB
}

export interface LogConfig {
  readonly level: LogLevel; // default "info"
}

export interface FetchConfig {
  readonly timeoutMs: number; // default 10s
  readonly maxRetries: number; // default 5
  readonly backoffInitialMs: number; // default 1s
  readonly backoffMaxMs: number; // default 30s
  readonly maxResponseBytes: number; // default 4 MiB
}

export interface RegistryConfig {
  readonly path: string; // default /var/lib/tproxy-interceptor
  readonly adminSocket: string; // default /run/tproxy-interceptor.sock
  readonly agentPort: number; // default 8090
  readonly fetch: FetchConfig;
}

export interface InboundPpConfig {
  /** CIDRs whose connections must start with a PROXY header; empty = never parse headers. */
  readonly trustedSources: readonly string[];
  readonly timeoutMs: number; // default 3s
  readonly maxV2Length: number; // default 4096
}

export interface Config {
  readonly listen: ListenConfig;
  readonly intercept: InterceptConfig;
  readonly upstream: UpstreamConfig;
  readonly log: LogConfig;
  readonly registry: RegistryConfig;
  readonly inboundPp: InboundPpConfig;
}
