// `tproxy-interceptor reload --config FILE`: asks the running daemon, over its admin socket, to
// read its config file again and apply what changed (src/reload.ts), and prints what it applied
// or why it applied nothing. The daemon reads the file it was started with; --config names the
// admin socket (and should be that same file: a different one is pointed out).
import { realpath } from 'node:fs/promises';
import { Command } from 'commander';
import { createAdminClient } from '../admin/client.js';
import { loadConfig } from '../config-parse.js';
import { InterceptorError } from '../errors.js';
import { EXIT, type CliIo } from './common.js';

/** The daemon's reasons for applying nothing: the file (or what it asks for) was wrong, exit 2. */
const REFUSED = new Set(['ERR_CONFIG', 'ERR_NO_TARGETS', 'ERR_RELOAD_RESTART_REQUIRED']);

export function reloadCommand(opts: { io: CliIo; code: { value: number } }): Command {
  return new Command('reload')
    .summary('make the running daemon reload its config file and apply what changed')
    .description(
      'Ask the running daemon (over its admin socket) to read its config file again. Applied live, without dropping established connections: ' +
        'intercept.targets and intercept.fail_closed (one firewall transaction and a new decision table), inbound_pp.trusted_sources, ' +
        'upstream.connect_timeout, idle_timeout, pp_version, keep_client_port and inbound_pp.timeout (for new connections), log.level. ' +
        'Any other key changed refuses the whole reload (a restart applies it). An invalid config is refused and the running one stays. ' +
        'SIGHUP does the same, with the outcome in the log. Exit 0 applied (or nothing changed), 2 refused (the reason is printed), 1 the daemon could not be asked.',
    )
    .usage('--config FILE [--json]')
    .requiredOption('--config <file>', "the TOML configuration: names the daemon's admin socket")
    .option('--json', 'machine-readable output: {"config", "changed", "firewall"}, or {"error": {"code", "message"}}')
    .action(async (o: { config: string; json?: boolean }) => {
      const { io } = opts;
      try {
        // An invalid file is refused here already (the daemon would refuse it the same way), and
        // a valid one names the admin socket.
        const config = await loadConfig(o.config);
        const r = await createAdminClient(config.registry.adminSocket).reload();
        if (o.json) io.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
        else if (r.changed.length === 0) io.stdout.write(`${r.config}: nothing changed\n`);
        else io.stdout.write(`${r.config}: reloaded; changed ${r.changed.join(', ')}${r.firewall ? ' (firewall rules replaced)' : ''}\n`);
        if (!(await sameFile(o.config, r.config))) {
          io.stderr.write(`note: the daemon read ${r.config}, not ${o.config}: it always reloads the file it was started with\n`);
        }
        opts.code.value = EXIT.ok;
      } catch (err) {
        if (!(err instanceof InterceptorError)) throw err;
        if (o.json) io.stdout.write(`${JSON.stringify({ error: { code: err.code, message: err.message } }, null, 2)}\n`);
        io.stderr.write(`tproxy-interceptor reload: not reloaded: ${err.message} [${err.code}]\n`);
        opts.code.value = REFUSED.has(err.code) ? EXIT.usage : EXIT.failure;
      }
    });
}

async function sameFile(a: string, b: string): Promise<boolean> {
  const resolve = (p: string): Promise<string> => realpath(p).catch(() => p);
  return (await resolve(a)) === (await resolve(b));
}
