#!/usr/bin/env node
// Fuzzer for the PROXY protocol codec (src/pp). The same engine runs bounded in
// test/unit/pp/fuzz.test.ts (against the TypeScript sources) and for long runs here (against the
// compiled dist/pp/index.js):
//
//   npx tsc -p tsconfig.json && node scripts/fuzz-pp.mjs --cases 1000000 --seed 1
//   node scripts/fuzz-pp.mjs --seed 1 --only 4711        # replay one case, verbosely
//
// Per case: one input (random bytes, or a valid header, mutated or not, with payload behind it),
// fed whole, one byte at a time, split at every offset (a sample of offsets for long inputs) and
// in random chunks. It fails on any exception other than a ProxyProtocolError with a known code,
// on any difference between the ways of feeding, on bytesBuffered above its bound, and on a
// parsed header that does not survive re-encoding.

import { pathToFileURL } from 'node:url';

const SIGNATURE = Buffer.from('0d0a0d0a000d0a515549540a', 'hex');
const V1_MAX = 107;

/** xorshift32 (Marsaglia): small, fast, deterministic; not for anything but test inputs. */
export function xorshift32(seed) {
  let x = seed >>> 0 || 0x9e3779b9;
  const next = () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
  const rng = {
    next,
    /** Integer in [0, n). */
    int: (n) => Math.floor((next() / 0x100000000) * n),
    chance: (p) => next() / 0x100000000 < p,
    pick: (items) => items[rng.int(items.length)],
    bytes: (n) => {
      const b = Buffer.allocUnsafe(n);
      for (let i = 0; i < n; i++) b[i] = next() & 0xff;
      return b;
    },
  };
  return rng;
}

/** Seed of case `index` of a run: every case is reproducible on its own (--only). */
export function caseSeed(seed, index) {
  let h = (Math.imul(seed >>> 0, 0x9e3779b1) ^ Math.imul(index + 1, 0x85ebca6b)) >>> 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x7feb352d);
  h ^= h >>> 15;
  h = Math.imul(h, 0x846ca68b);
  h ^= h >>> 16;
  return h >>> 0 || 1;
}

// ---------------------------------------------------------------------------------------------
// Inputs

function randomIPv4(rng) {
  return rng.chance(0.2) ? rng.pick(['0.0.0.0', '255.255.255.255', '127.0.0.1', '10.0.0.1']) : `${rng.int(256)}.${rng.int(256)}.${rng.int(256)}.${rng.int(256)}`;
}

function randomIPv6(rng) {
  if (rng.chance(0.15)) return rng.pick(['::', '::1', '::ffff:1.2.3.4', '2001:db8::1', 'fe80::1:0:0:1', 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff']);
  const words = [];
  // Zero runs are what canonical compression is about: make them common.
  for (let i = 0; i < 8; i++) words.push(rng.chance(0.4) ? 0 : rng.int(0x10000));
  if (rng.chance(0.1)) return `::ffff:${randomIPv4(rng)}`;
  return words.map((w) => w.toString(16)).join(':');
}

function randomEndpoint(rng, kind) {
  const port = rng.chance(0.1) ? rng.pick([0, 1, 65535]) : rng.int(65536);
  if (kind === 4) return { address: randomIPv4(rng), port };
  if (kind === 6) return { address: randomIPv6(rng), port };
  const name = rng.bytes(rng.int(60)).toString('base64url');
  return { address: rng.chance(0.2) ? `\0${name}` : `/run/${name}`, port: 0 };
}

const TLV_TYPES = [0x01, 0x02, 0x03, 0x04, 0x05, 0x20, 0x21, 0x30, 0xe0, 0xee, 0x00, 0xff];

function randomTlv(pp, rng) {
  const type = rng.pick(TLV_TYPES);
  if (type === pp.PP2_TYPE.SSL) {
    const subs = [];
    const count = rng.int(5);
    for (let i = 0; i < count; i++) {
      const sub = Buffer.from(rng.pick(['TLSv1.3', 'CN=example', 'TLS_AES_128_GCM_SHA256', 'SHA256', 'RSA2048', '']), 'latin1');
      subs.push(Buffer.from([rng.pick([0x21, 0x22, 0x23, 0x24, 0x25, 0xe0]), sub.length >> 8, sub.length & 0xff]), sub);
    }
    const head = Buffer.alloc(5);
    head[0] = rng.int(8);
    head.writeUInt32BE(rng.chance(0.8) ? 0 : rng.next(), 1);
    return { type, value: Buffer.concat([head, ...subs]) };
  }
  if (type === pp.PP2_TYPE.CRC32C) return { type: pp.PP2_TYPE.NOOP, value: rng.bytes(rng.int(4)) };
  const length = type === pp.PP2_TYPE.UNIQUE_ID ? rng.int(129) : rng.int(rng.chance(0.9) ? 24 : 300);
  return { type, value: rng.bytes(length) };
}

function validHeader(pp, rng) {
  switch (rng.int(8)) {
    case 0:
    case 1: {
      const k = rng.pick([4, 6, 6, 4]);
      const k2 = rng.chance(0.9) ? k : 10 - k;
      return pp.encodeV1(randomEndpoint(rng, k), randomEndpoint(rng, k2));
    }
    case 2: {
      if (rng.chance(0.5)) return pp.encodeV1Unknown();
      const junk = rng.bytes(rng.int(V1_MAX - 16)).toString('latin1').replace(/[\r\n]/g, ' ');
      return Buffer.from(`PROXY UNKNOWN ${junk}\r\n`, 'latin1');
    }
    case 3: {
      // Non-canonical but valid v1 IPv6 text: upper case, leading zeros in groups, no compression.
      const words = Array.from({ length: 8 }, () => (rng.chance(0.3) ? 0 : rng.int(0x10000)));
      const text = () => words.map((w) => w.toString(16).padStart(rng.int(5), '0').toUpperCase()).join(':');
      return Buffer.from(`PROXY TCP6 ${text()} ${text()} ${rng.int(65536)} ${rng.int(65536)}\r\n`, 'latin1');
    }
    case 4: {
      const tlvs = Array.from({ length: rng.int(4) }, () => randomTlv(pp, rng));
      return pp.encodeV2({ command: 'LOCAL', tlvs, crc32c: rng.chance(0.3) });
    }
    default: {
      const kind = rng.pick([4, 4, 6, 6, 'unix']);
      const kind2 = kind === 'unix' ? kind : rng.chance(0.85) ? kind : 10 - kind;
      const tlvs = Array.from({ length: rng.int(5) }, () => randomTlv(pp, rng));
      return pp.encodeV2({
        transport: rng.chance(0.8) ? 'STREAM' : 'DGRAM',
        ...(rng.chance(0.95) ? { source: randomEndpoint(rng, kind), destination: randomEndpoint(rng, kind2) } : {}),
        tlvs,
        crc32c: rng.chance(0.4),
      });
    }
  }
}

const INTERESTING = [0x00, 0x01, 0x0a, 0x0d, 0x20, 0x21, 0x2e, 0x30, 0x3a, 0x7f, 0x80, 0xff];

function mutate(rng, input) {
  let b = Buffer.from(input);
  const rounds = 1 + rng.int(3);
  for (let r = 0; r < rounds && b.length > 0; r++) {
    const at = rng.int(b.length);
    switch (rng.int(8)) {
      case 0:
        b[at] ^= 1 << rng.int(8);
        break;
      case 1:
        b[at] = rng.pick(INTERESTING);
        break;
      case 2:
        b = b.subarray(0, rng.int(b.length));
        break;
      case 3:
        b = Buffer.concat([b.subarray(0, at), rng.chance(0.5) ? rng.bytes(1 + rng.int(4)) : Buffer.from([rng.pick(INTERESTING)]), b.subarray(at)]);
        break;
      case 4:
        b = Buffer.concat([b.subarray(0, at), b.subarray(Math.min(b.length, at + 1 + rng.int(4)))]);
        break;
      case 5:
        // The v2 length field.
        if (b.length >= 16) {
          const old = b.readUInt16BE(14);
          const value = rng.chance(0.5) ? old + rng.int(9) - 4 : rng.pick([0, 1, 11, 12, 35, 36, 215, 216, 4096, 4097, 65535, rng.int(0x10000)]);
          b.writeUInt16BE(Math.max(0, Math.min(0xffff, value)), 14);
        }
        break;
      case 6:
        // A TLV length somewhere after the address block.
        if (b.length >= 20) {
          const p = 16 + rng.int(b.length - 17);
          b.writeUInt16BE(rng.chance(0.5) ? Math.max(0, Math.min(0xffff, b.readUInt16BE(p) + rng.int(5) - 2)) : rng.int(0x10000), p);
        }
        break;
      default:
        // Family/transport and version/command bytes.
        if (b.length >= 14) b[rng.chance(0.5) ? 12 : 13] = rng.chance(0.5) ? rng.int(256) : rng.pick([0x00, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32, 0x13, 0x41, 0x20, 0x21, 0x22, 0x10, 0x30]);
    }
  }
  return b;
}

/**
 * One fuzz input: header-ish bytes, often followed by payload. `validLength` is the header's
 * length when the input starts with an unmutated valid header, else null.
 */
export function generateInput(pp, rng) {
  const roll = rng.int(100);
  let input;
  let validLength = null;
  if (roll < 8) input = rng.bytes(rng.int(64));
  else if (roll < 14) input = Buffer.concat([rng.chance(0.5) ? SIGNATURE : Buffer.from('PROXY '), rng.bytes(rng.int(120))]);
  else if (roll < 40) {
    input = validHeader(pp, rng);
    validLength = input.length;
  } else input = mutate(rng, validHeader(pp, rng));
  if (rng.chance(0.5)) input = Buffer.concat([input, rng.bytes(1 + rng.int(40))]);
  return { input, validLength };
}

const MAX_V2_CHOICES = [undefined, undefined, undefined, 0, 12, 40, 216, 300, 65535];

// ---------------------------------------------------------------------------------------------
// Oracle

export class FuzzFailure extends Error {
  constructor(message, details) {
    super(message);
    this.name = 'FuzzFailure';
    this.details = details;
  }
}

function deepEqual(a, b) {
  if (a === b) return true;
  if (Buffer.isBuffer(a) || Buffer.isBuffer(b)) return Buffer.isBuffer(a) && Buffer.isBuffer(b) && a.equals(b);
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a);
  if (ka.length !== Object.keys(b).length) return false;
  for (const k of ka) if (!deepEqual(a[k], b[k])) return false;
  return true;
}

function describe(outcome) {
  if (outcome.kind === 'error') return `error ${outcome.code}`;
  if (outcome.kind === 'incomplete') return `incomplete (${outcome.buffered} buffered)`;
  return `header ${JSON.stringify(outcome.header, (k, v) => (v && v.type === 'Buffer' ? Buffer.from(v.data).toString('hex') : v))} rest ${outcome.rest.toString('hex')}`;
}

/**
 * Feeds `chunks` to a fresh parser. Returns the outcome; throws FuzzFailure on anything the
 * contract does not allow.
 */
function feed(pp, chunks, opts, bound, stats) {
  const parser = pp.createHeaderParser(opts);
  for (let i = 0; i < chunks.length; i++) {
    let result;
    try {
      result = parser.push(chunks[i]);
    } catch (err) {
      if (!(err instanceof pp.ProxyProtocolError) || !pp.PP_ERROR_CODES.includes(err.code) || err.code === 'PP_ERR_STATE') {
        throw new FuzzFailure(`unexpected exception: ${err && err.stack ? err.stack : err}`);
      }
      if (parser.bytesBuffered !== 0) throw new FuzzFailure(`bytesBuffered is ${parser.bytesBuffered} after an error`);
      expectState(pp, parser);
      return { kind: 'error', code: err.code };
    }
    const buffered = parser.bytesBuffered;
    if (buffered > bound) throw new FuzzFailure(`bytesBuffered ${buffered} exceeds the bound ${bound}`);
    if (buffered > stats.maxBuffered) stats.maxBuffered = buffered;
    if (result !== null) {
      if (buffered !== 0) throw new FuzzFailure(`bytesBuffered is ${buffered} after completion`);
      expectState(pp, parser);
      const tail = chunks.slice(i + 1);
      const rest = tail.length === 0 ? result.rest : Buffer.concat([result.rest, ...tail]);
      return { kind: 'header', header: result.header, rest };
    }
  }
  return { kind: 'incomplete', buffered: parser.bytesBuffered };
}

function expectState(pp, parser) {
  try {
    parser.push(Buffer.alloc(0));
  } catch (err) {
    if (err instanceof pp.ProxyProtocolError && err.code === 'PP_ERR_STATE') return;
    throw new FuzzFailure(`push after the end threw ${err && err.code} instead of PP_ERR_STATE`);
  }
  throw new FuzzFailure('push after the end did not throw PP_ERR_STATE');
}

function same(a, b) {
  if (a.kind !== b.kind) return false;
  if (a.kind === 'error') return a.code === b.code;
  if (a.kind === 'incomplete') return a.buffered === b.buffered;
  return a.rest.equals(b.rest) && deepEqual(a.header, b.header);
}

function splitAt(input, offsets) {
  const chunks = [];
  let from = 0;
  for (const at of offsets) {
    chunks.push(input.subarray(from, at));
    from = at;
  }
  chunks.push(input.subarray(from));
  return chunks;
}

/** Parsed headers must survive encode → parse (the encoders normalise only IPv4-mapped addresses). */
function checkReencode(pp, input, header) {
  const mapped = (e) => e && e.address.startsWith('::ffff:') && e.address.includes('.');
  if (header.command !== 'PROXY' || !header.source || mapped(header.source) || mapped(header.destination)) return;
  if (header.version === 2) {
    if (header.family === 'UNIX') return; // paths are decoded as UTF-8 with padding removed: lossy by design
    const again = pp.encodeV2({ transport: header.transport, source: header.source, destination: header.destination, tlvs: header.tlvs });
    if (!again.equals(input.subarray(0, header.length))) throw new FuzzFailure(`v2 re-encoding differs: ${again.toString('hex')}`);
    return;
  }
  const again = pp.parseHeader(pp.encodeV1(header.source, header.destination));
  if (!again || !deepEqual({ ...again.header, length: 0 }, { ...header, length: 0 })) {
    throw new FuzzFailure(`v1 re-encoding differs: ${again && describe({ kind: 'header', header: again.header, rest: again.rest })}`);
  }
}

/**
 * Runs one input through every way of feeding it. Returns the whole-input outcome.
 * `validLength`: the input starts with a valid header of that length, which must parse (or
 * exceed the length cap).
 */
/**
 * @param {any} pp
 * @param {Buffer} input
 * @param {ReturnType<typeof xorshift32>} rng
 * @param {number | undefined} maxV2Length
 * @param {{ maxBuffered: number }} stats
 * @param {number | null} [validLength]
 * @returns {{ kind: 'error', code: string } | { kind: 'incomplete', buffered: number } | { kind: 'header', header: any, rest: Buffer }}
 */
export function checkInput(pp, input, rng, maxV2Length, stats, validLength = null) {
  const opts = maxV2Length === undefined ? {} : { maxV2Length };
  const cap = maxV2Length ?? 4096;
  const bound = input.length > 0 && input[0] === 0x50 ? V1_MAX : 16 + cap;
  const whole = feed(pp, [input], opts, bound, stats);
  if (validLength !== null) {
    const tooLong = input[0] !== 0x50 && validLength - 16 > cap;
    const ok = tooLong ? whole.kind === 'error' && whole.code === 'PP_ERR_V2_TOO_LONG' : whole.kind === 'header' && whole.header.length === validLength;
    if (!ok) throw new FuzzFailure(`a valid ${validLength}-byte header gave ${describe(whole)}`);
  }
  if (whole.kind === 'header') {
    if (whole.header.length + whole.rest.length !== input.length || !whole.rest.equals(input.subarray(whole.header.length))) {
      throw new FuzzFailure('header.length and rest do not add up to the input');
    }
    checkReencode(pp, input, whole.header);
  } else if (whole.kind === 'incomplete' && whole.buffered !== input.length) {
    throw new FuzzFailure(`incomplete with ${whole.buffered} of ${input.length} bytes buffered`);
  }

  const splits = [];
  const n = input.length;
  // One byte at a time.
  splits.push(Array.from({ length: Math.max(0, n - 1) }, (_, i) => i + 1));
  if (n <= 64) {
    for (let at = 1; at < n; at++) splits.push([at]);
  } else {
    const offsets = new Set([1, 5, 6, 11, 12, 13, 14, 15, 16, 17, 28, 52, 106, 107, 108]);
    if (whole.kind === 'header') for (const d of [-3, -1, 0, 1]) offsets.add(whole.header.length + d);
    for (let i = 0; i < 6; i++) offsets.add(1 + rng.int(n - 1));
    for (const at of offsets) if (at > 0 && at < n) splits.push([at]);
  }
  // Random chunking, empty chunks included.
  for (let r = 0; r < 2; r++) {
    const cuts = [];
    for (let at = rng.int(8); at < n; at += rng.int(rng.chance(0.5) ? 4 : 40)) cuts.push(at);
    splits.push(cuts);
  }

  for (const offsets of splits) {
    const got = feed(pp, splitAt(input, offsets), opts, bound, stats);
    if (!same(whole, got)) {
      throw new FuzzFailure(`split at [${offsets.length > 12 ? `${offsets.length} offsets` : offsets.join(',')}] gave ${describe(got)}, whole gave ${describe(whole)}`);
    }
  }
  return whole;
}

/**
 * Runs `cases` cases from `seed`. Returns { cases, histogram, maxBuffered }; throws FuzzFailure
 * (with details.seed, details.index, details.hex) on the first failure.
 * @param {any} pp the codec module (src/pp/index.ts or dist/pp/index.js)
 * @param {{ cases: number, seed: number, first?: number, onProgress?: (done: number) => void }} options
 * @returns {{ cases: number, histogram: Record<string, number>, maxBuffered: number }}
 */
export function runFuzz(pp, { cases, seed, first = 0, onProgress }) {
  const stats = { maxBuffered: 0 };
  const histogram = Object.create(null);
  for (let index = first; index < first + cases; index++) {
    const rng = xorshift32(caseSeed(seed, index));
    const maxV2Length = rng.pick(MAX_V2_CHOICES);
    const { input, validLength } = generateInput(pp, rng);
    let outcome;
    try {
      outcome = checkInput(pp, input, rng, maxV2Length, stats, validLength);
    } catch (err) {
      if (!(err instanceof FuzzFailure)) throw err;
      err.details = { seed, index, maxV2Length, hex: input.toString('hex') };
      throw err;
    }
    const key = outcome.kind === 'error' ? outcome.code : outcome.kind === 'header' ? `ok v${outcome.header.version}` : 'incomplete';
    histogram[key] = (histogram[key] ?? 0) + 1;
    if (onProgress && (index - first + 1) % 100000 === 0) onProgress(index - first + 1);
  }
  return { cases, histogram, maxBuffered: stats.maxBuffered };
}

// ---------------------------------------------------------------------------------------------
// CLI

function parseArgs(argv) {
  const args = { cases: 1_000_000, seed: (Date.now() & 0x7fffffff) >>> 0, only: undefined, module: '../dist/pp/index.js' };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = argv[i + 1];
    const num = () => {
      const n = Number(value);
      if (!Number.isInteger(n) || n < 0) throw new Error(`${flag} needs a non-negative integer`);
      i++;
      return n;
    };
    if (flag === '--cases') args.cases = num();
    else if (flag === '--seed') args.seed = num();
    else if (flag === '--only') args.only = num();
    else if (flag === '--module') {
      args.module = pathToFileURL(value).href;
      i++;
    } else throw new Error(`unknown argument ${flag} (use --cases N, --seed S, --only INDEX, --module PATH)`);
  }
  return args;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const pp = await import(new URL(args.module, import.meta.url).href);
  // Stack capture is most of the cost of a rejected input; a failure prints the replay command,
  // and a replay (--only) keeps full stacks.
  if (args.only === undefined) Error.stackTraceLimit = 0;
  else Error.stackTraceLimit = 50;
  const started = performance.now();
  const run = args.only === undefined ? { cases: args.cases, first: 0 } : { cases: 1, first: args.only };
  console.log(`fuzz-pp: seed ${args.seed}, ${run.cases} cases`);
  let result;
  try {
    result = runFuzz(pp, {
      ...run,
      seed: args.seed,
      onProgress: (done) => process.stderr.write(`  ${done} cases, ${((performance.now() - started) / 1000).toFixed(1)} s\n`),
    });
  } catch (err) {
    console.error(`FAIL: ${err.message}`);
    if (err.details) {
      const d = err.details;
      console.error(`  seed ${d.seed}, case ${d.index}, maxV2Length ${d.maxV2Length ?? 'default'}`);
      console.error(`  input (${d.hex.length / 2} bytes): ${d.hex}`);
      console.error(`  replay: node scripts/fuzz-pp.mjs --seed ${d.seed} --only ${d.index}`);
    }
    process.exit(1);
  }
  const seconds = (performance.now() - started) / 1000;
  console.log(`cases: ${result.cases}`);
  console.log(`time: ${seconds.toFixed(1)} s`);
  console.log('outcomes:');
  for (const [key, count] of Object.entries(result.histogram).sort((a, b) => b[1] - a[1])) console.log(`  ${key.padEnd(22)} ${count}`);
  console.log(`max bytesBuffered: ${result.maxBuffered}`);
  console.log(`max RSS: ${(process.resourceUsage().maxRSS / 1024).toFixed(1)} MiB`);
  console.log('result: OK');
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((err) => {
    console.error(err);
    process.exit(2);
  });
}
