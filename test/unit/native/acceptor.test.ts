// The native connection path on loopback with the real addon: the acceptor's addresses, the
// relay's own upstream connect (bytes, half-close, refused, timeout, PROXY header first and
// whole), resets, descriptor hygiene, a process that exits on its own, and the interceptor's
// refuse path and log line. Needs root (IP_TRANSPARENT on the listener), like the relay's tests.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Config } from '../../../src/config.js';
import { startAcceptor, stopAcceptor, type AcceptedConnection } from '../../../src/native/acceptor.js';
import { loadAddon } from '../../../src/native/addon.js';
import {
  closeSpliceRelayWorkers,
  connectRelay,
  openSpliceRelayWorkers,
  resetConnection,
  type SpliceRelayCompletion,
} from '../../../src/native/relay.js';
import { closeFd, openTransparentListener } from '../../../src/native/sockets.js';
import { encodeV2, parseHeader } from '../../../src/pp/index.js';
import { createNativeInterceptor } from '../../../src/proxy/native-listener.js';
import { cleanups, HOST, listen, MiB, REPO, runCleanups, sha256 } from './loopback.js';


afterEach(runCleanups);

/** A port nothing listens on (the kernel's pick, released again). */
async function freePort(): Promise<number> {
  const s = net.createServer();
  const port = await listen(s);
  await new Promise((resolve) => s.close(resolve));
  return port;
}

async function server(handler: (s: net.Socket) => void): Promise<number> {
  const sockets = new Set<net.Socket>();
  const srv = net.createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    handler(s);
  });
  const port = await listen(srv);
  cleanups.push(async () => {
    for (const s of sockets) s.destroy();
    await new Promise((resolve) => srv.close(resolve));
  });
  return port;
}

const echoBackend = (): Promise<number> => server((s) => s.pipe(s));

function socketCount(): number {
  let sockets = 0;
  for (const name of readdirSync('/proc/self/fd')) {
    try {
      if (readlinkSync(`/proc/self/fd/${name}`).startsWith('socket:')) sockets++;
    } catch {
      // the directory's own descriptor
    }
  }
  return sockets;
}

interface ClientResult {
  readonly data: Buffer;
  readonly error: string | null;
  readonly ended: boolean;
}

/** Connects, writes `send` (then FIN when `end`), collects everything until close. */
function client(port: number, send: Buffer | null, end = true): Promise<ClientResult & { localPort: number }> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let error: string | null = null;
    let ended = false;
    let localPort = 0;
    const socket = net.connect({ host: HOST, port, allowHalfOpen: true }, () => {
      localPort = socket.localPort ?? 0;
      if (send) socket.write(send);
      if (end) socket.end();
    });
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('end', () => {
      ended = true;
      socket.end();
    });
    socket.on('error', (err: Error & { code?: string }) => (error = err.code ?? 'ERR'));
    socket.on('close', () => resolve({ localPort, data: Buffer.concat(chunks), error, ended }));
  });
}

describe('native acceptor and relayConnect', () => {
  let listenFd = -1;
  let listenPort = 0;
  let acceptorId = 0;
  let onAccept: (acc: AcceptedConnection) => void = (acc) => resetConnection(acc.fd);
  const waiting = new Map<number, (c: SpliceRelayCompletion) => void>();
  const early = new Map<number, SpliceRelayCompletion>();

  const completion = (id: number): Promise<SpliceRelayCompletion> => {
    const c = early.get(id);
    if (c) {
      early.delete(id);
      return Promise.resolve(c);
    }
    return new Promise((resolve) => waiting.set(id, resolve));
  };

  beforeAll(async () => {
    openSpliceRelayWorkers(2, (c) => {
      const w = waiting.get(c.id);
      waiting.delete(c.id);
      if (w) w(c);
      else early.set(c.id, c);
    });
    listenPort = await freePort();
    listenFd = openTransparentListener(HOST, listenPort);
    acceptorId = startAcceptor(listenFd, (batch) => {
      for (const acc of batch) onAccept(acc);
    });
  });

  afterAll(() => {
    stopAcceptor(acceptorId);
    closeFd(listenFd);
    closeSpliceRelayWorkers();
  });

  /** Relays every accepted connection to 127.0.0.1:port; resolves the relay ids in order. */
  function relayTo(port: number, extra: { firstBytes?: (acc: AcceptedConnection) => Buffer; sourceAddress?: string; connectTimeoutMs?: number } = {}): AcceptedConnection[] & { ids: number[] } {
    const accepted = Object.assign([] as AcceptedConnection[], { ids: [] as number[] });
    onAccept = (acc) => {
      accepted.push(acc);
      accepted.ids.push(
        connectRelay({
          clientFd: acc.fd,
          family: acc.family,
          sourceAddress: extra.sourceAddress ?? null,
          address: HOST,
          port,
          connectTimeoutMs: extra.connectTimeoutMs ?? 5000,
          idleTimeoutMs: 0,
          firstBytes: extra.firstBytes?.(acc),
        }),
      );
    };
    return accepted;
  }

  it('delivers the peer and local addresses; relayReset gives the client ECONNRESET', async () => {
    const accepted: AcceptedConnection[] = [];
    onAccept = (acc) => {
      accepted.push(acc);
      resetConnection(acc.fd);
    };
    const r = await client(listenPort, Buffer.from('x'), false);
    expect(r.error).toBe('ECONNRESET');
    expect(r.data.length).toBe(0);
    expect(accepted).toHaveLength(1);
    // The reset can win the race with the client's own 'connect': its port may be unknown here.
    expect(accepted[0]).toMatchObject({ family: 4, peerAddress: HOST, peerPort: expect.any(Number), localAddress: HOST, localPort: listenPort });
    if (r.localPort !== 0) expect(accepted[0]!.peerPort).toBe(r.localPort);
  });

  it('relays 8 MiB each way intact and half-closes', async () => {
    const accepted = relayTo(await echoBackend());
    const payload = randomBytes(8 * MiB);
    const r = await client(listenPort, payload);
    expect(r.error).toBeNull();
    expect(r.ended).toBe(true);
    expect(r.data.length).toBe(8 * MiB);
    expect(sha256(r.data)).toBe(sha256(payload));
    const c = await completion(accepted.ids[0]!);
    expect(c).toMatchObject({ end: 'done', error: null, bytesAToB: 8 * MiB, bytesBToA: 8 * MiB });
  });

  it('binds the upstream to the given source address (the transparent path)', async () => {
    const seen: string[] = [];
    const port = await server((s) => {
      seen.push(s.remoteAddress ?? '');
      s.end('hi');
    });
    const accepted = relayTo(port, { sourceAddress: HOST });
    const r = await client(listenPort, null);
    expect(r.data.toString()).toBe('hi');
    expect(seen).toEqual([HOST]);
    expect((await completion(accepted.ids[0]!)).end).toBe('done');
  });

  it('resets the client when the upstream refuses, and reports the connect error', async () => {
    const accepted = relayTo(await freePort());
    const r = await client(listenPort, Buffer.from('x'), false);
    expect(r.error).toBe('ECONNRESET');
    const c = await completion(accepted.ids[0]!);
    expect(c.end).toBe('connect-failed');
    expect(c.error).toMatchObject({ code: 'ECONNREFUSED', syscall: 'connect' });
  });

  it('times out a connect that gets no answer (a full accept queue drops the SYN)', async () => {
    // A listener that never accepts, with a backlog of 1: further SYNs are dropped.
    const addon = loadAddon();
    const port = await freePort();
    const fd = addon.socket(addon.constants.AF_INET);
    expect(addon.bind(fd, HOST, port)).toBe(0);
    expect(addon.listen(fd, 1)).toBe(0);
    const fillers: net.Socket[] = [];
    cleanups.push(() => {
      for (const s of fillers) s.destroy();
      addon.close(fd);
    });
    for (let i = 0; i < 3; i++) fillers.push(net.connect({ host: HOST, port }).on('error', () => {}));
    await new Promise((resolve) => setTimeout(resolve, 200));
    const accepted = relayTo(port, { connectTimeoutMs: 300 });
    const started = Date.now();
    const r = await client(listenPort, null, false);
    expect(r.error).toBe('ECONNRESET');
    const c = await completion(accepted.ids[0]!);
    expect(c.end).toBe('connect-failed');
    expect(c.error).toMatchObject({ code: 'ETIMEDOUT', syscall: 'connect' });
    expect(Date.now() - started).toBeGreaterThanOrEqual(250);
  });

  it('writes the PROXY header first and whole, before any client byte', async () => {
    const firstChunks: Buffer[] = [];
    const parsed: { source?: string; rest: string }[] = [];
    const port = await server((s) => {
      const chunks: Buffer[] = [];
      s.on('data', (c: Buffer) => {
        if (chunks.length === 0) firstChunks.push(c);
        chunks.push(c);
      });
      s.on('end', () => {
        const got = parseHeader(Buffer.concat(chunks));
        parsed.push({ source: got ? `${got.header.source?.address}:${got.header.source?.port}` : undefined, rest: got?.rest.toString() ?? '' });
        s.end();
      });
    });
    let header = Buffer.alloc(0);
    const accepted = relayTo(port, {
      firstBytes: (acc) => {
        header = encodeV2({ source: { address: acc.peerAddress, port: acc.peerPort }, destination: { address: acc.localAddress, port: acc.localPort } });
        return header;
      },
    });
    const r = await client(listenPort, Buffer.from('hello'));
    expect(r.error).toBeNull();
    expect(parsed).toEqual([{ source: `${HOST}:${r.localPort}`, rest: 'hello' }]);
    // The whole header came in the first segment the backend read.
    expect(firstChunks[0]!.length).toBeGreaterThanOrEqual(header.length);
    expect(firstChunks[0]!.subarray(0, header.length).equals(header)).toBe(true);
    // The header is written upstream by the relay: counted there, and the 5 client bytes.
    const c = await completion(accepted.ids[0]!);
    expect(c).toMatchObject({ end: 'done', bytesAToB: header.length + 5 });
  });

  it('first bytes larger than a pipe still go first, whole and in order', async () => {
    const received: Buffer[] = [];
    const port = await server((s) => {
      const chunks: Buffer[] = [];
      s.on('data', (c: Buffer) => chunks.push(c));
      s.on('end', () => {
        received.push(Buffer.concat(chunks));
        s.end();
      });
    });
    const first = randomBytes(200 * 1024);
    const accepted = relayTo(port, { firstBytes: () => first });
    const r = await client(listenPort, Buffer.from('after'));
    expect(r.error).toBeNull();
    expect(received).toHaveLength(1);
    expect(received[0]!.equals(Buffer.concat([first, Buffer.from('after')]))).toBe(true);
    expect(await completion(accepted.ids[0]!)).toMatchObject({ end: 'done', bytesAToB: first.length + 5 });
  });

  it('leaks no descriptors over 500 connections', { timeout: 30_000 }, async () => {
    const accepted = relayTo(await echoBackend());
    // Warm up the workers' pipe pools, which keep empty pipes (not sockets) on purpose.
    await client(listenPort, Buffer.from('warm'));
    await completion(accepted.ids[0]!);
    const before = socketCount();
    for (let i = 0; i < 50; i++) {
      const batch = await Promise.all(Array.from({ length: 10 }, () => client(listenPort, Buffer.from('ping'))));
      for (const r of batch) expect(r.data.toString()).toBe('ping');
    }
    const ends = await Promise.all(accepted.ids.slice(1).map((id) => completion(id)));
    expect(ends.every((c) => c.end === 'done')).toBe(true);
    expect(accepted.ids).toHaveLength(501);
    // Backend-side sockets close asynchronously in the test's own event loop.
    for (let i = 0; i < 50 && socketCount() > before; i++) await new Promise((resolve) => setTimeout(resolve, 20));
    expect(socketCount()).toBeLessThanOrEqual(before);
  });
});

describe('the process exits on its own', () => {
  it('after a native connection ends and the acceptor stops, without relayShutdown', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'acceptor-exit-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const script = path.join(dir, 'exit.cjs');
    writeFileSync(
      script,
      `const net = require('node:net');
const a = require(${JSON.stringify(path.join(REPO, 'build', 'Release', 'tproxy_native.node'))});
const backend = net.createServer((s) => s.end('ok'));
backend.listen(0, '127.0.0.1', () => {
  const bport = backend.address().port;
  const fd = a.socket(a.constants.AF_INET);
  a.bind(fd, '127.0.0.1', 0);
  a.listen(fd, 16);
  // The listener's port: ask the kernel through a throwaway net.Server on the same fd? No: use
  // a second listener whose port we know instead.
  const probe = net.createServer();
  probe.listen(0, '127.0.0.1', () => {
    const port = probe.address().port;
    probe.close(() => {
      a.close(fd);
      const lfd = a.socket(a.constants.AF_INET);
      if (a.bind(lfd, '127.0.0.1', port) !== 0 || a.listen(lfd, 16) !== 0) process.exit(3);
      a.relayInit(1, (id, end) => { process.stdout.write('end ' + end + '\\n'); });
      const acc = a.acceptorStart(lfd, (batch) => {
        a.relayConnect(batch[0], a.constants.AF_INET, '', 0, '127.0.0.1', bport, 1000, 0);
        a.acceptorStop(acc);
        a.close(lfd);
      });
      const c = net.connect(port, '127.0.0.1');
      c.on('data', (d) => process.stdout.write('got ' + d + '\\n'));
      c.on('end', () => { c.end(); backend.close(); });
    });
  });
});
`,
    );
    const child = spawn(process.execPath, [script], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
    clearTimeout(timer);
    expect(out).toContain('got ok');
    expect(out).toContain('end 0');
    expect(code).toBe(0);
  });
});

describe('createNativeInterceptor', () => {
  function config(port: number): Config {
    return {
      listen: { address: HOST, address6: null, port, workers: 1 },
      upstream: { connectTimeoutMs: 1000, idleTimeoutMs: 0, ppVersion: 2, keepClientPort: false, relay: 'splice', pipeSize: 0 },
      inboundPp: { trustedSources: [], timeoutMs: 3000, maxV2Length: 4096 },
    } as unknown as Config;
  }

  function capture(): { logger: ReturnType<typeof pino>; lines: Record<string, unknown>[] } {
    const lines: Record<string, unknown>[] = [];
    const stream = new Writable({
      write(chunk: Buffer, _enc, cb) {
        for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l) as Record<string, unknown>);
        cb();
      },
    });
    return { logger: pino({ level: 'info' }, stream), lines };
  }

  it('resets a refused connection, counts it and logs it like the Node path', async () => {
    const port = await freePort();
    const { logger, lines } = capture();
    const interceptor = createNativeInterceptor({
      logger,
      config: config(port),
      decide: () => ({ kind: 'refuse', instanceId: 'inst-1', reason: 'port-not-listed' }),
      guard: () => null,
      maxConnections: 100,
      isTrustedSource: () => false,
      threads: 1,
    });
    await interceptor.start();
    cleanups.push(async () => void (await interceptor.stop(0)));
    const r = await client(port, null, false);
    expect(r.error).toBe('ECONNRESET');
    expect(interceptor.stats).toMatchObject({ accepted: 1, refused: 1, active: 0 });
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(lines.find((l) => l.msg === 'connection closed')).toMatchObject({
      peer: expect.stringMatching(/^127\.0\.0\.1:\d+$/),
      dst: `${HOST}:${port}`,
      client: expect.stringMatching(/^127\.0\.0\.1:\d+$/),
      path: 'refuse',
      decision: 'port-not-listed',
      instance: 'inst-1',
      reason: 'refused',
      bytesIn: 0,
      bytesOut: 0,
    });
  });

  it('hands connections from trusted sources to the Node path, which reads their PROXY header', async () => {
    const port = await freePort();
    const { logger, lines } = capture();
    const decided: string[] = [];
    const interceptor = createNativeInterceptor({
      logger,
      config: config(port),
      decide: (ip, p) => {
        decided.push(`${ip}:${p}`);
        return { kind: 'refuse', instanceId: 'inst-2', reason: 'port-not-listed' };
      },
      guard: () => null,
      maxConnections: 100,
      isTrustedSource: (ip) => ip === HOST,
      threads: 1,
    });
    await interceptor.start();
    cleanups.push(async () => void (await interceptor.stop(0)));
    const r = await client(port, Buffer.from('PROXY TCP4 198.51.100.7 127.0.0.1 4000 80\r\n'), false);
    expect(r.error).toBe('ECONNRESET');
    expect(decided).toEqual([`${HOST}:${port}`]);
    for (let i = 0; i < 100 && !lines.some((l) => l.msg === 'connection closed'); i++) await new Promise((resolve) => setTimeout(resolve, 10));
    expect(lines.find((l) => l.msg === 'connection closed')).toMatchObject({
      client: '198.51.100.7:4000',
      inbound: 'v1 PROXY',
      reason: 'refused',
    });
  });
});
