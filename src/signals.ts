// Signals that must do no harm to a daemon running as root or with CAP_NET_ADMIN.
//
// SIGUSR1: Node opens its inspector on 127.0.0.1:9229 when it receives SIGUSR1, and any local
// user who can reach that port can then run code in this process. Node 20 has no flag to turn
// that off (--disable-sigusr1 came in 22.14), but a JavaScript SIGUSR1 listener replaces Node's
// handler: importing this module first (cli.ts) installs one before anything else
// runs. The listener stays for the life of the process: removing the last one would restore the
// default action, which terminates.
import type { Logger } from 'pino';

let usr1Logger: Logger | null = null;

process.on('SIGUSR1', () => {
  usr1Logger?.info({ signal: 'SIGUSR1' }, 'SIGUSR1: nothing to reopen (logs go to stdout); the inspector stays closed');
});

/** Where SIGUSR1 is logged from now on (before this, it is ignored silently). */
export function logSigusr1To(logger: Logger): void {
  usr1Logger = logger;
}

/**
 * Flags that open the inspector at start (`--inspect`, `--inspect-brk`, `--inspect-wait`, in
 * node's own flags or NODE_OPTIONS), or null when there are none. `run` refuses to start with them.
 */
export function inspectorFlags(execArgv: readonly string[], nodeOptions: string | undefined): string | null {
  const flags = [...execArgv, ...(nodeOptions ?? '').split(/\s+/)];
  const found = flags.find((f) => /^--(inspect|inspect-brk|inspect-wait|debug|debug-brk)(=|$)/.test(f));
  return found ?? null;
}

/**
 * SIGHUP, the usual "reload your config" signal: its default action would end the daemon without
 * a log line and leave its rules in place (target traffic dropped until a restart). `run` installs
 * this before anything else can take a signal: while the daemon starts, SIGHUP is logged and
 * ignored; once it runs, `reload` is given and each SIGHUP reloads the config file (src/reload.ts;
 * reload logs its outcome, a refused reload leaves the running config in force).
 */
export function onSighup(logger: Logger, reload: (() => Promise<unknown>) | null): void {
  if (reload === null) {
    logger.warn({ signal: 'SIGHUP' }, 'SIGHUP while starting: ignored; send it again once the daemon runs');
    return;
  }
  logger.info({ signal: 'SIGHUP' }, 'SIGHUP: reloading the config');
  reload().catch(() => {});
}
