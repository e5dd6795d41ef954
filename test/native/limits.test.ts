// The open-files limit with the real addon: reading it, the errors of setting it, and raising it
// in a child process whose /proc/<pid>/limits shows the result.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { getOpenFilesLimit } from '../../src/native/limits.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const DIST_LIMITS = path.join(REPO, 'dist', 'native', 'limits.js');
const CAP_SYS_RESOURCE = 24;

const cleanups: (() => Promise<void> | void)[] = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** "Max open files" of a process, from /proc/<pid>/limits. */
function maxOpenFiles(pid: number): { soft: number; hard: number } {
  const line = readFileSync(`/proc/${pid}/limits`, 'utf8')
    .split('\n')
    .find((l) => l.startsWith('Max open files'));
  const m = line?.match(/^Max open files\s+(\S+)\s+(\S+)/);
  if (!m) throw new Error(`no "Max open files" line in /proc/${pid}/limits`);
  const num = (s: string): number => (s === 'unlimited' ? Infinity : Number(s));
  return { soft: num(m[1]!), hard: num(m[2]!) };
}

function hasCapability(bit: number): boolean {
  const hex = readFileSync('/proc/self/status', 'utf8').match(/^CapEff:\s*([0-9a-f]+)$/m)?.[1] ?? '0';
  return ((BigInt(`0x${hex}`) >> BigInt(bit)) & 1n) === 1n;
}

/** The compiled module the child imports: missing or older than its source is a setup error. */
function requireBuiltLimits(): void {
  const build = 'build it with `npx tsc -p tsconfig.json` (or `npm run build`)';
  if (!existsSync(DIST_LIMITS)) throw new Error(`${DIST_LIMITS} is missing: ${build}`);
  for (const source of ['src/native/limits.ts', 'src/native/addon.ts']) {
    if (statSync(path.join(REPO, source)).mtimeMs > statSync(DIST_LIMITS).mtimeMs) {
      throw new Error(`${DIST_LIMITS} is older than ${source}: rebuild it with \`npx tsc -p tsconfig.json\``);
    }
  }
}

describe('open-files limit', () => {
  it('reads the current limits', () => {
    const { soft, hard } = getOpenFilesLimit();
    expect({ soft, hard }).toEqual(maxOpenFiles(process.pid));
    expect(soft).toBeLessThanOrEqual(hard);
  });

  it('raiseOpenFilesLimit() lifts the soft limit to the hard one (and the hard one, when allowed), as /proc shows', async () => {
    requireBuiltLimits();
    const dir = mkdtempSync(path.join(os.tmpdir(), 'limits-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const script = path.join(dir, 'raise.mjs');
    // Node itself raises the soft limit to the hard one at startup: the child starts with both
    // lowered by the shell, so that only raising the hard limit (CAP_SYS_RESOURCE) can lift it.
    writeFileSync(
      script,
      `import { getOpenFilesLimit, raiseOpenFilesLimit } from ${JSON.stringify(DIST_LIMITS)};
const start = getOpenFilesLimit();
const lowered = start;
const result = raiseOpenFilesLimit();
process.stdout.write(JSON.stringify({ start, lowered, result }) + '\\n');
process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
`,
    );
    const child = spawn('bash', ['-c', `ulimit -n 256 && exec ${JSON.stringify(process.execPath)} ${JSON.stringify(script)}`], { cwd: REPO, stdio: ['pipe', 'pipe', 'pipe'] });
    cleanups.push(() => void child.kill('SIGKILL'));
    let out = '';
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const line = await new Promise<string>((resolve, reject) => {
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.includes('\n')) resolve(out.split('\n')[0]!);
      });
      child.once('exit', (code) => reject(new Error(`child exited with ${code} before reporting:\n${err}`)));
    });
    const { start, lowered, result } = JSON.parse(line) as {
      start: { soft: number; hard: number };
      lowered: { soft: number; hard: number };
      result: { soft: number; hard: number; raised: boolean };
    };
    const shown = maxOpenFiles(child.pid!);
    child.stdin.end();

    expect(lowered).toEqual({ soft: 256, hard: 256 });
    expect(shown).toEqual({ soft: result.soft, hard: result.hard });
    expect(result.soft).toBe(result.hard);
    const goal = Math.min(Number(readFileSync('/proc/sys/fs/nr_open', 'utf8')), 2 ** 20);
    // Without CAP_SYS_RESOURCE (also root in many containers) the hard limit stays: EPERM is
    // expected and not an error.
    const allowed = hasCapability(CAP_SYS_RESOURCE);
    expect(result.hard).toBe(allowed ? goal : start.hard);
    expect(result.raised).toBe(allowed);
  });
});
