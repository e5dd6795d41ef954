import { describe, expect, it } from 'vitest';
import { decodeEvents, encodeEvent, type ConnectionEvent } from '../../../src/datapath/events.js';
import { EVENT } from './fixtures.js';


describe('event records', () => {
  it('decode what was encoded, several per batch, with variable-length instance ids', () => {
    const others: ConnectionEvent[] = [
      { ...EVENT, type: 'unknown-policy', instanceId: 'an-instance-with-a-longer-id.0123456789' },
      { ...EVENT, kind: 'refuse', reason: 'not_a_target', end: 'refused', instanceId: null, inboundVersion: 0, upstreamPort: 0, connectedUs: 0 },
      { ...EVENT, kind: null, reason: null, end: 'pp-rejected', ppFailure: 'PP_ERR_CRC32C', instanceId: null },
      { ...EVENT, end: 'connect-failed', errno: 111, syscall: 'connect', client: { address: '', port: 0 } },
    ];
    const batch = Buffer.concat([EVENT, ...others].map(encodeEvent));
    expect(batch.length % 8).toBe(0);
    expect(decodeEvents(batch)).toEqual([EVENT, ...others]);
  });

  it('a truncated batch is a bug, reported as such', () => {
    const record = encodeEvent(EVENT);
    expect(() => decodeEvents(record.subarray(0, record.length - 8))).toThrow(/event record at 0 is malformed/);
  });
});
