// A connection's end event as the loop threads report it, for the tests of its decoding and of
// connections.ts.
import type { ConnectionEvent } from '../../../src/datapath/events.js';

export const EVENT: ConnectionEvent = {
  type: 'end',
  id: (42 << 8) | 1,
  kind: 'proxy',
  reason: 'policy',
  end: 'done',
  errno: 0,
  syscall: '',
  ppFailure: null,
  inboundVersion: 2,
  inboundLocal: false,
  inboundNoClient: false,
  upstreamPort: 40123,
  peer: { address: '198.18.1.2', port: 50000 },
  destination: { address: 'fd00:18:2::2', port: 8080 },
  client: { address: '203.0.113.7', port: 1234 },
  instanceId: 'inst-1',
  bytesIn: 8 << 20,
  bytesOut: 123,
  acceptedUs: 1_000_000,
  decidedUs: 1_000_010,
  connectedUs: 1_000_500,
  endedUs: 1_250_000,
};
