// The native connection path end to end (`[listen] accept = "native"`): the addon accepts, the
// daemon only decides, the relay workers connect upstream (spoofing the client, or with a PROXY
// header) and move the bytes. Mirrors intercept.test.ts and registry.test.ts for this path.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, ADDR, BASE_CONFIG as BASE, sawAddress } from './helpers/lab.js';
import { startNginx, httpGet } from './helpers/peers.js';

const BASE_CONFIG = BASE.replace('port = 15001', 'port = 15001\naccept = "native"');

describe('native accept path', () => {
  let lab: Lab;
  beforeAll(async () => {
    lab = await Lab.create();
    await startNginx(lab, lab.ns.backend, [{ port: 8082, proxyProtocol: true }]);
    await lab.startBackend([8080, 8081]);
  });
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
    await daemon.waitFor(`"client":"${ADDR.client}:`);
    expect(daemon.output()).toContain('"accept":"native"');
    daemon.child.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
  });

  it('half-closes and relays 8 MiB each way intact', async () => {
    const daemon = await lab.startDaemon(await lab.writeConfig(BASE_CONFIG));
    const r = await lab.client(ADDR.backend, 8080, { bytes: 8 << 20, timeoutMs: 30_000 });
    expect(r.error).toBeNull();
    expect(r.echoBytes).toBe(8 << 20);
    expect(r.echoIntact).toBe(true);
    expect(r.ended).toBe(true);
    expect(sawAddress(r)).toBe(ADDR.client);
    await daemon.waitFor('"relay":"splice"');
    const line = JSON.parse(daemon.output().split('\n').find((l) => l.includes('"connection closed"'))!) as Record<string, unknown>;
    expect(line).toMatchObject({ relay: 'splice', reason: 'done', path: 'transparent', bytesIn: 8 << 20, client: expect.stringMatching(/^198\.18\.1\.2:/) });
    expect(line.bytesOut).toBe((8 << 20) + r.bytesReceived - (r.echoBytes ?? 0));
    daemon.child.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
  });

  it('resets the client when the upstream refuses', async () => {
    const daemon = await lab.startDaemon(await lab.writeConfig(BASE_CONFIG));
    const r = await lab.client(ADDR.backend, 9005, { timeoutMs: 5000 });
    expect(r.connected).toBe(true); // accepted by the interceptor...
    expect(r.error).toBe('ECONNRESET'); // ...then reset, not a clean empty response
    expect(r.bytesReceived).toBe(0);
    await daemon.waitFor('"reason":"connect-failed"');
    expect(daemon.output()).toContain('"code":"ECONNREFUSED"');
    daemon.child.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
  });

  it('pp=true sends the PROXY header with the client address to a proxy_protocol nginx', async () => {
    const config = await lab.writeConfig(BASE_CONFIG.replace('ports = [8080, 8081, "9000-9010"]', 'ports = [8080, 8081, 8082, "9000-9010"]'));
    const daemon = await lab.startDaemon(config);
    const r = await lab.cli(['instances', 'add', 'inst-1', '--app', 'app-1', '--ip', ADDR.backend, '--policy', '8082:pp,8081', '--config', config], { allowFail: true });
    expect(r.code).toBe(0);
    const pp = await httpGet(lab, ADDR.backend, 8082);
    expect(pp.status).toBe(200);
    expect(pp.body).toContain(`pp=${ADDR.client}:`);
    expect(pp.body).toContain(`remote=${ADDR.gatewayBackendSide}`);
    const plain = await lab.client(ADDR.backend, 8081);
    expect(sawAddress(plain)).toBe(ADDR.client);
    await daemon.waitFor('"path":"proxy"');
    daemon.child.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
  });

  it('times out a connect to a silent destination and resets the client', async () => {
    const daemon = await lab.startDaemon(await lab.writeConfig(BASE_CONFIG.replace('connect_timeout = "2s"', 'connect_timeout = "500ms"')));
    // The backend drops SYNs to 9006: the connect can only time out.
    await lab.exec(lab.ns.backend, ['nft', 'add', 'table', 'inet', 'silent']);
    await lab.exec(lab.ns.backend, ['nft', 'add', 'chain', 'inet', 'silent', 'in', '{ type filter hook input priority 0; policy accept; }']);
    await lab.exec(lab.ns.backend, ['nft', 'add', 'rule', 'inet', 'silent', 'in', 'tcp', 'dport', '9006', 'drop']);
    try {
      const r = await lab.client(ADDR.backend, 9006, { timeoutMs: 5000 });
      expect(r.connected).toBe(true);
      expect(r.error).toBe('ECONNRESET');
      await daemon.waitFor('"reason":"connect-failed"');
      expect(daemon.output()).toContain('"code":"ERR_CONNECT_TIMEOUT"');
    } finally {
      await lab.exec(lab.ns.backend, ['nft', 'delete', 'table', 'inet', 'silent'], { allowFail: true });
    }
    daemon.child.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
  });
});
