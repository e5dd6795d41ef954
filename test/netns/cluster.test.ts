// Two interceptor nodes on one etcd. Each node is the gateway of its own lab (client, gateway,
// backend: the same addresses in separate namespaces), as if a load balancer spread clients over
// two gateways in front of the same instances; both gateways reach etcd, which runs in a namespace
// of its own (scripts/cluster-lab.sh). Real etcd, real daemons, real peers: nothing is mocked.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { Lab, ADDR, BASE_CONFIG, ROOT, sawAddress, type Proc } from './helpers/lab.js';
import { startNginx, httpGet } from './helpers/peers.js';
import { startEtcd, type EtcdServer } from '../helpers/etcd.js';

const execFileP = promisify(execFile);
const CLUSTER_LAB = path.join(ROOT, 'scripts', 'cluster-lab.sh');

const config = (node: number): string => `${BASE_CONFIG}
[registry.fetch]
timeout = "3s"
backoff_initial = "200ms"
backoff_max = "400ms"
max_retries = 50

[registry.etcd]
endpoints = ["http://198.19.${node}.2:2379"]
prefix = "/lab/"
timeout = "1s"
`;

const APP_COMPOSE = `${JSON.stringify({ manifest_version: 2, name: 'lab-app', runner: 'docker-compose', port_policy: { ports: [{ port: 8080, pp: true }, { port: 8081, pp: false }], restrict_mode: false } }, null, 2)}\n`;
const HASH = createHash('sha256').update(APP_COMPOSE).digest('hex');

interface Node {
  lab: Lab;
  config: string;
  daemon: Proc;
}

async function eventually<T>(what: string, probe: () => Promise<T>, ok: (v: T) => boolean, timeoutMs = 15_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (ok(v)) return v;
    if (Date.now() > end) throw new Error(`timed out waiting until ${what}; last: ${JSON.stringify(v)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('two interceptor nodes on one etcd', () => {
  let a: Node;
  let b: Node;
  let etcd: EtcdServer;
  let etcdNs: string;
  const labs: Lab[] = [];

  const cli = async (n: Node, ...args: string[]) => n.lab.cli(['instances', ...args, '--config', n.config], { allowFail: true });
  const ok = async (n: Node, ...args: string[]): Promise<string> => {
    const r = await cli(n, ...args);
    if (r.code !== 0) throw new Error(`instances ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
    return r.stdout;
  };
  const list = async (n: Node) => JSON.parse(await ok(n, 'list', '--json')) as { instances: Array<Record<string, unknown>>; store: { kind: string; state: string } };
  /** What a client of node n gets from the PROXY-protocol nginx on 8080: the client address if a header came. */
  const pp = async (n: Node) => (await httpGet(n.lab, ADDR.backend, 8080)).body;

  beforeAll(async () => {
    labs.push(await Lab.create(), await Lab.create());
    etcdNs = `${labs[0]!.prefix}-e`;
    await execFileP('bash', [CLUSTER_LAB, 'up', etcdNs, labs[0]!.ns.gateway, labs[1]!.ns.gateway]);
    etcd = await startEtcd({ ns: etcdNs, advertise: '198.19.1.2' });
    const nodes: Node[] = [];
    for (const [i, lab] of labs.entries()) {
      await startNginx(lab, lab.ns.backend, [{ port: 8080, proxyProtocol: true }]);
      await lab.startBackend([8081]);
      const file = await lab.writeConfig(config(i + 1), 'config.toml', 'store = "etcd"');
      nodes.push({ lab, config: file, daemon: await lab.startDaemon(file) });
    }
    [a, b] = nodes as [Node, Node];
  }, 120_000);

  afterAll(async () => {
    for (const lab of labs) await lab.stopDaemons();
    await etcd?.destroy();
    if (etcdNs) await execFileP('bash', [CLUSTER_LAB, 'down', etcdNs]);
    for (const lab of labs) await lab.destroy();
  });

  it('a registration through node A decides connections at node B', async () => {
    await ok(a, 'add', 'inst-1', '--app', 'app-1', '--ip', ADDR.backend, '--policy', '8080:pp,8081');
    expect(await eventually('B sends a PROXY header on 8080', () => pp(b), (body) => body.includes(`pp=${ADDR.client}:`))).toContain(`remote=${ADDR.gatewayBackendSide}`);
    expect(sawAddress(await b.lab.client(ADDR.backend, 8081))).toBe(ADDR.client);
    expect((await list(b)).instances.map((i) => i['instance_id'])).toEqual(['inst-1']);
  });

  it('an override set on node B is in force at node A', async () => {
    await ok(b, 'override', 'inst-1', '--policy', '8080:pp', '--restrict');
    const refused = await eventually('A refuses 8081', () => a.lab.client(ADDR.backend, 8081, { timeoutMs: 3000 }), (r) => r.error === 'ECONNRESET');
    expect(refused.saw).toBeNull();
    await ok(b, 'override', 'inst-1', '--clear');
    await eventually('A lets 8081 through again', () => a.lab.client(ADDR.backend, 8081), (r) => r.error === null && sawAddress(r) === ADDR.client);
    await ok(a, 'remove', 'inst-1');
  });

  it('a policy learned by one node is used by the other without a second fetch', async () => {
    const agents: Proc[] = [];
    for (const n of [a, b]) {
      const file = path.join(n.lab.dir, 'app-compose.json');
      await writeFile(file, APP_COMPOSE);
      // Slow to answer, so that B asks while A's fetch is in flight.
      const agent = n.lab.spawn(n.lab.ns.backend, ['node', path.join(ROOT, 'test/netns/fixtures/fake-agent.mjs'), '8090', file, '--delay-ms', '1000']);
      await agent.waitFor('ready');
      agents.push(agent);
    }
    await eventually('B no longer has inst-1', () => list(b), (l) => l.instances.length === 0);
    await ok(a, 'add', 'inst-2', '--app', 'app-2', '--ip', ADDR.backend, '--compose-hash', HASH);
    // Clients at both nodes at once: both nodes want the policy.
    await Promise.all([pp(a), pp(b)]);
    for (const n of [a, b]) await eventually('the learned policy decides', () => pp(n), (body) => body.includes(`pp=${ADDR.client}:`));
    const fetches = agents.reduce((sum, agent) => sum + (agent.output().match(/^request \d+ POST \/prpc\/Info/gm)?.length ?? 0), 0);
    expect(fetches).toBe(1);
    const atB = JSON.parse(await ok(b, 'show', 'inst-2', '--json')) as { instance: unknown; fetch: unknown };
    expect(atB.instance).toMatchObject({ policy_source: 'agent', policy_compose_hash: HASH });
    // B wanted it too, waited for A's claim, and took A's result: learned without an attempt.
    expect(atB.fetch).toMatchObject({ state: 'learned', attempts: 0 });
    for (const agent of agents) {
      agent.child.kill('SIGTERM');
      await agent.exited;
    }
  });

  it('etcd stopped while both serve: decisions go on, writes fail cleanly; restarted: nothing lost', async () => {
    const before = await list(a);
    await etcd.stop();
    for (const n of [a, b]) {
      await eventually('the node says etcd is unreachable', () => ok(n, 'list'), (out) => /^store: etcd unreachable since /m.test(out));
      await n.daemon.waitFor('etcd unreachable');
      expect(await pp(n)).toContain(`pp=${ADDR.client}:`);
      expect(sawAddress(await n.lab.client(ADDR.backend, 8081))).toBe(ADDR.client);
    }
    const writes = [
      await cli(a, 'add', 'inst-3', '--app', 'app-3', '--ip', '198.18.2.3', '--policy', '8081'),
      await cli(b, 'override', 'inst-2', '--policy', '8081', '--restrict'),
      await cli(b, 'remove', 'inst-2'),
    ];
    for (const w of writes) {
      expect(w.code).toBe(1);
      expect(w.stderr).toMatch(/ERR_STORE_UNAVAILABLE: .*nothing was written/);
    }
    expect((await list(a)).instances).toEqual(before.instances);
    expect((await list(b)).instances).toEqual(before.instances);

    await etcd.restart();
    for (const n of [a, b]) {
      const back = await eventually('the node follows etcd again', () => list(n), (l) => l.store.state === 'ok');
      expect(back.instances).toEqual(before.instances);
      await n.daemon.waitFor('etcd reachable again');
    }
    await ok(b, 'add', 'inst-3', '--app', 'app-3', '--ip', '198.18.2.3', '--policy', '8081');
    await eventually('A sees the write made after the restart', () => list(a), (l) => l.instances.length === 2);
  });

  it('a node cut off while the others write, past a compaction, reloads the whole registry', async () => {
    await b.lab.exec(b.lab.ns.gateway, ['ip', 'link', 'set', 'etcd0', 'down']);
    await eventually('B says etcd is unreachable', () => list(b), (l) => l.store.state === 'unreachable');
    await ok(a, 'remove', 'inst-3');
    await ok(a, 'override', 'inst-2', '--policy', '8080:pp', '--restrict');
    await ok(a, 'add', 'inst-4', '--app', 'app-4', '--ip', '198.18.2.4', '--policy', '8080');
    const compacted = await a.lab.exec(etcdNs, ['node', path.join(ROOT, 'test/netns/fixtures/etcd-compact.mjs'), 'http://127.0.0.1:2379']);
    expect(compacted.stdout).toMatch(/^compacted at revision \d+/);
    await b.lab.exec(b.lab.ns.gateway, ['ip', 'link', 'set', 'etcd0', 'up']);

    await b.daemon.waitFor('registry reloaded from etcd', 30_000);
    const atA = await list(a);
    await eventually('B matches A', () => list(b), (l) => JSON.stringify(l.instances) === JSON.stringify(atA.instances) && l.store.state === 'ok');
    const refused = await b.lab.client(ADDR.backend, 8081, { timeoutMs: 3000 });
    expect(refused.error).toBe('ECONNRESET');
    expect(await pp(b)).toContain(`pp=${ADDR.client}:`);
  }, 90_000);

  it('both nodes stop cleanly on SIGTERM', async () => {
    for (const n of [a, b]) {
      n.daemon.child.kill('SIGTERM');
      expect((await n.daemon.exited).code).toBe(0);
    }
  });
});
