// The nftables backend: applies rendered JSON with `nft -j -f -` (stdin, one transaction).
// Needs root or CAP_NET_ADMIN; unprivileged nft fails with "Operation not permitted".
import type { Logger } from 'pino';
import { createToolRunner, CommandError, type ExecFileFn } from './exec-file.js';
import { renderDeleteTable, renderRuleset, renderRulesetText, type FirewallSpec } from './render.js';

export type { FirewallSpec } from './render.js';

export interface Firewall {
  /** Replaces our table with the rules for `spec` atomically (idempotent). */
  install(spec: FirewallSpec): Promise<void>;
  /** Deletes our table; succeeds when it is already gone. Touches nothing else. */
  remove(table: string): Promise<void>;
  /** What is installed (`nft -j list table inet <table>`), or null when the table does not exist. */
  list(table: string): Promise<object | null>;
  /** The ruleset as readable text, for the `rules` command. */
  render(spec: FirewallSpec): string;
}

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
      const doc = renderRuleset(spec);
      await apply(doc);
      logger.info(
        { table: spec.table, targets: spec.targets.length, failClosed: spec.failClosed, netns: opts.netns },
        'nftables rules installed',
      );
    },

    async remove(table) {
      await apply(renderDeleteTable(table));
      logger.info({ table, netns: opts.netns }, 'nftables rules removed');
    },

    async list(table) {
      try {
        const { stdout } = await run(['-j', 'list', 'table', 'inet', table]);
        return JSON.parse(stdout) as object;
      } catch (err) {
        if (err instanceof CommandError && err.code === 'ERR_NFT_FAILED' && /No such file or directory/.test(err.stderr)) return null;
        throw err;
      }
    },

    render(spec) {
      return renderRulesetText(spec);
    },
  };
}
