// The nftables backend: applies rendered JSON with `nft -j -f -` (stdin, one transaction).
// Needs root or CAP_NET_ADMIN; unprivileged nft fails with "Operation not permitted".
import type { Logger } from 'pino';
import { createToolRunner, type ExecFileFn } from './exec-file.js';
import { renderDeleteTable, renderRuleset } from './render.js';
import type { Firewall } from './firewall.js';

export interface NftFirewallOptions {
  logger: Logger;
  /** default 'nft' */
  nftPath?: string;
  /** Run nft inside this network namespace (`ip netns exec <ns> nft …`); for tests and the lab. */
  netns?: string;
  /** The `ip` binary used for `ip netns exec`; default 'ip'. */
  ipPath?: string;
  execFile?: ExecFileFn;
}

export function createNftFirewall(opts: NftFirewallOptions): Firewall {
  const { logger } = opts;
  const run = createToolRunner({
    tool: 'nft',
    path: opts.nftPath ?? 'nft',
    pkg: 'nftables',
    netns: opts.netns,
    ipPath: opts.ipPath,
    execFile: opts.execFile,
  });
  const apply = async (doc: object): Promise<void> => {
    await run(['-j', '-f', '-'], JSON.stringify(doc));
  };

  return {
    async install(spec) {
      await apply(renderRuleset(spec));
      logger.info(
        { table: spec.table, targets: spec.targets.length, failClosed: spec.failClosed, netns: opts.netns },
        'nftables rules installed',
      );
    },

    async remove(spec) {
      await apply(renderDeleteTable(spec.table));
      logger.info({ table: spec.table, netns: opts.netns }, 'nftables rules removed');
    },
  };
}
