// Two loop threads sharing one listener take turns by load: the thread that holds more live
// connections steps out of the listener's wait queue and leaves the next one to the other.
// Without it, connections opened one after another all went to the first thread (the first idle
// one in the wait queue). One engine per process (this file's), on loopback: connections from a
// trusted source stay open waiting for their PROXY header, so each one stays live where it landed.
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ConnectionEvent } from '../../src/datapath/events.js';
import { engineStats, requestEngineSnapshot, shutdownEngine } from '../../src/native/engine.js';
import { connectTrusted, startHoldingEngine, until } from './helpers/loopback-engine.js';

const events: ConnectionEvent[] = [];
const held: net.Socket[] = [];
let port = 0;

/** Opens one connection and waits until a thread has accepted it. */
async function openOne(): Promise<net.Socket> {
  const before = engineStats()!.live;
  const s = await connectTrusted(port);
  held.push(s);
  await until(() => (engineStats()!.live === before + 1 ? true : undefined));
  return s;
}

/** Which thread holds each live connection, by the client's port. */
async function placement(): Promise<Map<number, number>> {
  const seq = requestEngineSnapshot(1000);
  await until(() => (events.filter((e) => e.type === 'snapshot-done' && e.errno === seq).length === 2 ? true : undefined));
  // A connection id carries the index of the thread that holds it in its low 8 bits.
  return new Map(events.filter((e) => e.type === 'live' && e.errno === seq).map((e) => [e.peer.port, e.id % 256]));
}

const perThread = (where: Map<number, number>): [number, number] => {
  const on = (t: number): number => [...where.values()].filter((v) => v === t).length;
  return [on(0), on(1)];
};

beforeAll(() => {
  port = startHoldingEngine(2, events);
});

afterAll(() => {
  for (const s of held) s.destroy();
  shutdownEngine();
});

describe('two threads, one listener', () => {
  it('connections opened one at a time alternate between the threads instead of all going to the first', async () => {
    for (let i = 0; i < 20; i++) await openOne();
    const [a, b] = perThread(await placement());
    expect(a + b).toBe(20);
    expect(Math.abs(a - b)).toBeLessThanOrEqual(1);
  });

  it('a thread left with fewer connections takes the new ones until the two are level again', async () => {
    const where = await placement();
    // Every connection of thread 0 ends: thread 1 is now ahead by about 10.
    let kept = 0;
    for (const s of held) {
      if (where.get(s.localPort!) === 0) s.destroy();
      else if (!s.destroyed) kept++;
    }
    await until(() => (engineStats()!.live === kept ? true : undefined));
    for (let i = 0; i < 20 - kept; i++) await openOne();
    const [a, b] = perThread(await placement());
    expect(a + b).toBe(20);
    expect(Math.abs(a - b)).toBeLessThanOrEqual(1);
  });
});
