// A connection's end as connections.ts tells it: the close reason, the log line, the counters
// and the events, from the records the loop threads write.
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { encodeEvent, type ConnectionEvent } from '../../../src/datapath/events.js';
import { closeReason, createConnections, type ConnectionEnd } from '../../../src/proxy/connections.js';
import { EVENT } from '../datapath/fixtures.js';

function setup(level: string): { lines: Array<Record<string, unknown>>; connections: ReturnType<typeof createConnections> } {
  const lines: Array<Record<string, unknown>> = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l) as Record<string, unknown>);
      done();
    },
  });
  const logger = pino({ level }, stream);
  return { lines, connections: createConnections({ logger }) };
}

const flush = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('closeReason', () => {
  it.each<[Partial<ConnectionEvent>, string]>([
    [{ end: 'done' }, 'done'],
    [{ end: 'client-error', errno: 104 }, 'client-reset'],
    [{ end: 'client-error', errno: 32 }, 'client-reset'],
    [{ end: 'client-error', errno: 110 }, 'client-error'],
    [{ end: 'upstream-error', errno: 104 }, 'upstream-reset'],
    [{ end: 'upstream-error', errno: 113 }, 'upstream-error'],
    [{ end: 'idle-timeout' }, 'idle-timeout'],
    [{ end: 'aborted' }, 'shutdown'],
    [{ end: 'connect-failed', errno: 111 }, 'connect-failed'],
    [{ end: 'pp-rejected' }, 'pp-rejected'],
    [{ end: 'refused', reason: 'port_not_allowed' }, 'port_not_allowed'],
    [{ end: 'refused', reason: 'local_destination' }, 'local_destination'],
  ])('%j -> %s', (e, reason) => {
    expect(closeReason({ ...EVENT, errno: 0, ...e })).toBe(reason);
  });
});

describe('createConnections', () => {
  it('logs one line per connection with its id, addresses, decision, bytes, phases and the source port the backend saw', async () => {
    const { lines, connections } = setup('info');
    connections.onBatch(encodeEvent(EVENT));
    await flush();
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({
      level: 30,
      msg: 'connection closed',
      conn: EVENT.id,
      peer: '198.18.1.2:50000',
      dst: 'fd00:18:2::2:8080',
      inbound: 'v2 PROXY',
      client: '203.0.113.7:1234',
      path: 'proxy',
      decision: 'policy',
      instance: 'inst-1',
      upstreamPort: 40123,
      reason: 'done',
      bytesIn: 8 << 20,
      bytesOut: 123,
      durationMs: 250,
      phasesUs: { inboundPp: 10, connect: 490, relay: 249_500 },
    });
    expect(Object.keys(lines[0]!).indexOf('dst')).toBeLessThan(Object.keys(lines[0]!).indexOf('inbound'));
  });

  it('failures are warnings with a Node-shaped error code; a connect timeout is ERR_CONNECT_TIMEOUT', async () => {
    const { lines, connections } = setup('info');
    connections.onBatch(
      Buffer.concat([
        encodeEvent({ ...EVENT, inboundVersion: 0, end: 'connect-failed', errno: 111, syscall: 'connect', connectedUs: 0 }),
        encodeEvent({ ...EVENT, inboundVersion: 0, end: 'connect-failed', errno: 110, syscall: 'connect', connectedUs: 0 }),
        encodeEvent({ ...EVENT, kind: null, reason: null, end: 'pp-rejected', ppFailure: 'ERR_PP_TIMEOUT', decidedUs: 0, connectedUs: 0 }),
      ]),
    );
    await flush();
    expect(lines.map((l) => [l.level, l.reason, (l.err as { code: string }).code])).toEqual([
      [40, 'connect-failed', 'ECONNREFUSED'],
      [40, 'connect-failed', 'ERR_CONNECT_TIMEOUT'],
      [40, 'pp-rejected', 'ERR_PP_TIMEOUT'],
    ]);
    expect(lines[0]!.phasesUs).toEqual({ decide: 10, connect: 249_990 });
    expect(lines[2]!.phasesUs).toEqual({ inboundPp: 250_000 });
  });

  it('counts every connection, also when nothing is logged, and emits ends to listeners', async () => {
    const { lines, connections } = setup('warn');
    const ends: ConnectionEnd[] = [];
    connections.onBatch(Buffer.concat([encodeEvent(EVENT), encodeEvent({ ...EVENT, kind: 'transparent', bytesIn: 1, bytesOut: 2 })]));
    connections.events.on('end', (e: ConnectionEnd) => ends.push(e));
    connections.onBatch(encodeEvent({ ...EVENT, kind: 'refuse', reason: 'port_not_allowed', end: 'refused', bytesIn: 0, bytesOut: 0 }));
    await flush();
    expect(connections.counters()).toMatchObject({ proxy: 1, transparent: 1, refused: 1, bytesIn: (8 << 20) + 1, bytesOut: 125, closed: { done: 2, port_not_allowed: 1 } });
    expect(ends.map((e) => e.reason)).toEqual(['port_not_allowed']);
    expect(lines.map((l) => l.reason)).toEqual(['port_not_allowed']);
  });

  it('passes instances refused for an unknown policy on, and summarises over-capacity refusals', async () => {
    const { lines, connections } = setup('info');
    const fetches: string[] = [];
    connections.onUnknownPolicy((id) => fetches.push(id));
    connections.onBatch(encodeEvent({ ...EVENT, type: 'unknown-policy', instanceId: 'inst-9' }));
    connections.onOverCapacity(17, 100);
    await flush();
    expect(fetches).toEqual(['inst-9']);
    expect(lines).toEqual([expect.objectContaining({ msg: 'connections refused: over capacity', reason: 'over_capacity', refused: 17, maxConnections: 100 })]);
    expect(connections.counters().overCapacity).toBe(17);
  });

  it('an open event is a debug line with the connection id', async () => {
    const { lines, connections } = setup('debug');
    connections.onBatch(encodeEvent({ ...EVENT, type: 'open', endedUs: 0 }));
    await flush();
    expect(lines).toEqual([expect.objectContaining({ level: 20, msg: 'connection open', conn: EVENT.id, upstreamPort: 40123 })]);
  });
});
