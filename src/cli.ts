#!/usr/bin/env node
// argv → config → command. The only module that exits the process.
// First import: its SIGUSR1 listener keeps Node's inspector closed from the earliest moment.
import { inspectorFlags, logSigusr1To, onSighup } from './signals.js';
import { parseArgs } from 'node:util';
import { readFileSync } from 'node:fs';
import { loadConfig } from './config-parse.js';
import { createLogger } from './logger.js';
import { defaultRulesFormat, printRuleset, RULES_FORMATS, type RulesFormat } from './firewall/print.js';
import { routingInstallSteps } from './routing/render.js';
import { firewallSpec, routingSpec, startDaemon } from './daemon.js';
import { runInstancesCommand } from './cli/instances.js';
import { runDoctorCommand } from './cli/doctor.js';
import { parseDuration } from './duration.js';

const USAGE = `usage: tproxy-interceptor <command> --config FILE

commands:
  run        start the interceptor: listeners, firewall rules, policy routing, admin API
  rules      print the firewall ruleset \`run\` installs, as its tool reads it (no root needed)
  doctor     check this host for what would stop interception (see \`doctor --help\`)
  instances  manage the port-policy registry of a running daemon (see \`instances --help\`)

options:
  --config FILE   the TOML configuration (required)
  --drain DUR     run: how long SIGTERM/SIGINT waits for live connections (default 10s)
  --format F      rules: nft (\`nft -f\`) or json (\`nft -j -f\`) for backend nftables (default nft);
                  iptables or ip6tables (\`iptables-restore --noflush\`) for backend iptables (default iptables)
  --routing       rules: print the ip rule/route commands instead, as a shell script
  -h, --help      this text
  -v, --version   the version
`;

function fail(message: string, code: number): number {
  process.stderr.write(`tproxy-interceptor: ${message}\n`);
  return code;
}

function describe(err: unknown): string {
  const e = err as { code?: string; message?: string };
  if (e && typeof e.code === 'string' && typeof e.message === 'string') {
    return e.message.includes(e.code) ? e.message : `${e.message} [${e.code}]`;
  }
  return String((e && e.message) ?? err);
}

async function main(argv: string[]): Promise<number> {
  const command = argv[0];
  if (command === undefined || command === '-h' || command === '--help' || command === 'help') {
    process.stdout.write(USAGE);
    return command === undefined ? 2 : 0;
  }
  if (command === '-v' || command === '--version') {
    const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
    process.stdout.write(`${pkg.version}\n`);
    return 0;
  }
  if (command === 'instances') {
    const rest = argv.slice(1);
    const i = rest.indexOf('--config');
    const configPath = i >= 0 ? rest[i + 1] : rest.find((a) => a.startsWith('--config='))?.slice('--config='.length);
    const args = i >= 0 ? [...rest.slice(0, i), ...rest.slice(i + 2)] : rest.filter((a) => !a.startsWith('--config='));
    if (!configPath) return fail('instances: --config FILE is required (it names the admin socket)', 2);
    const config = await loadConfig(configPath);
    return runInstancesCommand(args, { socketPath: config.registry.adminSocket, stdout: process.stdout, stderr: process.stderr });
  }
  if (command === 'doctor') return runDoctorCommand(argv.slice(1), { stdout: process.stdout, stderr: process.stderr });
  if (command !== 'run' && command !== 'rules') return fail(`unknown command \`${command}\`\n${USAGE}`, 2);

  let values: { config?: string; drain?: string; format?: string; routing?: boolean };
  try {
    ({ values } = parseArgs({
      args: argv.slice(1),
      options: { config: { type: 'string' }, drain: { type: 'string' }, format: { type: 'string' }, routing: { type: 'boolean' } },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    return fail(`${command}: ${describe(err)}\n${USAGE}`, 2);
  }
  if (!values.config) return fail(`${command}: --config FILE is required`, 2);
  if (command === 'run' && (values.format !== undefined || values.routing !== undefined)) return fail('run: --format and --routing are options of `rules`', 2);
  if (values.format !== undefined && !(RULES_FORMATS as readonly string[]).includes(values.format)) {
    return fail(`rules: --format must be one of ${RULES_FORMATS.join(', ')}, got ${JSON.stringify(values.format)}`, 2);
  }
  let drainMs = 10_000;
  if (values.drain !== undefined) {
    try {
      drainMs = parseDuration(values.drain);
    } catch (err) {
      return fail(`${command}: --drain: ${describe(err)}`, 2);
    }
  }
  const config = await loadConfig(values.config);

  if (command === 'rules') {
    if (values.routing) {
      if (values.format !== undefined) return fail('rules: --routing prints ip commands; it takes no --format', 2);
      process.stdout.write(`${routingInstallSteps(routingSpec(config)).map((s) => s.argv.join(' ')).join('\n')}\n`);
      return 0;
    }
    const format = (values.format as RulesFormat | undefined) ?? defaultRulesFormat(config.intercept.backend);
    try {
      process.stdout.write(printRuleset(firewallSpec(config), config.intercept.backend, format));
    } catch (err) {
      return fail(`rules: ${describe(err)}`, 2);
    }
    return 0;
  }

  const inspect = inspectorFlags(process.execArgv, process.env['NODE_OPTIONS']);
  if (inspect !== null) {
    return fail(`run: refusing to start with ${inspect} (node flags or NODE_OPTIONS): the inspector lets any local user who reaches it run code with this daemon's privileges`, 2);
  }
  const logger = createLogger(config.log.level);
  logSigusr1To(logger);
  process.on('SIGHUP', () => onSighup(logger));
  const daemon = await startDaemon({ config, logger });
  logger.info('running');
  return new Promise<number>((resolve) => {
    let stopping = false;
    const onSignal = (signal: NodeJS.Signals): void => {
      if (stopping) {
        logger.warn({ signal }, 'already stopping');
        return;
      }
      stopping = true;
      logger.info({ signal, drainMs }, 'stopping');
      daemon.stop(drainMs).then(
        () => resolve(0),
        (err: unknown) => {
          logger.error({ err }, 'stop failed');
          resolve(1);
        },
      );
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    const e = err as { code?: string };
    const usage = e?.code === 'ERR_CONFIG' || e?.code === 'ERR_NO_TARGETS';
    process.exit(fail(describe(err), usage ? 2 : 1));
  },
);
