// The SQLite store on a real file: durability across kill -9, damage detection, locking, and the
// one-time migration of the journal that earlier versions kept.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, statSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { crc32 } from 'node:zlib';
import Database from 'better-sqlite3';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { JOURNAL_FILE, tableCrc32 } from '../../../src/registry/journal.js';
import { serializeInstance } from '../../../src/registry/policy.js';
import { createSqliteStore, DB_FILE, MIGRATED_JOURNAL_FILE } from '../../../src/registry/sqlite-store.js';
import type { RegistryStore } from '../../../src/registry/store.js';
import type { InstanceRecord } from '../../../src/registry/types.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, '../../..');

type Line = { level: number; msg: string } & Record<string, unknown>;
function captureLogger(): { logger: pino.Logger; lines: () => Line[] } {
  const out: string[] = [];
  const logger = pino({ level: 'debug' }, { write: (s: string) => void out.push(s) });
  return { logger, lines: () => out.map((s) => JSON.parse(s) as Line) };
}

const silent = pino({ level: 'silent' });

function rec(id: string, ip: string, extra: Partial<InstanceRecord> = {}): InstanceRecord {
  return {
    instanceId: id,
    appId: 'app-1',
    ip,
    composeHash: null,
    reportedPolicy: null,
    policySource: null,
    policyComposeHash: null,
    restricted: false,
    override: null,
    registeredAt: 1_700_000_000_000,
    updatedAt: 1_700_000_000_000,
    ...extra,
  };
}

const withPolicy = (id: string, ip: string): InstanceRecord =>
  rec(id, ip, {
    composeHash: 'cd'.repeat(32),
    reportedPolicy: { ports: new Map([[8080, { pp: true }], [443, { pp: false }]]), restrictMode: true },
    policySource: 'agent',
    policyComposeHash: 'cd'.repeat(32),
    restricted: true,
    override: { ports: new Map([[22, { pp: false }]]), restrictMode: false },
  });

const wire = (records: InstanceRecord[]): unknown[] =>
  records.map((r) => serializeInstance(r)).sort((a, b) => a.instance_id.localeCompare(b.instance_id));

let tmp: string;
const opened: RegistryStore[] = [];

beforeEach(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'tpi-store-'));
});

afterEach(async () => {
  for (const s of opened.splice(0)) await s.close().catch(() => {});
  await fs.rm(tmp, { recursive: true, force: true });
});

function open(dir: string, logger: pino.Logger = silent): RegistryStore {
  const s = createSqliteStore({ dir, logger });
  opened.push(s);
  return s;
}

async function putAll(dir: string, records: InstanceRecord[]): Promise<void> {
  const s = open(dir);
  await s.load();
  for (const r of records) await s.put(r);
  await s.close();
}

const sha = async (file: string): Promise<string> => createHash('sha256').update(await fs.readFile(file)).digest('hex');

describe('SQLite store', () => {
  it('round-trips puts and deletes, creating the directory 0700', async () => {
    const dir = path.join(tmp, 'a', 'b');
    const s = open(dir);
    expect(await s.load()).toEqual([]);
    expect((await fs.stat(dir)).mode & 0o777).toBe(0o700);
    await s.put(rec('one', '10.0.0.1'));
    await s.put(withPolicy('two', 'fd00::2'));
    await s.put(rec('three', '10.0.0.3'));
    await s.put(rec('one', '10.0.0.11', { appId: 'app-2', updatedAt: 1_700_000_000_001 }));
    await s.delete('three');
    await s.close();

    const again = open(dir);
    const loaded = await again.load();
    expect(wire(loaded)).toEqual(wire([rec('one', '10.0.0.11', { appId: 'app-2', updatedAt: 1_700_000_000_001 }), withPolicy('two', 'fd00::2')]));
    const two = loaded.find((r) => r.instanceId === 'two')!;
    expect(two.reportedPolicy?.ports.get(8080)).toEqual({ pp: true });
    expect(two.override?.ports.get(22)).toEqual({ pp: false });
  });

  it('rejects writes before load and after close', async () => {
    const s = open(tmp);
    await expect(s.put(rec('one', '10.0.0.1'))).rejects.toMatchObject({ code: 'ERR_STORE_STATE' });
    await s.load();
    await s.close();
    await expect(s.delete('one')).rejects.toMatchObject({ code: 'ERR_STORE_STATE' });
  });

  it('keeps every acknowledged write when the writer is SIGKILLed at a random moment, and reopens at once', async () => {
    const distStore = path.join(repoRoot, 'dist/registry/sqlite-store.js');
    if (!existsSync(distStore)) {
      throw new Error(`${distStore} does not exist: this test runs the compiled store in a child process; build it first with \`npx tsc -p tsconfig.json\` (or \`npm run build\`)`);
    }
    for (const src of ['src/registry/sqlite-store.ts', 'src/registry/policy.ts']) {
      if (statSync(path.join(repoRoot, src)).mtimeMs > statSync(path.join(repoRoot, 'dist/registry', `${path.basename(src, '.ts')}.js`)).mtimeMs) {
        throw new Error(`dist/ is older than ${src}: rebuild with \`npx tsc -p tsconfig.json\` before running this test`);
      }
    }
    const fixture = path.join(here, 'fixtures/store-writer.mjs');
    const ackedPut = new Set<string>();
    const deleting = new Set<string>();
    const ackedDel = new Set<string>();

    for (let round = 0; round < 3; round++) {
      const killAfter = 20 + Math.floor(Math.random() * 400);
      let lockedWhileRunning: unknown = null;
      await new Promise<void>((resolve, reject) => {
        const child = spawn(process.execPath, [fixture, tmp, String(round)], { stdio: ['ignore', 'pipe', 'pipe'] });
        let buf = '';
        let stderr = '';
        let acks = 0;
        let killed = false;
        child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
        child.stdout.on('data', (d: Buffer) => {
          buf += d.toString();
          let nl: number;
          while ((nl = buf.indexOf('\n')) !== -1) {
            const [what, id] = buf.slice(0, nl).split(' ') as [string, string];
            buf = buf.slice(nl + 1);
            if (what === 'put') ackedPut.add(id);
            else if (what === 'deleting') deleting.add(id);
            else if (what === 'del') ackedDel.add(id);
            if ((what === 'put' || what === 'del') && ++acks >= killAfter && !killed) {
              killed = true;
              // While the writer lives, its database is locked against a second daemon.
              const second = createSqliteStore({ dir: tmp, logger: silent });
              second.load().then(
                () => (lockedWhileRunning = 'opened'),
                (err: unknown) => (lockedWhileRunning = err),
              ).finally(() => child.kill('SIGKILL'));
            }
          }
        });
        child.on('error', reject);
        child.on('close', (code, signal) => {
          if (signal === 'SIGKILL') resolve();
          else reject(new Error(`writer exited by itself (code ${code}, signal ${signal}); stderr:\n${stderr}`));
        });
      });
      expect(lockedWhileRunning).toMatchObject({ code: 'ERR_STORE_LOCKED' });

      // Right after kill -9: no stale lock to refuse the restart.
      const s = open(tmp);
      const live = new Map((await s.load()).map((r) => [r.instanceId, r]));
      await s.close();
      for (const id of ackedPut) {
        if (!deleting.has(id)) expect(live.has(id), `acknowledged put of ${id} lost`).toBe(true);
      }
      for (const id of ackedDel) expect(live.has(id), `acknowledged delete of ${id} lost`).toBe(false);
      for (const r of live.values()) expect(r.appId).toMatch(/^app-\d$/);
    }
    expect(ackedPut.size).toBeGreaterThan(50);
  }, 60_000);

  it('ERR_STORE_LOCKED while another store has the database open; free once it is closed', async () => {
    const first = open(tmp);
    await first.load();
    await expect(open(tmp).load()).rejects.toMatchObject({ code: 'ERR_STORE_LOCKED', message: expect.stringContaining('another tproxy-interceptor') });
    await first.close();
    await open(tmp).load();
  });

  it('a PID lock file of the old store (a live pid, not ours) does not keep it from opening', async () => {
    await fs.writeFile(path.join(tmp, 'registry.lock'), `${process.ppid}\n`);
    await putAll(tmp, [rec('one', '10.0.0.1')]);
    expect((await open(tmp).load()).map((r) => r.instanceId)).toEqual(['one']);
  });

  describe('a damaged database stops the start with ERR_STORE_CORRUPT and is left exactly as it was', () => {
    async function filled(): Promise<string> {
      const s = open(tmp);
      await s.load();
      for (let i = 0; i < 3000; i++) await s.put(withPolicy(`i${i}`, `10.2.${i >> 8}.${i & 255}`));
      await s.close();
      return path.join(tmp, DB_FILE);
    }

    async function expectCorrupt(file: string, what: RegExp): Promise<void> {
      const before = await sha(file);
      const files = (await fs.readdir(tmp)).sort();
      const err = await open(tmp).load().then(() => null, (e: unknown) => e as { code: string; message: string });
      expect(err).toMatchObject({ code: 'ERR_STORE_CORRUPT' });
      expect(err!.message).toContain(file);
      expect(err!.message).toMatch(what);
      expect(err!.message).toMatch(/backup/);
      expect(await sha(file)).toBe(before);
      expect((await fs.readdir(tmp)).sort()).toEqual(files);
    }

    it('cut to half its size', async () => {
      const file = await filled();
      await fs.truncate(file, Math.floor((await fs.stat(file)).size / 2));
      await expectCorrupt(file, /malformed|integrity/);
    });

    it('bytes overwritten in the middle', async () => {
      const file = await filled();
      const fh = await fs.open(file, 'r+');
      await fh.write(Buffer.alloc(4096, 0xa5), 0, 4096, Math.floor((await fh.stat()).size / 2));
      await fh.close();
      await expectCorrupt(file, /malformed|integrity/);
    });

    it('not a database at all', async () => {
      const file = path.join(tmp, DB_FILE);
      await fs.writeFile(file, 'this is not an SQLite database, it is some text that is long enough to have a header');
      await expectCorrupt(file, /SQLITE_NOTADB/);
    });

    it('a row whose record is not valid, naming the instance', async () => {
      await putAll(tmp, [rec('one', '10.0.0.1'), rec('two', '10.0.0.2')]);
      const file = path.join(tmp, DB_FILE);
      const db = new Database(file);
      db.prepare('UPDATE instances SET record = ? WHERE instance_id = ?').run('{"instance_id":"two","app_id":42}', 'two');
      db.close();
      await expectCorrupt(file, /instance "two".*app_id/);
    });

    it('the database gone but its write-ahead log still there', async () => {
      await putAll(tmp, [rec('one', '10.0.0.1')]);
      await fs.writeFile(path.join(tmp, `${DB_FILE}-wal`), Buffer.alloc(4096, 1));
      await fs.rm(path.join(tmp, DB_FILE));
      const err = await open(tmp).load().then(() => null, (e: unknown) => e);
      expect(err).toMatchObject({ code: 'ERR_STORE_CORRUPT', message: expect.stringContaining('write-ahead log') });
      expect(existsSync(path.join(tmp, DB_FILE))).toBe(false);
    });
  });

  it('an empty database file where a registry was is logged, and the registry starts empty', async () => {
    await fs.writeFile(path.join(tmp, DB_FILE), '');
    const { logger, lines } = captureLogger();
    expect(await open(tmp, logger).load()).toEqual([]);
    expect(lines().find((l) => l.level === 40 && l.msg.includes('empty file'))).toBeDefined();
  });

  it('a missing database is created without a warning on a fresh directory', async () => {
    const { logger, lines } = captureLogger();
    expect(await open(tmp, logger).load()).toEqual([]);
    expect(existsSync(path.join(tmp, DB_FILE))).toBe(true);
    expect(lines().filter((l) => l.level >= 40)).toEqual([]);
  });

  it('ERR_STORE_UNREADABLE when the directory is not one (system code in the message)', async () => {
    const file = path.join(tmp, 'plain-file');
    await fs.writeFile(file, '');
    await expect(open(path.join(file, 'store')).load()).rejects.toMatchObject({ code: 'ERR_STORE_UNREADABLE', message: expect.stringContaining('ENOTDIR') });
  });
});

describe('migrating the journal of earlier versions', () => {
  const journalLine = (payload: unknown): string => {
    const text = JSON.stringify(payload);
    return `${crc32(Buffer.from(text)).toString(16).padStart(8, '0')} ${text}\n`;
  };
  const put = (r: InstanceRecord) => journalLine({ op: 'put', record: serializeInstance(r) });
  const del = (id: string) => journalLine({ op: 'del', id });

  it('checks lines with the CRC-32 zlib computes, also where zlib has none (Node before 20.15)', () => {
    for (const size of [0, 1, 7, 64, 1000, 65536]) {
      const data = randomBytes(size);
      expect(tableCrc32(data)).toBe(crc32(data));
    }
  });

  it('imports it once, renames it, says so, and never reads it again', async () => {
    const journal = path.join(tmp, JOURNAL_FILE);
    const text = put(rec('one', '10.0.0.1')) + put(withPolicy('two', '10.0.0.2')) + put(rec('three', '10.0.0.3')) + del('one') + '0123abcd {"op":"put","rec';
    await fs.writeFile(journal, text);
    await fs.writeFile(path.join(tmp, 'registry.lock'), '999999999\n');
    const { logger, lines } = captureLogger();
    const s = open(tmp, logger);
    expect(wire(await s.load())).toEqual(wire([withPolicy('two', '10.0.0.2'), rec('three', '10.0.0.3')]));
    expect(existsSync(journal)).toBe(false);
    expect(await fs.readFile(path.join(tmp, MIGRATED_JOURNAL_FILE), 'utf8')).toBe(text);
    expect(existsSync(path.join(tmp, 'registry.lock'))).toBe(false);
    const said = lines().find((l) => l.msg.includes('migrated'));
    expect(said).toMatchObject({ records: 2, renamedTo: path.join(tmp, MIGRATED_JOURNAL_FILE) });
    expect(lines().find((l) => l.level === 40 && l.msg.includes('incomplete line'))).toBeDefined();
    await s.delete('two');
    await s.close();
    // The renamed journal is not imported again: the deletion stands.
    expect((await open(tmp).load()).map((r) => r.instanceId)).toEqual(['three']);
  });

  it('a corrupt journal stops the start, naming the line; nothing is imported and the file stays', async () => {
    const journal = path.join(tmp, JOURNAL_FILE);
    await fs.writeFile(journal, put(rec('one', '10.0.0.1')) + put(rec('two', '10.0.0.2')).replace('"app-1"', '"app-X"'));
    const err = await open(tmp).load().then(() => null, (e: unknown) => e as { code: string; message: string });
    expect(err).toMatchObject({ code: 'ERR_STORE_CORRUPT' });
    expect(err!.message).toContain(`${journal} is corrupt at line 2`);
    expect(existsSync(journal)).toBe(true);
    await fs.rm(journal);
    expect(await open(tmp).load()).toEqual([]);
  });

  it('finishes a migration that stopped before the rename', async () => {
    const journal = path.join(tmp, JOURNAL_FILE);
    const text = put(rec('one', '10.0.0.1'));
    await fs.writeFile(journal, text);
    const first = open(tmp);
    await first.load();
    await first.close();
    await fs.rename(path.join(tmp, MIGRATED_JOURNAL_FILE), journal); // as if the daemon died before renaming
    const s = open(tmp);
    expect((await s.load()).map((r) => r.instanceId)).toEqual(['one']);
    expect(existsSync(journal)).toBe(false);
  });

  it('refuses a journal next to a database that already has instances (ERR_STORE_MIGRATION)', async () => {
    await putAll(tmp, [rec('one', '10.0.0.1')]);
    await fs.writeFile(path.join(tmp, JOURNAL_FILE), put(rec('two', '10.0.0.2')));
    await expect(open(tmp).load()).rejects.toMatchObject({ code: 'ERR_STORE_MIGRATION', message: expect.stringContaining('Nothing was changed') });
  });

  it('refuses while the journal\'s old daemon still runs (its PID lock names a live process)', async () => {
    await fs.writeFile(path.join(tmp, JOURNAL_FILE), put(rec('one', '10.0.0.1')));
    await fs.writeFile(path.join(tmp, 'registry.lock'), `${process.ppid}\n`);
    await expect(open(tmp).load()).rejects.toMatchObject({ code: 'ERR_STORE_LOCKED', message: expect.stringContaining(String(process.ppid)) });
    expect(existsSync(path.join(tmp, JOURNAL_FILE))).toBe(true);
  });

  it('logs when the database is missing although a migrated journal shows there was a registry', async () => {
    await fs.writeFile(path.join(tmp, JOURNAL_FILE), put(rec('one', '10.0.0.1')));
    await putAll(tmp, []);
    await fs.rm(path.join(tmp, DB_FILE));
    const { logger, lines } = captureLogger();
    expect(await open(tmp, logger).load()).toEqual([]);
    expect(lines().find((l) => l.level === 40 && l.msg.includes('was missing'))).toBeDefined();
  });
});
