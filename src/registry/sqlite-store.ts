// The registry on one host: a SQLite database, `registry.db` under [registry] path.
//
// - Durable before acknowledged: WAL with synchronous=FULL, so a put resolves only after its
//   commit reached the disk. Commits run on the JavaScript thread (better-sqlite3 is
//   synchronous); one costs a WAL append and an fsync, and registrations are rare next to
//   connections.
// - One daemon per database: locking_mode=EXCLUSIVE keeps SQLite's own lock (fcntl) from the
//   first write until close. The kernel drops it with the process, so a restart after kill -9
//   is never refused, and no PID is involved.
// - A damaged database stops the start: it is checked read-only first (a read-only connection
//   never writes the file), and nothing else happens until it passes.
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import type { Logger } from 'pino';
import { InterceptorError } from '../errors.js';
import { JOURNAL_FILE, readJournal } from './journal.js';
import { deserializeInstance, serializeInstance } from './policy.js';
import type { RegistryStore, StoreStatus } from './store.js';
import type { InstanceRecord } from './types.js';

export const DB_FILE = 'registry.db';
/** What a migrated journal is renamed to. It is never read again. */
export const MIGRATED_JOURNAL_FILE = `${JOURNAL_FILE}.migrated`;
/** The PID lock file of the journal store; only looked at when a journal is migrated. */
const OLD_LOCK_FILE = 'registry.lock';
const SCHEMA_VERSION = 1;

const SCHEMA = `
  CREATE TABLE IF NOT EXISTS instances (
    instance_id TEXT PRIMARY KEY,
    ip TEXT NOT NULL UNIQUE,
    record TEXT NOT NULL
  ) STRICT;
  CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
`;

export function createSqliteStore(opts: { dir: string; logger: Logger }): RegistryStore {
  const dir = path.resolve(opts.dir);
  const file = path.join(dir, DB_FILE);
  const logger = opts.logger.child({ component: 'registry-store', store: 'sqlite', file });
  let db: Database.Database | null = null;
  let state: 'new' | 'open' | 'closed' = 'new';
  let since = Date.now();
  let upsert: Database.Statement<[string, string, string]> | null = null;
  let remove: Database.Statement<[string]> | null = null;

  async function load(): Promise<InstanceRecord[]> {
    if (state !== 'new') throw new InterceptorError('ERR_STORE_STATE', `registry store ${file}: load() called twice or after close()`);
    state = 'closed';
    ensureDir(dir);
    const before = inspectDir(dir);
    if (before.dbBytes === null && before.wal) {
      throw corrupt(
        file,
        `${DB_FILE} is missing but ${DB_FILE}-wal is there: the database was deleted or moved away from its write-ahead log`,
      );
    }
    if (before.dbBytes !== null && before.dbBytes > 0) checkReadOnly(file);

    const conn = openWritable(file);
    try {
      const migrated = migrateJournal(conn, dir, logger);
      const records = readRecords(conn, file);
      if (records.length === 0 && migrated === null) warnIfEmptyUnexpectedly(logger, before);
      db = conn;
      upsert = conn.prepare(
        'INSERT INTO instances (instance_id, ip, record) VALUES (?, ?, ?) ' +
          'ON CONFLICT (instance_id) DO UPDATE SET ip = excluded.ip, record = excluded.record',
      );
      remove = conn.prepare('DELETE FROM instances WHERE instance_id = ?');
      state = 'open';
      since = Date.now();
      logger.info({ records: records.length }, 'registry store loaded');
      return records;
    } catch (err) {
      conn.close();
      throw err;
    }
  }

  function write(what: string, run: () => void): Promise<void> {
    if (state !== 'open') {
      const why = state === 'closed' ? 'is closed' : 'has not been loaded';
      return Promise.reject(new InterceptorError('ERR_STORE_STATE', `registry store ${file} ${why}`));
    }
    try {
      run();
      return Promise.resolve();
    } catch (err) {
      return Promise.reject(
        new InterceptorError('ERR_STORE_WRITE', `registry store ${file}: ${what} failed: ${sqliteCode(err)}: ${(err as Error).message}`, { cause: err }),
      );
    }
  }

  return {
    load,
    put: (record) => write(`put ${record.instanceId}`, () => upsert!.run(record.instanceId, record.ip, JSON.stringify(serializeInstance(record)))),
    delete: (instanceId) => write(`delete ${instanceId}`, () => remove!.run(instanceId)),
    status: (): StoreStatus => ({ kind: 'sqlite', state: 'ok', since, error: null }),
    async close() {
      if (state === 'closed' && db === null) return;
      state = 'closed';
      const conn = db;
      db = null;
      try {
        conn?.close();
      } catch (err) {
        logger.warn({ err }, 'closing the registry database failed');
      }
    },
  };
}

// ---------------------------------------------------------------------------------------------

interface DirState {
  /** Size of registry.db, or null when it does not exist. */
  dbBytes: number | null;
  wal: boolean;
  migratedJournal: boolean;
}

function inspectDir(dir: string): DirState {
  const size = (name: string): number | null => {
    try {
      return fs.statSync(path.join(dir, name)).size;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw unreadable(path.join(dir, name), err);
    }
  };
  return { dbBytes: size(DB_FILE), wal: (size(`${DB_FILE}-wal`) ?? 0) > 0, migratedJournal: size(MIGRATED_JOURNAL_FILE) !== null };
}

function warnIfEmptyUnexpectedly(logger: Logger, before: DirState): void {
  if (before.dbBytes === 0) {
    logger.warn(
      'registry database is an empty file (0 bytes), so the registry starts empty; if instances were registered, ' +
        'stop the daemon and restore registry.db from a backup',
    );
  } else if (before.dbBytes === null && before.migratedJournal) {
    logger.warn(
      `registry database was missing although ${MIGRATED_JOURNAL_FILE} shows this directory held a registry, so the ` +
        'registry starts empty; if that is not intended, stop the daemon and restore registry.db from a backup',
    );
  }
}

/** Integrity check on a read-only connection: finds damage without writing anything. */
function checkReadOnly(file: string): void {
  // A read-only connection to a WAL database creates the -wal and -shm files it needs; they are
  // removed again unless they were there before.
  const leftovers = [`${file}-wal`, `${file}-shm`].filter((f) => !fs.existsSync(f));
  let conn: Database.Database | null = null;
  try {
    conn = new Database(file, { readonly: true, fileMustExist: true, timeout: 0 });
    const problems = (conn.pragma('quick_check(5)') as Array<{ quick_check: string }>).map((r) => r.quick_check);
    if (problems.length !== 1 || problems[0] !== 'ok') throw corrupt(file, `SQLite's integrity check failed: ${problems.join('; ')}`);
  } catch (err) {
    throw openError(file, err);
  } finally {
    conn?.close();
    for (const f of leftovers) {
      try {
        if (fs.statSync(f).size === 0 || f.endsWith('-shm')) fs.rmSync(f);
      } catch {
        // not created after all
      }
    }
  }
}

function openWritable(file: string): Database.Database {
  let conn: Database.Database | null = null;
  try {
    conn = new Database(file, { timeout: 0 });
    // Before WAL is entered: an exclusive connection keeps no shared-memory index and holds its
    // lock from the first write until close.
    conn.pragma('locking_mode = EXCLUSIVE');
    const mode = conn.pragma('journal_mode = WAL', { simple: true });
    if (mode !== 'wal') throw new InterceptorError('ERR_STORE_UNREADABLE', `registry store ${file}: cannot switch to WAL (journal mode stays ${String(mode)})`);
    conn.pragma('synchronous = FULL');
    const version = conn.pragma('user_version', { simple: true }) as number;
    if (version > SCHEMA_VERSION) {
      throw new InterceptorError(
        'ERR_STORE_VERSION',
        `registry store ${file} has schema version ${version}, newer than this daemon's ${SCHEMA_VERSION}: it was written by a newer ` +
          'tproxy-interceptor. Run that version, or restore a backup made for this one.',
      );
    }
    // Takes the exclusive lock now, not at the first registration; writes only to a new database.
    conn.exec('BEGIN EXCLUSIVE');
    if (version < SCHEMA_VERSION) {
      conn.exec(SCHEMA);
      conn.pragma(`user_version = ${SCHEMA_VERSION}`);
    }
    conn.exec('COMMIT');
    return conn;
  } catch (err) {
    conn?.close();
    throw openError(file, err);
  }
}

function readRecords(conn: Database.Database, file: string): InstanceRecord[] {
  let rows: Array<{ instance_id: string; ip: string; record: string }>;
  try {
    rows = conn.prepare('SELECT instance_id, ip, record FROM instances ORDER BY instance_id').all() as typeof rows;
  } catch (err) {
    throw corrupt(file, `its instances cannot be read (${sqliteCode(err)}: ${(err as Error).message})`);
  }
  return rows.map((row) => {
    try {
      const record = deserializeInstance(JSON.parse(row.record));
      if (record.instanceId !== row.instance_id || record.ip !== row.ip) throw new Error('the record does not match its row (instance_id, ip)');
      return record;
    } catch (err) {
      throw corrupt(file, `the row of instance ${JSON.stringify(row.instance_id)} is invalid: ${(err as Error).message}`);
    }
  });
}

// ---------------------------------------------------------------------------------------------
// The one-time migration of a journal written by earlier versions.

/** Imports `registry.journal` once; returns what was imported, or null when there was nothing to do. */
function migrateJournal(conn: Database.Database, dir: string, logger: Logger): { records: number } | null {
  const journal = path.join(dir, JOURNAL_FILE);
  let data: Buffer;
  try {
    data = fs.readFileSync(journal);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw unreadable(journal, err);
  }
  const digest = createHash('sha256').update(data).digest('hex');
  const meta = conn.prepare('SELECT value FROM meta WHERE key = ?').pluck();
  const migratedDigest = meta.get('journal_sha256') as string | undefined;
  const migratedTo = path.join(dir, MIGRATED_JOURNAL_FILE);
  if (migratedDigest === digest) {
    // Imported before, and the daemon stopped before the rename.
    retireJournal(journal, migratedTo, dir);
    logger.info({ journal, renamedTo: migratedTo }, 'registry journal had been migrated already; renamed it');
    return null;
  }
  const existing = conn.prepare('SELECT count(*) FROM instances').pluck().get() as number;
  if (migratedDigest !== undefined || existing > 0) {
    throw new InterceptorError(
      'ERR_STORE_MIGRATION',
      `registry store ${dir}: both ${DB_FILE} (${existing} instances) and a journal ${journal} that was never imported are there, ` +
        `so it is unclear which one holds the registry. Nothing was changed. Move ${JOURNAL_FILE} aside to keep the database, ` +
        `or move ${DB_FILE} aside to import the journal.`,
    );
  }
  refuseIfOldDaemonRuns(dir);
  const contents = readJournal(data, journal);
  if (contents.tornBytes > 0) {
    logger.warn(
      { journal, bytes: contents.tornBytes },
      'registry journal ends with an incomplete line (a write cut short by a crash, never acknowledged); it is not imported',
    );
  }
  const insert = conn.prepare('INSERT INTO instances (instance_id, ip, record) VALUES (?, ?, ?)');
  const setMeta = conn.prepare('INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)');
  try {
    conn.transaction(() => {
      for (const r of contents.records) insert.run(r.instanceId, r.ip, JSON.stringify(serializeInstance(r)));
      setMeta.run('journal_sha256', digest);
      setMeta.run('journal_migrated_at', new Date().toISOString());
    })();
  } catch (err) {
    throw corrupt(journal, `its records cannot be imported (${sqliteCode(err)}: ${(err as Error).message}); nothing was imported`);
  }
  retireJournal(journal, migratedTo, dir);
  fs.rmSync(path.join(dir, OLD_LOCK_FILE), { force: true });
  logger.info(
    { journal, records: contents.records.length, journalLines: contents.lines, renamedTo: migratedTo },
    `registry journal migrated into ${DB_FILE}; the old file is kept as ${MIGRATED_JOURNAL_FILE} and never read again (delete it when you no longer need it)`,
  );
  return { records: contents.records.length };
}

function retireJournal(journal: string, migratedTo: string, dir: string): void {
  try {
    fs.renameSync(journal, migratedTo);
    fsyncDir(dir);
  } catch (err) {
    throw unreadable(journal, err, `renaming it to ${path.basename(migratedTo)}`);
  }
}

/** A daemon of an earlier version still writing the journal would lose what it writes after the import. */
function refuseIfOldDaemonRuns(dir: string): void {
  const lock = path.join(dir, OLD_LOCK_FILE);
  let pid: number;
  try {
    pid = Number(fs.readFileSync(lock, 'utf8').trim());
  } catch {
    return;
  }
  if (!Number.isSafeInteger(pid) || pid <= 0 || pid === process.pid) return;
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return;
  }
  throw new InterceptorError(
    'ERR_STORE_LOCKED',
    `registry store ${dir}: the journal's lock ${lock} names process ${pid}, which is running: stop that (older) ` +
      `tproxy-interceptor before the journal is migrated. If process ${pid} is something else, delete ${lock}.`,
  );
}

// ---------------------------------------------------------------------------------------------

function ensureDir(dir: string): void {
  try {
    const created = fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    // A new directory's own entry must survive a power loss along with what goes in it.
    if (created !== undefined) {
      for (let d = dir; ; d = path.dirname(d)) {
        fsyncDir(path.dirname(d));
        if (d === path.resolve(created) || d === path.dirname(d)) break;
      }
    }
    if (!fs.statSync(dir).isDirectory()) {
      throw Object.assign(new Error(`${dir} is not a directory`), { code: 'ENOTDIR' });
    }
  } catch (err) {
    throw unreadable(dir, err);
  }
}

function fsyncDir(dir: string): void {
  const fd = fs.openSync(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

function sqliteCode(err: unknown): string {
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' ? code : 'UNKNOWN';
}

function corrupt(file: string, problem: string): InterceptorError {
  return new InterceptorError(
    'ERR_STORE_CORRUPT',
    `registry store ${file} is damaged: ${problem}. Nothing was changed and no rule was installed. Stop here, keep the file ` +
      `for inspection, and restore ${DB_FILE} from a backup (or move it aside to start with an empty registry and re-register the instances).`,
  );
}

/** Maps what opening or checking the database threw to a daemon error. */
function openError(file: string, err: unknown): InterceptorError {
  if (err instanceof InterceptorError) return err;
  const code = sqliteCode(err);
  const message = (err as Error).message;
  if (code === 'SQLITE_CORRUPT' || code === 'SQLITE_NOTADB' || code.startsWith('SQLITE_CORRUPT_')) return corrupt(file, `${code}: ${message}`);
  if (code === 'SQLITE_BUSY' || code.startsWith('SQLITE_BUSY_') || code === 'SQLITE_LOCKED') {
    return new InterceptorError(
      'ERR_STORE_LOCKED',
      `registry store ${file} is in use by another process (${code}): another tproxy-interceptor daemon is running on it. ` +
        'Stop that daemon, or point [registry] path elsewhere.',
    );
  }
  return unreadable(file, err);
}

function unreadable(file: string, err: unknown, doing?: string): InterceptorError {
  if (err instanceof InterceptorError) return err;
  const code = (err as NodeJS.ErrnoException).code ?? 'UNKNOWN';
  return new InterceptorError(
    'ERR_STORE_UNREADABLE',
    `registry store: cannot access ${file}${doing ? ` (${doing})` : ''}: ${code}: ${(err as Error).message}. ` +
      `Check that [registry] path points to a directory the daemon's user can read and write.`,
    { cause: err },
  );
}
