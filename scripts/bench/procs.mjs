// Processes of the bench: commands run in a namespace with a timeout, long-running services that
// are tracked so that cleanup can stop every one of them, and /proc readings of a process tree.
import { spawn } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { descendantsOf, parseProcStat, parseVmRssKiB } from './parse.mjs';

const TAIL_BYTES = 64 * 1024;

/** `ip netns exec NS argv...`, or argv itself when ns is null. `ip netns exec` execs, so the pid is argv's. */
function nsArgv(ns, argv) {
  return ns ? ['ip', ['netns', 'exec', ns, ...argv]] : [argv[0], argv.slice(1)];
}

export class CommandError extends Error {
  constructor(message, fields) {
    super(message);
    this.code = fields.timedOut ? 'ERR_BENCH_TIMEOUT' : 'ERR_BENCH_COMMAND';
    Object.assign(this, fields);
  }
}

/**
 * Runs a command to completion, killed (SIGKILL) after timeoutMs.
 * @returns {Promise<{ code: number | null, stdout: string, stderr: string }>}
 */
export function runCommand(ns, argv, { timeoutMs = 30_000, allowFail = false, input } = {}) {
  const [file, args] = nsArgv(ns, argv);
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    if (input !== undefined) child.stdin.end(input);
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(new CommandError(`${argv.join(' ')}: ${err.message}`, { argv, stdout, stderr, timedOut: false, exitCode: null }));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const where = ns ? ` (in ${ns})` : '';
      if (timedOut) {
        reject(new CommandError(`${argv.join(' ')}${where}: timed out after ${timeoutMs} ms`, { argv, stdout, stderr, timedOut, exitCode: code }));
      } else if (code !== 0 && !allowFail) {
        const why = stderr.trim().split('\n').slice(-3).join(' / ') || stdout.trim().split('\n').slice(-3).join(' / ');
        reject(new CommandError(`${argv.join(' ')}${where}: exit ${code ?? signal}: ${why}`, { argv, stdout, stderr, timedOut, exitCode: code }));
      } else {
        resolve({ code, stdout, stderr });
      }
    });
  });
}

/** Sets sysctls ({ key: value }) in a namespace, one after the other. */
export async function sysctls(ns, settings) {
  for (const [key, value] of Object.entries(settings)) await runCommand(ns, ['sysctl', '-qw', `${key}=${value}`]);
}

/**
 * Long-running processes, each tracked until it exits; stopAll() is what cleanup calls.
 */
export function createProcessTracker() {
  const live = new Set();

  /**
   * @returns {{ name: string, pid: number, child: import('node:child_process').ChildProcess,
   *   output(): string, onLine(fn: (line: string) => void): void,
   *   waitFor(re: RegExp, timeoutMs: number): Promise<string>, exited: Promise<{code: number|null, signal: string|null}>,
   *   stop(graceMs?: number): Promise<void>, alive(): boolean }}
   */
  function start(name, ns, argv, { stdin = 'ignore' } = {}) {
    const [file, args] = nsArgv(ns, argv);
    const child = spawn(file, args, { stdio: [stdin, 'pipe', 'pipe'] });
    let tail = '';
    let partial = '';
    const lineListeners = [];
    const waiters = new Set();
    let exitInfo = null;
    const onData = (d) => {
      const s = d.toString();
      tail = (tail + s).slice(-TAIL_BYTES);
      partial += s;
      const lines = partial.split('\n');
      partial = lines.pop();
      for (const line of lines) for (const fn of lineListeners) fn(line);
      for (const w of [...waiters]) w();
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    const exited = new Promise((resolve) => {
      child.on('error', (err) => {
        tail += `\n[spawn error: ${err.message}]`;
        exitInfo = { code: null, signal: null };
        resolve(exitInfo);
      });
      child.on('exit', (code, signal) => {
        exitInfo = { code, signal };
        resolve(exitInfo);
      });
    }).then((info) => {
      live.delete(proc);
      for (const w of [...waiters]) w();
      return info;
    });
    const proc = {
      name,
      pid: child.pid,
      child,
      exited,
      output: () => tail,
      onLine: (fn) => lineListeners.push(fn),
      alive: () => exitInfo === null,
      waitFor(re, timeoutMs) {
        return new Promise((resolve, reject) => {
          const check = () => {
            if (re.test(tail)) {
              done();
              resolve(tail);
            } else if (exitInfo) {
              done();
              reject(new Error(`${name} exited (${exitInfo.code ?? exitInfo.signal}) before printing ${re}: ${tail.trim().slice(-600)}`));
            }
          };
          const timer = setTimeout(() => {
            done();
            reject(new Error(`${name}: nothing matching ${re} within ${timeoutMs} ms: ${tail.trim().slice(-600)}`));
          }, timeoutMs);
          const done = () => {
            clearTimeout(timer);
            waiters.delete(check);
          };
          waiters.add(check);
          check();
        });
      },
      async stop(graceMs = 3000) {
        if (exitInfo) return;
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
        await exited;
        clearTimeout(timer);
      },
    };
    live.add(proc);
    return proc;
  }

  async function stopAll(graceMs = 2000) {
    await Promise.all([...live].map((p) => p.stop(graceMs)));
  }

  return { start, stopAll, live };
}

function readProcs() {
  const out = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      out.push(parseProcStat(readFileSync(`/proc/${entry}/stat`, 'utf8')));
    } catch {
      // exited meanwhile
    }
  }
  return out;
}

/** utime + stime (clock ticks), resident memory (KiB) and open descriptors summed over a process and its descendants. */
export function sampleTree(rootPid) {
  const procs = readProcs();
  const pids = descendantsOf(rootPid, procs);
  let ticks = 0;
  let rssKiB = 0;
  let fds = 0;
  for (const pid of pids) {
    try {
      fds += readdirSync(`/proc/${pid}/fd`).length;
    } catch {
      // exited meanwhile
    }
    const p = procs.find((x) => x.pid === pid);
    ticks += p.utime + p.stime;
    try {
      rssKiB += parseVmRssKiB(readFileSync(`/proc/${pid}/status`, 'utf8'));
    } catch {
      // exited meanwhile
    }
  }
  return { pids, ticks, rssKiB, fds };
}

/** Every thread of the given processes, as parseProcStat() of /proc/PID/task/TID/stat (pid is the tid). */
export function sampleThreads(pids) {
  const out = [];
  for (const pid of pids) {
    let tids;
    try {
      tids = readdirSync(`/proc/${pid}/task`);
    } catch {
      continue; // exited meanwhile
    }
    for (const tid of tids) {
      try {
        out.push(parseProcStat(readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8')));
      } catch {
        // exited meanwhile
      }
    }
  }
  return out;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls check() (async, truthy = done) every intervalMs until timeoutMs; throws with `what` on timeout. */
export async function waitUntil(what, check, timeoutMs, intervalMs = 100) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(intervalMs);
  }
}
