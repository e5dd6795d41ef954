// Running nft, iptables and ip: argv arrays only (never a shell string), optional stdin, optional network
// namespace, and one mapping from their failures to daemon errors. Shared by firewall/ and routing/.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { open, unlink, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InterceptorError } from '../errors.js';

export interface ExecResult {
  readonly stdout: string;
  readonly stderr: string;
}

/** Failure shape: `code` is the spawn errno name ('ENOENT') or the exit status; stderr is what the tool printed. */
export interface ExecFailure extends Error {
  code?: string | number | null;
  signal?: NodeJS.Signals | null;
  stdout?: string;
  stderr?: string;
}

/** Cap on stdout + stderr; `nft -j list` of our table is a few KiB. */
const MAX_OUTPUT = 64 * 1024 * 1024;

/** Runs `file` with `args`; resolves on exit status 0, otherwise rejects with an ExecFailure. */
export type ExecFileFn = (file: string, args: readonly string[], options: { input?: string; timeoutMs?: number }) => Promise<ExecResult>;

/**
 * Node's child stdio "pipes" are socketpairs, and nft 1.0.6 implements `-f -` as
 * open("/dev/stdin"), which fails on a socket with ENXIO. So stdin input goes into an unlinked
 * temporary file handed over as fd 0: re-opening /proc/self/fd/0 works for it, the offset stays
 * at 0 for tools that read fd 0 directly, and nothing is left behind if we crash.
 */
async function stdinFile(input: string): Promise<FileHandle> {
  const path = join(tmpdir(), `tproxy-interceptor-${process.pid}-${randomBytes(8).toString('hex')}.in`);
  const handle = await open(path, 'wx+', 0o600);
  try {
    await unlink(path);
    const data = Buffer.from(input, 'utf8');
    let done = 0;
    // positional writes leave the file offset at 0
    while (done < data.length) done += (await handle.write(data, done, data.length - done, done)).bytesWritten;
    return handle;
  } catch (err) {
    await handle.close();
    throw err;
  }
}

export const execFileDefault: ExecFileFn = async (file, args, options) => {
  const stdin = options.input === undefined ? null : await stdinFile(options.input);
  try {
    return await new Promise<ExecResult>((resolve, reject) => {
      const child = spawn(file, [...args], { stdio: [stdin === null ? 'ignore' : stdin.fd, 'pipe', 'pipe'] });
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      let size = 0;
      const collect = (into: Buffer[]) => (chunk: Buffer) => {
        size += chunk.length;
        if (size > MAX_OUTPUT) child.kill('SIGKILL');
        else into.push(chunk);
      };
      child.stdout!.on('data', collect(out));
      child.stderr!.on('data', collect(err));
      const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 30_000);
      child.on('error', (e: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        const failure: ExecFailure = Object.assign(new Error(`${file}: spawn ${e.code ?? 'failed'}`, { cause: e }), { code: e.code ?? null, stdout: '', stderr: '' });
        reject(failure);
      });
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        const stdout = Buffer.concat(out).toString('utf8');
        const stderr = Buffer.concat(err).toString('utf8');
        if (code === 0) {
          resolve({ stdout, stderr });
          return;
        }
        const why = signal ? `killed by ${signal}` : `exit status ${code}`;
        const failure: ExecFailure = Object.assign(new Error(`${[file, ...args].join(' ')}: ${why}`), { code, signal, stdout, stderr });
        reject(failure);
      });
    });
  } finally {
    await stdin?.close();
  }
};

/** A failed nft/ip invocation. `code` is stable; argv, exit status and stderr are kept for the log. */
export class CommandError extends InterceptorError {
  readonly argv: readonly string[];
  readonly exitCode: number | null;
  readonly stderr: string;
  constructor(code: string, message: string, details: { argv: readonly string[]; exitCode: number | null; stderr: string; cause?: unknown }) {
    super(code, message, { cause: details.cause });
    this.argv = details.argv;
    this.exitCode = details.exitCode;
    this.stderr = details.stderr;
  }
}

export interface ToolRunnerOptions {
  /** Tool name used in messages and error codes: 'nft' → ERR_NFT_*, 'ip' → ERR_IP_*, 'iptables' → ERR_IPTABLES_*. */
  readonly tool: 'nft' | 'ip' | 'iptables';
  /** Path or name of the tool binary. */
  readonly path: string;
  /** Package to suggest when the tool is missing. */
  readonly pkg: string;
  /** Run inside this network namespace (`ip netns exec <ns> …`). */
  readonly netns?: string | undefined;
  /** The `ip` binary used for `ip netns exec`. */
  readonly ipPath?: string | undefined;
  readonly execFile?: ExecFileFn | undefined;
  readonly timeoutMs?: number | undefined;
}

export type ToolRunner = (args: readonly string[], input?: string) => Promise<ExecResult>;

/** Full argv (program first) for running `path args…`, optionally inside a network namespace. */
export function toolArgv(path: string, args: readonly string[], netns?: string, ipPath = 'ip'): string[] {
  return netns === undefined ? [path, ...args] : [ipPath, 'netns', 'exec', netns, path, ...args];
}

export function createToolRunner(opts: ToolRunnerOptions): ToolRunner {
  const exec = opts.execFile ?? execFileDefault;
  const prefix = opts.tool.toUpperCase();
  return async (args, input) => {
    const argv = toolArgv(opts.path, args, opts.netns, opts.ipPath);
    const shown = argv.join(' ');
    try {
      return await exec(argv[0]!, argv.slice(1), { ...(input !== undefined ? { input } : {}), ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}) });
    } catch (err) {
      const failure = err as ExecFailure;
      const stderr = (failure.stderr ?? '').trim();
      const exitCode = typeof failure.code === 'number' ? failure.code : null;
      const details = { argv, exitCode, stderr, cause: err };
      // `ip netns exec` reports a missing program itself: 'exec of "nft" failed: No such file or directory'.
      if (failure.code === 'ENOENT' || /exec of .* failed: No such file or directory/.test(stderr)) {
        const missing = failure.code === 'ENOENT' ? argv[0]! : opts.path;
        throw new CommandError(`ERR_${prefix}_MISSING`, `${missing} not found: install the ${opts.pkg} package (running \`${shown}\`)`, details);
      }
      // iptables says "Permission denied (you must be root)", or fails on its lock file.
      if (/Operation not permitted|Permission denied \(you must be root\)|xtables\.lock: Permission denied/.test(stderr) || failure.code === 'EPERM' || failure.code === 'EACCES') {
        throw new CommandError(
          'ERR_NO_CAP_NET_ADMIN',
          `${opts.tool}: Operation not permitted: changing the firewall and policy routing requires root or CAP_NET_ADMIN (running \`${shown}\`)`,
          details,
        );
      }
      const why = failure.signal ? `killed by ${failure.signal}` : exitCode !== null ? `exit status ${exitCode}` : failure.message;
      throw new CommandError(`ERR_${prefix}_FAILED`, `\`${shown}\` failed (${why})${stderr ? `: ${stderr}` : ''}`, details);
    }
  };
}
