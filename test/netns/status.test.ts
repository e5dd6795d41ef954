// `tproxy-interceptor status`: the live connections the loop threads hold (client, original
// destination, path, bytes each way, age, thread), asked over the admin socket; a connection
// that closed is gone from it.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { WireDaemonStatus } from '../../src/admin/wire.js';
import { Lab, ADDR, BASE_CONFIG } from './helpers/lab.js';
import { startTicker } from './helpers/ticker.js';

describe('status', () => {
  let lab: Lab;
  let config: string;
  const status = async (...args: string[]): Promise<WireDaemonStatus> => JSON.parse((await lab.cli(['status', '--config', config, '--json', ...args])).stdout) as WireDaemonStatus;

  beforeAll(async () => {
    lab = await Lab.create();
    config = await lab.writeConfig(BASE_CONFIG);
    await lab.startBackend([8081]);
  });
  afterEach(async () => lab?.stopDaemons());
  afterAll(async () => lab?.destroy());

  it('lists a live connection with its client address and bytes, and not after it closed', async () => {
    const daemon = await lab.startDaemon(config);
    const ticker = await startTicker(lab, ADDR.backend, 8081);
    await ticker.more(5);
    const client = `${ADDR.client}:${ticker.localPort}`;
    const s = await status();
    const live = s.connections.filter((c) => c.client === client);
    expect(live).toHaveLength(1);
    const c = live[0]!;
    expect(c).toMatchObject({ peer: client, destination: `${ADDR.backend}:8081`, path: 'transparent', decision: 'unregistered', instance: null, state: 'relaying' });
    expect(c.thread).toBe(c.id % 256);
    expect(c.thread).toBeLessThan(s.engine.threads);
    // At least the five ticks echoed ("tick N\n" each way) and the backend's first line.
    expect(c.bytes_in).toBeGreaterThanOrEqual(5 * 7);
    expect(c.bytes_out).toBeGreaterThan(c.bytes_in);
    expect(c.upstream_port).toBeGreaterThan(0);
    expect(c.age_ms).toBeGreaterThanOrEqual(0);
    expect(s).toMatchObject({ rules_installed: true, accepting: true, backend: 'nftables', live: 1 });
    expect(s.engine.live).toBe(1);

    // Later: more bytes, older.
    await ticker.more(5);
    const later = (await status()).connections.find((x) => x.client === client)!;
    expect(later.id).toBe(c.id);
    expect(later.bytes_in).toBeGreaterThan(c.bytes_in);
    expect(later.age_ms).toBeGreaterThan(c.age_ms);

    // The text form, and --limit 0 (counts only).
    const text = (await lab.cli(['status', '--config', config])).stdout;
    expect(text).toMatch(new RegExp(`^${c.id}\\s+${c.thread}\\s+${client.replace(/\./g, '\\.')}\\s+${ADDR.backend.replace(/\./g, '\\.')}:8081\\s+transparent\\s+relaying\\s`, 'm'));
    expect(text).toMatch(/^connections  1 live, /m);
    const none = await status('--limit', '0');
    expect(none.connections).toEqual([]);
    expect(none.live).toBe(1);

    await ticker.stop();
    const deadline = Date.now() + 5000;
    let after = await status();
    while (after.connections.length > 0 && Date.now() < deadline) after = await status();
    expect(after.connections).toEqual([]);
    expect(after.live).toBe(0);
    expect(after.counters.transparent).toBe(1);
    expect(after.counters.closed).toEqual({ done: 1 });
    expect((await lab.cli(['status', '--config', config])).stdout).toMatch(/^no live connections$/m);
    daemon.child.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
  });

  it('with the daemon not running: exit 1, ERR_ADMIN_UNREACHABLE naming the socket', async () => {
    const r = await lab.cli(['status', '--config', config], { allowFail: true });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/cannot reach the daemon's admin socket .*admin\.sock.* \[ERR_ADMIN_UNREACHABLE\]/);
  });
});
