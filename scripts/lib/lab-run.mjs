// What the lab runners (`npm run bench`, `npm run soak`) do before they start and on every way
// out: the command line or the usage, root or a refusal; then one teardown (stop every process
// the tracker started, `scripts/lab.sh down`, remove the temp dir) reached from the end of the
// run, a failure, SIGINT/SIGTERM/SIGHUP, the run's own deadline and, synchronously, process exit.
import { rmSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { runCommand } from '../bench/procs.mjs';

const log = (s) => process.stderr.write(`${s}\n`);

/**
 * The options, or the process ends: a usage error prints it with the usage (exit 2), --help
 * prints the usage (exit 0), and a user other than root is refused (exit rootExit).
 * @param {{ tool: string, parse(argv: string[]): { help: boolean }, UsageError: Function, usage: string,
 *   rootReason: string, rootExit: number }} o
 */
export function optionsOrExit({ tool, parse, UsageError, usage, rootReason, rootExit }) {
  let opts;
  try {
    opts = parse(process.argv.slice(2));
  } catch (err) {
    if (err instanceof UsageError) {
      log(`${tool}: ${err.message}\n${usage}`);
      process.exit(2);
    }
    throw err;
  }
  if (opts.help) {
    console.log(usage);
    process.exit(0);
  }
  if (process.getuid?.() !== 0) {
    log(`${tool}: run as root (${rootReason})`);
    process.exit(rootExit);
  }
  return opts;
}

/**
 * The lab's namespace prefix: the one the shell wrapper chose and exported in envVar (its EXIT
 * trap removes the lab too, should the runner be killed), else base and this process's id.
 */
export function labPrefix(base, envVar) {
  const given = process.env[envVar];
  return given && new RegExp(`^${base}[a-z0-9]{1,7}$`).test(given) ? given : `${base}${process.pid.toString(36)}`;
}

/**
 * Installs the teardown; `interrupted` is null until a signal or the deadline (then its name).
 * @param {{ tool: string, labSh: string, prefix: string, dir: string, stopMs: number,
 *   tracker: { stopAll(ms: number): Promise<void>, live: Set<{ child: import('node:child_process').ChildProcess }> },
 *   interruptedExit: number, deadlineExit: number }} o
 */
export function guardLab({ tool, labSh, prefix, dir, tracker, stopMs, interruptedExit, deadlineExit }) {
  let cleaning = null;
  let cleanedUp = false;

  const guard = {
    interrupted: null,
    /** Stops everything and removes the lab, once however often it is called. */
    cleanup() {
      cleaning ??= (async () => {
        await tracker.stopAll(stopMs).catch(() => {});
        await runCommand(null, ['bash', labSh, 'down', prefix], { timeoutMs: 30_000, allowFail: true }).catch((err) => log(`${tool}: lab down: ${err.message}`));
        rmSync(dir, { recursive: true, force: true });
        cleanedUp = true;
      })();
      return cleaning;
    },
    /** After ms, unless interrupted before: cleans up and exits with deadlineExit. Returns the timer. */
    deadline(ms) {
      return setTimeout(() => {
        if (guard.interrupted) return;
        guard.interrupted = 'deadline';
        log(`\n${tool}: deadline of ${Math.round(ms / 1000)} s passed: cleaning up`);
        guard.cleanup().finally(() => process.exit(deadlineExit));
      }, ms);
    },
    /** Runs main() and exits with its code; when it throws: the stack, the teardown, failExit. */
    exitWith(main, failExit) {
      main().then(
        (code) => process.exit(code),
        async (err) => {
          log(`${tool}: ${err.stack ?? err.message}`);
          await guard.cleanup();
          process.exit(failExit);
        },
      );
    },
  };

  // Last resort when the event loop is gone (process.exit from elsewhere): synchronous teardown.
  process.on('exit', () => {
    if (cleanedUp) return;
    for (const p of tracker.live) p.child.kill('SIGKILL');
    spawnSync('bash', [labSh, 'down', prefix], { timeout: 30_000, stdio: 'ignore' });
    rmSync(dir, { recursive: true, force: true });
  });
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    process.on(sig, () => {
      if (guard.interrupted) return;
      guard.interrupted = sig;
      log(`\n${tool}: ${sig}: stopping everything and removing the lab…`);
      guard.cleanup().finally(() => process.exit(interruptedExit));
    });
  }
  return guard;
}
