// `tproxy-interceptor doctor --config FILE [--backend ADDR[:PORT]] [--probe-source ADDR] [--json]`:
// checks this host for what would stop interception or break other software (src/doctor/). Exit
// codes: 0 no errors (warnings allowed), 1 errors found, 2 bad usage or configuration.
import { realpathSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { loadConfig } from '../config-parse.js';
import { runDoctor } from '../doctor/doctor.js';
import { defaultGatherDeps } from '../doctor/gather.js';
import { parseBackendArg, probeSource } from '../doctor/probe.js';
import { exitStatus, renderJson, renderText } from '../doctor/report.js';
import { InterceptorError } from '../errors.js';
import { UsageError, type CliIo } from './common.js';

/** The scripts a running daemon or worker of this installation runs (to recognise its listener). */
function selfScripts(): string[] {
  const dist = dirname(fileURLToPath(import.meta.url)); // dist/cli
  const scripts = [join(dist, '..', 'cli.js')];
  const argv1 = process.argv[1];
  if (argv1 !== undefined) {
    scripts.push(argv1);
    try {
      scripts.push(realpathSync(argv1));
    } catch {
      // keep what we have
    }
  }
  return [...new Set(scripts)];
}

export function doctorCommand(opts: { io: CliIo; code: { value: number } }): Command {
  return new Command('doctor')
    .summary('check this host for what would stop interception (see README: doctor)')
    .description(
      'Check this host for what would stop interception or break other software: kernel support (nft --check, or iptables-restore --test for ' +
        'the iptables backend; nothing applied), capabilities, conflicting ip rules, mark bits other rules use, src_valid_mark/rp_filter, ' +
        'route_localnet, the listener port, IPv6, our route table. Each problem comes with the command that fixes it. ' +
        'Exit status: 0 no errors (warnings allowed), 1 errors found, 2 bad usage or configuration.',
    )
    .usage('--config FILE [--backend ADDR[:PORT] [--probe-source ADDR]] [--json]')
    .requiredOption('--config <file>', 'the TOML configuration')
    .option('--backend <addr[:port]>', "also probe whether that backend's replies come back through this host: one connection from a spoofed source (needs the daemon's rules installed)")
    .option('--probe-source <addr>', 'the spoofed source (default 192.0.2.1 / 2001:db8::1, documentation addresses); use a client\'s address when the backend routes only the client networks through this host')
    .option('--json', 'machine-readable report')
    .action(async (o: { config: string; backend?: string; probeSource?: string; json?: boolean }, cmd: Command) => {
      if (o.probeSource !== undefined && o.backend === undefined) throw new UsageError('--probe-source needs --backend', cmd);
      const config = await loadConfig(o.config);
      let backend = null;
      let source = null;
      try {
        if (o.backend !== undefined) {
          backend = parseBackendArg(o.backend, config);
          source = probeSource(o.probeSource, backend);
        }
      } catch (err) {
        if (err instanceof InterceptorError && err.code === 'ERR_USAGE') throw new UsageError(err.message, cmd);
        throw err;
      }
      const report = await runDoctor({ config, deps: defaultGatherDeps(selfScripts()), backend, source });
      const { mark, mask, routeTable } = config.intercept;
      const header = `tproxy-interceptor doctor: ${o.config} (${config.intercept.backend}, mark 0x${mark.toString(16)}/0x${mask.toString(16)}, route table ${routeTable}, listener port ${config.listen.port})`;
      opts.io.stdout.write(o.json ? renderJson(report, o.config) : renderText(report, header));
      opts.code.value = exitStatus(report);
    });
}
