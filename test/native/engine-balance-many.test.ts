// Eight loop threads sharing one listener: past five threads each compares itself with two others
// picked at random rather than with all of them, and they still stay about level, whether connections
// come one at a time or in bursts. One engine per process (this file's), on loopback: connections
// from a trusted source stay open waiting for their PROXY header, so each one stays where it landed.
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeEvents, type ConnectionEvent } from '../../src/datapath/events.js';
import { compileTable } from '../../src/datapath/table.js';
import { parseConfig } from '../../src/config-parse.js';
import { engineStats, requestEngineSnapshot, setEngineTable, shutdownEngine, startEngine } from '../../src/native/engine.js';
import { openTransparentListener } from '../../src/native/sockets.js';
import { ALWAYS_LOCAL } from '../../src/proxy/guard.js';

const HOST = '127.0.0.1';
const TRUSTED = '127.0.0.2';
const THREADS = 8;
const events: ConnectionEvent[] = [];
const held: net.Socket[] = [];
let port = 0;

async function until<T>(what: () => T | undefined, timeoutMs = 5000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = what();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 5));
  }
}

const connect = (): Promise<net.Socket> =>
  new Promise((resolve, reject) => {
    const c = net.connect({ host: HOST, port, localAddress: TRUSTED });
    c.on('connect', () => resolve(c));
    c.on('error', reject);
  });

beforeAll(() => {
  for (let attempt = 0; ; attempt++) {
    port = 20000 + Math.floor(Math.random() * 40000);
    try {
      const fd = openTransparentListener(HOST, port);
      startEngine(
        { pipeSize: 0, connectTimeoutMs: 1000, idleTimeoutMs: 0, headerTimeoutMs: 30000, maxV2Length: 4096, ppVersion: 2, keepClientPort: false, maxConnections: 1000, reportOpen: false },
        Array.from({ length: THREADS }, () => [fd]),
        (batch) => events.push(...decodeEvents(batch)),
      );
      break;
    } catch (err) {
      if ((err as { code?: string }).code !== 'EADDRINUSE' || attempt > 20) throw err;
    }
  }
  const { targets } = parseConfig('[[intercept.targets]]\ncidr = "127.0.0.0/8"\nports = ["1-65535"]\n').intercept;
  setEngineTable(compileTable({ generation: 1, targets, localAddresses: [], localNetworks: ALWAYS_LOCAL, trustedSources: [`${TRUSTED}/32`], entries: [] }));
});

afterAll(() => {
  for (const s of held) s.destroy();
  shutdownEngine();
});

describe('eight threads, one listener', () => {
  it('hold 80 connections about level (4-16 each), opened one at a time and in bursts', async () => {
    for (let i = 0; i < 40; i++) {
      held.push(await connect());
      await until(() => (engineStats()!.live === i + 1 ? true : undefined));
    }
    for (let b = 0; b < 4; b++) held.push(...(await Promise.all(Array.from({ length: 10 }, connect))));
    await until(() => (engineStats()!.live === 80 ? true : undefined));
    const seq = requestEngineSnapshot(1000);
    const done = await until(() => {
      const d = events.filter((e) => e.type === 'snapshot-done' && e.errno === seq);
      return d.length === THREADS ? d : undefined;
    });
    // Each thread's answer carries its index (id) and its live connections (bytesIn).
    const counts = done.map((e) => e.bytesIn);
    expect(new Set(done.map((e) => e.id)).size).toBe(THREADS);
    expect(counts.reduce((a, b) => a + b, 0)).toBe(80);
    // 10 each when level; bursts let a thread take up to 4 at once before the others see it.
    // Without balancing the first thread took all 40 of the one-at-a-time connections.
    expect(Math.min(...counts)).toBeGreaterThanOrEqual(4);
    expect(Math.max(...counts)).toBeLessThanOrEqual(16);
  });
});
