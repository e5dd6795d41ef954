// Live reload on a real gateway: `tproxy-interceptor reload` (and SIGHUP, in signals.test.ts) makes
// the daemon read its config file again. A long-lived connection keeps flowing across it, a new
// target is intercepted after it and a removed one no longer is, an invalid config or one that
// changes a restart-only key is refused with the old rules and behaviour in place, and new
// timeouts apply to new connections only. A connection was intercepted when the backend saw the
// client's address from another port than the client's own (the interceptor's upstream socket
// takes an ephemeral port); a forwarded one keeps the client's port.
import { writeFile } from 'node:fs/promises';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Lab, ADDR, type ClientResult } from './helpers/lab.js';
import { tcpExchange } from './helpers/peers.js';
import { startTicker } from './helpers/ticker.js';

const config = (ports: string, extra = ''): string => `
[listen]
port = 15001

[intercept]

[[intercept.targets]]
cidr = "198.18.2.0/24"
ports = [${ports}]

[[intercept.targets]]
cidr = "fd00:18:2::/64"
ports = [8080]

[upstream]
connect_timeout = "2s"
${extra}
`;

/** Did the interceptor relay it? (see the file's comment) */
function intercepted(r: ClientResult): boolean {
  if (!r.saw || typeof r.saw === 'string') throw new Error(`backend reported nothing usable: ${JSON.stringify(r)}`);
  expect(r.saw.remote.startsWith(`${ADDR.client}:`)).toBe(true);
  return Number(r.saw.remote.split(':').pop()) !== r.localPort;
}

describe('reload', () => {
  let lab: Lab;
  let file: string;
  const write = async (text: string): Promise<void> => {
    await writeFile(file, `${text}\n[registry]\npath = "${lab.dir}/registry"\nadmin_socket = "${lab.dir}/admin.sock"\n`);
  };
  const reload = (configFile = file) => lab.cli(['reload', '--config', configFile], { allowFail: true });
  const nftRules = async (): Promise<string> => (await lab.exec(lab.ns.gateway, ['nft', 'list', 'table', 'inet', 'tproxy_interceptor'])).stdout;

  beforeAll(async () => {
    lab = await Lab.create();
    file = `${lab.dir}/reload.toml`;
    await lab.startBackend([8080, 8081, 8082]);
  });
  afterEach(async () => lab?.stopDaemons());
  afterAll(async () => lab?.destroy());

  it('keeps a live connection flowing across a reload that adds a target, and intercepts the new target after it', async () => {
    await write(config('8080, 8081'));
    const daemon = await lab.startDaemon(file);
    const ticker = await startTicker(lab, ADDR.backend, 8081);
    await ticker.more(5);
    expect(intercepted(await lab.client(ADDR.backend, 8082))).toBe(false);

    await write(config('8080, 8081, 8082'));
    const r = await reload();
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`${file}: reloaded; changed intercept.targets (firewall rules replaced)\n`);
    await daemon.waitFor(/"changed":\["intercept\.targets"\],"firewall":true,"msg":"config reloaded"/);
    expect(await nftRules()).toMatch(/tcp dport \{ 8080-8082 \}|tcp dport 8080-8082/);

    // The live connection kept flowing, and the new target is intercepted.
    await ticker.more(10);
    expect(intercepted(await lab.client(ADDR.backend, 8082))).toBe(true);
    await daemon.waitFor(`"dst":"${ADDR.backend}:8082"`);
    const t = await ticker.stop();
    expect(t.error).toBeNull();
    expect(t.echoed).toBe(t.sent);
    expect(Number(t.saw!.remote.split(':').pop())).not.toBe(t.localPort);
    daemon.child.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
  });

  it('refuses an invalid config and a restart-only change, with the old rules and behaviour in place', async () => {
    await write(config('8080, 8081'));
    const daemon = await lab.startDaemon(file);
    const before = await nftRules();

    await write(config('8080, 8081').replace('connect_timeout = "2s"', 'connect_timeout = "2s"\nidle_timout = "1s"'));
    const invalid = await reload();
    expect(invalid.code).toBe(2);
    expect(invalid.stderr).toMatch(/not reloaded: config: upstream\.idle_timout: unknown key `upstream\.idle_timout` \(did you mean `upstream\.idle_timeout`\?\) \[ERR_CONFIG\]/);
    // The same file by SIGHUP: refused by the daemon, which says why in its log.
    daemon.child.kill('SIGHUP');
    await daemon.waitFor(/"code":"ERR_CONFIG".*upstream\.idle_timout.*"msg":"reload failed; still running with the previous config"/);

    await write(config('8080, 8081, 8082').replace('[listen]\nport = 15001', '[listen]\nport = 15002'));
    const restart = await reload();
    expect(restart.code).toBe(2);
    expect(restart.stderr).toMatch(/not reloaded: listen\.port changed, which only a restart applies .*nothing was reloaded \(also changed: intercept\.targets\) \[ERR_RELOAD_RESTART_REQUIRED\]/);

    expect(await nftRules()).toBe(before);
    expect(intercepted(await lab.client(ADDR.backend, 8081))).toBe(true);
    expect(intercepted(await lab.client(ADDR.backend, 8082))).toBe(false);
    const status = JSON.parse((await lab.cli(['status', '--config', file, '--json'])).stdout) as { reloads: { ok: number; failed: number } };
    expect(status.reloads).toEqual({ ok: 0, failed: 2 });
    daemon.child.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
  });

  it('stops intercepting a removed target', async () => {
    await write(config('8080, 8081'));
    const daemon = await lab.startDaemon(file);
    expect(intercepted(await lab.client(ADDR.backend, 8081))).toBe(true);
    await write(config('8080'));
    expect((await reload()).code).toBe(0);
    expect(await nftRules()).not.toMatch(/8081/);
    expect(intercepted(await lab.client(ADDR.backend, 8081))).toBe(false);
    expect(intercepted(await lab.client(ADDR.backend, 8080))).toBe(true);
    daemon.child.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
  });

  it('applies new timeouts and the log level to new connections; established ones keep theirs', async () => {
    await write(config('8080, 8081'));
    const daemon = await lab.startDaemon(file);
    // Opened before the reload with idle_timeout 5m: it is idle for 2.5 s, then speaks.
    const before = tcpExchange(lab, lab.ns.client, { host: ADDR.backend, port: 8081, send: 'first\n', later: { bytes: 'LATER\n', delayMs: 2500 }, until: 'LATER', timeoutMs: 8000 });
    await new Promise((r) => setTimeout(r, 500));
    await write(config('8080, 8081', '[log]\nlevel = "debug"\n').replace('connect_timeout = "2s"', 'connect_timeout = "2s"\nidle_timeout = "1s"'));
    const r = await reload();
    expect(r.stdout).toMatch(/changed log\.level, upstream\.idle_timeout\n$/);
    // Opened after it: closed after 1 s of silence, before its late bytes.
    const after = await tcpExchange(lab, lab.ns.client, { host: ADDR.backend, port: 8081, send: 'first\n', later: { bytes: 'LATER\n', delayMs: 2500 }, until: 'LATER', timeoutMs: 8000 });
    expect(after.ended).toBe(true);
    expect(after.data.toString()).not.toContain('LATER');
    expect(after.endMs!).toBeGreaterThan(900);
    expect(after.endMs!).toBeLessThan(2400);
    const old = await before;
    expect(old.error).toBeNull();
    expect(old.data.toString()).toContain('LATER');
    await daemon.waitFor(/"reason":"idle-timeout"/);
    // debug: the connection's line at connect start
    await daemon.waitFor(/"level":20,.*"msg":"connection open"/);
    daemon.child.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
  });

  it('with backend = "iptables": one restore per family, the live connection kept, the new target intercepted', async () => {
    const ipt = 'backend = "iptables"\niptables_variant = "nft"';
    const text = (ports: string): string => config(ports).replace('[intercept]\n', `[intercept]\n${ipt}\n`);
    await write(text('8080, 8081'));
    const daemon = await lab.startDaemon(file);
    const ticker = await startTicker(lab, ADDR.backend, 8081);
    await ticker.more(5);
    await write(text('8080, 8081, 8082'));
    const r = await reload();
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/changed intercept\.targets \(firewall rules replaced\)/);
    const saved = (await lab.exec(lab.ns.gateway, ['iptables-nft-save', '-t', 'mangle'])).stdout;
    expect(saved).toMatch(/--dports 8080:8082|--dport 8080:8082/);
    expect(saved.match(/^-A PREROUTING -j tproxy_interceptor$/gm)).toHaveLength(1);
    await ticker.more(10);
    expect(intercepted(await lab.client(ADDR.backend, 8082))).toBe(true);
    const t = await ticker.stop();
    expect(t.error).toBeNull();
    expect(t.echoed).toBe(t.sent);
    daemon.child.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
  });
});
