// The daemon's own admin routes (POST /v1/reload, GET /v1/status) as the client and the CLI use
// them: the daemon's answer through, its refusals with their code and HTTP status.
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createAdminClient } from '../../../src/admin/client.js';
import type { AdminDaemon } from '../../../src/admin/routes.js';
import { createAdminServer, type AdminServer } from '../../../src/admin/server.js';
import type { WireDaemonStatus } from '../../../src/admin/wire.js';
import { DEFAULT_CONFIG } from '../../../src/config-parse.js';
import { InterceptorError } from '../../../src/errors.js';
import { createRegistryService, type RegistryService } from '../../../src/registry/service.js';
import { createSqliteStore } from '../../../src/registry/sqlite-store.js';

const logger = pino({ level: 'silent' });
let tmp: string;
let service: RegistryService;
let server: AdminServer;
const limits: number[] = [];
let reloadResult: () => Promise<{ config: string; changed: string[]; firewall: boolean }>;

const STATUS = { config: '/etc/x.toml', live: 0, connections: [], engine: { threads: 2 } } as unknown as WireDaemonStatus;
const daemon: AdminDaemon = {
  reload: () => reloadResult(),
  status: async (limit) => {
    limits.push(limit);
    return STATUS;
  },
};

beforeEach(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'tpi-admin-daemon-'));
  service = await createRegistryService({ logger, config: DEFAULT_CONFIG.registry, store: createSqliteStore({ dir: tmp, logger }), fetcherFactory: () => ({ enqueue: () => {}, status: () => undefined, close: async () => {} }), hostAddresses: () => [] });
  server = await createAdminServer({ logger, socketPath: path.join(tmp, 'admin.sock'), service, daemon });
  limits.length = 0;
});

afterEach(async () => {
  await server.close();
  await service.close();
  await fs.rm(tmp, { recursive: true, force: true });
});

describe('daemon routes', () => {
  const client = () => createAdminClient(path.join(tmp, 'admin.sock'));

  it('reload: the daemon\'s result, or its refusal with code and status', async () => {
    reloadResult = async () => ({ config: '/etc/x.toml', changed: ['intercept.targets'], firewall: true });
    expect(await client().reload()).toEqual({ config: '/etc/x.toml', changed: ['intercept.targets'], firewall: true });
    reloadResult = async () => {
      throw new InterceptorError('ERR_RELOAD_RESTART_REQUIRED', 'listen.port changed, which only a restart applies');
    };
    await expect(client().reload()).rejects.toMatchObject({ code: 'ERR_RELOAD_RESTART_REQUIRED', status: 409, message: expect.stringMatching(/listen\.port/) });
  });

  it('status: the limit per thread (default 1000), a bad one refused', async () => {
    expect(await client().status()).toEqual(STATUS);
    await client().status(0);
    await client().status(7);
    expect(limits).toEqual([1000, 0, 7]);
    await expect(createAdminClient(path.join(tmp, 'admin.sock')).status(1_000_001)).rejects.toMatchObject({ code: 'ERR_BAD_REQUEST', status: 400 });
  });
});
