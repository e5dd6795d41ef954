import { spawn, spawnSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { crc32 } from 'node:zlib';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { serializeInstance } from '../../../src/registry/policy.js';
import { createFileStore, JOURNAL_FILE, LOCK_FILE } from '../../../src/registry/store.js';
import type { RegistryStore } from '../../../src/registry/store.js';
import type { InstanceRecord } from '../../../src/registry/types.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, '../../..');

function captureLogger(): { logger: pino.Logger; lines: () => { level: number; msg: string }[] } {
  const out: string[] = [];
  const logger = pino({ level: 'debug' }, { write: (s: string) => void out.push(s) });
  return { logger, lines: () => out.map((s) => JSON.parse(s) as { level: number; msg: string }) };
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

function line(payload: string): string {
  return `${crc32(Buffer.from(payload)).toString(16).padStart(8, '0')} ${payload}\n`;
}

let tmp: string;
const opened: RegistryStore[] = [];

beforeEach(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'tpi-store-'));
});

afterEach(async () => {
  for (const s of opened.splice(0)) await s.close().catch(() => {});
  await fs.chmod(tmp, 0o700).catch(() => {});
  await fs.rm(tmp, { recursive: true, force: true });
});

function open(dir: string, logger: pino.Logger = silent): RegistryStore {
  const s = createFileStore({ dir, logger });
  opened.push(s);
  return s;
}

async function putAll(dir: string, records: InstanceRecord[]): Promise<void> {
  const s = open(dir);
  await s.load();
  for (const r of records) await s.put(r);
  await s.close();
}

describe('file store', () => {
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
    const st = await fs.stat(path.join(dir, JOURNAL_FILE));
    expect(st.mode & 0o777).toBe(0o600);
  });

  it('writes one "<crc32> <json>" line per operation', async () => {
    await putAll(tmp, [rec('one', '10.0.0.1')]);
    const s = open(tmp);
    await s.load();
    await s.delete('one');
    await s.close();
    const text = await fs.readFile(path.join(tmp, JOURNAL_FILE), 'utf8');
    const lines = text.split('\n');
    expect(lines.pop()).toBe('');
    expect(lines).toHaveLength(2);
    for (const l of lines) {
      const [crc, payload] = [l.slice(0, 8), l.slice(9)];
      expect(crc).toBe(crc32(Buffer.from(payload)).toString(16).padStart(8, '0'));
    }
    expect(JSON.parse(lines[0]!.slice(9))).toMatchObject({ op: 'put', record: { instance_id: 'one', ip: '10.0.0.1' } });
    expect(JSON.parse(lines[1]!.slice(9))).toEqual({ op: 'del', id: 'one' });
  });

  it('serialises concurrent writers (group commit) without losing any', async () => {
    const s = open(tmp);
    await s.load();
    await Promise.all(Array.from({ length: 300 }, (_, i) => s.put(rec(`i${i}`, `10.1.${i >> 8}.${i & 255}`))));
    await Promise.all(Array.from({ length: 100 }, (_, i) => s.delete(`i${i * 3}`)));
    await s.close();
    const again = open(tmp);
    const ids = (await again.load()).map((r) => r.instanceId);
    expect(ids).toHaveLength(200);
    expect(new Set(ids)).toEqual(new Set(Array.from({ length: 300 }, (_, i) => `i${i}`).filter((_, i) => i % 3 !== 0)));
  });

  it('rejects writes before load and after close', async () => {
    const s = open(tmp);
    await expect(s.put(rec('one', '10.0.0.1'))).rejects.toMatchObject({ code: 'ERR_STORE_STATE' });
    await s.load();
    await s.close();
    await expect(s.delete('one')).rejects.toMatchObject({ code: 'ERR_STORE_STATE' });
  });

  it('keeps every acknowledged write when the writer is SIGKILLed at a random moment', async () => {
    const distStore = path.join(repoRoot, 'dist/registry/store.js');
    if (!existsSync(distStore)) {
      throw new Error(`${distStore} does not exist: this test runs the compiled store in a child process; build it first with \`npx tsc -p tsconfig.json\` (or \`npm run build\`)`);
    }
    for (const src of ['src/registry/store.ts', 'src/registry/policy.ts']) {
      if (statSync(path.join(repoRoot, src)).mtimeMs > statSync(distStore.replace('store.js', path.basename(src, '.ts') + '.js')).mtimeMs) {
        throw new Error(`dist/ is older than ${src}: rebuild with \`npx tsc -p tsconfig.json\` before running this test`);
      }
    }
    const fixture = path.join(here, 'fixtures/journal-writer.mjs');
    const ackedPut = new Set<string>();
    const deleting = new Set<string>();
    const ackedDel = new Set<string>();

    for (let round = 0; round < 3; round++) {
      const killAfter = 20 + Math.floor(Math.random() * 400);
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
              child.kill('SIGKILL');
            }
          }
        });
        child.on('error', reject);
        child.on('close', (code, signal) => {
          if (signal === 'SIGKILL') resolve();
          else reject(new Error(`writer exited by itself (code ${code}, signal ${signal}); stderr:\n${stderr}`));
        });
      });

      const { logger, lines } = captureLogger();
      const s = open(tmp, logger);
      const live = new Map((await s.load()).map((r) => [r.instanceId, r]));
      await s.close();
      expect(lines().some((l) => l.msg.includes('stale'))).toBe(true); // the killed writer's lock
      for (const id of ackedPut) {
        if (!deleting.has(id)) expect(live.has(id), `acknowledged put of ${id} lost`).toBe(true);
      }
      for (const id of ackedDel) expect(live.has(id), `acknowledged delete of ${id} lost`).toBe(false);
      for (const r of live.values()) expect(r.appId).toMatch(/^app-\d$/);
    }
    expect(ackedPut.size).toBeGreaterThan(50);
  }, 60_000);

  it('truncates a torn last line (never acknowledged) with a warning', async () => {
    await putAll(tmp, [rec('one', '10.0.0.1'), rec('two', '10.0.0.2')]);
    const journal = path.join(tmp, JOURNAL_FILE);
    const good = await fs.readFile(journal);
    const torn = line(JSON.stringify({ op: 'put', record: serializeInstance(rec('three', '10.0.0.3')) })).slice(0, 40);
    await fs.appendFile(journal, torn);

    const { logger, lines } = captureLogger();
    const s = open(tmp, logger);
    expect((await s.load()).map((r) => r.instanceId).sort()).toEqual(['one', 'two']);
    expect(await fs.readFile(journal)).toEqual(good);
    expect(lines().find((l) => l.level === 40 && /torn|incomplete/.test(l.msg))).toBeDefined();
    // Appending after the cut yields a clean journal.
    await s.put(rec('three', '10.0.0.3'));
    await s.close();
    const again = open(tmp);
    expect((await again.load()).map((r) => r.instanceId).sort()).toEqual(['one', 'three', 'two']);
  });

  describe('refuses a corrupt journal, naming the file and the line, and leaves it untouched', () => {
    async function expectCorrupt(mutate: (lines: string[]) => string[], lineNo: number, what: RegExp): Promise<void> {
      await putAll(tmp, [rec('one', '10.0.0.1'), rec('two', '10.0.0.2'), rec('three', '10.0.0.3')]);
      const journal = path.join(tmp, JOURNAL_FILE);
      const lines = (await fs.readFile(journal, 'utf8')).split('\n').slice(0, -1);
      await fs.writeFile(journal, mutate(lines).map((l) => `${l}\n`).join(''));
      const before = await fs.readFile(journal);

      const s = open(tmp);
      const err = await s.load().then(
        () => null,
        (e: unknown) => e as { code: string; message: string },
      );
      expect(err).toMatchObject({ code: 'ERR_STORE_CORRUPT' });
      expect(err!.message).toContain(journal);
      expect(err!.message).toContain(`line ${lineNo}`);
      expect(err!.message).toMatch(what);
      expect(err!.message).toMatch(/move .* aside|backup/);
      expect(await fs.readFile(journal)).toEqual(before);
      // The failed load released the lock it took.
      expect(existsSync(path.join(tmp, LOCK_FILE))).toBe(false);
    }

    it('bad checksum', async () => {
      await expectCorrupt((l) => [l[0]!, l[1]!.replace('"app-1"', '"app-X"'), l[2]!], 2, /checksum/);
    });

    it('bad JSON with a valid checksum', async () => {
      await expectCorrupt((l) => [l[0]!, line('{"op":"put",').trimEnd(), l[2]!], 2, /not valid JSON/);
    });

    it('invalid record, naming the field', async () => {
      const bad = { ...serializeInstance(rec('four', '10.0.0.4')), app_id: 42 };
      await expectCorrupt((l) => [l[0]!, l[1]!, line(JSON.stringify({ op: 'put', record: bad })).trimEnd()], 3, /app_id/);
    });

    it('empty line in the middle', async () => {
      await expectCorrupt((l) => [l[0]!, '', l[1]!, l[2]!], 2, /empty/);
    });
  });

  it('ERR_STORE_UNREADABLE when the directory is not one (system code in the message)', async () => {
    const file = path.join(tmp, 'plain-file');
    await fs.writeFile(file, '');
    const s = open(path.join(file, 'store'));
    await expect(s.load()).rejects.toMatchObject({ code: 'ERR_STORE_UNREADABLE', message: expect.stringContaining('ENOTDIR') });
  });

  it('ERR_STORE_UNREADABLE when the journal cannot be read', async () => {
    await fs.mkdir(path.join(tmp, JOURNAL_FILE));
    const s = open(tmp);
    await expect(s.load()).rejects.toMatchObject({ code: 'ERR_STORE_UNREADABLE', message: expect.stringContaining('EISDIR') });
    expect(existsSync(path.join(tmp, LOCK_FILE))).toBe(false);
  });

  it('ERR_STORE_LOCKED while a live process holds the lock; takes over a stale one', async () => {
    const first = open(tmp);
    await first.load();
    expect((await fs.readFile(path.join(tmp, LOCK_FILE), 'utf8')).trim()).toBe(String(process.pid));
    const second = open(tmp);
    await expect(second.load()).rejects.toMatchObject({ code: 'ERR_STORE_LOCKED', message: expect.stringContaining(String(process.pid)) });
    await first.close();
    expect(existsSync(path.join(tmp, LOCK_FILE))).toBe(false);

    const dead = spawnSync(process.execPath, ['-e', '']).pid;
    await fs.writeFile(path.join(tmp, LOCK_FILE), `${dead}\n`);
    const { logger, lines } = captureLogger();
    const third = open(tmp, logger);
    await third.load();
    expect(lines().find((l) => l.level === 40 && l.msg.includes('stale'))).toBeDefined();
    expect((await fs.readFile(path.join(tmp, LOCK_FILE), 'utf8')).trim()).toBe(String(process.pid));
    await third.close();
  });

  it('compacts a journal with many more lines than live records, keeping exactly the live ones', async () => {
    const s = open(tmp);
    await s.load();
    const writes: Promise<void>[] = [];
    for (let i = 0; i < 1200; i++) writes.push(s.put(rec('busy', '10.0.0.1', { updatedAt: 1_700_000_000_000 + i })));
    writes.push(s.put(withPolicy('kept', '10.0.0.2')), s.put(rec('gone', '10.0.0.3')), s.delete('gone'));
    await Promise.all(writes);
    await s.close();
    const journal = path.join(tmp, JOURNAL_FILE);
    expect((await fs.readFile(journal, 'utf8')).split('\n').length - 1).toBe(1203);

    const { logger, lines } = captureLogger();
    const again = open(tmp, logger);
    const loaded = await again.load();
    const expected = wire([rec('busy', '10.0.0.1', { updatedAt: 1_700_000_000_000 + 1199 }), withPolicy('kept', '10.0.0.2')]);
    expect(wire(loaded)).toEqual(expected);
    expect(lines().some((l) => l.msg.includes('compacted'))).toBe(true);
    const text = await fs.readFile(journal, 'utf8');
    expect(text.split('\n').length - 1).toBe(2);
    expect(existsSync(`${journal}.tmp`)).toBe(false);
    await again.put(rec('new', '10.0.0.4'));
    await again.close();

    const third = open(tmp);
    expect(wire(await third.load())).toEqual(wire([...loaded, rec('new', '10.0.0.4')]));
  });
});
