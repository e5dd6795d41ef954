// The admin socket against clients that hold it: stuck headers, silence, too many connections,
// and a client that half-closes after its request.
import * as fs from 'node:fs/promises';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG } from '../../../src/config-parse.js';
import { createAdminServer, type AdminServer } from '../../../src/admin/server.js';
import type { AdminSocketLimits } from '../../../src/admin/socket.js';
import { createRegistryService, type RegistryService } from '../../../src/registry/service.js';
import { createSqliteStore } from '../../../src/registry/sqlite-store.js';

const logger = pino({ level: 'silent' });
let tmp: string;
let socketPath: string;
let service: RegistryService;
let server: AdminServer | undefined;
const sockets: net.Socket[] = [];

beforeEach(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'tpi-admin-socket-'));
  socketPath = path.join(tmp, 'admin.sock');
  service = await createRegistryService({
    logger,
    config: { ...DEFAULT_CONFIG.registry, path: path.join(tmp, 'store') },
    store: createSqliteStore({ dir: path.join(tmp, 'store'), logger }),
    hostAddresses: () => [],
  });
});

afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  await server?.close();
  server = undefined;
  await service.close();
  await fs.rm(tmp, { recursive: true, force: true });
});

async function start(limits: Partial<AdminSocketLimits>): Promise<AdminServer> {
  server = await createAdminServer({ logger, socketPath, service, limits });
  return server;
}

/** A raw connection; resolves once connected. `closed` resolves with what the server sent. */
async function connect(): Promise<{ socket: net.Socket; closed: Promise<string> }> {
  const socket = net.connect(socketPath);
  sockets.push(socket);
  let got = '';
  socket.on('data', (d) => (got += d.toString()));
  const closed = new Promise<string>((resolve) => socket.on('close', () => resolve(got)));
  socket.on('error', () => {});
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  return { socket, closed };
}

const within = <T>(p: Promise<T>, ms: number): Promise<T | 'timeout'> =>
  Promise.race([p, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), ms).unref())]);

describe('admin socket hygiene', () => {
  it('reaps connections whose headers never complete, and silent ones, after headers_timeout', async () => {
    const s = await start({ headersTimeoutMs: 300, idleTimeoutMs: 60_000 });
    const stuck = await Promise.all(Array.from({ length: 40 }, () => connect()));
    stuck.slice(0, 20).forEach(({ socket }) => socket.write('GET /v1/instances HTTP/1.1\r\nHost: x\r\nX-Slow: '));
    // A slowloris: a byte now and then keeps the connection busy but never finishes the headers.
    const drip = setInterval(() => stuck[0]!.socket.write('a'), 50);
    try {
      const results = await within(Promise.all(stuck.map((c) => c.closed)), 5_000);
      expect(results).not.toBe('timeout');
    } finally {
      clearInterval(drip);
    }
    expect(s.counters.reaped).toBeGreaterThanOrEqual(40);
    // The server still answers.
    const ok = await connect();
    ok.socket.end('GET /v1/instances HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    expect(await ok.closed).toMatch(/^HTTP\/1.1 200/);
  });

  it('closes a keep-alive connection idle after its response', async () => {
    await start({ headersTimeoutMs: 300, idleTimeoutMs: 60_000 });
    const c = await connect();
    c.socket.write('GET /v1/instances HTTP/1.1\r\nHost: x\r\n\r\n');
    expect(await within(c.closed, 5_000)).toMatch(/^HTTP\/1.1 200/);
  });

  it('caps concurrent connections: the one over the cap is closed at once, a freed slot is usable again', async () => {
    const s = await start({ maxConnections: 5, headersTimeoutMs: 60_000, idleTimeoutMs: 60_000 });
    const held = await Promise.all(Array.from({ length: 5 }, () => connect()));
    const extra = await connect();
    extra.socket.write('GET /v1/instances HTTP/1.1\r\nHost: x\r\n\r\n');
    expect(await within(extra.closed, 2_000)).toBe('');
    expect(s.counters.dropped).toBe(1);
    held[0]!.socket.destroy();
    await held[0]!.closed;
    await new Promise((r) => setTimeout(r, 50));
    const again = await connect();
    again.socket.end('GET /v1/instances HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    expect(await within(again.closed, 2_000)).toMatch(/^HTTP\/1.1 200/);
  });

  it('answers a client that half-closes right after its request, and stores the registration', async () => {
    await start({});
    const body = JSON.stringify({ instance_id: 'half', app_id: 'app', ip: '198.18.2.2', compose_hash: 'ab'.repeat(32) });
    const c = await connect();
    c.socket.end(`POST /v1/instances HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
    const answer = await within(c.closed, 5_000);
    expect(answer).toMatch(/^HTTP\/1.1 201/);
    expect(answer).toContain('"instance_id":"half"');
    expect(service.get('half')?.ip).toBe('198.18.2.2');
  });
});
