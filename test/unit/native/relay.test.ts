// The splice relay on loopback with the real addon: bytes, half-close, resets, idle timeout,
// abort, descriptor hygiene (pipes only while bytes are in flight, a bounded pool, waiting out
// EMFILE) and a process that exits on its own.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { getOpenFilesLimit, setOpenFilesLimit } from '../../../src/native/limits.js';
import { spliceRelayStats } from '../../../src/native/relay.js';
import type { Relay } from '../../../src/proxy/relay.js';
import { createSpliceRelayStarter, type SpliceRelayResult, type SpliceRelayStarter } from '../../../src/proxy/splice-relay.js';
import { cleanups, HOST, listen, MiB, REPO, runCleanups, sha256 } from './loopback.js';

type Backend = (socket: net.Socket) => void;

interface Harness {
  /** A client connected through the relay to the backend. */
  connect(): Promise<net.Socket>;
  /** The relay of the next connection, once started. */
  nextRelay(): Promise<Relay>;
  setBackend(handler: Backend): void;
  readonly starter: SpliceRelayStarter;
}

afterEach(runCleanups);

/**
 * backend <- upstream socket [relay] client socket <- front listener <- test client. The front
 * listener is set up like the interceptor's (half-open, paused on connect), the upstream socket
 * like connectUpstream's.
 */
async function harness(opts: { idleTimeoutMs?: number; pipeSize?: number; beforeStart?: (client: net.Socket) => Promise<void> } = {}): Promise<Harness> {
  const sockets = new Set<net.Socket>();
  const track = (s: net.Socket): net.Socket => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    return s;
  };
  let backendHandler: Backend = (s) => s.pipe(s);
  const backend = net.createServer({ allowHalfOpen: true }, (s) => backendHandler(track(s)));
  const backendPort = await listen(backend);
  const starter = createSpliceRelayStarter({ threads: 2, pipeSize: opts.pipeSize, logger: pino({ level: 'silent' }) });
  const started: Relay[] = [];
  const waiting: ((r: Relay) => void)[] = [];
  const front = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (client) => {
    client.setNoDelay(true);
    const upstream = net.connect({ host: HOST, port: backendPort, allowHalfOpen: true, noDelay: true }, async () => {
      if (opts.beforeStart) await opts.beforeStart(client);
      const relay = starter.start(client, upstream, opts.idleTimeoutMs ?? 0);
      const waiter = waiting.shift();
      if (waiter) waiter(relay);
      else started.push(relay);
    });
  });
  const frontPort = await listen(front);
  cleanups.push(async () => {
    await starter.close();
    for (const s of sockets) s.destroy();
    await Promise.all([backend, front].map((srv) => new Promise((resolve) => srv.close(resolve))));
  });
  return {
    starter,
    setBackend: (handler) => (backendHandler = handler),
    nextRelay: () => {
      const relay = started.shift();
      return relay ? Promise.resolve(relay) : new Promise((resolve) => waiting.push(resolve));
    },
    connect: () =>
      new Promise((resolve, reject) => {
        const c = net.connect({ host: HOST, port: frontPort, allowHalfOpen: true }, () => resolve(c));
        c.once('error', reject);
        track(c);
      }),
  };
}

/** Everything the socket receives until EOF. */
function collect(socket: net.Socket): Promise<Buffer> {
  const chunks: Buffer[] = [];
  return new Promise((resolve, reject) => {
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.once('end', () => resolve(Buffer.concat(chunks)));
    socket.once('error', reject);
  });
}

function once<T = unknown>(emitter: net.Socket, event: string): Promise<T> {
  return new Promise((resolve) => emitter.once(event, resolve));
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function until(what: string, condition: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!condition()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/** This process's open descriptors, and how many of them are pipes and sockets. */
function openFds(): { total: number; pipes: number; sockets: number } {
  let total = 0;
  let pipes = 0;
  let sockets = 0;
  for (const name of readdirSync('/proc/self/fd')) {
    let target: string;
    try {
      target = readlinkSync(`/proc/self/fd/${name}`);
    } catch {
      continue; // the directory's own descriptor, gone by now
    }
    total++;
    if (target.startsWith('pipe:')) pipes++;
    else if (target.startsWith('socket:')) sockets++;
  }
  return { total, pipes, sockets };
}

describe('splice relay', () => {
  it('moves 8 MiB each way intact, with the byte counts', async () => {
    const h = await harness();
    const up = randomBytes(8 * MiB);
    const down = randomBytes(8 * MiB);
    let backendGot: Promise<Buffer> | undefined;
    h.setBackend((s) => {
      backendGot = collect(s);
      // Sent at once: part of it is read by Node before the hand-off and must still come first.
      s.end(down);
    });
    const client = await h.connect();
    const clientGot = collect(client);
    client.end(up);
    const relay = await h.nextRelay();
    expect(sha256(await clientGot)).toBe(sha256(down));
    expect(sha256(await backendGot!)).toBe(sha256(up));
    const result = (await relay.done) as SpliceRelayResult;
    expect(result).toMatchObject({ reason: 'done', error: null, bytesFromClient: 8 * MiB, bytesToClient: 8 * MiB });
  });

  it('a stalled backend costs no CPU (no spin on a full pipe), and everything arrives once it reads', async () => {
    const h = await harness();
    const up = randomBytes(32 * MiB);
    let backend!: net.Socket;
    const connected = new Promise<void>((resolve) =>
      h.setBackend((s) => {
        backend = s;
        s.pause();
        resolve();
      }),
    );
    const client = await h.connect();
    client.write(up);
    client.end();
    await connected;
    const relay = await h.nextRelay();
    // Let socket buffers and the pipe fill up until everything is blocked.
    let previous = -1;
    while (backend.readableLength !== previous) {
      previous = backend.readableLength;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect(client.writableLength).toBeGreaterThan(0); // the client is held back: backpressure
    const cpu = process.cpuUsage();
    await new Promise((resolve) => setTimeout(resolve, 500));
    const used = process.cpuUsage(cpu);
    expect((used.user + used.system) / 1000).toBeLessThan(100); // ms of CPU in 500 ms, all threads
    // The blocked direction keeps its pipe, bytes and all; the idle one holds none.
    expect(spliceRelayStats().pipesInUse).toBe(1);
    const got = collect(backend);
    backend.resume();
    // The client's FIN came while bytes were still in the pipe: they all arrive before the EOF.
    expect(sha256(await got)).toBe(sha256(up));
    backend.end();
    expect(await relay.done).toMatchObject({ reason: 'done', bytesFromClient: 32 * MiB, bytesToClient: 0 });
    expect(spliceRelayStats().pipesInUse).toBe(0);
  });

  it('half-close, client first: the backend sees EOF and can still answer', async () => {
    const h = await harness();
    let backendGot: Buffer | undefined;
    h.setBackend((s) => {
      void collect(s).then((b) => {
        backendGot = b;
        s.end('world');
      });
    });
    const client = await h.connect();
    const clientGot = collect(client);
    client.end('hello');
    expect((await clientGot).toString()).toBe('world');
    expect(backendGot?.toString()).toBe('hello');
    const result = (await (await h.nextRelay()).done) as SpliceRelayResult;
    expect(result).toMatchObject({ reason: 'done', bytesFromClient: 5, bytesToClient: 5 });
  });

  it('half-close, backend first: the client sees EOF and can still send', async () => {
    const h = await harness();
    let backendGot: Promise<Buffer> | undefined;
    h.setBackend((s) => {
      backendGot = collect(s);
      s.end('banner');
    });
    const client = await h.connect();
    const clientGot = collect(client);
    expect((await clientGot).toString()).toBe('banner');
    client.end('bye');
    expect((await backendGot!).toString()).toBe('bye');
    expect(await (await h.nextRelay()).done).toMatchObject({ reason: 'done', bytesFromClient: 3, bytesToClient: 6 });
  });

  it('sends what Node read before the hand-off first, in order', async () => {
    const h = await harness({
      beforeStart: async (client) => {
        client.read(0); // Node starts reading: the early bytes land in its buffer
        await new Promise((resolve) => setTimeout(resolve, 100));
        expect(client.readableLength).toBeGreaterThan(0);
      },
    });
    let backendGot: Promise<Buffer> | undefined;
    h.setBackend((s) => {
      backendGot = collect(s);
      s.write('banner');
      void backendGot.then(() => s.end(' bye'));
    });
    const client = await h.connect();
    const clientGot = collect(client);
    client.write('early ');
    await once(client, 'data'); // the banner: the relay runs
    client.end('late');
    expect((await backendGot!).toString()).toBe('early late');
    expect((await clientGot).toString()).toBe('banner bye');
  });

  it('a backend reset reaches the client as ECONNRESET', async () => {
    const h = await harness();
    h.setBackend((s) => s.once('data', () => s.resetAndDestroy()));
    const client = await h.connect();
    const clientError = once<Error & { code?: string }>(client, 'error');
    client.write('go');
    expect((await clientError).code).toBe('ECONNRESET');
    const result = await (await h.nextRelay()).done;
    expect(result.reason).toBe('upstream-reset');
    expect(result.error).toMatchObject({ code: 'ECONNRESET', syscall: 'splice' });
  });

  it('a client reset reaches the backend as ECONNRESET', async () => {
    const h = await harness();
    let backendError: Promise<Error & { code?: string }> | undefined;
    let backendGotData!: () => void;
    const gotData = new Promise<void>((resolve) => (backendGotData = resolve));
    h.setBackend((s) => {
      backendError = once(s, 'error');
      s.once('data', backendGotData);
    });
    const client = await h.connect();
    client.write('go');
    await gotData;
    client.resetAndDestroy();
    expect((await backendError!).code).toBe('ECONNRESET');
    const result = await (await h.nextRelay()).done;
    expect(result.reason).toBe('client-reset');
    expect(result.error?.code).toBe('ECONNRESET');
  });

  it('closes both sides after idleTimeoutMs without bytes, and activity postpones it', async () => {
    const h = await harness({ idleTimeoutMs: 300 });
    let backendEnded: Promise<unknown> | undefined;
    h.setBackend((s) => {
      s.resume();
      backendEnded = once(s, 'end');
    });
    const client = await h.connect();
    const relay = await h.nextRelay();
    let settled = false;
    void relay.done.then(() => (settled = true));
    const clientEnded = once(client, 'end');
    client.resume();
    for (let i = 0; i < 6; i++) {
      client.write('x');
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect(settled).toBe(false); // 600 ms alive: every write restarted the clock
    const quietSince = performance.now();
    const result = await relay.done;
    const quietMs = performance.now() - quietSince;
    expect(result.reason).toBe('idle-timeout');
    expect(quietMs).toBeGreaterThan(150);
    expect(quietMs).toBeLessThan(1500);
    await clientEnded;
    await backendEnded;
  });

  it("abort('shutdown') closes both sides", async () => {
    const h = await harness();
    let backendClosed: Promise<unknown> | undefined;
    h.setBackend((s) => {
      backendClosed = once(s, 'close');
      s.pipe(s);
    });
    const client = await h.connect();
    const clientEnded = once(client, 'end');
    client.resume();
    client.write('ping');
    await once(client, 'data'); // echoed through the relay
    const relay = await h.nextRelay();
    relay.abort('shutdown');
    expect(await relay.done).toMatchObject({ reason: 'shutdown', error: null, bytesFromClient: 4, bytesToClient: 4 });
    await clientEnded;
    await backendClosed;
  });

  it('close() ends live relays with reason shutdown', async () => {
    const h = await harness();
    const client = await h.connect();
    client.resume();
    client.write('ping');
    await once(client, 'data');
    const relay = await h.nextRelay();
    const clientEnded = once(client, 'end');
    await h.starter.close();
    expect((await relay.done).reason).toBe('shutdown');
    await clientEnded;
    expect(spliceRelayStats()).toMatchObject({ live: 0, threads: 0, pipesInUse: 0, pipesPooled: 0 });
  });

  it('500 sequential short connections leak no descriptors and leave no live relays', async () => {
    const h = await harness();
    const oneConnection = async (): Promise<void> => {
      const client = await h.connect();
      const closed = once(client, 'close');
      const got = collect(client);
      client.end('0123456789');
      expect((await got).toString()).toBe('0123456789');
      await (await h.nextRelay()).done;
      await closed;
    };
    await oneConnection(); // the workers exist from here on
    // Pooled pipes are the workers' to keep (2 descriptors each, a bounded number): not a leak.
    const fdsBesidesPool = (): number => openFds().total - 2 * spliceRelayStats().pipesPooled;
    const before = fdsBesidesPool();
    for (let i = 0; i < 500; i++) await oneConnection();
    await new Promise((resolve) => setImmediate(resolve));
    const stats = spliceRelayStats();
    expect(stats).toMatchObject({ live: 0, pipesInUse: 0 });
    expect(stats.pipesPooled).toBeLessThanOrEqual(stats.pipePoolMax * stats.threads);
    expect(fdsBesidesPool()).toBe(before);
  }, 60_000);

  it('idle relays hold two descriptors each and no pipe; after traffic the pipes go back to a bounded pool', async () => {
    const N = 200;
    const h = await harness();
    const backends: net.Socket[] = [];
    h.setBackend((s) => {
      backends.push(s);
      s.pipe(s);
    });
    const before = openFds();
    const clients: net.Socket[] = [];
    for (let i = 0; i < N; i += 50) {
      clients.push(...(await Promise.all(Array.from({ length: Math.min(50, N - i) }, () => h.connect()))));
    }
    await until(`${N} live relays`, () => spliceRelayStats().live === N && backends.length === N);
    // Node's own descriptors for the relayed sockets are closed at the hand-off, synchronously.
    const idle = openFds();
    // This process also holds the test's ends: the client sockets and the backend's accepted ones.
    const relayFds = idle.total - before.total - 2 * N;
    expect(idle.sockets - before.sockets).toBe(4 * N);
    expect(idle.pipes - before.pipes).toBe(0);
    expect(spliceRelayStats()).toMatchObject({ live: N, pipesInUse: 0, pipesPooled: 0 });
    // 2 sockets per relay, plus each worker's epoll and eventfd.
    expect(relayFds).toBeLessThanOrEqual(2 * N + 8);

    // Traffic on all of them at once, each way, then quiet again.
    const payload = randomBytes(64 * 1024);
    await Promise.all(
      clients.map(
        (c) =>
          new Promise<void>((resolve, reject) => {
            let got = 0;
            const onData = (chunk: Buffer): void => {
              got += chunk.length;
              if (got === payload.length) {
                c.off('data', onData);
                resolve();
              }
            };
            c.on('data', onData);
            c.once('error', reject);
            c.write(payload);
          }),
      ),
    );
    await until('every pipe back in the pool', () => spliceRelayStats().pipesInUse === 0, 2000);
    const stats = spliceRelayStats();
    expect(stats.live).toBe(N);
    expect(stats.pipesPooled).toBeGreaterThan(0);
    expect(stats.pipesPooled).toBeLessThanOrEqual(stats.pipePoolMax * stats.threads);
    const after = openFds();
    expect(after.pipes - before.pipes).toBe(2 * stats.pipesPooled);
    expect(after.total - before.total - 2 * N).toBeLessThanOrEqual(2 * N + 2 * stats.pipePoolMax * stats.threads + 8);
  }, 30_000);

  it('a relay that cannot get a pipe (EMFILE) waits without spinning, then carries on in order', async () => {
    const h = await harness(); // new workers: their pools are empty
    let backendGot: Promise<Buffer> | undefined;
    let backendBytes = 0;
    h.setBackend((s) => {
      backendGot = collect(s);
      s.on('data', (chunk: Buffer) => (backendBytes += chunk.length));
      void backendGot.then(() => s.end('bye'));
    });
    const client = await h.connect();
    const clientGot = collect(client);
    const relay = await h.nextRelay();
    await until('the relay to run', () => spliceRelayStats().live === 1);
    expect(spliceRelayStats()).toMatchObject({ pipesInUse: 0, pipesPooled: 0 });

    // Use up every descriptor under a lowered soft limit.
    const limit = getOpenFilesLimit();
    const fillers: number[] = [];
    const release = (): void => {
      for (const fd of fillers.splice(0)) closeSync(fd);
      setOpenFilesLimit(limit.soft, limit.hard);
    };
    cleanups.push(release);
    const highest = Math.max(...readdirSync('/proc/self/fd').map(Number));
    setOpenFilesLimit(Math.min(limit.soft, highest + 16), limit.hard);
    for (;;) {
      try {
        fillers.push(openSync('/dev/null', 'r'));
      } catch (err) {
        if ((err as { code?: string }).code === 'EMFILE') break;
        throw err;
      }
    }

    client.write('first ');
    const cpu = process.cpuUsage();
    await sleep(400);
    const used = process.cpuUsage(cpu);
    expect((used.user + used.system) / 1000).toBeLessThan(100); // ms of CPU in 400 ms: no spin
    expect(spliceRelayStats()).toMatchObject({ live: 1, pipesInUse: 0 });
    expect(backendBytes).toBe(0); // no pipe, no bytes: they wait in the client socket

    // Nothing new arrives to wake the relay: it must retry by itself.
    release();
    await until("the waiting bytes to go on once a pipe can be had", () => backendBytes === 6, 1000);
    client.end('second');
    expect((await backendGot!).toString()).toBe('first second');
    expect((await clientGot).toString()).toBe('bye');
    expect(await relay.done).toMatchObject({ reason: 'done', bytesFromClient: 12, bytesToClient: 3 });
  });

  it('pipes get the asked size, rounded up to a power of two pages; 0 keeps the kernel default', async () => {
    for (const [asked, granted] of [
      [100_000, 131_072],
      [0, 65_536],
    ] as const) {
      const h = await harness({ pipeSize: asked });
      const data = randomBytes(2 * MiB);
      const client = await h.connect();
      const echoed = collect(client);
      client.end(data);
      expect(sha256(await echoed)).toBe(sha256(data));
      expect(spliceRelayStats()).toMatchObject({ pipeSize: granted, pipeSizeRefused: 0 });
      await cleanups.pop()!();
    }
  });

  it('a pipe size the kernel refuses fails with ERR_PIPE_SIZE, naming the key and the sysctls', async () => {
    // Beyond fs.pipe-max-size only CAP_SYS_RESOURCE may go: the child runs without it.
    const max = Number(readFileSync('/proc/sys/fs/pipe-max-size', 'utf8'));
    const dir = mkdtempSync(path.join(os.tmpdir(), 'splice-relay-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const script = path.join(dir, 'pipe-size.ts');
    writeFileSync(
      script,
      `import { openSpliceRelayWorkers } from ${JSON.stringify(path.join(REPO, 'src/native/relay.ts'))};
try {
  openSpliceRelayWorkers(1, () => {}, ${max * 2});
  process.stdout.write('opened');
} catch (err) {
  process.stdout.write(JSON.stringify({ code: err.code, message: err.message }));
}
`,
    );
    const out = await new Promise<string>((resolve, reject) => {
      const child = spawn(
        'setpriv',
        ['--bounding-set=-sys_resource', '--inh-caps=-sys_resource', process.execPath, path.join(REPO, 'node_modules/vite-node/vite-node.mjs'), script],
        { cwd: REPO, stdio: ['ignore', 'pipe', 'inherit'] },
      );
      let text = '';
      child.stdout.on('data', (d: Buffer) => (text += d.toString()));
      child.once('error', reject);
      child.once('exit', () => resolve(text));
    });
    const result = JSON.parse(out) as { code: string; message: string };
    expect(result.code).toBe('ERR_PIPE_SIZE');
    expect(result.message).toContain(`upstream.pipe_size ${max * 2} was refused by the kernel (EPERM)`);
    expect(result.message).toContain(`fs.pipe-max-size (${max} here)`);
  });

  it('does not hold the event loop open: a process with one relay exits by itself', async () => {
    // The child has no handle of its own once its listener closes: only the live relay keeps it
    // running, and when that ends nothing may.
    const dir = mkdtempSync(path.join(os.tmpdir(), 'splice-relay-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const script = path.join(dir, 'one-relay.ts');
    writeFileSync(
      script,
      `import net from 'node:net';
import { pino } from 'pino';
import { createSpliceRelayStarter } from ${JSON.stringify(path.join(REPO, 'src/proxy/splice-relay.ts'))};
const starter = createSpliceRelayStarter({ threads: 1, logger: pino({ level: 'silent' }) });
const front = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (client) => {
  front.close();
  const upstream = net.connect({ host: '${HOST}', port: Number(process.argv[2]), allowHalfOpen: true }, () => {
    starter.start(client, upstream, 0).done.then((r) => process.stdout.write('done ' + r.reason + '\\n'));
  });
});
front.listen(0, '${HOST}', () => process.stdout.write('port ' + front.address().port + '\\n'));
`,
    );
    const backend = net.createServer({ allowHalfOpen: true }, (s) => s.pipe(s));
    const backendPort = await listen(backend);
    cleanups.push(() => new Promise((resolve) => backend.close(resolve)));
    const child = spawn(process.execPath, [path.join(REPO, 'node_modules/vite-node/vite-node.mjs'), script, String(backendPort)], {
      cwd: REPO,
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    cleanups.push(() => void child.kill('SIGKILL'));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    let out = '';
    const line = (prefix: string): Promise<string> =>
      new Promise((resolve) => {
        const check = (): void => {
          const found = out.split('\n').find((l) => l.startsWith(prefix));
          if (found) {
            child.stdout.off('data', onData);
            resolve(found.slice(prefix.length));
          }
        };
        const onData = (d: Buffer): void => {
          out += d.toString();
          check();
        };
        child.stdout.on('data', onData);
        check();
      });
    const port = Number(await line('port '));
    const client = net.connect({ host: HOST, port, allowHalfOpen: true });
    client.on('error', () => {});
    cleanups.push(() => void client.destroy());
    client.write('ping');
    await once(client, 'data');
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(child.exitCode).toBe(null); // the live relay holds the loop
    const doneLine = line('done ');
    client.end();
    expect(await doneLine).toBe('done');
    const stillRunning = new Promise<string>((resolve) => setTimeout(() => resolve('still running after 3 s'), 3000).unref());
    expect(await Promise.race([exited, stillRunning])).toBe(0);
  }, 30_000);
});
