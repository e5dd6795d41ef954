// The attested port-policy registry end to end: one instance, 8080 pp=true behind a real
// PROXY-protocol nginx, 8081 pp=false behind a plain backend; restrict mode; learning the policy
// from a (fake) guest agent without a restart; the registry surviving a daemon restart.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Lab, ADDR, BASE_CONFIG, ROOT, sawAddress, type Proc } from './helpers/lab.js';
import { startNginx, httpGet } from './helpers/peers.js';

const CONFIG = `${BASE_CONFIG}
[registry.fetch]
timeout = "1s"
backoff_initial = "200ms"
backoff_max = "400ms"
max_retries = 50
`;

describe('attested port-policy registry', () => {
  let lab: Lab;
  let config: string;
  let daemon: Proc;
  const cli = async (...args: string[]) => {
    const r = await lab.cli(['instances', ...args, '--config', config], { allowFail: true });
    if (r.code !== 0) throw new Error(`instances ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
    return r.stdout;
  };

  beforeAll(async () => {
    lab = await Lab.create();
    await startNginx(lab, lab.ns.backend, [{ port: 8080, proxyProtocol: true }]);
    await lab.startBackend([8081]);
    config = await lab.writeConfig(CONFIG);
    daemon = await lab.startDaemon(config);
  });
  afterAll(async () => lab?.destroy());

  it('pp=true gets a PROXY header with the client address, pp=false sees the client directly', async () => {
    await cli('add', 'inst-1', '--app', 'app-1', '--ip', ADDR.backend, '--policy', '8080:pp,8081');
    const pp = await httpGet(lab, ADDR.backend, 8080);
    expect(pp.status).toBe(200);
    // nginx parsed our header: the client's address; the TCP peer is the gateway's own address.
    expect(pp.body).toContain(`pp=${ADDR.client}:`);
    expect(pp.body).toContain(`remote=${ADDR.gatewayBackendSide}`);
    const plain = await lab.client(ADDR.backend, 8081);
    expect(sawAddress(plain)).toBe(ADDR.client);
  });

  it('restrict mode refuses an unlisted port, and clearing the override restores it', async () => {
    await cli('override', 'inst-1', '--policy', '8080:pp', '--restrict');
    const refused = await lab.client(ADDR.backend, 8081, { timeoutMs: 3000 });
    expect(refused.error).toBe('ECONNRESET');
    expect(refused.saw).toBeNull();
    await daemon.waitFor('"reason":"port_not_allowed"');
    const listed = await httpGet(lab, ADDR.backend, 8080);
    expect(listed.body).toContain(`pp=${ADDR.client}:`);
    await cli('override', 'inst-1', '--clear');
    expect(sawAddress(await lab.client(ADDR.backend, 8081))).toBe(ADDR.client);
    await cli('remove', 'inst-1');
  });

  it('learns the policy from the guest agent and turns 8080 to PROXY without a restart', async () => {
    const appCompose = `${JSON.stringify({ manifest_version: 2, name: 'lab-app', runner: 'docker-compose', port_policy: { ports: [{ port: 8080, pp: true }, { port: 8081, pp: false }], restrict_mode: false } }, null, 2)}\n`;
    const composeFile = path.join(lab.dir, 'app-compose.json');
    await writeFile(composeFile, appCompose);
    const hash = createHash('sha256').update(appCompose).digest('hex');
    await cli('add', 'inst-2', '--app', 'app-2', '--ip', ADDR.backend, '--compose-hash', hash);

    // The agent is not up yet: the policy is unknown, so 8080 is transparent (pp=false) and the
    // PROXY-protocol nginx rejects the headerless request.
    const before = await httpGet(lab, ADDR.backend, 8080);
    expect(before.body).not.toContain(`pp=${ADDR.client}`);
    const shown = JSON.parse(await cli('show', 'inst-2', '--json')) as { fetch: { state: string } | null };
    expect(shown.fetch?.state).toMatch(/queued|fetching|retrying/);

    const agent = lab.spawn(lab.ns.backend, ['node', path.join(ROOT, 'test/netns/fixtures/fake-agent.mjs'), '8090', composeFile]);
    await agent.waitFor('ready');
    await agent.waitFor('POST /prpc/Info?json', 10_000);
    let body = '';
    for (let i = 0; i < 50 && !body.includes(`pp=${ADDR.client}`); i++) {
      body = (await httpGet(lab, ADDR.backend, 8080)).body;
      if (!body.includes(`pp=${ADDR.client}`)) await new Promise((r) => setTimeout(r, 100));
    }
    expect(body).toContain(`pp=${ADDR.client}:`);
    const learned = JSON.parse(await cli('show', 'inst-2', '--json')) as { fetch: { state: string }; instance: { policy_source: string } };
    expect(learned.fetch.state).toBe('learned');
    expect(learned.instance.policy_source).toBe('agent');
    agent.child.kill('SIGTERM');
    await agent.exited;
  });

  it('refuses a policy whose app_compose does not hash to the attested compose_hash', async () => {
    const appCompose = JSON.stringify({ port_policy: { ports: [{ port: 8081, pp: true }] } });
    const composeFile = path.join(lab.dir, 'evil-compose.json');
    await writeFile(composeFile, appCompose);
    const attested = createHash('sha256').update('the measured compose').digest('hex');
    await cli('add', 'inst-6', '--app', 'app-6', '--ip', ADDR.backend6, '--compose-hash', attested);
    const agent = lab.spawn(lab.ns.backend, ['node', path.join(ROOT, 'test/netns/fixtures/fake-agent.mjs'), '8090', composeFile, '--claim-hash', attested]);
    await agent.waitFor('POST /prpc/Info?json', 10_000);
    await daemon.waitFor('compose_hash_mismatch');
    const shown = JSON.parse(await cli('show', 'inst-6', '--json')) as { fetch: { state: string; last_error: { code: string } }; instance: { reported_policy: unknown } };
    expect(shown.fetch.state).toBe('failed');
    expect(shown.fetch.last_error.code).toBe('ERR_COMPOSE_HASH_MISMATCH');
    expect(shown.instance.reported_policy).toBeNull();
    // Still transparent: the unverified policy was not applied.
    expect(sawAddress(await lab.client(ADDR.backend6, 8081))).toBe(ADDR.client6);
    agent.child.kill('SIGTERM');
    await agent.exited;
  });

  it('survives a daemon restart', async () => {
    daemon.child.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
    daemon = await lab.startDaemon(config);
    const list = JSON.parse(await cli('list', '--json')) as { instances: Array<{ instance_id: string; reported_policy: unknown }> };
    expect(list.instances.map((i) => i.instance_id).sort()).toEqual(['inst-2', 'inst-6']);
    // The learned policy is back at once: no agent is running now.
    const pp = await httpGet(lab, ADDR.backend, 8080);
    expect(pp.body).toContain(`pp=${ADDR.client}:`);
    daemon.child.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
  });
});
