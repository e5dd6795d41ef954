// The daemon on its SQLite registry: a damaged database stops `run` before any rule exists, a
// restart right after kill -9 finds every acknowledged registration and no lock in its way, and
// the journal of an earlier version is migrated on the first start.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, truncate, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { crc32 } from 'node:zlib';
import { createAdminClient } from '../../src/admin/client.js';
import { parsePolicyString } from '../../src/registry/policy.js';
import { Lab, BASE_CONFIG } from './helpers/lab.js';

const sha = async (file: string): Promise<string> => createHash('sha256').update(await readFile(file)).digest('hex');

describe('the daemon on its SQLite registry', () => {
  let lab: Lab;
  let config: string;
  const registryDir = () => path.join(lab.dir, 'registry');
  const db = () => path.join(registryDir(), 'registry.db');
  const admin = () => createAdminClient(path.join(lab.dir, 'admin.sock'));
  const register = (i: number) =>
    admin().addInstance({ instanceId: `i-${i}`, appId: 'app', ip: `10.7.${i >> 8}.${i & 255}`, policy: parsePolicyString('8080:pp', false) });

  beforeAll(async () => {
    lab = await Lab.create();
    config = await lab.writeConfig(BASE_CONFIG);
  });
  afterAll(async () => lab?.destroy());

  it('a restart right after kill -9 is not refused, and every acknowledged registration is there', async () => {
    const daemon = await lab.startDaemon(config);
    const acked: string[] = [];
    let stop = false;
    const writers = Array.from({ length: 4 }, async (_, w) => {
      for (let i = w; !stop; i += 4) {
        await register(i).then(
          (r) => void acked.push(r.instanceId),
          () => (stop = true), // the daemon is gone
        );
      }
    });
    while (acked.length < 300) await new Promise((r) => setTimeout(r, 5));
    daemon.child.kill('SIGKILL');
    await daemon.exited;
    stop = true;
    await Promise.all(writers);

    const again = await lab.startDaemon(config);
    const ids = new Set((await admin().listInstances()).map((r) => r.instanceId));
    for (const id of acked) expect(ids.has(id), `acknowledged ${id} lost`).toBe(true);
    again.child.kill('SIGTERM');
    expect((await again.exited).code).toBe(0);
  }, 60_000);

  it('a damaged registry.db stops run with ERR_STORE_CORRUPT naming the file; no rule is installed, the file is unchanged', async () => {
    await truncate(db(), Math.floor((await stat(db())).size / 2));
    const before = await sha(db());
    const r = await lab.cli(['run', '--config', config], { allowFail: true });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('ERR_STORE_CORRUPT');
    expect(r.stderr).toContain(db());
    expect(r.stderr).toMatch(/no rule was installed.*backup/s);
    expect((await lab.exec(lab.ns.gateway, ['nft', 'list', 'tables'])).stdout).not.toMatch(/tproxy_interceptor/);
    expect(await lab.ipRules()).not.toMatch(/fwmark/);
    expect(await sha(db())).toBe(before);
  });

  it('the journal of an earlier version is migrated on the first start', async () => {
    const dir = path.join(lab.dir, 'old-registry');
    await mkdir(dir, { mode: 0o700 });
    const line = (payload: unknown): string => {
      const text = JSON.stringify(payload);
      return `${crc32(Buffer.from(text)).toString(16).padStart(8, '0')} ${text}\n`;
    };
    const record = (id: string, ip: string) => ({
      instance_id: id, app_id: 'app', ip, compose_hash: null, reported_policy: { ports: [{ port: 8080, pp: true }], restrict_mode: false },
      policy_source: 'registration', policy_compose_hash: null, restricted: false, override: null, registered_at: 1, updated_at: 1,
    });
    await writeFile(path.join(dir, 'registry.journal'), line({ op: 'put', record: record('old-1', '10.8.0.1') }) + line({ op: 'put', record: record('old-2', '10.8.0.2') }) + line({ op: 'del', id: 'old-1' }));
    const oldConfig = await lab.writeConfig(BASE_CONFIG, 'old.toml');
    await writeFile(oldConfig, (await readFile(oldConfig, 'utf8')).replace(`path = "${registryDir()}"`, `path = "${dir}"`));
    const daemon = await lab.startDaemon(oldConfig);
    expect((await admin().listInstances()).map((r) => r.instanceId)).toEqual(['old-2']);
    const said = daemon.output().split('\n').find((l) => l.includes('registry journal migrated into registry.db'));
    expect(JSON.parse(said!)).toMatchObject({ records: 1, renamedTo: path.join(dir, 'registry.journal.migrated') });
    expect(existsSync(path.join(dir, 'registry.journal'))).toBe(false);
    expect(existsSync(path.join(dir, 'registry.journal.migrated'))).toBe(true);
    daemon.child.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
  });
});
