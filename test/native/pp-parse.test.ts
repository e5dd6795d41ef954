// The native PROXY parser (native/pp.cc, what the loop threads run for trusted sources) against
// the TypeScript codec (src/pp/, the reference): the fuzzer's inputs, whole and cut short, must
// give the same header or the same error code. And the header the threads send must be byte for
// byte what the codec encodes.
import { isIP } from 'node:net';
import { describe, expect, it } from 'vitest';
import * as pp from '../../src/pp/index.js';
import { PP_FAILURES } from '../../src/datapath/events.js';
import { loadAddon, type NativeEndpoint } from '../../src/native/addon.js';
import { formatKey, ipKey } from '../../src/net/ip.js';
import { caseSeed, generateInput, xorshift32 } from '../../scripts/fuzz-pp.mjs';

const FORWARDED = new Set<number>([pp.PP2_TYPE.ALPN, pp.PP2_TYPE.AUTHORITY, pp.PP2_TYPE.UNIQUE_ID, pp.PP2_TYPE.SSL]);
const MAX_V2 = [0, 12, 40, 216, 300, 4096, 65535];

type Outcome = { status: 'more' } | { status: 'failed'; code: string } | { status: 'done'; header: Record<string, unknown> };

// The family the header named (TCP6 with an IPv4-mapped address is still IPv6), as the threads keep it.
function endpoint(e: pp.PpEndpoint | null): string | null {
  return e === null ? null : `${formatKey(ipKey(e.address)!.key)}|${isIP(e.address)}|${e.port}`;
}

function reference(input: Buffer, maxV2Length: number): Outcome {
  let r;
  try {
    r = pp.parseHeader(input, { maxV2Length });
  } catch (err) {
    return { status: 'failed', code: (err as { code: string }).code };
  }
  if (r === null) return { status: 'more' };
  const h = r.header;
  const ip = h.family === 'INET' || h.family === 'INET6';
  const usable = h.command === 'PROXY' && ip;
  const forwarded = h.version === 2 ? Buffer.concat(h.tlvs.filter((t) => FORWARDED.has(t.type)).map((t) => Buffer.concat([Buffer.from([t.type, t.value.length >> 8, t.value.length & 0xff]), t.value]))) : Buffer.alloc(0);
  return {
    status: 'done',
    header: {
      version: h.version,
      local: h.command === 'LOCAL',
      length: h.length,
      source: usable ? endpoint(h.source) : null,
      destination: usable ? endpoint(h.destination) : null,
      crc32c: h.crc32c !== undefined,
      tlvCount: h.tlvs.length,
      forwarded: forwarded.toString('hex'),
    },
  };
}

function native(input: Buffer, maxV2Length: number): Outcome {
  const r = loadAddon().ppParse(input, maxV2Length)!;
  if (r.status === 'more') return { status: 'more' };
  if (r.status === 'failed') return { status: 'failed', code: PP_FAILURES[r.error]! };
  const h = r.header!;
  const ep = (e: NativeEndpoint | null): string | null => (e === null ? null : `${formatKey(e.ip)}|${e.family}|${e.port}`);
  return {
    status: 'done',
    header: {
      version: h.version,
      local: h.local,
      length: h.length,
      source: ep(h.source),
      destination: ep(h.destination),
      crc32c: h.crc32c,
      tlvCount: h.tlvCount,
      forwarded: h.forwarded.toString('hex'),
    },
  };
}

describe('native PROXY parser = the TypeScript codec', () => {
  it('agrees on 30,000 fuzzer inputs (valid, mutated, random), whole and cut short', { timeout: 60_000 }, () => {
    const limit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    const seen = new Map<string, number>();
    try {
      for (let i = 0; i < 30_000; i++) {
        const rng = xorshift32(caseSeed(0x5eed, i));
        const { input } = generateInput(pp, rng) as { input: Buffer };
        const maxV2 = MAX_V2[rng.int(MAX_V2.length)]!;
        for (const cut of [input.length, rng.int(input.length + 1)]) {
          const part = input.subarray(0, cut);
          const expected = reference(part, maxV2);
          const got = native(part, maxV2);
          if (JSON.stringify(got) !== JSON.stringify(expected)) {
            throw new Error(`case ${i} (max ${maxV2}): ${part.toString('hex')}\nnative ${JSON.stringify(got)}\nreference ${JSON.stringify(expected)}`);
          }
          const key = expected.status === 'failed' ? expected.code : expected.status === 'done' ? `ok v${expected.header.version as number}` : 'more';
          seen.set(key, (seen.get(key) ?? 0) + 1);
        }
      }
    } finally {
      Error.stackTraceLimit = limit;
    }
    // Every outcome was exercised, so the comparison covered every rule.
    for (const code of pp.PP_ERROR_CODES) if (code !== 'PP_ERR_STATE') expect([...seen.keys()], code).toContain(code);
    expect([...seen.keys()]).toEqual(expect.arrayContaining(['ok v1', 'ok v2', 'more']));
  });

  it('never reads past what it is given, and asks for at most 16 + max bytes (107 for v1)', () => {
    const rng = xorshift32(99);
    for (let i = 0; i < 5000; i++) {
      const { input } = generateInput(pp, rng) as { input: Buffer };
      const part = input.subarray(0, rng.int(input.length + 1));
      const r = loadAddon().ppParse(part, 4096)!;
      if (r.status === 'more') expect(r.want).toBeLessThanOrEqual(part[0] === 0x0d ? 16 + 4096 : 107);
      if (r.status === 'done') expect(r.header!.length).toBeLessThanOrEqual(part.length);
    }
  });
});

describe('the header the loop threads send = the codec', () => {
  const key = (address: string, port: number): NativeEndpoint => {
    const k = ipKey(address)!;
    return { ip: Buffer.from(k.key), family: k.family, port };
  };
  const tlvs = [
    { type: pp.PP2_TYPE.AUTHORITY, value: Buffer.from('app.example') },
    { type: pp.PP2_TYPE.UNIQUE_ID, value: Buffer.from('0123456789abcdef', 'hex') },
  ];
  const raw = Buffer.concat(tlvs.map((t) => Buffer.concat([Buffer.from([t.type, 0, t.value.length]), t.value])));
  it.each([
    ['198.18.1.2', 40000, '198.18.2.2', 8080],
    ['fd00:18:1::2', 1, 'fd00:18:2::2', 443],
    ['198.18.1.2', 65535, 'fd00:18:2::2', 443],
    ['::', 0, '2001:db8::1:0:0:1', 80],
  ])('%s:%d -> %s:%d, v1 and v2 with forwarded TLVs', (src, sport, dst, dport) => {
    const source = { address: src, port: sport };
    const destination = { address: dst, port: dport };
    const addon = loadAddon();
    expect(addon.ppEncode(2, key(src, sport), key(dst, dport), Buffer.alloc(0))!.toString('hex')).toBe(pp.encodeV2({ source, destination }).toString('hex'));
    expect(addon.ppEncode(2, key(src, sport), key(dst, dport), raw)!.toString('hex')).toBe(pp.encodeV2({ source, destination, tlvs }).toString('hex'));
    expect(addon.ppEncode(1, key(src, sport), key(dst, dport), raw)!.toString('latin1')).toBe(pp.encodeV1(source, destination).toString('latin1'));
  });
});
