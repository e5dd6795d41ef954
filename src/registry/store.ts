// Registry persistence. The embedded store is an append-only journal, one CRC-guarded JSON line
// per mutation; an acknowledged put/delete has been written and fdatasync'ed. etcd and other
// backends implement the same `RegistryStore` interface.
import { constants as fsConstants } from 'node:fs';
import * as fs from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import type { Logger } from 'pino';
import { InterceptorError } from '../errors.js';
import { deserializeInstance, serializeInstance } from './policy.js';
import type { InstanceRecord } from './types.js';

export interface RegistryStore {
  /** Opens the store (takes its lock) and returns the live records. Call once, before put/delete. */
  load(): Promise<InstanceRecord[]>;
  /** Resolves once the record is durable. */
  put(record: InstanceRecord): Promise<void>;
  /** Resolves once the deletion is durable. */
  delete(instanceId: string): Promise<void>;
  /** Waits for queued writes, closes the journal and releases the lock. */
  close(): Promise<void>;
}

export const JOURNAL_FILE = 'registry.journal';
export const LOCK_FILE = 'registry.lock';

/** Rewrite the journal on load when it holds more than this many lines beyond 2x the live records. */
const COMPACT_SLACK_LINES = 1000;

type JournalOp = { op: 'put'; record: InstanceRecord } | { op: 'del'; id: string };

interface PendingWrite {
  line: Buffer;
  resolve: () => void;
  reject: (err: Error) => void;
}

const LF = 0x0a;

export function createFileStore(opts: { dir: string; logger: Logger }): RegistryStore {
  const dir = path.resolve(opts.dir);
  const journalPath = path.join(dir, JOURNAL_FILE);
  const lockPath = path.join(dir, LOCK_FILE);
  const logger = opts.logger.child({ component: 'registry-store', dir });

  let state: 'new' | 'loading' | 'open' | 'closed' = 'new';
  let lockHeld = false;
  let journal: FileHandle | null = null;
  /** Journal size after the last successful fdatasync: what a failed batch is truncated back to. */
  let durableSize = 0;
  /** Set when durability can no longer be trusted (fdatasync failed, or truncating a failed batch did). */
  let failure: InterceptorError | null = null;
  let queue: PendingWrite[] = [];
  let flushing: Promise<void> | null = null;

  async function load(): Promise<InstanceRecord[]> {
    if (state !== 'new') {
      throw new InterceptorError('ERR_STORE_STATE', `registry store ${dir}: load() called twice or after close()`);
    }
    state = 'loading';
    try {
      await ensureDir(dir);
      await acquireLock(lockPath, logger);
      lockHeld = true;
      const { records, lines, existed, size } = await replay(journalPath, logger);
      let finalSize = size;
      if (lines > 2 * records.length + COMPACT_SLACK_LINES) {
        finalSize = await compact(dir, journalPath, records, lines, logger);
      }
      journal = await openForAppend(journalPath, !existed, dir);
      durableSize = finalSize;
      state = 'open';
      logger.info({ records: records.length, journalLines: lines }, 'registry store loaded');
      return records;
    } catch (err) {
      state = 'closed';
      if (lockHeld) {
        await releaseLock(lockPath, logger);
        lockHeld = false;
      }
      throw err;
    }
  }

  function enqueue(op: JournalOp): Promise<void> {
    if (state !== 'open') {
      const why = state === 'closed' ? 'is closed' : 'has not been loaded';
      return Promise.reject(new InterceptorError('ERR_STORE_STATE', `registry store ${dir} ${why}`));
    }
    if (failure) return Promise.reject(failure);
    let line: Buffer;
    try {
      line = encodeLine(op);
    } catch (err) {
      return Promise.reject(err);
    }
    return new Promise<void>((resolve, reject) => {
      queue.push({ line, resolve, reject });
      if (!flushing) flushing = flushLoop();
    });
  }

  // Group commit: everything queued while a batch is being written and synced goes into the next
  // batch, so N concurrent writers cost far fewer than N fdatasyncs.
  async function flushLoop(): Promise<void> {
    // Start on a later tick: `flushing` is assigned before the loop can finish, and writes
    // issued in the same tick join the first batch.
    await null;
    try {
      while (queue.length > 0) {
        const batch = queue;
        queue = [];
        if (failure) {
          for (const w of batch) w.reject(failure);
          continue;
        }
        try {
          await writeBatch(batch);
          for (const w of batch) w.resolve();
        } catch (err) {
          for (const w of batch) w.reject(err as Error);
        }
      }
    } finally {
      flushing = null;
    }
  }

  async function writeBatch(batch: PendingWrite[]): Promise<void> {
    const fh = journal;
    if (!fh) throw new InterceptorError('ERR_STORE_STATE', `registry store ${dir} is not open`);
    const data = batch.length === 1 ? batch[0]!.line : Buffer.concat(batch.map((w) => w.line));
    try {
      let off = 0;
      while (off < data.length) {
        const { bytesWritten } = await fh.write(data, off, data.length - off);
        off += bytesWritten;
      }
    } catch (err) {
      // A partial line must not stay in front of the next append: it would turn into a complete,
      // corrupt line. Cut the journal back to what is known durable.
      try {
        await fh.truncate(durableSize);
        await fh.datasync();
      } catch (truncErr) {
        failure = storeWriteError(journalPath, 'truncate after a failed write', truncErr, true);
        throw failure;
      }
      throw storeWriteError(journalPath, 'write', err, false);
    }
    try {
      await fh.datasync();
    } catch (err) {
      // After a failed fsync the kernel may have dropped the dirty pages: retrying can report
      // success for data that never reached the disk. Stop acknowledging anything.
      failure = storeWriteError(journalPath, 'fdatasync', err, true);
      throw failure;
    }
    durableSize += data.length;
  }

  async function close(): Promise<void> {
    if (state === 'closed') return;
    if (state === 'loading') {
      throw new InterceptorError('ERR_STORE_STATE', `registry store ${dir}: close() while load() is running`);
    }
    state = 'closed';
    while (flushing) await flushing;
    if (journal) {
      const fh = journal;
      journal = null;
      await fh.close().catch((err: unknown) => logger.warn({ err }, 'closing the registry journal failed'));
    }
    if (lockHeld) {
      lockHeld = false;
      await releaseLock(lockPath, logger);
    }
  }

  return {
    load,
    put: (record) => enqueue({ op: 'put', record }),
    delete: (instanceId) => enqueue({ op: 'del', id: instanceId }),
    close,
  };
}

// ---------------------------------------------------------------------------------------------
// Line format: `<crc32 of payload, 8 lowercase hex> <payload JSON>\n`.

const crc32: (data: Uint8Array) => number =
  typeof (zlib as { crc32?: unknown }).crc32 === 'function'
    ? (data) => zlib.crc32(data)
    : tableCrc32;

let crcTable: Uint32Array | null = null;
function tableCrc32(data: Uint8Array): number {
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let crc = 0xffffffff;
  for (const byte of data) crc = crcTable[(crc ^ byte) & 0xff]! ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

function encodeLine(op: JournalOp): Buffer {
  const payloadObj = op.op === 'put' ? { op: 'put', record: serializeInstance(op.record) } : { op: 'del', id: op.id };
  // JSON.stringify escapes control characters, so the payload never contains a raw newline.
  const payload = Buffer.from(JSON.stringify(payloadObj), 'utf8');
  const crc = crc32(payload).toString(16).padStart(8, '0');
  return Buffer.concat([Buffer.from(`${crc} `, 'ascii'), payload, Buffer.from('\n', 'ascii')]);
}

/** What is wrong with one journal line; the caller adds the file and line number. */
class LineProblem {
  constructor(readonly problem: string) {}
}

/** Decodes one complete line (without its newline); throws a LineProblem. */
function decodeLine(line: Buffer): JournalOp {
  if (line.length === 0) throw new LineProblem('empty line');
  const sp = line.indexOf(0x20);
  if (sp !== 8) throw new LineProblem('no "<crc32> " prefix');
  const crcText = line.subarray(0, 8).toString('latin1');
  if (!/^[0-9a-f]{8}$/.test(crcText)) throw new LineProblem(`checksum field "${crcText}" is not 8 hex digits`);
  const payload = line.subarray(9);
  const actual = crc32(payload);
  if (actual !== Number.parseInt(crcText, 16)) {
    throw new LineProblem(`checksum mismatch (line says ${crcText}, payload has ${actual.toString(16).padStart(8, '0')})`);
  }
  let json: unknown;
  try {
    json = JSON.parse(payload.toString('utf8'));
  } catch (err) {
    throw new LineProblem(`payload is not valid JSON (${(err as Error).message})`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new LineProblem('payload is not a JSON object');
  const obj = json as Record<string, unknown>;
  if (obj.op === 'put') {
    try {
      return { op: 'put', record: deserializeInstance(obj.record) };
    } catch (err) {
      throw new LineProblem(`invalid record: ${(err as Error).message}`);
    }
  }
  if (obj.op === 'del') {
    if (typeof obj.id !== 'string' || obj.id === '') throw new LineProblem('delete entry without a string "id"');
    return { op: 'del', id: obj.id };
  }
  throw new LineProblem(`unknown op ${JSON.stringify(obj.op)}`);
}

// ---------------------------------------------------------------------------------------------
// Loading.

async function replay(
  journalPath: string,
  logger: Logger,
): Promise<{ records: InstanceRecord[]; lines: number; existed: boolean; size: number }> {
  let data: Buffer;
  try {
    const fh = await fs.open(journalPath, fsConstants.O_RDONLY);
    try {
      data = await fh.readFile();
    } finally {
      await fh.close();
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { records: [], lines: 0, existed: false, size: 0 };
    throw unreadable(journalPath, err);
  }

  const live = new Map<string, InstanceRecord>();
  let start = 0;
  let lineNo = 0;
  while (start < data.length) {
    const nl = data.indexOf(LF, start);
    if (nl === -1) break;
    lineNo++;
    let op: JournalOp;
    try {
      op = decodeLine(data.subarray(start, nl));
    } catch (err) {
      if (!(err instanceof LineProblem)) throw err;
      const problem = err.problem;
      throw new InterceptorError(
        'ERR_STORE_CORRUPT',
        `registry journal ${journalPath} is corrupt at line ${lineNo} (byte offset ${start}): ${problem}. ` +
          `The file has been left untouched. Stop the daemon, move ${journalPath} aside (keep it for ` +
          `inspection) and restore it from a backup, or start with an empty registry and re-register the instances.`,
      );
    }
    if (op.op === 'put') live.set(op.record.instanceId, op.record);
    else live.delete(op.id);
    start = nl + 1;
  }

  let size = data.length;
  if (start < data.length) {
    // A last line without its newline was never acknowledged (an ack follows the fdatasync of
    // the whole line): it is what a crash mid-append leaves behind.
    logger.warn(
      { file: journalPath, line: lineNo + 1, offset: start, bytes: data.length - start },
      'registry journal ends with an incomplete line (torn write from a crash); truncating it',
    );
    try {
      const fh = await fs.open(journalPath, fsConstants.O_RDWR);
      try {
        await fh.truncate(start);
        await fh.datasync();
      } finally {
        await fh.close();
      }
    } catch (err) {
      throw unreadable(journalPath, err, 'truncating the torn last line');
    }
    size = start;
  }
  return { records: [...live.values()], lines: lineNo, existed: true, size };
}

async function compact(
  dir: string,
  journalPath: string,
  records: InstanceRecord[],
  lines: number,
  logger: Logger,
): Promise<number> {
  const tmpPath = `${journalPath}.tmp`;
  const data = Buffer.concat(records.map((record) => encodeLine({ op: 'put', record })));
  try {
    const fh = await fs.open(tmpPath, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_TRUNC, 0o600);
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fs.rename(tmpPath, journalPath);
    await fsyncDir(dir);
  } catch (err) {
    await fs.rm(tmpPath, { force: true }).catch(() => {});
    throw storeWriteError(journalPath, 'compaction', err, false);
  }
  logger.info({ before: lines, after: records.length }, 'registry journal compacted');
  return data.length;
}

async function openForAppend(journalPath: string, created: boolean, dir: string): Promise<FileHandle> {
  try {
    const fh = await fs.open(journalPath, fsConstants.O_WRONLY | fsConstants.O_APPEND | fsConstants.O_CREAT, 0o600);
    // A new file's directory entry must be durable too, or the first acknowledged write can
    // vanish with the file on power loss.
    if (created) await fsyncDir(dir);
    return fh;
  } catch (err) {
    throw unreadable(journalPath, err, 'opening for append');
  }
}

async function ensureDir(dir: string): Promise<void> {
  try {
    const created = await fs.mkdir(dir, { recursive: true, mode: 0o700 });
    // The new directory's own entry must survive a power loss along with what goes in it.
    if (created !== undefined) {
      for (let d = dir; ; d = path.dirname(d)) {
        await fsyncDir(path.dirname(d));
        if (d === path.resolve(created) || d === path.dirname(d)) break;
      }
    }
    const st = await fs.stat(dir);
    if (!st.isDirectory()) {
      const err = new Error(`${dir} is not a directory`) as NodeJS.ErrnoException;
      err.code = 'ENOTDIR';
      throw err;
    }
  } catch (err) {
    throw unreadable(dir, err);
  }
}

async function fsyncDir(dir: string): Promise<void> {
  const fh = await fs.open(dir, fsConstants.O_RDONLY | fsConstants.O_DIRECTORY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Lock: `registry.lock` created with O_EXCL, holding the owner's pid.

async function acquireLock(lockPath: string, logger: Logger): Promise<void> {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fh = await fs.open(lockPath, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL, 0o600);
      try {
        await fh.writeFile(`${process.pid}\n`);
      } finally {
        await fh.close();
      }
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw unreadable(lockPath, err, 'creating the lock');
    }
    let content: string;
    try {
      content = await fs.readFile(lockPath, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue; // released meanwhile: retry
      throw unreadable(lockPath, err, 'reading the lock');
    }
    const pid = /^\s*(\d+)\s*$/.exec(content) ? Number(content.trim()) : NaN;
    if (Number.isSafeInteger(pid) && pid > 0 && isAlive(pid)) {
      throw new InterceptorError(
        'ERR_STORE_LOCKED',
        `registry store ${path.dirname(lockPath)} is locked by process ${pid} (${lockPath}): another ` +
          `tproxy-interceptor daemon is using it. Stop that daemon, or point [registry] path elsewhere. ` +
          `If process ${pid} is not a tproxy-interceptor, remove ${lockPath}.`,
      );
    }
    logger.warn(
      { lock: lockPath, stalePid: Number.isNaN(pid) ? content.slice(0, 40) : pid },
      'registry store lock is stale (its process is gone); taking it over',
    );
    try {
      await fs.unlink(lockPath);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw unreadable(lockPath, err, 'removing the stale lock');
    }
  }
  // Someone else created the lock between our unlink and our O_EXCL create.
  throw new InterceptorError(
    'ERR_STORE_LOCKED',
    `registry store ${path.dirname(lockPath)}: another process took the lock ${lockPath} while this one was starting`,
  );
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists but belongs to someone else.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function releaseLock(lockPath: string, logger: Logger): Promise<void> {
  try {
    const content = await fs.readFile(lockPath, 'utf8');
    if (content.trim() !== String(process.pid)) {
      logger.warn({ lock: lockPath }, 'registry store lock no longer holds this pid; leaving it');
      return;
    }
    await fs.unlink(lockPath);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') logger.warn({ err, lock: lockPath }, 'releasing the registry store lock failed');
  }
}

// ---------------------------------------------------------------------------------------------

function unreadable(file: string, err: unknown, doing?: string): InterceptorError {
  if (err instanceof InterceptorError) return err;
  const code = (err as NodeJS.ErrnoException).code ?? 'UNKNOWN';
  const what = doing ? ` (${doing})` : '';
  return new InterceptorError(
    'ERR_STORE_UNREADABLE',
    `registry store: cannot access ${file}${what}: ${code}: ${(err as Error).message}. ` +
      `Check that [registry] path points to a directory the daemon's user can read and write.`,
    { cause: err },
  );
}

function storeWriteError(file: string, doing: string, err: unknown, fatal: boolean): InterceptorError {
  const code = (err as NodeJS.ErrnoException).code ?? 'UNKNOWN';
  const tail = fatal ? ' The store refuses further writes until the daemon is restarted.' : '';
  return new InterceptorError(
    fatal ? 'ERR_STORE_FAILED' : 'ERR_STORE_WRITE',
    `registry store: ${doing} of ${file} failed: ${code}: ${(err as Error).message}.${tail}`,
    { cause: err },
  );
}
