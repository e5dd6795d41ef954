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
  readonly port: number; // default 24511
  /** Loop threads, sharing one listener per family, each running the connections it accepts to completion. */
  readonly threads: number; // default: available CPUs
  /** A wildcard address (0.0.0.0 / ::) was asked for explicitly (listen.allow_wildcard). */
  readonly allowWildcard: boolean; // default false
  /**
   * Connections held at once; past it new ones are accepted and reset (over_capacity). null =
   * derived at start from the open-files limit (src/proxy/guard.ts defaultMaxConnections).
   */
  readonly maxConnections: number | null; // default null
}

export type FirewallBackend = 'nftables' | 'iptables';
/** Which iptables programs the iptables backend runs: the host's alternatives ("auto"), or iptables-nft-* / iptables-legacy-*. */
export type IptablesVariant = 'auto' | 'nft' | 'legacy';

export interface InterceptConfig {
  readonly backend: FirewallBackend; // default "nftables"
  readonly iptablesVariant: IptablesVariant; // default "auto"
  readonly table: string; // nftables table name (family inet), or the iptables chain in the mangle table; default "tproxy_interceptor"
  readonly mark: number; // default 0x2000
  readonly mask: number; // default 0x2000; mark must fit in mask
  readonly routeTable: number; // default 4511
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
  readonly maxResponseBytes: number; // default 204 MiB (a 50 MiB app-compose escaped twice, see config-parse.ts)
}

export type StoreKind = 'sqlite' | 'etcd';

export interface EtcdConfig {
  /** Client URLs, `http://host:port` or `https://host:port`. */
  readonly endpoints: readonly string[]; // default ["http://127.0.0.1:2379"]
  /** Every key of the registry starts with it; ends with "/". */
  readonly prefix: string; // default "/tproxy-interceptor/"
  /** Deadline of each request, and how soon an unreachable etcd is noticed. */
  readonly timeoutMs: number; // default 3s
  /** PEM files: the CA that signed etcd's certificate, and this node's client certificate and key. */
  readonly ca: string | null;
  readonly cert: string | null;
  readonly key: string | null;
  readonly username: string | null;
  readonly password: string | null;
}

export interface RegistryConfig {
  readonly path: string; // default /var/lib/tproxy-interceptor
  readonly adminSocket: string; // default /run/tproxy-interceptor/admin.sock
  readonly agentPort: number; // default 8090
  /**
   * Default false: a policy learned from the guest agent counts only when the registration
   * carried an attested compose hash. True: without one, the agent's own compose_hash is taken.
   */
  readonly trustAgentComposeHash: boolean;
  readonly fetch: FetchConfig;
  /** "sqlite": registry.db under `path`; "etcd": shared by every node on the same etcd and prefix. */
  readonly store: StoreKind; // default "sqlite"
  /** Set exactly when store = "etcd". */
  readonly etcd: EtcdConfig | null;
  /** [registry.attested]: the mutual-TLS self-registration listener; null (the default) = off. */
  readonly attested: AttestedConfig | null;
}

/** A peer network and the instance network it stands for (same family and prefix length). */
export interface AddressMapping {
  readonly peer: string; // normalised CIDR
  readonly instance: string; // normalised CIDR
}

export interface AttestedConfig {
  /** Where the HTTPS listener binds: an IP literal and a port. */
  readonly listen: { readonly address: string; readonly port: number };
  /** PEM bundle that client certificates must chain to (dstack: the KMS root CA). */
  readonly caFile: string;
  /** The listener's own certificate (PEM, may include intermediates) and key. */
  readonly certFile: string;
  readonly keyFile: string;
  /** App ids (lowercase hex) that may register; null = every app the CA vouches for. */
  readonly allowedApps: readonly string[] | null;
  /** Accept certificates with only the app-id extension (no instance id, no compose hash). Default false. */
  readonly appIdFallback: boolean;
  /** Let a registered instance move to a new address by registering from it. Default false. */
  readonly allowAddressChange: boolean;
  readonly addressMap: readonly AddressMapping[];
}

export interface InboundPpConfig {
  /** CIDRs whose connections must start with a PROXY header; empty = never parse headers. */
  readonly trustedSources: readonly string[];
  readonly timeoutMs: number; // default 3s
  readonly maxV2Length: number; // default 4096
}

export interface MetricsConfig {
  /** Where the Prometheus endpoint (/metrics) and the health checks (/healthz, /readyz) listen; null (the default) = off. */
  readonly listen: { readonly address: string; readonly port: number } | null;
}

export interface Config {
  readonly listen: ListenConfig;
  readonly intercept: InterceptConfig;
  readonly upstream: UpstreamConfig;
  readonly log: LogConfig;
  readonly registry: RegistryConfig;
  readonly inboundPp: InboundPpConfig;
  readonly metrics: MetricsConfig;
}
