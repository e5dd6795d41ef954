// The attested port-policy registry end to end, row by row of the decision table: a PROXY-protocol
// nginx on 8080 and a plain backend on 8081 at several instance addresses, fake guest agents
// serving app-compose documents (well-formed, malformed, forged, 40 MiB), and a client.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Lab, ADDR, BASE_CONFIG, ROOT, sawAddress, type Proc } from './helpers/lab.js';
import { startNginx, httpGet } from './helpers/peers.js';

const FETCH = `
[registry.fetch]
timeout = "20s"
backoff_initial = "200ms"
backoff_max = "400ms"
max_retries = 50
`;
const CONFIG = `${BASE_CONFIG}${FETCH}`;

/** Extra instance addresses on the backend host, each an instance of its own. */
const AT = {
  down: '198.18.2.11',
  topLevel: '198.18.2.12',
  ppYes: '198.18.2.13',
  port70000: '198.18.2.14',
  nullPolicy: '198.18.2.15',
  unattested: '198.18.2.16',
  big: '198.18.2.17',
  trusted: '198.18.2.18',
} as const;

const sha256 = (text: string): string => createHash('sha256').update(text).digest('hex');
const compose = (extra: Record<string, unknown>): string =>
  `${JSON.stringify({ manifest_version: 2, name: 'lab-app', runner: 'docker-compose', ...extra }, null, 2)}\n`;
const POLICY_8080_PP = { port_policy: { ports: [{ port: 8080, pp: true }, { port: 8081, pp: false }], restrict_mode: false } };

interface Shown {
  instance: { reported_policy: unknown; policy_source: string | null };
  status: { refuse_all: string | null; why: string; action: string | null };
  fetch: { state: string; attempts: number; last_error: { code: string; message: string; permanent: boolean } | null } | null;
}

describe('attested port-policy registry', () => {
  let lab: Lab;
  let config: string;
  let daemon: Proc;
  const cli = async (...args: string[]): Promise<string> => {
    const r = await lab.cli(['instances', ...args, '--config', config], { allowFail: true });
    if (r.code !== 0) throw new Error(`instances ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
    return r.stdout;
  };
  const show = async (id: string): Promise<Shown> => JSON.parse(await cli('show', id, '--json')) as Shown;
  const until = async (what: string, check: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> => {
    const deadline = Date.now() + timeoutMs;
    while (!(await check())) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 150));
    }
  };
  const writeCompose = async (name: string, text: string): Promise<string> => {
    const file = path.join(lab.dir, name);
    await writeFile(file, text);
    return file;
  };
  const startAgent = async (bindings: Record<string, string>, extra: string[] = []): Promise<Proc> => {
    const agent = lab.spawn(lab.ns.backend, [
      'node',
      path.join(ROOT, 'test/netns/fixtures/fake-agent.mjs'),
      '8090',
      ...Object.entries(bindings).map(([addr, file]) => `${addr}=${file}`),
      ...extra,
    ]);
    await agent.waitFor('ready');
    return agent;
  };
  const stop = async (p: Proc): Promise<void> => {
    p.child.kill('SIGTERM');
    await p.exited;
  };
  /** A connection to an instance refused by the registry: reset, nothing reached the backend. */
  const expectRefused = async (host: string, port: number, reason: string): Promise<void> => {
    const r = await lab.client(host, port, { timeoutMs: 3000 });
    expect(r.error, `${host}:${port}`).toBe('ECONNRESET');
    expect(r.saw).toBeNull();
    await daemon.waitFor(new RegExp(`"dst":"${host.replace(/\./g, '\\.')}:${port}"[^\\n]*"decision":"${reason}"`));
  };

  beforeAll(async () => {
    lab = await Lab.create();
    for (const addr of Object.values(AT)) await lab.exec(lab.ns.backend, ['ip', 'addr', 'add', `${addr}/24`, 'dev', 'eth0']);
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
    // Not a registered instance: transparent, as upstream.
    const other = await lab.client('198.18.2.99', 8081, { timeoutMs: 3000 });
    expect(other.saw).toBeNull();
    await daemon.waitFor(/"dst":"198\.18\.2\.99:8081"[^\n]*"path":"transparent","decision":"unregistered"/);
  });

  it('restrict mode refuses an unlisted port (port_not_allowed); set-port-policy and clear-port-policy as upstream names them', async () => {
    await cli('set-port-policy', 'inst-1', '--policy', '8080:pp', '--restrict');
    await expectRefused(ADDR.backend, 8081, 'port_not_allowed');
    const listed = await httpGet(lab, ADDR.backend, 8080);
    expect(listed.body).toContain(`pp=${ADDR.client}:`);
    const view = JSON.parse(await cli('get-port-policy', 'inst-1', '--json')) as { source: string };
    expect(view.source).toBe('admin');
    await cli('clear-port-policy', 'inst-1');
    expect(sawAddress(await lab.client(ADDR.backend, 8081))).toBe(ADDR.client);
    await cli('remove', 'inst-1');
  });

  it('agent down: every port refused (policy_unknown, then fetch_failed), admitted once the agent answers', async () => {
    const text = compose(POLICY_8080_PP);
    const file = await writeCompose('down.json', text);
    await cli('add', 'inst-down', '--app', 'app', '--ip', AT.down, '--compose-hash', sha256(text));
    await expectRefused(AT.down, 8081, '(policy_unknown|fetch_failed)');
    await until('the fetch to fail', async () => (await show('inst-down')).status.refuse_all === 'fetch_failed');
    const shown = await show('inst-down');
    expect(shown.fetch?.last_error).toMatchObject({ code: 'ERR_AGENT_CONNECT', permanent: false });
    expect(shown.status.why).toContain(`guest agent at ${AT.down}`);
    await expectRefused(AT.down, 8081, 'fetch_failed');
    const nginx = await httpGet(lab, AT.down, 8080, 3000);
    expect(nginx.status).toBeNull();

    const agent = await startAgent({ [AT.down]: file });
    await until('the policy to be learned', async () => (await show('inst-down')).status.refuse_all === null);
    expect((await httpGet(lab, AT.down, 8080)).body).toContain(`pp=${ADDR.client}:`);
    expect(sawAddress(await lab.client(AT.down, 8081))).toBe(ADDR.client);
    await stop(agent);
  });

  it('a compose with only a top-level "ports" array (never read upstream): open policy, no header on any port', async () => {
    const text = compose({ ports: [{ port: 8080, pp: true }, { port: 8081, pp: true }] });
    const agent = await startAgent({ [AT.topLevel]: await writeCompose('top-level.json', text) });
    await cli('add', 'inst-top', '--app', 'app', '--ip', AT.topLevel, '--compose-hash', sha256(text));
    await until('the policy to be learned', async () => (await show('inst-top')).fetch?.state === 'learned');
    const shown = await show('inst-top');
    expect(shown.instance).toMatchObject({ reported_policy: { ports: [], restrict_mode: false }, policy_source: 'agent' });
    // No header: the client's own bytes reach the backend, which sees the client as its peer.
    const plain = await lab.client(AT.topLevel, 8081);
    expect(sawAddress(plain)).toBe(ADDR.client);
    expect(plain.echoIntact).toBe(true);
    // The PROXY-protocol nginx gets a bare HTTP request, which it refuses.
    const nginx = await httpGet(lab, AT.topLevel, 8080);
    expect(nginx.body).not.toContain(`pp=${ADDR.client}`);
    await daemon.waitFor(new RegExp(`"dst":"${AT.topLevel.replace(/\./g, '\\.')}:8080"[^\\n]*"path":"transparent","decision":"policy"`));
    await stop(agent);
  });

  it('malformed policies ("pp": "yes", port 70000, port_policy: null) fail the whole document: permanent, every port refused', async () => {
    const docs = {
      ppYes: compose({ port_policy: { ports: [{ port: 8080, pp: true }, { port: 8081, pp: 'yes' }] } }),
      port70000: compose({ port_policy: { ports: [{ port: 8081 }, { port: 70000 }] } }),
      nullPolicy: compose({ port_policy: null }),
    };
    const fields = { ppYes: 'port_policy.ports[1].pp', port70000: 'port_policy.ports[1].port', nullPolicy: 'port_policy' };
    const bindings: Record<string, string> = {};
    for (const [name, text] of Object.entries(docs)) bindings[AT[name as keyof typeof docs]] = await writeCompose(`${name}.json`, text);
    const agent = await startAgent(bindings);
    for (const [name, text] of Object.entries(docs)) {
      await cli('add', `inst-${name}`, '--app', 'app', '--ip', AT[name as keyof typeof docs], '--compose-hash', sha256(text));
    }
    for (const name of Object.keys(docs) as (keyof typeof docs)[]) {
      await until(`${name} to fail`, async () => (await show(`inst-${name}`)).fetch?.state === 'failed');
      const shown = await show(`inst-${name}`);
      // Permanent: one attempt, no retries (a refused connection asks again after backoff_max).
      expect(shown.fetch).toMatchObject({ state: 'failed', attempts: 1 });
      expect(shown.fetch?.last_error).toMatchObject({ code: 'ERR_COMPOSE_INVALID', permanent: true });
      expect(shown.fetch?.last_error?.message).toContain(fields[name]);
      expect(shown.status.refuse_all).toBe('fetch_failed');
      await expectRefused(AT[name], 8081, 'fetch_failed');
    }
    await stop(agent);
  });

  it('an unattested registration is refused (policy_unattested) and not fetched; show says why and what to do', async () => {
    const text = compose(POLICY_8080_PP);
    const agent = await startAgent({ [AT.unattested]: await writeCompose('unattested.json', text) });
    const added = await cli('add', 'inst-unattested', '--app', 'app', '--ip', AT.unattested);
    expect(added).toContain('note: no --compose-hash');
    await expectRefused(AT.unattested, 8081, 'policy_unattested');
    await expectRefused(AT.unattested, 8080, 'policy_unattested');
    const text_ = await cli('show', 'inst-unattested');
    expect(text_).toMatch(/status\s+policy_unattested: every port is refused: the instance was registered without an attested compose hash/);
    expect(text_).toMatch(/to change it\s+.*--compose-hash.*set-port-policy inst-unattested.*registry\.trust_agent_compose_hash = true/);
    expect(agent.output()).not.toContain('request ');
    // The operator opens it.
    await cli('set-port-policy', 'inst-unattested', '--policy', '8081');
    expect(sawAddress(await lab.client(AT.unattested, 8081))).toBe(ADDR.client);
    await stop(agent);
  });

  it('learns a 40 MiB compose from the guest agent and turns 8080 to PROXY without a restart', async () => {
    const line = '      command: ["sh", "-c", "echo \\"hello\\" && sleep 1"]\n';
    const yaml = `services:\n  web:\n${line.repeat(Math.ceil((40 * 1024 * 1024) / line.length))}`;
    const text = compose({ docker_compose_file: yaml, ...POLICY_8080_PP });
    expect(text.length).toBeGreaterThan(40 * 1024 * 1024);
    const agent = await startAgent({ [AT.big]: await writeCompose('big.json', text) });
    await cli('add', 'inst-big', '--app', 'app', '--ip', AT.big, '--compose-hash', sha256(text));
    await until('the 40 MiB policy to be learned', async () => (await show('inst-big')).fetch?.state === 'learned', 50_000);
    expect((await httpGet(lab, AT.big, 8080)).body).toContain(`pp=${ADDR.client}:`);
    expect(sawAddress(await lab.client(AT.big, 8081))).toBe(ADDR.client);
    await stop(agent);
  }, 90_000);

  it('refuses a policy whose app_compose does not hash to the attested compose_hash', async () => {
    const text = compose({ port_policy: { ports: [{ port: 8081, pp: true }] } });
    const attested = sha256('the measured compose');
    await cli('add', 'inst-6', '--app', 'app-6', '--ip', ADDR.backend6, '--compose-hash', attested);
    const agent = await startAgent({ [ADDR.backend6]: await writeCompose('evil-compose.json', text) }, ['--claim-hash', attested]);
    await daemon.waitFor('compose_hash_mismatch');
    const shown = await show('inst-6');
    expect(shown.fetch).toMatchObject({ state: 'failed', last_error: { code: 'ERR_COMPOSE_HASH_MISMATCH' } });
    expect(shown.instance.reported_policy).toBeNull();
    // The unverified policy was not applied, and nothing else was either: refused.
    await expectRefused(ADDR.backend6, 8081, 'fetch_failed');
    await stop(agent);
  });

  it('survives a daemon restart; with trust_agent_compose_hash an unattested instance learns from its agent', async () => {
    const text = compose(POLICY_8080_PP);
    const agent = await startAgent({ [AT.trusted]: await writeCompose('trusted.json', text) });
    await cli('add', 'inst-trusted', '--app', 'app', '--ip', AT.trusted);
    await expectRefused(AT.trusted, 8081, 'policy_unattested');

    daemon.child.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
    // The same store and socket; the registry now takes an agent's own compose hash.
    config = await lab.writeConfig(CONFIG, 'trusting.toml');
    await writeFile(config, (await readFile(config, 'utf8')).replace('[registry]\n', '[registry]\ntrust_agent_compose_hash = true\n'));
    daemon = await lab.startDaemon(config);
    const list = JSON.parse(await cli('list', '--json')) as { instances: Array<{ instance_id: string }> };
    expect(list.instances.map((i) => i.instance_id)).toContain('inst-big');
    // The learned policy is back at once, with no agent running.
    expect((await httpGet(lab, AT.big, 8080)).body).toContain(`pp=${ADDR.client}:`);
    await until('the trusted policy to be learned', async () => (await show('inst-trusted')).fetch?.state === 'learned');
    expect((await httpGet(lab, AT.trusted, 8080)).body).toContain(`pp=${ADDR.client}:`);
    await stop(agent);
    daemon.child.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
  });
});
