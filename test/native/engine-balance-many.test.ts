// Eight loop threads sharing one listener: past five threads each compares itself with two others
// picked at random rather than with all of them, and they still stay about level, whether connections
// come one at a time or in bursts. One engine per process (this file's), on loopback: connections
// from a trusted source stay open waiting for their PROXY header, so each one stays where it landed.
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ConnectionEvent } from '../../src/datapath/events.js';
import { engineStats, requestEngineSnapshot, shutdownEngine } from '../../src/native/engine.js';
import { connectTrusted, startHoldingEngine, until } from './helpers/loopback-engine.js';

const THREADS = 8;
const events: ConnectionEvent[] = [];
const held: net.Socket[] = [];
let port = 0;

const connect = (): Promise<net.Socket> => connectTrusted(port);

beforeAll(() => {
  port = startHoldingEngine(THREADS, events);
});

afterAll(() => {
  for (const s of held) s.destroy();
  shutdownEngine();
});

describe('eight threads, one listener', () => {
  it('hold 80 connections about level (4-16 each), opened one at a time and in bursts', async () => {
    for (let i = 0; i < 40; i++) {
      held.push(await connect());
      await until(() => (engineStats()!.live === i + 1 ? true : undefined), 5000);
    }
    for (let b = 0; b < 4; b++) held.push(...(await Promise.all(Array.from({ length: 10 }, connect))));
    await until(() => (engineStats()!.live === 80 ? true : undefined), 5000);
    const seq = requestEngineSnapshot(1000);
    const done = await until(() => {
      const d = events.filter((e) => e.type === 'snapshot-done' && e.errno === seq);
      return d.length === THREADS ? d : undefined;
    }, 5000);
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
