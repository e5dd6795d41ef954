// The transparent path end to end: client -> gateway (interceptor) -> backend, in namespaces.
import { readFileSync } from 'node:fs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Lab, ADDR, BASE_CONFIG as BASE, CLI, ROOT, sawAddress } from './helpers/lab.js';
import path from 'node:path';

const WRITE_WRITE = path.join(ROOT, 'scripts', 'peers', 'write-write.mjs');
// How long the backend on port 9001 reads nothing of a new connection.
const STALL_MS = 2500;

/** Resident memory (KiB) and CPU time (utime + stime, clock ticks) of a process. */
function procSample(pid: number): { rssKiB: number; cpuTicks: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { rssKiB: Number(/VmRSS:\s+(\d+)/.exec(status)![1]), cpuTicks: Number(fields[11]) + Number(fields[12]) };
}

// What each connection's log line times (phasesUs).
const PHASES = ['connect', 'decide', 'relay'];
const BASE_CONFIG = BASE;
describe('transparent interception (pp=false)', () => {
  let lab: Lab;
  beforeAll(async () => {
    lab = await Lab.create();
    await lab.exec(lab.ns.gateway, ['nft', 'add', 'table', 'inet', 'unrelated']);
    await lab.startBackend([8080, 8081]);
    await lab.startBackend([9001], ['--pause-ms', String(STALL_MS)]);
  });
  // A failed test must not leave its daemon holding the registry lock for the next one.
  afterEach(async () => lab?.stopDaemons());
  afterAll(async () => lab?.destroy());

  it('the backend sees the client address and the original destination port, over IPv4 and IPv6', async () => {
    const daemon = await lab.startDaemon(await lab.writeConfig(BASE_CONFIG));
    const r = await lab.client(ADDR.backend, 8081);
    expect(r.error).toBeNull();
    expect(sawAddress(r)).toBe(ADDR.client);
    expect((r.saw as { local: string }).local).toBe(`${ADDR.backend}:8081`);

    const r6 = await lab.client(ADDR.backend6, 8080);
    expect(r6.error).toBeNull();
    expect(sawAddress(r6)).toBe(ADDR.client6);
    expect((r6.saw as { local: string }).local).toBe(`${ADDR.backend6}:8080`);
    // It went through the interceptor, which logged it.
    await daemon.waitFor(`"client":"${ADDR.client}:`);
    daemon.child.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
  });

  it('keep_client_port: the backend sees the client port too', async () => {
    await lab.startDaemon(await lab.writeConfig(BASE_CONFIG.replace('[upstream]', '[upstream]\nkeep_client_port = true')));
    for (const [address, client] of [
      [ADDR.backend, ADDR.client],
      [ADDR.backend6, ADDR.client6],
    ] as const) {
      const r = await lab.client(address, 8081);
      expect(r.error).toBeNull();
      expect((r.saw as { remote: string }).remote).toBe(`${client}:${r.localPort}`);
    }
  });

  it('half-closes and relays 8 MiB each way intact', async () => {
    const daemon = await lab.startDaemon(await lab.writeConfig(BASE_CONFIG));
    const r = await lab.client(ADDR.backend, 8080, { bytes: 8 << 20, timeoutMs: 30_000 });
    expect(r.error).toBeNull();
    // The client half-closed after sending; the echo still came back in full, then the backend's FIN.
    expect(r.echoBytes).toBe(8 << 20);
    expect(r.echoIntact).toBe(true);
    expect(r.ended).toBe(true);
    expect(sawAddress(r)).toBe(ADDR.client);
    // The log counts every byte, and names the connection and the source port the backend saw.
    await daemon.waitFor('"connection closed"');
    const line = JSON.parse(daemon.output().split('\n').find((l) => l.includes('"connection closed"'))!) as Record<string, unknown>;
    expect(line).toMatchObject({ reason: 'done', bytesIn: 8 << 20, client: expect.stringMatching(/^198\.18\.1\.2:/), conn: expect.any(Number) });
    expect(sawAddress(r)).toBe(ADDR.client);
    expect((r.saw as { remote: string }).remote).toBe(`${ADDR.client}:${line.upstreamPort as number}`);
    expect(line.bytesOut).toBe((8 << 20) + r.bytesReceived - (r.echoBytes ?? 0));
    // Where the time went: every phase timed, none negative, the relay the longest.
    const phasesUs = line.phasesUs as Record<string, number>;
    expect(Object.keys(phasesUs).sort()).toEqual(PHASES);
    for (const us of Object.values(phasesUs)) expect(us).toBeGreaterThanOrEqual(0);
    expect(Math.max(...Object.values(phasesUs))).toBe(phasesUs.relay);
    daemon.child.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
  });

  it('adds no Nagle wait: small writes each way are relayed at once, not after the peer\'s delayed ACK', async () => {
    // Both ends set TCP_NODELAY and send each message in two writes 2 ms apart. A relay socket
    // without TCP_NODELAY holds the second write until the first is acknowledged, and the
    // receiver, expecting to answer, delays that ACK: Linux's minimum is 40 ms, so every round
    // took about 44 ms instead of about 2 (measured before the listener set TCP_NODELAY).
    const server = lab.spawn(lab.ns.backend, ['node', WRITE_WRITE, 'server', '9002']);
    await server.waitFor('ready');
    await lab.startDaemon(await lab.writeConfig(BASE_CONFIG));
    for (const args of [[], ['--split']]) {
      const { stdout } = await lab.exec(lab.ns.client, ['node', WRITE_WRITE, 'client', ADDR.backend, '9002', '--rounds', '30', ...args]);
      const { error, times } = JSON.parse(stdout.trim().split('\n').pop()!) as { error: string | null; times: number[] };
      expect(error).toBeNull();
      const median = [...times].sort((a, b) => a - b)[times.length >> 1];
      expect(median, `rounds ${args.join(' ') || 'unsplit'}: ${times.join(', ')} ms`).toBeLessThan(20);
    }
    server.child.kill('SIGKILL');
  });

  it('backpressure: a backend that reads nothing stalls the client, not the daemon (no memory, no spin)', async () => {
    const daemon = await lab.startDaemon(await lab.writeConfig(BASE_CONFIG));
    const pid = daemon.child.pid!;
    const before = procSample(pid);
    const pending = lab.client(ADDR.backend, 9001, { bytes: 64 << 20, timeoutMs: 60_000 });
    await new Promise((resolve) => setTimeout(resolve, STALL_MS - 500));
    // Well into the stall: the kernel buffers along the way are full and everything waits.
    const during = procSample(pid);
    const r = await pending;
    expect(r.error).toBeNull();
    expect(r.echoBytes).toBe(64 << 20);
    expect(r.echoIntact).toBe(true);
    // 64 MiB were offered; the daemon held at most its buffers (RSS, KiB) and did not busy-wait
    // (a spinning relay would burn the whole stall: 200+ ticks).
    expect(during.rssKiB - before.rssKiB).toBeLessThan(24 * 1024);
    expect(during.cpuTicks - before.cpuTicks).toBeLessThan(100);
    daemon.child.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
  });

  it('resets the client when the upstream refuses', async () => {
    const daemon = await lab.startDaemon(await lab.writeConfig(BASE_CONFIG));
    const r = await lab.client(ADDR.backend, 9005, { timeoutMs: 5000 });
    // Accepted by the interceptor, then reset: not a clean empty response, not a refusal. (The
    // reset can beat the client's own 'connect' event, so `connected` is not asserted.)
    expect(r.error).toBe('ECONNRESET');
    expect(r.bytesReceived).toBe(0);
    await daemon.waitFor('"reason":"connect-failed"');
    expect(daemon.output()).toContain('"code":"ECONNREFUSED"');
    daemon.child.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
  });

  it('drops target traffic while the listener is gone instead of forwarding it', async () => {
    const daemon = await lab.startDaemon(await lab.writeConfig(BASE_CONFIG));
    daemon.child.kill('SIGKILL'); // a crash: rules stay, listener is gone
    await daemon.exited;
    const r = await lab.client(ADDR.backend, 8081, { timeoutMs: 1500 });
    expect(r.connected).toBe(false);
    expect(r.error).toBe('timeout');
    // The next start cleans up what the crashed run left and serves again.
    const again = await lab.startDaemon(await lab.writeConfig(BASE_CONFIG));
    const ok = await lab.client(ADDR.backend, 8081);
    expect(sawAddress(ok)).toBe(ADDR.client);
    const rules = await lab.ipRules(4);
    expect(rules.match(/fwmark 0x2000\/0x2000 lookup 4511/g)).toHaveLength(1);
    again.child.kill('SIGTERM');
    expect((await again.exited).code).toBe(0);
  });

  it('after stop, its table and ip rules are gone and an unrelated table is untouched', async () => {
    const daemon = await lab.startDaemon(await lab.writeConfig(BASE_CONFIG));
    expect(await lab.nftTables()).toEqual(expect.arrayContaining(['inet tproxy_interceptor', 'inet unrelated']));
    expect(await lab.ipRules(4)).toMatch(/fwmark 0x2000\/0x2000 lookup 4511/);
    expect(await lab.ipRules(6)).toMatch(/fwmark 0x2000\/0x2000 lookup 4511/);
    daemon.child.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
    expect(await lab.nftTables()).toEqual(['inet unrelated']);
    expect(await lab.ipRules(4)).not.toMatch(/lookup 4511/);
    expect(await lab.ipRules(6)).not.toMatch(/lookup 4511/);
    const routes = await lab.exec(lab.ns.gateway, ['ip', 'route', 'show', 'table', '4511'], { allowFail: true });
    expect(routes.stdout.trim()).toBe('');
  });

  it('closes a connection after idle_timeout without traffic, and not while traffic flows', async () => {
    const daemon = await lab.startDaemon(await lab.writeConfig(BASE_CONFIG.replace('connect_timeout = "2s"', 'connect_timeout = "2s"\nidle_timeout = "1s"')));
    // One connection talks every 400 ms for 2.4 s, one says nothing after the backend's greeting.
    const script = (talk: boolean): string =>
      `const s = require('net').connect(8081, '${ADDR.backend}'); const t0 = Date.now(); let n = 0;` +
      (talk ? `const i = setInterval(() => { if (++n > 6) { clearInterval(i); return; } s.write('x'); }, 400);` : '') +
      `s.on('data', () => {}); s.on('close', () => console.log('closed ' + (Date.now() - t0))); s.on('error', () => {});`;
    const talker = lab.spawn(lab.ns.client, ['node', '-e', script(true)]);
    const silent = lab.spawn(lab.ns.client, ['node', '-e', script(false)]);
    const silentMs = Number((await silent.waitFor(/closed \d+/, 5000)).match(/closed (\d+)/)![1]);
    const talkerMs = Number((await talker.waitFor(/closed \d+/, 8000)).match(/closed (\d+)/)![1]);
    expect(silentMs).toBeGreaterThanOrEqual(900);
    expect(silentMs).toBeLessThan(2500);
    // Active until 2.4 s, then idle for 1 s.
    expect(talkerMs).toBeGreaterThanOrEqual(3200);
    expect(talkerMs).toBeLessThan(5500);
    await daemon.waitFor(/"reason":"idle-timeout"[\s\S]*"reason":"idle-timeout"/);
    daemon.child.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
  });

  it('on SIGTERM, drains for --drain and then ends what is still open', async () => {
    const config = await lab.writeConfig(BASE_CONFIG.replace('connect_timeout = "2s"', 'connect_timeout = "2s"\nidle_timeout = "60s"'));
    const daemon = await lab.startDaemon(config, ['--drain', '1s']);
    const holder = lab.spawn(lab.ns.client, [
      'node', '-e',
      `const s = require('net').connect(8081, '${ADDR.backend}'); s.on('data', () => console.log('open')); s.on('close', () => console.log('closed')); s.on('error', (e) => console.log(e.code));`,
    ]);
    await holder.waitFor('open');
    const t0 = Date.now();
    daemon.child.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
    expect(Date.now() - t0).toBeLessThan(8000); // not the 60 s idle timeout
    expect(daemon.output()).toMatch(/"aborted":1/);
    await holder.waitFor('closed');
  });

  it('without CAP_NET_ADMIN, says so and installs nothing', async () => {
    const config = await lab.writeConfig(BASE_CONFIG);
    // Root, but with CAP_NET_ADMIN and CAP_NET_RAW removed from the bounding set.
    const p = lab.spawn(lab.ns.gateway, ['setpriv', '--bounding-set', '-net_admin,-net_raw', '--inh-caps', '-net_admin,-net_raw', 'node', CLI, 'run', '--config', config]);
    const { code } = await p.exited;
    expect(code).not.toBe(0);
    expect(p.output()).toMatch(/EPERM/);
    expect(p.output()).toMatch(/CAP_NET_ADMIN/);
    expect(await lab.nftTables()).toEqual(['inet unrelated']);
  });
});
