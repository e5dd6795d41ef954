import { afterEach, describe, expect, it } from 'vitest';
import net from 'node:net';
import { holdConnections } from '../../../scripts/bench/hold-connections.mjs';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function until(check: () => boolean, ms = 2000) {
  for (const end = Date.now() + ms; !check(); await sleep(10)) if (Date.now() > end) throw new Error('timed out');
}

// A loopback listener standing in for the proxy: it completes handshakes and holds them.
let server: net.Server | null = null;
const accepted = new Set<net.Socket>();

async function listen(): Promise<number> {
  server = net.createServer((s) => {
    accepted.add(s);
    s.on('error', () => {});
    s.on('close', () => accepted.delete(s));
  });
  await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
  return (server!.address() as net.AddressInfo).port;
}

afterEach(async () => {
  for (const s of accepted) s.destroy();
  await new Promise((resolve) => (server ? server.close(resolve) : resolve(undefined)));
  server = null;
});

describe('holdConnections with a window', () => {
  it('starts no connect while `window` connected ones are ahead of what the backend has seen', async () => {
    const port = await listen();
    const hold = holdConnections({ host: '127.0.0.1', port, count: 60, concurrency: 4, window: 10, windowStallMs: 60_000 });
    await sleep(150);
    // Connects already under way when the window filled still complete: at most concurrency - 1 more.
    const first = hold.progress();
    expect(first.connecting).toBe(0);
    expect(first.connected).toBeGreaterThanOrEqual(10);
    expect(first.connected).toBeLessThanOrEqual(13);
    hold.relayed(first.connected);
    await sleep(150);
    const second = hold.progress();
    expect(second.connected).toBeGreaterThanOrEqual(first.connected + 10);
    expect(second.connected).toBeLessThanOrEqual(first.connected + 13);
    hold.relayed(60);
    await expect(hold.done).resolves.toMatchObject({ held: 60, failed: 0 });
    expect(hold.release()).toBe(60);
    await until(() => accepted.size === 0);
  });

  it('goes on without the window once no count came for windowStallMs', async () => {
    const port = await listen();
    const hold = holdConnections({ host: '127.0.0.1', port, count: 20, concurrency: 20, window: 5, windowStallMs: 200 });
    await expect(hold.done).resolves.toMatchObject({ held: 20, failed: 0 });
    hold.release();
  });

  it('without a window opens them all at once, bounded by concurrency only', async () => {
    const port = await listen();
    const hold = holdConnections({ host: '127.0.0.1', port, count: 25, concurrency: 8 });
    await expect(hold.done).resolves.toMatchObject({ held: 25, failed: 0, errors: {} });
    await until(() => accepted.size === 25);
    hold.release();
  });
});
