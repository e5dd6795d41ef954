// Reader of the journal that earlier versions kept (`registry.journal`: one `<crc32 hex> <json>`
// line per put or delete), for the one-time migration into SQLite. Read-only: it never changes
// the file.
import * as zlib from 'node:zlib';
import { InterceptorError } from '../errors.js';
import { deserializeInstance } from './policy.js';
import type { InstanceRecord } from './types.js';

export const JOURNAL_FILE = 'registry.journal';

export interface JournalContents {
  /** The live records: every put, minus what a later delete removed. */
  readonly records: InstanceRecord[];
  readonly lines: number;
  /** Bytes of a last line without its newline: a write a crash cut short, never acknowledged. */
  readonly tornBytes: number;
}

/** Replays journal bytes. A damaged complete line is ERR_STORE_CORRUPT naming the file and line. */
export function readJournal(data: Buffer, file: string): JournalContents {
  const live = new Map<string, InstanceRecord>();
  let start = 0;
  let lineNo = 0;
  for (let nl = data.indexOf(0x0a, start); nl !== -1; nl = data.indexOf(0x0a, start)) {
    lineNo++;
    const problem = applyLine(data.subarray(start, nl), live);
    if (problem !== null) {
      throw new InterceptorError(
        'ERR_STORE_CORRUPT',
        `registry journal ${file} is corrupt at line ${lineNo} (byte offset ${start}): ${problem}. Nothing was migrated and ` +
          `the file is untouched. Restore it from a backup, or move it aside to start with an empty registry.`,
      );
    }
    start = nl + 1;
  }
  return { records: [...live.values()], lines: lineNo, tornBytes: data.length - start };
}

// zlib.crc32 arrived in Node 20.15; the table form serves earlier 20.x releases.
const crc32: (data: Uint8Array) => number =
  typeof (zlib as { crc32?: unknown }).crc32 === 'function' ? (data) => zlib.crc32(data) : tableCrc32;

let crcTable: Uint32Array | null = null;
/** CRC-32 (the polynomial zlib uses), computed with a table; exported for its test. */
export function tableCrc32(data: Uint8Array): number {
  if (crcTable === null) {
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

/** Applies one line to `live`; returns what is wrong with it, or null. */
function applyLine(line: Buffer, live: Map<string, InstanceRecord>): string | null {
  if (line.length === 0) return 'empty line';
  if (line.indexOf(0x20) !== 8) return 'no "<crc32> " prefix';
  const crcText = line.subarray(0, 8).toString('latin1');
  if (!/^[0-9a-f]{8}$/.test(crcText)) return `checksum field "${crcText}" is not 8 hex digits`;
  const payload = line.subarray(9);
  if (crc32(payload) !== Number.parseInt(crcText, 16)) return 'checksum mismatch';
  let op: Record<string, unknown>;
  try {
    const json: unknown = JSON.parse(payload.toString('utf8'));
    if (typeof json !== 'object' || json === null || Array.isArray(json)) return 'payload is not a JSON object';
    op = json as Record<string, unknown>;
  } catch (err) {
    return `payload is not valid JSON (${(err as Error).message})`;
  }
  if (op.op === 'put') {
    try {
      const record = deserializeInstance(op.record);
      live.set(record.instanceId, record);
      return null;
    } catch (err) {
      return `invalid record: ${(err as Error).message}`;
    }
  }
  if (op.op === 'del' && typeof op.id === 'string' && op.id !== '') {
    live.delete(op.id);
    return null;
  }
  return `unknown op ${JSON.stringify(op.op)}`;
}
