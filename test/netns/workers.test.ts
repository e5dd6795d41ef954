// listen.workers > 1: several processes share the transparent listener (SO_REUSEPORT), each
// with a registry replica that follows the primary; a crashed worker is replaced.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, ADDR, BASE_CONFIG, sawAddress, type Proc } from './helpers/lab.js';
import { startNginx, httpGet } from './helpers/peers.js';

const CONFIG = BASE_CONFIG.replace('port = 15001', 'port = 15001\nworkers = 2');

function workerPids(output: string): Set<number> {
  const pids = new Set<number>();
  for (const line of output.split('\n')) {
    if (line.includes('"connection closed"') && line.includes('"worker"')) pids.add((JSON.parse(line) as { pid: number }).pid);
  }
  return pids;
}

describe('worker processes', () => {
  let lab: Lab;
  let config: string;
  let daemon: Proc;
  beforeAll(async () => {
    lab = await Lab.create();
    await lab.startBackend([8081]);
    await startNginx(lab, lab.ns.backend, [{ port: 8080, proxyProtocol: true }]);
    config = await lab.writeConfig(CONFIG);
    daemon = await lab.startDaemon(config);
    await daemon.waitFor('"workers ready"');
  });
  afterAll(async () => lab?.destroy());

  it('spreads connections over the workers, each keeping the client address', async () => {
    for (let i = 0; i < 16; i++) {
      expect(sawAddress(await lab.client(ADDR.backend, 8081))).toBe(ADDR.client);
    }
    expect(workerPids(daemon.output()).size).toBe(2);
  });

  it('applies registry changes made after start in every worker', async () => {
    const add = await lab.cli(['instances', 'add', 'inst-1', '--app', 'app-1', '--ip', ADDR.backend, '--policy', '8080:pp,8081', '--config', config]);
    expect(add.code).toBe(0);
    for (let i = 0; i < 8; i++) {
      const r = await httpGet(lab, ADDR.backend, 8080);
      expect(r.body).toContain(`pp=${ADDR.client}:`);
    }
    await lab.cli(['instances', 'override', 'inst-1', '--policy', '8080:pp', '--restrict', '--config', config]);
    for (let i = 0; i < 6; i++) {
      expect((await lab.client(ADDR.backend, 8081, { timeoutMs: 3000 })).error).toBe('ECONNRESET');
    }
  });

  it('replaces a worker that crashed', async () => {
    const [victim] = workerPids(daemon.output());
    process.kill(victim!, 'SIGKILL');
    await daemon.waitFor('worker exited; starting a new one');
    await daemon.waitFor(/"workers ready"[\s\S]*worker exited[\s\S]*transparent listener ready/);
    await lab.cli(['instances', 'override', 'inst-1', '--clear', '--config', config]);
    for (let i = 0; i < 8; i++) {
      expect(sawAddress(await lab.client(ADDR.backend, 8081))).toBe(ADDR.client);
    }
  });

  it('stops every worker on SIGTERM and removes the rules', async () => {
    daemon.child.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
    const pids = await lab.exec(lab.ns.gateway, ['ip', 'netns', 'pids', lab.ns.gateway], { allowFail: true });
    const left = pids.stdout.trim().split('\n').filter(Boolean);
    const nodes = await Promise.all(left.map(async (pid) => (await lab.exec(lab.ns.gateway, ['cat', `/proc/${pid}/cmdline`], { allowFail: true })).stdout));
    expect(nodes.filter((c) => c.includes('worker.js'))).toEqual([]);
    expect(await lab.nftTables()).not.toContain('inet tproxy_interceptor');
  });
});
