// Gathering the loop threads' answers to a status snapshot into one list.
import { describe, expect, it } from 'vitest';
import { encodeEvent, type ConnectionEvent } from '../../../src/datapath/events.js';
import { createSnapshots } from '../../../src/proxy/snapshot.js';
import { EVENT } from '../datapath/fixtures.js';

const live = (seq: number, e: Partial<ConnectionEvent>): Buffer => encodeEvent({ ...EVENT, type: 'live', errno: seq, end: 'upstream-error' /* end byte 2: relaying */, ...e });
const done = (seq: number, thread: number, held: number): Buffer =>
  encodeEvent({ ...EVENT, type: 'snapshot-done', id: thread, errno: seq, kind: null, reason: null, instanceId: null, bytesIn: held, end: 'done' });
const feed = (s: ReturnType<typeof createSnapshots>, ...records: Buffer[]): void => {
  for (const r of records) s.onRecord(r, 0);
};

describe('createSnapshots', () => {
  it('gathers every thread\'s answer, oldest first, and drops late answers to another request', async () => {
    let seq = 0;
    const asked: number[] = [];
    const s = createSnapshots({ request: (limit) => (asked.push(limit), ++seq), threads: () => 2 });
    const p = s.take(100);
    feed(
      s,
      live(7, { id: 5 }), // an older request's: dropped
      live(1, { id: (1 << 8) | 0, acceptedUs: 1_000_000, endedUs: 3_000_000, peer: { address: 'fd00::1', port: 5 } }),
      done(1, 0, 1),
      live(1, { id: (2 << 8) | 1, acceptedUs: 1_000_000, endedUs: 1_500_000 }),
      done(1, 1, 3),
    );
    const snap = await p;
    expect(asked).toEqual([100]);
    expect(snap.threads).toBe(2);
    expect(snap.live).toBe(4);
    expect(snap.connections.map((c) => [c.id, c.thread, c.ageMs, c.state])).toEqual([
      [256, 0, 2000, 'relaying'],
      [513, 1, 500, 'relaying'],
    ]);
    expect(snap.connections[0]).toMatchObject({ peer: '[fd00::1]:5', client: '203.0.113.7:1234', destination: '[fd00:18:2::2]:8080', path: 'proxy', decision: 'policy', instanceId: 'inst-1' });
  });

  it('callers that come while one is out share the next one', async () => {
    let seq = 0;
    const s = createSnapshots({ request: () => ++seq, threads: () => 1 });
    const first = s.take(10);
    const second = s.take(10);
    const third = s.take(20);
    feed(s, done(1, 0, 0));
    expect((await first).live).toBe(0);
    expect(seq).toBe(2);
    feed(s, live(2, {}), done(2, 0, 1));
    const [a, b] = await Promise.all([second, third]);
    expect(a).toBe(b);
    expect(a.live).toBe(1);
  });

  it('a thread that does not answer fails the request with ERR_STATUS_TIMEOUT', async () => {
    const s = createSnapshots({ request: () => 1, threads: () => 2, timeoutMs: 50 });
    const p = s.take(1);
    feed(s, done(1, 0, 0));
    await expect(p).rejects.toMatchObject({ code: 'ERR_STATUS_TIMEOUT', message: expect.stringMatching(/1 of 2 loop threads did not answer/) });
  });
});
