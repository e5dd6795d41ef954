import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG } from '../../../src/config-parse.js';
import { createAdminServer } from '../../../src/admin/server.js';
import type { AdminServer } from '../../../src/admin/server.js';
import { runInstancesCommand } from '../../../src/cli/instances.js';
import type { RegistryConfig } from '../../../src/config.js';
import type { FetchStatus, PolicyFetcher } from '../../../src/registry/fetcher.js';
import { createRegistryService } from '../../../src/registry/service.js';
import type { RegistryService } from '../../../src/registry/service.js';
import { createSqliteStore } from '../../../src/registry/sqlite-store.js';

const logger = pino({ level: 'silent' });
const config: RegistryConfig = {
  path: '',
  adminSocket: '',
  agentPort: 8090,
  trustAgentComposeHash: false,
  fetch: DEFAULT_CONFIG.registry.fetch,
};
const HASH = '0123456789abcdef'.repeat(4);

let tmp: string;
let socketPath: string;
let storeDir: string;
let service: RegistryService;
let server: AdminServer;
const fetches = new Map<string, FetchStatus>();

const fetcherFactory = (): PolicyFetcher => ({
  enqueue: (id) => void fetches.set(id, { state: 'queued', attempts: 0, lastError: null, nextAttemptAt: null, learnedAt: null }),
  status: (id) => fetches.get(id),
  close: async () => {},
});

async function startDaemon(): Promise<void> {
  service = await createRegistryService({ logger, config, store: createSqliteStore({ dir: storeDir, logger }), fetcherFactory, hostAddresses: () => [] });
  server = await createAdminServer({ logger, socketPath, service });
}

async function stopDaemon(): Promise<void> {
  await server.close();
  await service.close();
}

beforeEach(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'tpi-cli-'));
  socketPath = path.join(tmp, 'admin.sock');
  storeDir = path.join(tmp, 'store');
  fetches.clear();
  await startDaemon();
});

afterEach(async () => {
  await stopDaemon();
  await fs.rm(tmp, { recursive: true, force: true });
});

function sink(): { stream: Writable; text: () => string } {
  let buf = '';
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      buf += chunk.toString();
      cb();
    },
  });
  return { stream, text: () => buf };
}

async function run(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  return runAt(socketPath, ...argv);
}

async function runAt(sock: string, ...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const out = sink();
  const err = sink();
  const code = await runInstancesCommand(argv, { socketPath: sock, stdout: out.stream, stderr: err.stream });
  return { code, out: out.text(), err: err.text() };
}

describe('instances command', () => {
  it('add / list / show / remove', async () => {
    let r = await run('add', 'i-1', '--app', 'app-1', '--ip', '10.0.0.1', '--compose-hash', HASH.toUpperCase(), '--policy', '8080:pp,8081');
    expect(r).toMatchObject({ code: 0, err: '' });
    expect(r.out).toContain('i-1');
    expect(service.get('i-1')).toMatchObject({ appId: 'app-1', ip: '10.0.0.1', composeHash: HASH, policySource: 'registration' });

    r = await run('list');
    expect(r.code).toBe(0);
    const [header, row, ...more] = r.out.trimEnd().split('\n');
    expect(more).toEqual([]);
    expect(header).toMatch(/^INSTANCE\s+APP\s+IP\s+COMPOSE HASH\s+POLICY\s+OVERRIDE$/);
    expect(row!.split(/\s{2,}/)).toEqual(['i-1', 'app-1', '10.0.0.1', HASH.slice(0, 12), '8080:pp,8081', '-']);

    r = await run('show', 'i-1');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/compose hash\s+0123456789abcdef/);
    expect(r.out).toMatch(/reported policy\s+8080:pp,8081 \(from registration/);
    expect(r.out).toMatch(/8080\s+PROXY header \(policy\)/);
    expect(r.out).toMatch(/8081\s+transparent \(policy\)/);
    expect(r.out).toMatch(/other ports\s+transparent \(policy\)/);
    expect(r.out).toMatch(/status\s+the policy reported at registration decides/);
    expect(r.out).not.toMatch(/to change it/);
    expect(r.out).toMatch(/fetch\s+-/);

    r = await run('show', 'i-1', '--json');
    const shown = JSON.parse(r.out);
    expect(shown).toMatchObject({
      instance: { instance_id: 'i-1', reported_policy: { ports: [{ port: 8080, pp: true }, { port: 8081, pp: false }], restrict_mode: false } },
      effective_policy: { source: 'registration' },
      decisions: [
        { port: 8080, kind: 'proxy', reason: 'policy' },
        { port: 8081, kind: 'transparent', reason: 'policy' },
      ],
    });

    r = await run('remove', 'i-1');
    expect(r).toMatchObject({ code: 0, out: 'removed i-1\n' });
    expect(service.list()).toEqual([]);
    r = await run('remove', 'i-1');
    expect(r.code).toBe(1);
    expect(r.err).toContain('ERR_UNKNOWN_INSTANCE');
  });

  it('no --policy = not reported (every port refused, fetch queued); --policy "" = reported empty', async () => {
    expect((await run('add', 'quiet', '--app', 'a', '--ip', '10.0.0.1', '--compose-hash', HASH)).code).toBe(0);
    expect((await run('add', 'empty', '--app', 'a', '--ip', '10.0.0.2', '--policy', '')).code).toBe(0);
    expect(service.get('quiet')!.reportedPolicy).toBeNull();
    expect(service.get('empty')!.reportedPolicy).toMatchObject({ restrictMode: false });
    expect(service.get('empty')!.reportedPolicy!.ports.size).toBe(0);
    expect([...fetches.keys()]).toEqual(['quiet']);

    const list = JSON.parse((await run('list', '--json')).out);
    expect(list.instances.map((i: { instance_id: string; reported_policy: unknown }) => [i.instance_id, i.reported_policy])).toEqual([
      ['empty', { ports: [], restrict_mode: false }],
      ['quiet', null],
    ]);
    const table = (await run('list')).out;
    expect(table).toMatch(/^empty .*\(empty\)/m);
    expect(table).toMatch(/^quiet .*unknown/m);
    const show = (await run('show', 'quiet')).out;
    expect(show).toMatch(/reported policy\s+unknown/);
    expect(show).toMatch(/status\s+policy_unknown: every port is refused until the policy is learned/);
    expect(show).toMatch(/every port\s+refused \(policy_unknown\)/);
    expect(show).toMatch(/fetch\s+queued, 0 attempt/);
  });

  it('no --compose-hash and no --policy: refused as policy_unattested; show says why and what to do', async () => {
    const r = await run('add', 'bare', '--app', 'a', '--ip', '10.0.0.3');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/note: no --compose-hash: every port of bare is refused/);
    expect([...fetches.keys()]).toEqual([]);
    const show = (await run('show', 'bare')).out;
    expect(show).toMatch(/compose hash\s+- \(none attested\)/);
    expect(show).toMatch(/status\s+policy_unattested: every port is refused: the instance was registered without an attested compose hash/);
    expect(show).toMatch(/to change it\s+re-register it with the compose hash .*--compose-hash.*set-port-policy bare.*registry\.trust_agent_compose_hash = true/);
  });

  it('--restrict is the policy\'s restrict_mode; without --policy it is a usage error', async () => {
    expect((await run('add', 'p', '--app', 'a', '--ip', '10.0.0.1', '--policy', '443', '--restrict')).code).toBe(0);
    expect(service.get('p')!.reportedPolicy!.restrictMode).toBe(true);
    expect((await run('show', 'p')).out).toMatch(/other ports\s+refused \(port_not_allowed\)/);
    expect((await run('list')).out).toMatch(/^p .*443 \[restrict\]\s+-$/m);
    const r = await run('add', 'f', '--app', 'a', '--ip', '10.0.0.2', '--restrict');
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/--restrict goes with --policy/);
    expect(service.get('f')).toBeUndefined();
  });

  it('set-port-policy / get-port-policy / clear-port-policy (the dstack gateway\'s Set/Get/ClearInstancePortPolicy)', async () => {
    await run('add', 'i-1', '--app', 'a', '--ip', '10.0.0.1', '--compose-hash', HASH);
    let r = await run('get-port-policy', 'i-1');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/effective\s+none: every port refused \(policy_unknown\)/);
    expect(r.out).toMatch(/source\s+none/);
    r = await run('set-port-policy', 'i-1', '--policy', '8080:pp,22', '--restrict');
    expect(r).toMatchObject({ code: 0, out: 'port policy of i-1 set: 22,8080:pp [restrict]\n' });
    expect(service.decide('10.0.0.1', 8080)).toMatchObject({ kind: 'proxy', reason: 'override' });
    expect(service.decide('10.0.0.1', 80)).toMatchObject({ kind: 'refuse', reason: 'port_not_allowed' });
    r = await run('get-port-policy', 'i-1', '--json');
    expect(JSON.parse(r.out)).toEqual({
      effective: { ports: [{ port: 22, pp: false }, { port: 8080, pp: true }], restrict_mode: true },
      source: 'admin',
      instance_reported: null,
      admin_override: { ports: [{ port: 22, pp: false }, { port: 8080, pp: true }], restrict_mode: true },
      refuse_all: null,
    });
    r = await run('clear-port-policy', 'i-1');
    expect(r.code).toBe(0);
    expect(service.decide('10.0.0.1', 8080)).toMatchObject({ kind: 'refuse', reason: 'policy_unknown' });
    expect((await run('set-port-policy', 'i-1')).err).toMatch(/missing required --policy/);
    expect((await run('get-port-policy', 'nope')).err).toContain('ERR_UNKNOWN_INSTANCE');
  });

  it('override --policy, then --clear', async () => {
    await run('add', 'i-1', '--app', 'a', '--ip', '10.0.0.1', '--policy', '80');
    let r = await run('override', 'i-1', '--policy', '8443:pp', '--restrict');
    expect(r.code).toBe(0);
    expect(service.get('i-1')!.override).toMatchObject({ restrictMode: true });
    expect(service.decide('10.0.0.1', 8443)).toMatchObject({ kind: 'proxy', reason: 'override' });
    expect((await run('list')).out).toMatch(/^i-1 .*80\s+8443:pp \[restrict\]$/m);
    expect((await run('show', 'i-1')).out).toMatch(/effective policy\s+8443:pp \[restrict\] \(override\)/);

    r = await run('override', 'i-1', '--clear');
    expect(r.code).toBe(0);
    expect(service.get('i-1')!.override).toBeNull();
    expect((await run('override', 'nope', '--clear')).err).toContain('ERR_UNKNOWN_INSTANCE');
  });

  it('the registry survives a daemon restart (file store)', async () => {
    await run('add', 'i-1', '--app', 'a', '--ip', '10.0.0.1', '--policy', '80:pp');
    await run('override', 'i-1', '--policy', '22');
    await stopDaemon();
    await startDaemon();
    expect(service.get('i-1')).toMatchObject({ appId: 'a', override: { restrictMode: false } });
    expect((await run('list')).out).toMatch(/^i-1 .*80:pp\s+22$/m);
  });

  it('bad input: exit 2, the problem and the usage on stderr, nothing sent', async () => {
    await run('add', 'keep', '--app', 'a', '--ip', '10.0.0.9');
    const before = service.list();
    const cases: [string[], RegExp][] = [
      [['add', 'i-1', '--app', 'a', '--ip', '10.0.0.1', '--policy', '8080:xx'], /8080:xx.*flag must be/],
      [['add', 'i-1', '--app', 'a', '--ip', '10.0.0.1', '--policy', '70000'], /1\.\.65535/],
      [['add', 'i-1', '--app', 'a', '--ip', '10.0.0.1', '--policy', '80,,81'], /empty item/],
      [['add', 'i-1', '--ip', '10.0.0.1'], /missing required --app/],
      [['add', 'i-1', '--app', 'a'], /missing required --ip/],
      [['add', '--app', 'a', '--ip', '10.0.0.1'], /missing <instance_id>/],
      [['add', 'i-1', 'extra', '--app', 'a', '--ip', '10.0.0.1'], /unexpected argument "extra"/],
      [['add', 'i-1', '--app', 'a', '--ip', '10.0.0.256'], /--ip: not an IPv4 or IPv6/],
      [['add', 'i-1', '--app', 'bad app', '--ip', '10.0.0.1'], /--app: must be 1\.\.128 characters/],
      [['add', 'i-1', '--app', 'a', '--ip', '10.0.0.1', '--compose-hash', 'abc'], /--compose-hash/],
      [['add', 'bad id', '--app', 'a', '--ip', '10.0.0.1'], /<instance_id>/],
      [['add', 'i-1', '--app', 'a', '--ip', '10.0.0.1', '--bogus'], /--bogus/],
      [['list', '--yaml'], /--yaml/],
      [['show'], /missing <instance_id>/],
      [['override', 'i-1'], /missing --policy \(or --clear\)/],
      [['override', 'i-1', '--clear', '--policy', '80'], /exclude each other/],
      [['override', 'i-1', '--policy', 'x'], /port must be/],
      [['frobnicate'], /unknown command "frobnicate"/],
      [[], /missing command/],
    ];
    for (const [argv, problem] of cases) {
      const r = await run(...argv);
      expect({ argv, code: r.code, out: r.out }).toEqual({ argv, code: 2, out: '' });
      expect(r.err).toMatch(problem);
      expect(r.err).toMatch(/usage:/);
    }
    expect(service.list()).toEqual(before);
    // Validated before contacting anyone: the same mistakes give 2, not "unreachable", with no daemon.
    const r = await runAt(path.join(tmp, 'nothing-here.sock'), 'add', 'i-1', '--app', 'a', '--ip', '10.0.0.1', '--policy', '8080:xx');
    expect(r.code).toBe(2);
    expect(r.err).not.toContain('ERR_ADMIN_UNREACHABLE');
  });

  it('--help prints usage and exits 0', async () => {
    const r = await run('--help');
    expect(r.code).toBe(0);
    expect(r.out).toContain('instances add <instance_id>');
    expect((await run('add', '--help')).out).toMatch(/^usage: .* add /);
  });

  it('daemon errors: exit 1 with the code', async () => {
    await run('add', 'i-1', '--app', 'a', '--ip', '10.0.0.1');
    const r = await run('add', 'i-2', '--app', 'a', '--ip', '10.0.0.1');
    expect(r.code).toBe(1);
    expect(r.err).toContain('ERR_IP_IN_USE');
    expect(r.err).toContain('i-1');
    expect((await run('show', 'nope')).code).toBe(1);
    // The address rule needs the daemon's view of the host: checked there.
    const bad = await run('add', 'i-3', '--app', 'a', '--ip', '0.0.0.0');
    expect(bad.code).toBe(1);
    expect(bad.err).toMatch(/ERR_INVALID_REGISTRATION: registration: ip: 0\.0\.0\.0 is not a unicast host address/);
  });

  it('daemon not running: ERR_ADMIN_UNREACHABLE naming the socket, exit 1', async () => {
    await stopDaemon();
    const r = await run('list');
    expect(r.code).toBe(1);
    expect(r.err).toContain('ERR_ADMIN_UNREACHABLE');
    expect(r.err).toContain(socketPath);
    expect(r.err).toContain('not running');
    expect(r.err).toContain('[registry] admin_socket');
    await startDaemon(); // for afterEach
  });
});
