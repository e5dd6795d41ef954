// Incremental header parser. Every check looks only at bytes already seen and runs in stream
// order, so any split of the same input gives the same header or the same error code.
import { V1_MAX_LENGTH, V1_PREFIX, V2_DEFAULT_MAX_LENGTH, V2_FIXED_LENGTH, V2_MAX_PAYLOAD, V2_SIGNATURE } from './constants.js';
import { invalidArg, ProxyProtocolError } from './errors.js';
import type { ProxyHeader } from './types.js';
import { decodeV1 } from './v1.js';
import { addressLength, checkLength, checkVersionCommand, decodeV2 } from './v2.js';

export interface HeaderParserOptions {
  /** Largest v2 length field accepted (default 4096, at most 65535). */
  maxV2Length?: number;
}

export interface HeaderParser {
  /**
   * Feed bytes. Returns null while more bytes are needed; the header plus the bytes after it
   * once complete. Throws ProxyProtocolError on invalid input; after a throw or a completed
   * header, further push() throws PP_ERR_STATE.
   */
  push(chunk: Buffer): { header: ProxyHeader; rest: Buffer } | null;
  readonly bytesBuffered: number;
}

const enum Phase {
  /** Matching "PROXY " or the v2 signature. */
  Detect,
  /** Looking for the CRLF. */
  V1,
  /** Waiting for the 16 fixed bytes. */
  V2Fixed,
  /** Waiting for the `total` bytes the length field announced. */
  V2Body,
  Done,
  Failed,
}

const CR = 0x0d;
const LF = 0x0a;

function checkMaxV2Length(value: number | undefined): number {
  if (value === undefined) return V2_DEFAULT_MAX_LENGTH;
  if (!Number.isInteger(value) || value < 0 || value > V2_MAX_PAYLOAD) {
    throw invalidArg(`maxV2Length must be an integer in 0-${V2_MAX_PAYLOAD}`);
  }
  return value;
}

class Parser implements HeaderParser {
  private phase = Phase.Detect;
  /**
   * Bytes of an incomplete header, sized to what the header can still need. Unpooled, since a
   * finished v2 header's TLV values are views of it.
   */
  private store: Buffer | null = null;
  private stored = 0;
  /** Detect: prefix bytes verified. V1: next index to scan for CR/LF. */
  private scanned = 0;
  /** V2Body: total header size. */
  private total = 0;
  /** Set from the first byte: 0x0D can only start a v2 signature. */
  private v2 = false;
  private readonly maxV2Length: number;

  constructor(maxV2Length: number) {
    this.maxV2Length = maxV2Length;
  }

  get bytesBuffered(): number {
    return this.stored;
  }

  push(chunk: Buffer): { header: ProxyHeader; rest: Buffer } | null {
    if (this.phase === Phase.Done || this.phase === Phase.Failed) {
      throw new ProxyProtocolError('PP_ERR_STATE', this.phase === Phase.Done ? 'PROXY header already complete' : 'PROXY header parser failed earlier');
    }
    if (!Buffer.isBuffer(chunk)) throw invalidArg('push: chunk must be a Buffer');
    try {
      return this.store === null ? this.pushFresh(chunk) : this.pushBuffered(chunk);
    } catch (err) {
      this.phase = Phase.Failed;
      this.store = null;
      this.stored = 0;
      throw err;
    }
  }

  /** Nothing buffered yet: look at the chunk in place, the common single-segment case. */
  private pushFresh(chunk: Buffer): { header: ProxyHeader; rest: Buffer } | null {
    if (chunk.length === 0) return null;
    const end = this.advance(chunk, chunk.length);
    if (end >= 0) return this.finish(chunk, end, false, chunk.subarray(end));
    // Incomplete, hence shorter than what the header still needs: `capacity()` bounds it.
    this.store = Buffer.allocUnsafeSlow(this.capacity());
    this.stored = chunk.copy(this.store, 0);
    return null;
  }

  private pushBuffered(chunk: Buffer): { header: ProxyHeader; rest: Buffer } | null {
    let offset = 0;
    while (offset < chunk.length) {
      const capacity = this.capacity();
      let store = this.store!;
      if (store.length < capacity) {
        // The v2 length just became known: move the 16 fixed bytes into a buffer of the full size.
        const grown = Buffer.allocUnsafeSlow(capacity);
        store.copy(grown, 0, 0, this.stored);
        this.store = store = grown;
      }
      const n = chunk.copy(store, this.stored, offset, offset + (capacity - this.stored));
      // advance() decides by the time the store is full; guard against a future edit looping forever.
      if (n === 0) throw new Error(`PROXY header parser made no progress at ${this.stored} bytes (bug)`);
      this.stored += n;
      offset += n;
      const end = this.advance(store, this.stored);
      if (end >= 0) {
        // Earlier pushes were incomplete, so whatever follows the header came from this chunk.
        return this.finish(store, end, true, chunk.subarray(offset - (this.stored - end)));
      }
    }
    return null;
  }

  /** Most bytes the header can need in the current phase; never more than 16 + maxV2Length (v1: 107). */
  private capacity(): number {
    switch (this.phase) {
      case Phase.V2Body:
        return this.total;
      case Phase.V2Fixed:
        return V2_FIXED_LENGTH;
      case Phase.V1:
        return V1_MAX_LENGTH;
      default:
        return this.v2 ? V2_FIXED_LENGTH : V1_MAX_LENGTH;
    }
  }

  /**
   * Runs every check the first `n` bytes of `data` allow. Returns the header length once
   * complete, -1 if more bytes are needed; throws on invalid input.
   */
  private advance(data: Buffer, n: number): number {
    if (this.phase === Phase.Detect) {
      this.v2 = data[0] === CR;
      const expected = this.v2 ? V2_SIGNATURE : V1_PREFIX;
      const m = Math.min(n, expected.length);
      for (let i = this.scanned; i < m; i++) {
        if (data[i] !== expected[i]) {
          throw new ProxyProtocolError('PP_ERR_NOT_PROXY', `not a PROXY protocol header (byte ${i} is 0x${data[i]!.toString(16).padStart(2, '0')})`);
        }
      }
      this.scanned = m;
      if (m < expected.length) return -1;
      this.phase = this.v2 ? Phase.V2Fixed : Phase.V1;
    }
    if (this.phase === Phase.V1) return this.advanceV1(data, n);
    if (this.phase === Phase.V2Fixed) {
      if (n > 12) checkVersionCommand(data[12]!);
      if (n > 13) addressLength(data[13]!);
      if (n < V2_FIXED_LENGTH) return -1;
      this.total = checkLength(data, this.maxV2Length);
      this.phase = Phase.V2Body;
    }
    return n >= this.total ? this.total : -1;
  }

  private advanceV1(data: Buffer, n: number): number {
    const limit = Math.min(n, V1_MAX_LENGTH);
    for (let i = this.scanned; i < limit; i++) {
      const c = data[i]!;
      if (c === LF) throw new ProxyProtocolError('PP_ERR_V1_MALFORMED', `PROXY v1: LF without CR at offset ${i}`);
      if (c !== CR) continue;
      if (i + 2 > V1_MAX_LENGTH) throw new ProxyProtocolError('PP_ERR_V1_TOO_LONG', `PROXY v1: no CRLF within ${V1_MAX_LENGTH} bytes`);
      if (i + 1 >= n) {
        this.scanned = i;
        return -1;
      }
      if (data[i + 1] !== LF) throw new ProxyProtocolError('PP_ERR_V1_MALFORMED', `PROXY v1: CR without LF at offset ${i}`);
      return i + 2;
    }
    this.scanned = limit;
    if (limit === V1_MAX_LENGTH) throw new ProxyProtocolError('PP_ERR_V1_TOO_LONG', `PROXY v1: no CRLF within ${V1_MAX_LENGTH} bytes`);
    return -1;
  }

  private finish(data: Buffer, end: number, owned: boolean, rest: Buffer): { header: ProxyHeader; rest: Buffer } {
    const header = this.phase === Phase.V1 ? decodeV1(data, end) : decodeV2(data, end, owned);
    this.phase = Phase.Done;
    this.store = null;
    this.stored = 0;
    return { header, rest };
  }
}

export function createHeaderParser(opts: HeaderParserOptions = {}): HeaderParser {
  return new Parser(checkMaxV2Length(opts.maxV2Length));
}

/** Parses a header at the start of `buf`; null if `buf` ends before the header does. */
export function parseHeader(buf: Buffer, opts: HeaderParserOptions = {}): { header: ProxyHeader; rest: Buffer } | null {
  return new Parser(checkMaxV2Length(opts.maxV2Length)).push(buf);
}
