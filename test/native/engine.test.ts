// The engine on loopback with the real addon (root: IP_TRANSPARENT listeners). Without tproxy a
// connection's destination is the listener itself, which the guard refuses: what these tests
// check is everything around the relay (which the netns suites cover): events, the inbound PROXY
// header, refusals, the cap, table swaps and stop. One engine per process (this file's).
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeEvents, nextRecord, recordLiveState, recordSnapshotSeq, recordType, type ConnectionEvent } from '../../src/datapath/events.js';
import { compileTable } from '../../src/datapath/table.js';
import {
  abortEngineConnections,
  engineStats,
  requestEngineSnapshot,
  setEngineSettings,
  setEngineTable,
  shutdownEngine,
  stopEngineAccepting,
} from '../../src/native/engine.js';
import { openTransparentListener } from '../../src/native/sockets.js';
import { encodeV2 } from '../../src/pp/index.js';
import { HOST, TRUSTED, loopbackSpec as spec, startLoopbackEngine, until } from './helpers/loopback-engine.js';

const events: ConnectionEvent[] = [];
/** Every batch as delivered, for what only the raw records tell (a snapshot's live state). */
const batches: Buffer[] = [];
let port = 0;
let nextPort = Math.floor(Math.random() * 20000);

/** Connects (from `localAddress`), sends `send`, and reports how the connection ended. */
function exchange(opts: { localAddress?: string; send?: Buffer; hold?: boolean }): Promise<{ localPort: number; error: string | null; ended: boolean; ms: number; socket: net.Socket }> {
  return new Promise((resolve) => {
    const t0 = Date.now();
    // A port of our own choosing: a reset can beat the 'connect' event, and the events are matched by it.
    const localPort = 30000 + nextPort++ % 20000;
    const s = net.connect({ host: HOST, port, allowHalfOpen: true, localAddress: opts.localAddress ?? HOST, localPort });
    let ended = false;
    s.on('connect', () => {
      if (opts.send) s.write(opts.send);
      if (opts.hold) resolve({ localPort, error: null, ended, ms: 0, socket: s });
    });
    s.on('end', () => {
      ended = true;
      s.end();
    });
    s.on('error', (e: NodeJS.ErrnoException) => resolve({ localPort, error: e.code ?? 'error', ended, ms: Date.now() - t0, socket: s }));
    s.on('close', () => resolve({ localPort, error: null, ended, ms: Date.now() - t0, socket: s }));
  });
}

const endOf = (localPort: number): Promise<ConnectionEvent> => until(() => events.find((e) => e.type === 'end' && e.peer.port === localPort));

beforeAll(() => {
  port = startLoopbackEngine(
    1,
    { pipeSize: 0, connectTimeoutMs: 1000, idleTimeoutMs: 0, headerTimeoutMs: 1000, maxV2Length: 4096, ppVersion: 2, keepClientPort: false, maxConnections: 2, reportOpen: false },
    (batch) => {
      batches.push(batch);
      events.push(...decodeEvents(batch));
    },
  );
});

afterAll(() => {
  shutdownEngine();
});

describe('engine on loopback', () => {
  it('refuses everything until a table is set (fail closed)', async () => {
    const r = await exchange({});
    expect(r.error).toBe('ECONNRESET');
    const e = await endOf(r.localPort);
    expect(e).toMatchObject({ kind: 'refuse', reason: 'not_a_target', end: 'refused', destination: { address: HOST, port } });
  });

  it('resets a connection to this host (local_destination) and reports it once, with who and where', async () => {
    setEngineTable(compileTable(spec(1)));
    const r = await exchange({});
    expect(r.error).toBe('ECONNRESET');
    const e = await endOf(r.localPort);
    expect(e).toMatchObject({ type: 'end', kind: 'refuse', reason: 'local_destination', end: 'refused', peer: { address: HOST, port: r.localPort }, client: { address: HOST, port: r.localPort } });
    expect(e.id % 256).toBe(0);
    expect(e.decidedUs).toBeGreaterThanOrEqual(e.acceptedUs);
    expect(events.filter((x) => x.peer.port === r.localPort)).toHaveLength(1);
  });

  it("a trusted source's PROXY header names the client; the rest is decided as usual", async () => {
    const header = encodeV2({ source: { address: '198.18.1.2', port: 40000 }, destination: { address: '198.18.2.2', port: 8080 } });
    const r = await exchange({ localAddress: TRUSTED, send: Buffer.concat([header, Buffer.from('payload')]) });
    const e = await endOf(r.localPort);
    expect(e).toMatchObject({ reason: 'local_destination', inboundVersion: 2, inboundLocal: false, client: { address: '198.18.1.2', port: 40000 }, peer: { address: TRUSTED } });
  });

  it('an invalid header from a trusted source is closed (a FIN) with the codec code', async () => {
    const r = await exchange({ localAddress: TRUSTED, send: Buffer.from('GET / HTTP/1.0\r\n\r\n') });
    expect(r.error).toBeNull();
    expect(r.ended).toBe(true);
    const e = await endOf(r.localPort);
    expect(e).toMatchObject({ kind: null, end: 'pp-rejected', ppFailure: 'PP_ERR_NOT_PROXY' });
  });

  it('a trusted source that sends no header is closed at the header timeout', async () => {
    const r = await exchange({ localAddress: TRUSTED });
    expect(r.ended).toBe(true);
    expect(r.ms).toBeGreaterThanOrEqual(950);
    expect(r.ms).toBeLessThan(3000);
    expect(await endOf(r.localPort)).toMatchObject({ end: 'pp-rejected', ppFailure: 'ERR_PP_TIMEOUT' });
  });

  it('past maxConnections a new connection is reset at once and counted, with no event', async () => {
    const before = engineStats()!.overCapacity;
    // Two silent trusted connections hold both slots until their header timeout.
    const held = [await exchange({ localAddress: TRUSTED, hold: true }), await exchange({ localAddress: TRUSTED, hold: true })];
    await until(() => (engineStats()!.live === 2 ? true : undefined));
    const r = await exchange({});
    expect(r.error).toBe('ECONNRESET');
    expect(r.ms).toBeLessThan(500);
    expect(engineStats()!.overCapacity).toBe(before + 1);
    expect(events.find((e) => e.peer.port === r.localPort)).toBeUndefined();
    for (const h of held) h.socket.destroy();
    await until(() => (engineStats()!.live === 0 ? true : undefined));
  });

  it('a snapshot: each thread lists its live connections when asked, at a quiescent point, through the event batches', async () => {
    const held = [await exchange({ localAddress: TRUSTED, hold: true }), await exchange({ localAddress: TRUSTED, hold: true })];
    await until(() => (engineStats()!.live === 2 ? true : undefined));
    const seq = requestEngineSnapshot(10);
    const done = await until(() => events.find((e) => e.type === 'snapshot-done' && e.errno === seq));
    expect(done).toMatchObject({ id: 0, bytesIn: 2 });
    const live = events.filter((e) => e.type === 'live' && e.errno === seq);
    expect(live.map((e) => e.peer.port).sort()).toEqual(held.map((h) => h.localPort).sort());
    for (const e of live) {
      expect(e).toMatchObject({ peer: { address: TRUSTED }, destination: { address: HOST, port }, kind: null });
      expect(e.endedUs).toBeGreaterThanOrEqual(e.acceptedUs);
    }
    // Their state: awaiting the trusted source's header.
    const states: string[] = [];
    for (const b of batches) {
      for (let at = 0; at < b.length; at = nextRecord(b, at)) {
        if (recordType(b, at) === 'live' && recordSnapshotSeq(b, at) === seq) states.push(recordLiveState(b, at));
      }
    }
    expect(states).toEqual(['reading-header', 'reading-header']);
    // A limit of one per thread: one listed, both counted.
    const one = requestEngineSnapshot(1);
    expect(await until(() => events.find((e) => e.type === 'snapshot-done' && e.errno === one))).toMatchObject({ bytesIn: 2 });
    expect(events.filter((e) => e.type === 'live' && e.errno === one)).toHaveLength(1);
    for (const h of held) h.socket.destroy();
    await until(() => (engineStats()!.live === 0 ? true : undefined));
  });

  it('new settings apply to the connections accepted after them (here the header timeout)', async () => {
    setEngineSettings({ connectTimeoutMs: 1000, idleTimeoutMs: 0, headerTimeoutMs: 200, ppVersion: 2, keepClientPort: false, reportOpen: false });
    const r = await exchange({ localAddress: TRUSTED });
    expect(r.ended).toBe(true);
    expect(r.ms).toBeLessThan(900);
    expect(await endOf(r.localPort)).toMatchObject({ end: 'pp-rejected', ppFailure: 'ERR_PP_TIMEOUT' });
    setEngineSettings({ connectTimeoutMs: 1000, idleTimeoutMs: 0, headerTimeoutMs: 1000, ppVersion: 2, keepClientPort: false, reportOpen: false });
    expect(() => setEngineSettings({ connectTimeoutMs: 1000, idleTimeoutMs: 0, headerTimeoutMs: 1000, ppVersion: 3 as 2, keepClientPort: false, reportOpen: false })).toThrow(/ppVersion/);
  });

  it('swaps tables under traffic and frees the old ones once no thread can hold them', async () => {
    for (let g = 2; g < 200; g++) {
      setEngineTable(compileTable(spec(g)));
      if (g % 20 === 0) await exchange({});
    }
    expect(engineStats()!.generation).toBe(199);
    // The thread is idle (offline in epoll_wait): the next swap frees everything before it.
    await new Promise((r) => setTimeout(r, 50));
    setEngineTable(compileTable(spec(200)));
    expect(engineStats()!.tablesRetired).toBe(0);
  });

  it('the listener is not a SO_REUSEPORT group: a second one on the port is refused, not given a share', () => {
    expect(() => openTransparentListener(HOST, port)).toThrow(expect.objectContaining({ code: 'EADDRINUSE', syscall: 'bind' }));
  });

  it('stop: accepting ends at once, live connections are aborted and reported', async () => {
    const held = await exchange({ localAddress: TRUSTED, hold: true });
    await until(() => (engineStats()!.live === 1 ? true : undefined));
    stopEngineAccepting();
    // The threads close their listeners at their next wake-up: a connect racing that lands in the
    // backlog first, so the check tries for a moment (a loaded machine may run the thread late).
    const attempt = (): Promise<string | null> =>
      new Promise((resolve) => {
        const s = net.connect({ host: HOST, port });
        s.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? null));
        s.on('connect', () => {
          s.destroy();
          resolve(null);
        });
      });
    let refused = await attempt();
    for (let i = 0; i < 100 && refused === null; i++) {
      await new Promise((r) => setTimeout(r, 10));
      refused = await attempt();
    }
    expect(refused).toBe('ECONNREFUSED');
    abortEngineConnections();
    const e = await endOf(held.localPort);
    expect(e.end).toBe('aborted');
    expect(engineStats()!.live).toBe(0);
    held.socket.destroy();
  });
});
