// The iptables backend: our chain in the mangle table, written with `iptables-restore --noflush`
// and `ip6tables-restore --noflush` (one transaction per family; nothing else in the table is
// flushed) after reading `iptables-save -t mangle`, so that a restart after a crash neither
// duplicates our PREROUTING jump nor fails on what the crashed run left.
// The variant is chosen by program name: iptables-nft-* (the nf_tables kernel API), iptables-legacy-*
// (the x_tables one), or the unsuffixed programs, which are whatever the host's alternatives
// point at. Needs root or CAP_NET_ADMIN.
import type { Logger } from 'pino';
import type { IptablesVariant } from '../config.js';
import { createToolRunner, type ExecFileFn, type ToolRunner } from './exec-file.js';
import { parseChainState, renderIptablesInstall, renderIptablesRemove, type IpFamily } from './iptables-render.js';
import type { FirewallSpec } from './render.js';
import type { Firewall } from './firewall.js';

export interface IptablesFirewallOptions {
  logger: Logger;
  variant: IptablesVariant;
  /** Run the programs inside this network namespace (`ip netns exec <ns> …`); for tests and the lab. */
  netns?: string;
  /** Directory of the programs; default: found on PATH. */
  binDir?: string;
  execFile?: ExecFileFn;
}

/** Seconds the legacy variant waits for the host-wide xtables lock another iptables run holds. */
const LOCK_WAIT_S = 10;

/** `iptables-legacy-restore`, `ip6tables-save`, …: the program for a family, variant and job. */
export function iptablesProgram(family: IpFamily, variant: IptablesVariant, job: 'restore' | 'save'): string {
  return `${family === 4 ? 'iptables' : 'ip6tables'}${variant === 'auto' ? '' : `-${variant}`}-${job}`;
}

const familiesOf = (spec: FirewallSpec): IpFamily[] => (spec.listen.address6 === null ? [4] : [4, 6]);

export function createIptablesFirewall(opts: IptablesFirewallOptions): Firewall {
  const { logger, variant } = opts;
  const runner = (family: IpFamily, job: 'restore' | 'save'): ToolRunner => {
    const program = iptablesProgram(family, variant, job);
    return createToolRunner({
      tool: 'iptables',
      path: opts.binDir === undefined ? program : `${opts.binDir}/${program}`,
      pkg: 'iptables',
      netns: opts.netns,
      execFile: opts.execFile,
    });
  };
  const tools = new Map<IpFamily, { save: ToolRunner; restore: ToolRunner }>();
  const toolsFor = (family: IpFamily) => {
    let t = tools.get(family);
    if (t === undefined) {
      t = { save: runner(family, 'save'), restore: runner(family, 'restore') };
      tools.set(family, t);
    }
    return t;
  };
  const state = async (family: IpFamily, chain: string) => parseChainState((await toolsFor(family).save(['-t', 'mangle'])).stdout, chain);
  const restore = async (family: IpFamily, input: string): Promise<void> => {
    await toolsFor(family).restore([`--wait=${LOCK_WAIT_S}`, '--noflush'], input);
  };

  return {
    async install(spec) {
      for (const family of familiesOf(spec)) {
        const before = await state(family, spec.table);
        await restore(family, renderIptablesInstall(spec, family, before));
      }
      logger.info(
        { chain: spec.table, variant, families: familiesOf(spec), targets: spec.targets.length, failClosed: spec.failClosed, netns: opts.netns },
        'iptables rules installed',
      );
    },

    async remove(spec) {
      for (const family of familiesOf(spec)) {
        const input = renderIptablesRemove(spec.table, await state(family, spec.table));
        if (input !== null) await restore(family, input);
      }
      logger.info({ chain: spec.table, variant, netns: opts.netns }, 'iptables rules removed');
    },
  };
}
