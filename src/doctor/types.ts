// What doctor gathers (facts) and what its checks conclude (findings). The gatherer (gather.ts)
// fills DoctorFacts with I/O and never throws for a failing tool; the checks (checks.ts) are pure
// functions of facts and config, tested without root.
import type { ListeningSocket } from './proc.js';

export type CheckId =
  | 'config'
  | 'capabilities'
  | 'kernel'
  | 'ip-rules'
  | 'fwmark'
  | 'rp-filter'
  | 'route-localnet'
  | 'listener'
  | 'ipv6'
  | 'route-table'
  | 'backend';

/** error: `run` will not work, or will break something else; warn: works, with a risk to know. */
export type Severity = 'ok' | 'warn' | 'error' | 'skip';

export interface Finding {
  readonly check: CheckId;
  readonly severity: Severity;
  readonly summary: string;
  /** Commands (or config changes) that fix it, in order of preference. */
  readonly fix?: readonly string[];
}

/** A tool's outcome: failures are facts too, so one missing tool does not hide the other checks. */
export type Outcome<T> =
  | { readonly ok: true; readonly value: T }
  | { readonly ok: false; readonly reason: 'missing' | 'permission' | 'failed'; readonly message: string };

export type Failure = Extract<Outcome<unknown>, { ok: false }>;

/**
 * Kernel support, per firewall backend. nftables: `nft --check` of a rule with each expression
 * and of this config's ruleset. iptables: `iptables-restore --test` (the variant
 * intercept.iptables_variant names, per family) of the `socket` match, the `TPROXY` target and
 * this config's ruleset: the tool loads each extension and asks the kernel for it.
 */
export type KernelProbe =
  | { readonly backend: 'nftables'; readonly feature: 'socket' | 'tproxy' | 'ruleset'; readonly outcome: Outcome<null> }
  | {
      readonly backend: 'iptables';
      readonly feature: 'socket' | 'tproxy' | 'ruleset';
      readonly family: 4 | 6;
      /** The restore program that ran (e.g. iptables-legacy-restore). */
      readonly tool: string;
      readonly outcome: Outcome<null>;
    };

/** net.ipv4.conf.<name>.* values doctor looks at; <name> includes "all" and "default". */
export interface Ipv4Conf {
  readonly rp_filter: number;
  readonly src_valid_mark: number;
  readonly accept_local: number;
  readonly route_localnet: number;
}

export interface OwnedListener extends ListeningSocket {
  /** The process holding it: pid and command line, when /proc/<pid>/fd could be read. */
  readonly owner: { readonly pid: number; readonly cmdline: string; readonly isInterceptor: boolean } | null;
}

export interface BackendProbe {
  readonly address: string;
  readonly port: number;
  /** The spoofed source the SYN carried. */
  readonly source: string;
  /**
   * connected: the SYN-ACK came back through this host; refused: a RST came back through this
   * host; timeout: nothing came back; unreachable: an ICMP error or no route; error: anything else.
   */
  readonly result: 'connected' | 'refused' | 'timeout' | 'unreachable' | 'error';
  readonly code: string | null;
  readonly ms: number;
  /** This host's address towards the backend (`ip route get`), for the fix. */
  readonly via: string | null;
  readonly timeoutMs: number;
}

export interface DoctorFacts {
  /** CapEff of this process, null if /proc/self/status was unreadable. */
  readonly capEff: bigint | null;
  readonly kernel: readonly KernelProbe[];
  /** `ip -N -j rule show` per family; 6 is null when IPv6 is off in the config. */
  readonly ipRules: { readonly 4: Outcome<unknown[]>; readonly 6: Outcome<unknown[]> | null };
  /** `ip -j route show table T`, keyed "4:T" / "6:T": our table and those of rules ahead of ours. */
  readonly routeTables: ReadonlyMap<string, Outcome<unknown[]>>;
  /** `nft -j list ruleset`. */
  readonly nftRuleset: Outcome<unknown>;
  /** `iptables-save` and friends, by tool name; tools that are not installed are left out. */
  readonly iptablesSave: ReadonlyMap<string, Outcome<string>>;
  /**
   * backend = "iptables": the tables as the configured variant's save program shows them
   * (`iptables-<variant>-save`), per family (6: null with IPv6 off); null for nftables.
   */
  readonly ourIptables: { readonly 4: Outcome<string>; readonly 6: Outcome<string> | null } | null;
  readonly ipv4Conf: ReadonlyMap<string, Ipv4Conf>;
  readonly portRange: { readonly from: number; readonly to: number } | null;
  readonly reservedPorts: ReadonlyArray<{ readonly from: number; readonly to: number }>;
  /** enabled; disabled on lo (net.ipv6.conf.lo.disable_ipv6 = 1); or absent from this kernel. */
  readonly ipv6: 'enabled' | 'disabled' | 'absent';
  readonly listeners: readonly OwnedListener[];
  /** Only with --backend; null when not asked, or not possible (see `backendSkipped`). */
  readonly backend: BackendProbe | null;
  readonly backendSkipped: string | null;
}
