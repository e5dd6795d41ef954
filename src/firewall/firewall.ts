// The firewall backend `run` uses: nftables (our own inet table) or iptables (our own chain in
// the mangle table of either iptables variant). Both install the same interception from the same
// FirewallSpec, idempotently, and remove exactly what they installed.
import type { Logger } from 'pino';
import type { FirewallBackend, IptablesVariant } from '../config.js';
import type { ExecFileFn } from './exec-file.js';
import type { FirewallSpec } from './render.js';
import { createNftFirewall } from './nft.js';
import { createIptablesFirewall } from './iptables.js';

export type { FirewallSpec } from './render.js';

export interface Firewall {
  /** Makes the installed rules exactly those for `spec`, atomically per transaction; idempotent. */
  install(spec: FirewallSpec): Promise<void>;
  /** Removes what `install(spec)` installed; succeeds when it is already gone. Touches nothing else. */
  remove(spec: FirewallSpec): Promise<void>;
}

export interface FirewallOptions {
  readonly backend: FirewallBackend;
  /** iptables backend only: which variant's restore/save programs run. */
  readonly iptablesVariant: IptablesVariant;
  readonly logger: Logger;
  /** Run the tools inside this network namespace (`ip netns exec <ns> …`); for tests and the lab. */
  readonly netns?: string;
  readonly execFile?: ExecFileFn;
}

export function createFirewall(opts: FirewallOptions): Firewall {
  const common = { ...(opts.netns !== undefined ? { netns: opts.netns } : {}), ...(opts.execFile ? { execFile: opts.execFile } : {}) };
  return opts.backend === 'iptables'
    ? createIptablesFirewall({ logger: opts.logger.child({ component: 'iptables' }), variant: opts.iptablesVariant, ...common })
    : createNftFirewall({ logger: opts.logger.child({ component: 'nft' }), ...common });
}
