// The engine on loopback for the native suites (root: IP_TRANSPARENT listeners): a listener on a
// free random port shared by `threads` loop threads, and the table that intercepts all of
// 127.0.0.0/8 with TRUSTED as the one trusted load balancer. Without tproxy a connection's
// destination is the listener itself; a connection from TRUSTED waits for its PROXY header, so it
// stays live where it landed.
import net from 'node:net';
import type { EngineOptions } from '../../../src/native/engine.js';
import { setEngineTable, startEngine } from '../../../src/native/engine.js';
import { openTransparentListener } from '../../../src/native/sockets.js';
import { compileTable, type TableSpec } from '../../../src/datapath/table.js';
import { decodeEvents, type ConnectionEvent } from '../../../src/datapath/events.js';
import { parseConfig } from '../../../src/config-parse.js';
import { ALWAYS_LOCAL } from '../../../src/proxy/guard.js';

export const HOST = '127.0.0.1';
export const TRUSTED = '127.0.0.2';

const { targets } = parseConfig('[[intercept.targets]]\ncidr = "127.0.0.0/8"\nports = ["1-65535"]\n').intercept;

/** The loopback table of generation `generation`. */
export const loopbackSpec = (generation: number): TableSpec => ({ generation, targets, localAddresses: [], localNetworks: ALWAYS_LOCAL, trustedSources: [`${TRUSTED}/32`], entries: [] });

/** Polls `what` every 10 ms until it returns a value; throws after `timeoutMs`. */
export async function until<T>(what: () => T | undefined, timeoutMs = 3000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = what();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Starts the engine with `threads` threads on one listener; returns its port. No table is set. */
export function startLoopbackEngine(threads: number, options: EngineOptions, onEvents: (batch: Buffer) => void): number {
  for (let attempt = 0; ; attempt++) {
    const port = 20000 + Math.floor(Math.random() * 40000);
    try {
      const fd = openTransparentListener(HOST, port);
      startEngine(options, Array.from({ length: threads }, () => [fd]), onEvents);
      return port;
    } catch (err) {
      if ((err as { code?: string }).code !== 'EADDRINUSE' || attempt > 20) throw err;
    }
  }
}

/** Engine options under which a connection from TRUSTED stays live for 30 s, awaiting its header. */
const HOLDING: EngineOptions = { pipeSize: 0, connectTimeoutMs: 1000, idleTimeoutMs: 0, headerTimeoutMs: 30000, maxV2Length: 4096, ppVersion: 2, keepClientPort: false, maxConnections: 1000, reportOpen: false };

/**
 * The engine for placement tests: `threads` threads on one listener, the loopback table set, every
 * event decoded into `events`, and connections from TRUSTED held where they land. Returns its port.
 */
export function startHoldingEngine(threads: number, events: ConnectionEvent[]): number {
  const port = startLoopbackEngine(threads, HOLDING, (batch) => events.push(...decodeEvents(batch)));
  setEngineTable(compileTable(loopbackSpec(1)));
  return port;
}

/** A connection from TRUSTED to the listener, once it is connected. */
export function connectTrusted(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const c = net.connect({ host: HOST, port, localAddress: TRUSTED });
    c.on('connect', () => resolve(c));
    c.on('error', reject);
  });
}
