// The destination guard and the connection cap (issue 10): nothing outside intercept.targets and
// nothing addressed to this host is relayed (no open relay, no connection to ourselves), and past
// listen.max_connections new connections are reset at once instead of waiting in the accept queue.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Lab, ADDR, BASE_CONFIG, sawAddress, type Proc } from './helpers/lab.js';

const closedLines = (daemon: Proc): Array<Record<string, unknown>> =>
  daemon
    .output()
    .split('\n')
    .filter((l) => l.includes('"connection closed"'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

const CONFIG = BASE_CONFIG;

describe('destination guard and connection cap', () => {
  let lab: Lab;
  beforeAll(async () => {
    lab = await Lab.create();
    await lab.startBackend([8081]);
  });
  afterEach(async () => lab?.stopDaemons());
  afterAll(async () => lab?.destroy());

  it('a wildcard listen address is refused at start unless allowed', async () => {
    const config = await lab.writeConfig(CONFIG.replace('address = "127.0.0.1"', 'address = "0.0.0.0"'));
    const r = await lab.cli(['run', '--config', config], { allowFail: true });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/listen\.address: the string "0\.0\.0\.0" listens on every address of this host/);
    expect(await lab.nftTables()).not.toContain('inet tproxy_interceptor');
  });

  it('a client connecting straight to an allowed wildcard listener is reset, not relayed to the listener itself', async () => {
    const config = await lab.writeConfig(CONFIG.replace('address = "127.0.0.1"', 'address = "0.0.0.0"\nallow_wildcard = true'));
    const daemon = await lab.startDaemon(config);
    const r = await lab.client(ADDR.gatewayClientSide, 15001, { timeoutMs: 3000 });
    expect(r.error).toBe('ECONNRESET');
    expect(r.saw).toBeNull();
    await daemon.waitFor('"reason":"local_destination"');
    await sleep(1000);
    expect(closedLines(daemon)).toEqual([expect.objectContaining({ reason: 'local_destination', path: 'refuse', dst: `${ADDR.gatewayClientSide}:15001` })]);
    daemon.child.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
  });

  it('a destination outside intercept.targets is reset (a tproxy rule we do not own points at the listener)', async () => {
    const daemon = await lab.startDaemon(await lab.writeConfig(CONFIG));
    await lab.exec(lab.ns.gateway, ['nft', '-f', '-'], {
      input: `table inet foreign {
  chain pre { type filter hook prerouting priority -150; policy accept;
    ip daddr ${ADDR.backend} tcp dport 7777 tproxy ip to 127.0.0.1:15001 meta mark set 0x2000 accept
  }
}
`,
    });
    try {
      const r = await lab.client(ADDR.backend, 7777, { timeoutMs: 3000 });
      expect(r.error).toBe('ECONNRESET');
      expect(r.saw).toBeNull();
      await daemon.waitFor('"reason":"not_a_target"');
      expect(closedLines(daemon)).toEqual([expect.objectContaining({ reason: 'not_a_target', dst: `${ADDR.backend}:7777` })]);
    } finally {
      await lab.exec(lab.ns.gateway, ['nft', 'delete', 'table', 'inet', 'foreign'], { allowFail: true });
    }
    daemon.child.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
  });

  it("the gateway's own address: no instance may be registered there, and a connection to it is one refusal, no loop", async () => {
    const config = await lab.writeConfig(CONFIG);
    const daemon = await lab.startDaemon(config);
    // 198.18.2.0/24 holds the gateway's own 198.18.2.1: start warns about it.
    expect(daemon.output()).toMatch(/"cidr":"198\.18\.2\.0\/24","addresses":\["198\.18\.2\.1"\].*a target contains addresses of this host/);
    // The admin API refuses it (the fetcher would ask the daemon itself), and the data path's
    // guard refuses the connection anyway, instance or not.
    const add = await lab.cli(['instances', 'add', 'self', '--app', 'app', '--ip', ADDR.gatewayBackendSide, '--policy', '8081', '--config', config], { allowFail: true });
    expect(add.code).toBe(1);
    expect(add.stderr).toMatch(/an address of this host/);
    const r = await lab.client(ADDR.gatewayBackendSide, 8081, { timeoutMs: 3000 });
    expect(r.error).toBe('ECONNRESET');
    await daemon.waitFor('"reason":"local_destination"');
    await sleep(1500);
    expect(closedLines(daemon)).toEqual([expect.objectContaining({ reason: 'local_destination', dst: `${ADDR.gatewayBackendSide}:8081` })]);
    // Everything else still flows.
    expect(sawAddress(await lab.client(ADDR.backend, 8081))).toBe(ADDR.client);
    daemon.child.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
  });

  it('past max_connections new connections are reset at once, and accepted again once one ends', async () => {
    const daemon = await lab.startDaemon(await lab.writeConfig(CONFIG.replace('port = 15001', 'port = 15001\nmax_connections = 3')));
    const holders: Proc[] = [];
    for (let i = 0; i < 3; i++) {
      const h = lab.spawn(lab.ns.client, [
        'node', '-e',
        `const s = require('net').connect(8081, '${ADDR.backend}'); s.on('data', () => console.log('open')); s.on('close', () => console.log('closed')); s.on('error', (e) => console.log(e.code));`,
      ]);
      await h.waitFor('open');
      holders.push(h);
    }
    const t0 = Date.now();
    const over = await lab.client(ADDR.backend, 8081, { timeoutMs: 5000 });
    expect(over.error).toBe('ECONNRESET');
    expect(over.saw).toBeNull();
    // Promptly: not after a connect or accept-queue timeout.
    expect(Date.now() - t0).toBeLessThan(2500);
    await daemon.waitFor('"reason":"over_capacity"');
    holders[0]!.child.kill('SIGKILL');
    await holders[0]!.exited;
    let ok = null;
    for (let i = 0; i < 20 && ok === null; i++) {
      const r = await lab.client(ADDR.backend, 8081, { timeoutMs: 3000 });
      if (r.error === null) ok = r;
      else await sleep(200);
    }
    expect(ok && sawAddress(ok)).toBe(ADDR.client);
    for (const h of holders) h.child.kill('SIGKILL');
    daemon.child.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
  });
});
