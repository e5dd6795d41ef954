// `tproxy-interceptor check --config FILE`: is the config valid for `run`, and what would `run`
// install? Nothing is applied and no privilege is needed: the summary comes from the same
// rendering functions `run` applies (firewall/, routing/). Exit 0 valid, 2 invalid (the key and why).
import { Command } from 'commander';
import type { Config, Target } from '../config.js';
import { loadConfig } from '../config-parse.js';
import { firewallSpec, routingSpec } from '../daemon.js';
import { InterceptorError } from '../errors.js';
import { renderChainRules } from '../firewall/iptables-render.js';
import { renderRuleset } from '../firewall/render.js';
import { hostAddresses, listenAddresses, targetsContainingLocal } from '../proxy/guard.js';
import { routingInstallSteps } from '../routing/render.js';
import { EXIT, exitCodeOf, UsageError, type CliIo } from './common.js';

export interface ConfigSummary {
  readonly listeners: string[];
  readonly threads: number;
  readonly firewall: { readonly backend: string; readonly where: string; readonly rules: number; readonly failClosed: boolean };
  readonly mark: string;
  readonly targets: string[];
  readonly routing: string[];
  readonly registry: string;
  readonly adminSocket: string;
  readonly metrics: string | null;
  readonly trustedSources: string[];
  readonly warnings: string[];
}

const hex = (n: number): string => `0x${n.toString(16)}`;
const at = (address: string, port: number): string => (address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`);

function target(t: Target): string {
  const ports = t.ports.map((r) => (r.from === r.to ? `${r.from}` : `${r.from}-${r.to}`)).join(',');
  return `${t.cidr} ports ${ports}${t.interface !== null ? ` on ${t.interface}` : ''}`;
}

/** What `run` would install and open for `config`; throws what `run` would refuse. Pure but for `local` (this host's addresses). */
function summarizeConfig(config: Config, local: readonly string[]): ConfigSummary {
  if (config.intercept.targets.length === 0) {
    throw new InterceptorError('ERR_NO_TARGETS', 'config: intercept.targets: at least one [[intercept.targets]] entry is required to run');
  }
  const { listen, intercept } = config;
  const spec = firewallSpec(config);
  const families: Array<4 | 6> = listen.address6 === null ? [4] : [4, 6];
  const firewall =
    intercept.backend === 'iptables'
      ? {
          backend: `iptables (${intercept.iptablesVariant})`,
          where: `chain ${intercept.table} in the mangle table${families.length === 2 ? ' of iptables and ip6tables' : ''}, jumped to first from PREROUTING`,
          rules: families.reduce((n, f) => n + renderChainRules(spec, f).length, 0),
          failClosed: intercept.failClosed,
        }
      : {
          backend: 'nftables',
          where: `table inet ${intercept.table}, chain pre (prerouting, priority -150)`,
          rules: renderRuleset(spec).nftables.filter((c) => 'add' in c && 'rule' in (c as { add: object }).add).length,
          failClosed: intercept.failClosed,
        };
  const listeners = listenAddresses(listen);
  const warnings = targetsContainingLocal(intercept.targets, [...local, ...listeners]).map(
    (t) => `target ${t.cidr} contains addresses of this host (${t.addresses.join(', ')}): connections to them are refused (local_destination)`,
  );
  const registry = config.registry;
  return {
    listeners: listeners.map((a) => at(a, listen.port)),
    threads: listen.threads,
    firewall,
    mark: `${hex(intercept.mark)}/${hex(intercept.mask)}, route table ${intercept.routeTable}`,
    targets: intercept.targets.map(target),
    routing: routingInstallSteps(routingSpec(config)).map((s) => s.argv.join(' ')),
    registry: registry.store === 'etcd' ? `etcd ${registry.etcd!.endpoints.join(', ')} prefix ${registry.etcd!.prefix}` : `sqlite ${registry.path}/registry.db`,
    adminSocket: registry.adminSocket,
    metrics: config.metrics.listen === null ? null : at(config.metrics.listen.address, config.metrics.listen.port),
    trustedSources: [...config.inboundPp.trustedSources],
    warnings,
  };
}

function renderSummary(path: string, s: ConfigSummary): string {
  const lines = [
    `${path}: valid; \`run\` would:`,
    `  listen       ${s.listeners.join(', ')} (${s.threads} loop thread${s.threads === 1 ? '' : 's'})`,
    `  firewall     ${s.firewall.backend}: ${s.firewall.where}; ${s.firewall.rules} rules${s.firewall.failClosed ? ', target traffic dropped while no listener takes it' : ', fail_closed off'}`,
    `  mark         ${s.mark}`,
    ...s.targets.map((t, i) => `  ${i === 0 ? 'intercept   ' : '            '} ${t}`),
    ...s.routing.map((r, i) => `  ${i === 0 ? 'routing     ' : '            '} ${r}`),
    `  registry     ${s.registry}; admin socket ${s.adminSocket}`,
    `  metrics      ${s.metrics === null ? 'off' : `http://${s.metrics}/metrics, /healthz, /readyz`}`,
  ];
  if (s.trustedSources.length > 0) lines.push(`  inbound PROXY headers from ${s.trustedSources.join(', ')}`);
  for (const w of s.warnings) lines.push(`warning: ${w}`);
  return `${lines.join('\n')}\n`;
}

export function checkCommand(opts: { io: CliIo; code: { value: number } }): Command {
  return new Command('check')
    .summary('say whether a config is valid for `run`, and what it would install (no root needed)')
    .description('Validate the config as `run` would (every error names the key and the accepted form) and summarise what `run` would install: listeners, firewall rules, policy routing, registry, metrics. Nothing is applied. Exit 0 valid, 2 invalid.')
    .usage('--config FILE [--json]')
    .requiredOption('--config <file>', 'the TOML configuration')
    .option('--json', 'machine-readable output: {"valid": true, "config", "summary"}')
    .action(async (o: { config: string; json?: boolean }, cmd: Command) => {
      let summary: ConfigSummary;
      try {
        summary = summarizeConfig(await loadConfig(o.config), hostAddresses());
      } catch (err) {
        const e = err instanceof RangeError ? new UsageError(`${o.config}: ${err.message}`, cmd) : err;
        if (o.json && e instanceof InterceptorError && exitCodeOf(e) === EXIT.usage) {
          const key = (e as { key?: string }).key;
          opts.io.stdout.write(`${JSON.stringify({ valid: false, config: o.config, error: { code: e.code, message: e.message, ...(key ? { key } : {}) } }, null, 2)}\n`);
          opts.code.value = EXIT.usage;
          return;
        }
        throw e;
      }
      opts.io.stdout.write(o.json ? `${JSON.stringify({ valid: true, config: o.config, summary }, null, 2)}\n` : renderSummary(o.config, summary));
    });
}
