// `tproxy-interceptor run`: the daemon, until SIGTERM or SIGINT. A start that fails is reported
// twice: a human line on stderr (by the CLI) and a JSON line with its code on stdout (pino, where
// the daemon's log goes), so that a log collector sees why the service did not come up.
import { resolve } from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import type { Logger } from 'pino';
import { loadConfig } from '../config-parse.js';
import type { LogLevel } from '../config.js';
import { startDaemon, type Daemon } from '../daemon.js';
import { parseDuration } from '../duration.js';
import { createLogger } from '../logger.js';
import { inspectorFlags, logSigusr1To, onSighup } from '../signals.js';
import { UsageError, type CliIo } from './common.js';

export const LOG_LEVELS: readonly LogLevel[] = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];

export function runCommand(opts: { io: CliIo; code: { value: number } }): Command {
  return new Command('run')
    .summary('start the interceptor: listeners, firewall rules, policy routing, admin API (root or CAP_NET_ADMIN)')
    .description(
      'Start the interceptor: loop threads and their transparent listeners, policy routing, the firewall rules, ' +
        'the admin socket (and the metrics listener and the attested registration listener when configured). ' +
        'Runs until SIGTERM or SIGINT, which drain live connections, then remove exactly the rules it installed. ' +
        'SIGHUP reloads the config file (see `reload`).',
    )
    .usage('--config FILE [--drain DURATION] [--log-level LEVEL]')
    .requiredOption('--config <file>', 'the TOML configuration')
    .addOption(
      new Option('--drain <duration>', 'how long SIGTERM/SIGINT waits for live connections ("10s", "1m")').default(10_000, '10s').argParser((v) => {
        try {
          return parseDuration(v);
        } catch (err) {
          throw new InvalidArgumentError(`--drain: ${(err as Error).message}`);
        }
      }),
    )
    .addOption(new Option('--log-level <level>', 'log level at start, instead of log.level (until a reload changes log.level)').choices(LOG_LEVELS))
    .action(async (o: { config: string; drain: number; logLevel?: LogLevel }, cmd: Command) => {
      opts.code.value = await runDaemon(cmd, o.config, o.drain, o.logLevel ?? null);
    });
}

async function runDaemon(cmd: Command, configPath: string, drainMs: number, logLevel: LogLevel | null): Promise<number> {
  const inspect = inspectorFlags(process.execArgv, process.env['NODE_OPTIONS']);
  if (inspect !== null) {
    throw new UsageError(`refusing to start with ${inspect} (node flags or NODE_OPTIONS): the inspector lets any local user who reaches it run code with this daemon's privileges`, cmd);
  }
  let logger: Logger | null = null;
  let daemon: Daemon | null = null;
  // Before anything can take a while: a SIGHUP's default action would end the process.
  const hup = (): void => {
    if (logger !== null) onSighup(logger, daemon === null ? null : () => daemon!.reload());
  };
  process.on('SIGHUP', hup);
  try {
    const config = await loadConfig(configPath);
    logger = createLogger(logLevel ?? config.log.level);
    logSigusr1To(logger);
    // Absolute: what a reload reads again, and what `reload` compares with its own --config.
    daemon = await startDaemon({ config, configPath: resolve(configPath), logger });
  } catch (err) {
    (logger ?? createLogger(logLevel ?? 'info')).fatal({ err, code: (err as { code?: unknown }).code ?? 'ERR_INTERNAL', config: configPath }, 'start failed');
    throw err;
  }
  const running = daemon;
  const log = logger;
  log.info({ config: configPath, metrics: running.metricsAddress }, 'running');
  return new Promise<number>((resolve) => {
    let stopping = false;
    const onSignal = (signal: NodeJS.Signals): void => {
      if (stopping) {
        log.warn({ signal }, 'already stopping');
        return;
      }
      stopping = true;
      log.info({ signal, drainMs }, 'stopping');
      running.stop(drainMs).then(
        () => resolve(0),
        (err: unknown) => {
          log.error({ err }, 'stop failed');
          resolve(1);
        },
      );
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
}
