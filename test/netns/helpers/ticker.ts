// A long-lived connection from the client namespace: it sends a numbered line every `intervalMs`
// to an echoing backend (scripts/peers/whoami-server.mjs) and counts the lines that come back, so
// that a test can prove traffic kept flowing across something it did meanwhile (a reload). SIGTERM
// ends it cleanly: a half-close, the backend's end, then one `done {json}` line.
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Lab, Proc } from './lab.js';

export interface TickerResult {
  readonly sent: number;
  readonly echoed: number;
  /** The first line the backend sent: what it saw. */
  readonly saw: { remote: string; local: string } | null;
  readonly localPort: number | null;
  /** How the connection ended: null for the clean end after SIGTERM. */
  readonly error: string | null;
}

export interface Ticker {
  readonly proc: Proc;
  readonly localPort: number;
  /** Echoed lines so far. */
  echoed(): number;
  /** Resolves once `n` more lines than now have been echoed (rejects after `timeoutMs`). */
  more(n: number, timeoutMs?: number): Promise<void>;
  stop(): Promise<TickerResult>;
}

const SCRIPT = `
const net = require('node:net');
const [host, port, interval] = process.argv.slice(2);
const s = net.connect({ host, port: Number(port), allowHalfOpen: true });
let sent = 0, echoed = 0, saw = null, buf = '', error = null, timer = null, done = false;
s.on('connect', () => {
  console.log('connected ' + s.localPort);
  timer = setInterval(() => s.write('tick ' + ++sent + '\\n'), Number(interval));
});
s.on('data', (d) => {
  buf += d;
  let i;
  while ((i = buf.indexOf('\\n')) >= 0) {
    const line = buf.slice(0, i);
    buf = buf.slice(i + 1);
    if (saw === null) saw = JSON.parse(line);
    else if (line.startsWith('tick ')) console.log('echo ' + ++echoed);
  }
});
const finish = () => {
  if (done) return;
  done = true;
  clearInterval(timer);
  process.stdout.write('done ' + JSON.stringify({ sent, echoed, saw, localPort: s.localPort ?? null, error }) + '\\n', () => process.exit(0));
};
s.on('error', (e) => { error = e.code || String(e); finish(); });
s.on('end', () => { s.end(); finish(); });
process.on('SIGTERM', () => { clearInterval(timer); s.end(); setTimeout(finish, 3000); });
`;

export async function startTicker(lab: Lab, host: string, port: number, intervalMs = 50): Promise<Ticker> {
  const file = path.join(lab.dir, 'ticker.cjs');
  await writeFile(file, SCRIPT);
  const proc = lab.spawn(lab.ns.client, ['node', file, host, String(port), String(intervalMs)]);
  const out = await proc.waitFor(/connected \d+/);
  const localPort = Number(/connected (\d+)/.exec(out)![1]);
  const echoed = (): number => proc.output().match(/^echo \d+$/gm)?.length ?? 0;
  return {
    proc,
    localPort,
    echoed,
    async more(n, timeoutMs = 10_000) {
      const want = echoed() + n;
      await proc.waitFor(new RegExp(`^echo ${want}$`, 'm'), timeoutMs);
    },
    async stop() {
      proc.child.kill('SIGTERM');
      const out = await proc.waitFor(/^done .*$/m);
      return JSON.parse(/^done (.*)$/m.exec(out)![1]!) as TickerResult;
    },
  };
}
