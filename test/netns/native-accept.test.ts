// The loop threads end to end: each accepts, decides from the table, connects upstream (spoofing
// the client, or with a PROXY header) and moves the bytes of its own connections.
// intercept.test.ts covers the transparent path; this file the PROXY header, the connect timeout,
// and the threads sharing one listener.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Lab, ADDR, BASE_CONFIG as BASE, ROOT, sawAddress } from './helpers/lab.js';
import { startNginx, httpGet } from './helpers/peers.js';

const BASE_CONFIG = BASE.replace('port = 15001', 'port = 15001\nthreads = 2');

describe('loop threads', () => {
  let lab: Lab;
  beforeAll(async () => {
    lab = await Lab.create();
    await startNginx(lab, lab.ns.backend, [{ port: 8082, proxyProtocol: true }]);
    await lab.startBackend([8080, 8081]);
  });
  afterEach(async () => lab?.stopDaemons());
  afterAll(async () => lab?.destroy());

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
    const line = await daemon.waitFor('"path":"proxy"');
    // The backend saw the header first and our own address with the port the log names.
    const closed = line.split('\n').map((l) => (l.includes('"path":"proxy"') ? (JSON.parse(l) as { upstreamPort: number; conn: number }) : null)).find(Boolean)!;
    expect(closed.upstreamPort).toBeGreaterThan(0);
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

  it('shares one listener between the threads: under a burst both take connections, every one keeping the client address', async () => {
    const daemon = await lab.startDaemon(await lab.writeConfig(BASE_CONFIG));
    // One listening socket per family for both threads (EPOLLEXCLUSIVE), not one each.
    const listeners = await lab.exec(lab.ns.gateway, ['ss', '-Hltn', 'sport = :15001']);
    expect(listeners.stdout.trim().split('\n').map((l) => l.trim().split(/\s+/)[3]).sort()).toEqual(['127.0.0.1:15001', '[::1]:15001']);
    for (let i = 0; i < 4; i++) expect(sawAddress(await lab.client(ADDR.backend, 8081))).toBe(ADDR.client);
    // 64 at a time: while one thread is busy with its connections, the next one wakes the other.
    const churn = await lab.exec(lab.ns.client, ['node', path.join(ROOT, 'scripts', 'peers', 'churn.mjs'), ADDR.backend, '8081', '3000', '64']);
    expect(JSON.parse(churn.stdout.trim())).toMatchObject({ done: 3000, failed: 0 });
    const closedLines = (): string[] => daemon.output().split('\n').filter((l) => l.includes('"connection closed"'));
    for (let i = 0; i < 200 && closedLines().length < 3004; i++) await new Promise((r) => setTimeout(r, 50));
    // A connection id carries the index of the thread that ran it in its low 8 bits.
    const perThread = new Map<number, number>();
    for (const l of closedLines()) {
      const t = (JSON.parse(l) as { conn: number }).conn % 256;
      perThread.set(t, (perThread.get(t) ?? 0) + 1);
    }
    expect([...perThread.keys()].sort()).toEqual([0, 1]);
    daemon.child.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
  });

  it('a refusal for an unknown policy brings a failed fetch back, so the instance opens once its agent answers', async () => {
    const config = await lab.writeConfig(`${BASE_CONFIG}
[registry.fetch]
timeout = "500ms"
max_retries = 0
backoff_initial = "200ms"
backoff_max = "300ms"
`);
    const daemon = await lab.startDaemon(config);
    const appCompose = `${JSON.stringify({ manifest_version: 2, name: 'lab-app', runner: 'docker-compose', port_policy: { ports: [{ port: 8081, pp: false }], restrict_mode: true } })}\n`;
    const composeFile = path.join(lab.dir, 'restricted-compose.json');
    await writeFile(composeFile, appCompose);
    const hash = createHash('sha256').update(appCompose).digest('hex');
    const cli = async (...args: string[]): Promise<string> => (await lab.cli(['instances', ...args, '--config', config])).stdout;
    await cli('add', 'inst-r', '--app', 'app-r', '--ip', ADDR.backend6, '--compose-hash', hash);
    // No agent yet: the one fetch fails (no retries), and connections are refused meanwhile.
    for (let i = 0; i < 50; i++) {
      const shown = JSON.parse(await cli('show', 'inst-r', '--json')) as { fetch: { state: string } | null };
      if (shown.fetch?.state === 'failed') break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const refused = await lab.client(ADDR.backend6, 8081, { timeoutMs: 3000 });
    expect(refused.error).toBe('ECONNRESET');
    await daemon.waitFor('"reason":"fetch_failed"');
    // The agent comes up. Nothing but the refused connections tells the daemon to try again.
    const agent = lab.spawn(lab.ns.backend, ['node', path.join(ROOT, 'test/netns/fixtures/fake-agent.mjs'), '8090', composeFile]);
    await agent.waitFor('ready');
    let ok = null;
    for (let i = 0; i < 40 && ok === null; i++) {
      const r = await lab.client(ADDR.backend6, 8081, { timeoutMs: 3000 });
      if (r.error === null) ok = r;
      else await new Promise((resolve) => setTimeout(resolve, 200));
    }
    expect(ok && sawAddress(ok)).toBe(ADDR.client6);
    agent.child.kill('SIGTERM');
    await agent.exited;
    daemon.child.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
  });
});
