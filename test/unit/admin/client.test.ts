import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG } from '../../../src/config-parse.js';
import { AdminApiError, createAdminClient } from '../../../src/admin/client.js';
import { createAdminServer } from '../../../src/admin/server.js';
import type { AdminServer } from '../../../src/admin/server.js';
import type { RegistryConfig } from '../../../src/config.js';
import type { PolicyFetcher } from '../../../src/registry/fetcher.js';
import { parsePolicyString } from '../../../src/registry/policy.js';
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
const fetcherFactory = (): PolicyFetcher => ({
  enqueue: () => {},
  status: (id) =>
    id === 'i-1' ? { state: 'retrying', attempts: 2, lastError: { code: 'ERR_AGENT_CONNECT', message: 'ECONNREFUSED', permanent: false }, nextAttemptAt: 5, learnedAt: null } : undefined,
  close: async () => {},
});

let tmp: string;
let socketPath: string;
let service: RegistryService | undefined;
let server: AdminServer | undefined;

beforeEach(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'tpi-client-'));
  socketPath = path.join(tmp, 'admin.sock');
  service = undefined;
  server = undefined;
});

afterEach(async () => {
  await server?.close();
  await service?.close();
  await fs.rm(tmp, { recursive: true, force: true });
});

async function start(): Promise<void> {
  service = await createRegistryService({
    logger,
    config,
    store: createSqliteStore({ dir: path.join(tmp, 'store'), logger }),
    fetcherFactory,
    hostAddresses: () => [],
  });
  server = await createAdminServer({ logger, socketPath, service });
}

describe('admin client', () => {
  it('typed methods round-trip through the daemon', async () => {
    await start();
    const client = createAdminClient(socketPath);
    expect(await client.listInstances()).toEqual([]);

    const added = await client.addInstance({ instanceId: 'i-1', appId: 'app', ip: '10.0.0.1', composeHash: 'ab'.repeat(32) });
    expect(added).toMatchObject({ instanceId: 'i-1', reportedPolicy: null, composeHash: 'ab'.repeat(32) });
    const withEmpty = await client.addInstance({ instanceId: 'i-2', appId: 'app', ip: '10.0.0.2', policy: parsePolicyString('', false) });
    expect(withEmpty.reportedPolicy?.ports.size).toBe(0);

    const o = await client.setOverride('i-1', parsePolicyString('8443:pp', true));
    expect(o.override?.ports.get(8443)).toEqual({ pp: true });
    expect(o.override?.restrictMode).toBe(true);

    const details = await client.getInstance('i-1');
    expect(details.record).toEqual(service!.get('i-1'));
    expect(details.effectivePolicy.source).toBe('override');
    expect(details.decisions).toEqual([{ port: 8443, kind: 'proxy', reason: 'override' }]);
    expect(details.unlistedPorts).toEqual({ kind: 'refuse', reason: 'port_not_allowed' });
    expect(details.status).toEqual({ refuseAll: null, why: 'the operator override decides', action: null });
    expect(details.fetch).toEqual({
      state: 'retrying',
      attempts: 2,
      lastError: { code: 'ERR_AGENT_CONNECT', message: 'ECONNREFUSED', permanent: false },
      nextAttemptAt: 5,
      learnedAt: null,
    });

    expect((await client.clearOverride('i-1')).override).toBeNull();
    expect((await client.getInstance('i-1')).status).toMatchObject({ refuseAll: 'policy_unknown' });

    await client.setInstancePortPolicy('i-1', parsePolicyString('22', false));
    expect(await client.getInstancePortPolicy('i-1')).toEqual({
      effective: parsePolicyString('22', false),
      source: 'admin',
      instanceReported: null,
      adminOverride: parsePolicyString('22', false),
      refuseAll: null,
    });
    await client.clearInstancePortPolicy('i-1');
    expect(await client.getInstancePortPolicy('i-1')).toMatchObject({ source: 'none', effective: null, refuseAll: 'policy_unknown' });
    expect((await client.listInstances()).map((r) => r.instanceId)).toEqual(['i-1', 'i-2']);
    expect((await client.removeInstance('i-2')).instanceId).toBe('i-2');
    expect((await client.listInstances()).map((r) => r.instanceId)).toEqual(['i-1']);
  });

  it("surfaces the daemon's error code and status", async () => {
    await start();
    const client = createAdminClient(socketPath);
    const err = await client.removeInstance('missing').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AdminApiError);
    expect(err).toMatchObject({ code: 'ERR_UNKNOWN_INSTANCE', status: 404 });
    await client.addInstance({ instanceId: 'a', appId: 'app', ip: '10.0.0.1' });
    await expect(client.addInstance({ instanceId: 'b', appId: 'app', ip: '10.0.0.1' })).rejects.toMatchObject({ code: 'ERR_IP_IN_USE', status: 409 });
  });

  it('ERR_ADMIN_UNREACHABLE naming the socket when nothing is there', async () => {
    const client = createAdminClient(socketPath);
    const err = (await client.listInstances().catch((e: unknown) => e)) as Error & { code: string };
    expect(err.code).toBe('ERR_ADMIN_UNREACHABLE');
    expect(err.message).toContain(socketPath);
    expect(err.message).toContain('not running');
    expect(err.message).toContain('[registry] admin_socket');
  });

  it('ERR_ADMIN_UNREACHABLE when the socket file is stale (ECONNREFUSED)', async () => {
    spawnSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(socketPath)}, () => process.kill(process.pid, 'SIGKILL'))`]);
    const err = (await createAdminClient(socketPath).listInstances().catch((e: unknown) => e)) as Error & { code: string };
    expect(err.code).toBe('ERR_ADMIN_UNREACHABLE');
    expect(err.message).toContain('ECONNREFUSED');
  });
});
