// `tproxy-interceptor rules`: the firewall ruleset `run` installs, or its policy routing, printed
// as the tool that applies it reads it (no root needed: nothing is applied).
import { Command, InvalidArgumentError, Option } from 'commander';
import { loadConfig } from '../config-parse.js';
import { firewallSpec, routingSpec } from '../daemon.js';
import { defaultRulesFormat, printRuleset, RULES_FORMATS, type RulesFormat } from '../firewall/print.js';
import { routingInstallSteps } from '../routing/render.js';
import { UsageError, type CliIo } from './common.js';

export function rulesCommand(opts: { io: CliIo; code: { value: number } }): Command {
  return new Command('rules')
    .summary('print the firewall ruleset `run` installs, as its tool reads it (no root needed)')
    .description(
      'Print what `run` installs, from the same rendering functions, with nothing around it, so that the output can be fed to the tool as printed: ' +
        '--format nft to `nft -f`, json to `nft -j -f`, iptables / ip6tables to `iptables-restore --noflush` / `ip6tables-restore --noflush`; ' +
        '--routing prints the ip rule/route commands as a shell script.',
    )
    .usage('--config FILE [--format nft|json|iptables|ip6tables | --routing]')
    .requiredOption('--config <file>', 'the TOML configuration')
    .addOption(
      new Option('--format <format>', 'nft or json (backend nftables; default nft), iptables or ip6tables (backend iptables; default iptables)').argParser((v) => {
        if (!(RULES_FORMATS as readonly string[]).includes(v)) throw new InvalidArgumentError(`--format must be one of ${RULES_FORMATS.join(', ')}, got ${JSON.stringify(v)}`);
        return v as RulesFormat;
      }),
    )
    .option('--routing', 'print the ip rule/route commands instead, as a shell script')
    .action(async (o: { config: string; format?: RulesFormat; routing?: boolean }, cmd: Command) => {
      const config = await loadConfig(o.config);
      if (o.routing) {
        if (o.format !== undefined) throw new UsageError('--routing prints ip commands; it takes no --format', cmd);
        opts.io.stdout.write(`${routingInstallSteps(routingSpec(config)).map((s) => s.argv.join(' ')).join('\n')}\n`);
        return;
      }
      let text: string;
      try {
        text = printRuleset(firewallSpec(config), config.intercept.backend, o.format ?? defaultRulesFormat(config.intercept.backend));
      } catch (err) {
        if (err instanceof RangeError) throw new UsageError(err.message, cmd);
        throw err;
      }
      opts.io.stdout.write(text);
    });
}
