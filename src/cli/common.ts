// What every command of the CLI shares: output streams, usage errors, exit codes, and the one way
// commander is set up (errors and help on our streams, lowercase section titles, usage after an
// error). Exit codes: 0 success, 1 runtime failure, 2 bad usage or configuration.
import { Command, CommanderError } from 'commander';
import { InterceptorError } from '../errors.js';

export interface CliIo {
  readonly stdout: NodeJS.WritableStream;
  readonly stderr: NodeJS.WritableStream;
}

/** Bad command-line input: reported with the command's usage, exit code 2, nothing done. */
export class UsageError extends InterceptorError {
  constructor(
    message: string,
    /** The command it is about (its usage is printed); null: the one being run. */
    readonly command: Command | null = null,
  ) {
    super('ERR_USAGE', message);
  }
}

export const EXIT = { ok: 0, failure: 1, usage: 2 } as const;

/** Codes that mean the input (command line, config) was wrong: nothing was done. */
const USAGE_CODES = new Set(['ERR_USAGE', 'ERR_CONFIG', 'ERR_NO_TARGETS']);

export function exitCodeOf(err: unknown): number {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && USAGE_CODES.has(code) ? EXIT.usage : EXIT.failure;
}

/** An error's message with its code, once. */
export function describeError(err: unknown): string {
  const e = err as { code?: unknown; message?: unknown } | null;
  if (e && typeof e.code === 'string' && typeof e.message === 'string') {
    return e.message.includes(e.code) ? e.message : `${e.message} [${e.code}]`;
  }
  return String((e && e.message) ?? err);
}

/** "tproxy-interceptor instances add": the command's name with its parents'. */
export function commandPath(cmd: Command): string {
  const names: string[] = [];
  for (let c: Command | null = cmd; c !== null; c = c.parent) names.unshift(c.name());
  return names.join(' ');
}

function usageLine(cmd: Command): string {
  return `usage: ${commandPath(cmd)} ${cmd.usage()}`;
}

/** Writes a usage error the way commander's own errors are written (see setUp). */
function reportUsageError(io: CliIo, cmd: Command, message: string): void {
  io.stderr.write(`${commandPath(cmd)}: ${message}\n${usageLine(cmd)}\n(\`${commandPath(cmd)} --help\` says more)\n`);
}

/**
 * Sets up `root` and every command under it: errors and help on `io`, no process.exit (errors
 * are thrown, see exitOf), lowercase section titles. Call once the tree is built.
 */
export function setUp(root: Command, io: CliIo): Command {
  const visit = (cmd: Command): void => {
    cmd.exitOverride();
    cmd.configureOutput({
      writeOut: (s) => void io.stdout.write(s),
      writeErr: (s) => void io.stderr.write(s),
      outputError: (s) => reportUsageError(io, cmd, s.replace(/^error: /, '').trimEnd()),
    });
    cmd.configureHelp({ styleTitle: (title) => title.toLowerCase(), helpWidth: 100, sortSubcommands: false });
    cmd.showSuggestionAfterError(true);
    for (const sub of cmd.commands) visit(sub);
  };
  visit(root);
  return root;
}

/**
 * Runs a command tree. Actions report their exit code through `code`; commander's own outcomes
 * map to 0 (help, version) or 2 (usage, already reported); a UsageError thrown by an action is
 * reported with its command's usage (2); anything else is a runtime failure (1) or a config
 * error (2), reported as `<prefix>: message [code]`.
 */
export async function runTree(root: Command, argv: readonly string[], io: CliIo, code: { value: number }): Promise<number> {
  try {
    await root.parseAsync([...argv], { from: 'user' });
    return code.value;
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version') return EXIT.ok;
      return EXIT.usage;
    }
    if (err instanceof UsageError) {
      reportUsageError(io, err.command ?? root, err.message);
      return EXIT.usage;
    }
    io.stderr.write(`${root.name()}: ${describeError(err)}\n`);
    return exitCodeOf(err);
  }
}
