// Out of descriptors, a loop thread still answers: it gives up its spare descriptor for a moment
// to accept the waiting connection and reset it, instead of leaving clients in the accept queue.
// The engine runs in a child process whose open-files limit is tiny (both soft and hard).
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const REPO = path.resolve(import.meta.dirname, '..', '..');
const dist = (p: string): string => JSON.stringify(path.join(REPO, 'dist', p));
const HOST = '127.0.0.1';
const TRUSTED = '127.0.0.2';

const SCRIPT = `
import { startEngine, setEngineTable, engineStats } from ${dist('native/engine.js')};
import { openTransparentListener } from ${dist('native/sockets.js')};
import { compileTable } from ${dist('datapath/table.js')};
import { parseConfig } from ${dist('config-parse.js')};
import { ALWAYS_LOCAL } from ${dist('proxy/guard.js')};
const port = 20000 + Math.floor(Math.random() * 40000);
const fd = openTransparentListener('127.0.0.1', port);
startEngine({ pipeSize: 0, connectTimeoutMs: 1000, idleTimeoutMs: 0, headerTimeoutMs: 20000, maxV2Length: 4096, ppVersion: 2, keepClientPort: false, maxConnections: 100000, reportOpen: false }, [[fd]], () => {});
setEngineTable(compileTable({ generation: 1, targets: parseConfig('[[intercept.targets]]\\ncidr = "127.0.0.0/8"\\nports = ["1-65535"]\\n').intercept.targets, localAddresses: [], localNetworks: ALWAYS_LOCAL, trustedSources: ['${TRUSTED}/32'], entries: [] }));
console.log('ready ' + port);
process.stdin.on('data', () => console.log('stats ' + JSON.stringify(engineStats())));
`;

let child: ChildProcess | undefined;
const sockets: net.Socket[] = [];
const dir = mkdtempSync(path.join(os.tmpdir(), 'tpi-emfile-'));
afterAll(() => {
  for (const s of sockets) s.destroy();
  child?.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

describe('engine out of descriptors', () => {
  it('resets what it cannot hold, at once, and counts it', async () => {
    const script = path.join(dir, 'engine.mjs');
    writeFileSync(script, SCRIPT);
    child = spawn('bash', ['-c', 'ulimit -n 64 && exec "$0" "$1"', process.execPath, script], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    const until = async (re: RegExp): Promise<RegExpMatchArray> => {
      for (let i = 0; i < 200; i++) {
        const m = out.match(re);
        if (m) return m;
        await new Promise((r) => setTimeout(r, 25));
      }
      throw new Error(`no ${re} in:\n${out}`);
    };
    const port = Number((await until(/ready (\d+)/))[1]);
    // Silent connections from the trusted address wait for their PROXY header: each holds a
    // descriptor of the child until well after the test.
    const results = await Promise.all(
      Array.from({ length: 80 }, () =>
        new Promise<{ error: string | null; ms: number }>((resolve) => {
          const t0 = Date.now();
          const s = net.connect({ host: HOST, port, localAddress: TRUSTED });
          sockets.push(s);
          s.on('error', (e: NodeJS.ErrnoException) => resolve({ error: e.code ?? 'error', ms: Date.now() - t0 }));
          setTimeout(() => resolve({ error: null, ms: Date.now() - t0 }), 1500);
        }),
      ),
    );
    const reset = results.filter((r) => r.error === 'ECONNRESET');
    const held = results.filter((r) => r.error === null);
    // Some fit, the rest were answered with a reset, promptly: none waits in the queue.
    expect(held.length).toBeGreaterThan(10);
    expect(reset.length).toBeGreaterThan(10);
    expect(reset.length + held.length).toBe(80);
    for (const r of reset) expect(r.ms).toBeLessThan(1000);
    child.stdin!.write('stats\n');
    const stats = JSON.parse((await until(/stats (\{.*\})/))[1]!) as { overCapacity: number; live: number };
    expect(stats.overCapacity).toBe(reset.length);
    expect(stats.live).toBe(held.length);
  });
});
