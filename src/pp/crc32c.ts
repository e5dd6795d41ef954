// CRC32C (Castagnoli, reflected polynomial 0x82F63B78), as in RFC 3720 and HAProxy's hash_crc32c.
// Slice-by-8 tables: headers are small, but the fuzzer and long TLVs benefit.
import { invalidArg } from './errors.js';

const TABLES = buildTables();

function buildTables(): Int32Array {
  const t = new Int32Array(8 * 256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[n] = c;
  }
  for (let n = 0; n < 256; n++) {
    let c = t[n]!;
    for (let k = 1; k < 8; k++) {
      c = t[c & 0xff]! ^ (c >>> 8);
      t[k * 256 + n] = c;
    }
  }
  return t;
}

/** Advances the raw (non-inverted) CRC register over buf[start, end). */
export function crc32cUpdate(crc: number, buf: Uint8Array, start: number, end: number): number {
  const t = TABLES;
  let i = start;
  for (; i + 8 <= end; i += 8) {
    const lo = crc ^ (buf[i]! | (buf[i + 1]! << 8) | (buf[i + 2]! << 16) | (buf[i + 3]! << 24));
    crc =
      t[1792 + (lo & 0xff)]! ^
      t[1536 + ((lo >>> 8) & 0xff)]! ^
      t[1280 + ((lo >>> 16) & 0xff)]! ^
      t[1024 + (lo >>> 24)]! ^
      t[768 + buf[i + 4]!]! ^
      t[512 + buf[i + 5]!]! ^
      t[256 + buf[i + 6]!]! ^
      t[buf[i + 7]!]!;
  }
  for (; i < end; i++) crc = t[(crc ^ buf[i]!) & 0xff]! ^ (crc >>> 8);
  return crc;
}

/** Advances the raw CRC register over `count` zero bytes. */
export function crc32cZeros(crc: number, count: number): number {
  for (let i = 0; i < count; i++) crc = TABLES[crc & 0xff]! ^ (crc >>> 8);
  return crc;
}

/**
 * CRC32C of `buf`. `initial` is a previous result to continue from, so
 * `crc32c(b, crc32c(a)) === crc32c(Buffer.concat([a, b]))`.
 */
export function crc32c(buf: Uint8Array, initial = 0): number {
  if (!(buf instanceof Uint8Array)) throw invalidArg('crc32c: buf must be a Buffer or Uint8Array');
  if (!Number.isInteger(initial) || initial < 0 || initial > 0xffffffff) {
    throw invalidArg('crc32c: initial must be an integer in [0, 0xFFFFFFFF]');
  }
  return ~crc32cUpdate(~initial, buf, 0, buf.length) >>> 0;
}
