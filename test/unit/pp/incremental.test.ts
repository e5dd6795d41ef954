import { describe, expect, it } from 'vitest';
import { createHeaderParser, encodeV1, encodeV2, parseHeader, type ProxyHeader } from '../../../src/pp/index.js';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const SIG = '0d0a0d0a000d0a515549540a';
const PAYLOAD = Buffer.from('GET / HTTP/1.1\r\nHost: example.com\r\n\r\n');

const HEADERS: Record<string, Buffer> = {
  'v1 TCP4': Buffer.from('PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n'),
  'v1 TCP6': Buffer.from('PROXY TCP6 2001:db8::10 2001:db8:0:1::443 40000 443\r\n'),
  'v1 UNKNOWN': Buffer.from('PROXY UNKNOWN ignored words here\r\n'),
  'v2 LOCAL, length 0': hex(`${SIG} 20 00 0000`),
  'v2 LOCAL with a CRC32C TLV': hex(`${SIG} 20 00 0007 03 0004 a9b87e8f`),
  'v2 TCP4 with CRC32C, AUTHORITY, UNIQUE_ID': hex(
    `${SIG} 21 11 0052 c000020a c6336407 c822 01bb 03 0004 13c8572f 02 000b ${Buffer.from('example.com').toString('hex')} 05 002e ${Buffer.from('7F000001:C822_0A000002:01BB_6650B8E4_0001:1A2B').toString('hex')}`,
  ),
  'v2 TCP6 with SSL': encodeV2({
    source: { address: '2001:db8::1', port: 1 },
    destination: { address: '2001:db8::2', port: 2 },
    tlvs: [{ type: 0x20, value: hex('07 00000000 21 0007 544c5376312e33') }],
    crc32c: true,
  }),
  'v2 UNIX': encodeV2({ source: { address: '/run/a.sock', port: 0 }, destination: { address: '/run/b.sock', port: 0 } }),
};

type Outcome = { header: ProxyHeader; rest: Buffer } | { code: string } | null;

/** Feeds the chunks in order; the rest is what followed the header in the completing chunk plus every later chunk. */
function feed(chunks: Buffer[], opts?: { maxV2Length?: number }): { outcome: Outcome; maxBuffered: number } {
  const parser = createHeaderParser(opts);
  let maxBuffered = 0;
  for (let i = 0; i < chunks.length; i++) {
    let result;
    try {
      result = parser.push(chunks[i]!);
    } catch (err) {
      return { outcome: { code: (err as { code: string }).code }, maxBuffered };
    }
    maxBuffered = Math.max(maxBuffered, parser.bytesBuffered);
    if (result) return { outcome: { header: result.header, rest: Buffer.concat([result.rest, ...chunks.slice(i + 1)]) }, maxBuffered };
  }
  return { outcome: null, maxBuffered };
}

const bytewise = (buf: Buffer): Buffer[] => Array.from(buf, (b) => Buffer.from([b]));

describe('incremental parsing', () => {
  for (const [name, bytes] of Object.entries(HEADERS)) {
    it(`parses ${name} identically whole, split at every offset, and one byte at a time`, () => {
      const input = Buffer.concat([bytes, PAYLOAD]);
      const whole = parseHeader(input)!;
      expect(whole.header.length).toBe(bytes.length);
      expect(whole.rest).toEqual(PAYLOAD);
      for (let at = 0; at <= input.length; at++) {
        expect(feed([input.subarray(0, at), input.subarray(at)]).outcome, `split at ${at}`).toEqual(whole);
      }
      expect(feed(bytewise(input)).outcome).toEqual(whole);
      expect(feed([input.subarray(0, 3), Buffer.alloc(0), input.subarray(3, 20), input.subarray(20)]).outcome).toEqual(whole);
    });
  }

  it('returns null until complete, then the header and the bytes after it in that chunk', () => {
    const parser = createHeaderParser();
    const header = HEADERS['v1 TCP4']!;
    expect(parser.push(header.subarray(0, 10))).toBeNull();
    expect(parser.bytesBuffered).toBe(10);
    expect(parser.push(header.subarray(10, header.length - 1))).toBeNull();
    expect(parser.bytesBuffered).toBe(header.length - 1);
    const result = parser.push(Buffer.concat([header.subarray(header.length - 1), Buffer.from('xyz')]));
    expect(result!.header.source).toEqual({ address: '192.0.2.1', port: 56324 });
    expect(result!.rest.toString()).toBe('xyz');
    expect(parser.bytesBuffered).toBe(0);
  });

  it('ignores empty chunks', () => {
    const parser = createHeaderParser();
    expect(parser.push(Buffer.alloc(0))).toBeNull();
    expect(parser.push(hex(SIG.slice(0, 8)))).toBeNull();
    expect(parser.push(Buffer.alloc(0))).toBeNull();
    expect(parser.bytesBuffered).toBe(4);
  });

  it('does not copy a header that arrives in one chunk: rest is a view of the chunk', () => {
    const input = Buffer.concat([HEADERS['v2 TCP4 with CRC32C, AUTHORITY, UNIQUE_ID']!, PAYLOAD]);
    const { rest } = createHeaderParser().push(input)!;
    expect(rest.buffer).toBe(input.buffer);
    expect(rest.byteOffset).toBe(input.byteOffset + input.length - PAYLOAD.length);
  });

  it('buffers no more than the header can need: 107 bytes for v1', () => {
    const ff = 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff';
    const line = Buffer.from(`PROXY UNKNOWN ${ff} ${ff} 65535 65535\r\n`);
    const { outcome, maxBuffered } = feed(bytewise(Buffer.concat([line, PAYLOAD])));
    expect(outcome).toMatchObject({ header: { length: 107 } });
    expect(maxBuffered).toBe(106);
    // A line with no CRLF stops at 107 bytes.
    expect(feed(bytewise(Buffer.alloc(300, 0x41).fill('PROXY ', 0, 6))).outcome).toEqual({ code: 'PP_ERR_V1_TOO_LONG' });
  });

  it('buffers no more than 16 + maxV2Length bytes for v2, also when chunks are large', () => {
    for (const maxV2Length of [12, 100, 4096, 65535]) {
      // A header exactly at the cap: the address block, then one custom TLV filling the rest.
      const header = hex(`${SIG} 21 11 0000 01020304 05060708 0001 0002`);
      header.writeUInt16BE(maxV2Length, 14);
      const tlv = Buffer.alloc(maxV2Length - 12);
      if (tlv.length > 0) {
        tlv[0] = 0xe0;
        tlv.writeUInt16BE(tlv.length - 3, 1);
      }
      const input = Buffer.concat([header, tlv, Buffer.alloc(70000, 0x55)]);
      for (const size of [1, 7, 1000]) {
        const chunks = [];
        for (let at = 0; at < input.length; at += size) chunks.push(input.subarray(at, at + size));
        const { outcome, maxBuffered } = feed(chunks, { maxV2Length });
        expect(outcome).toMatchObject({ header: { length: 16 + maxV2Length } });
        expect(maxBuffered).toBeLessThanOrEqual(16 + maxV2Length);
      }
    }
  });

  it('rejects a non-PROXY stream as soon as a byte rules both versions out', () => {
    for (const [prefix, bad] of [
      ['', 'G'],
      ['PRO', 'Z'],
      ['PROXY', '\r'],
      [hex('0d0a0d0a00').toString('latin1'), 'A'],
      [hex(SIG.slice(0, 22)).toString('latin1'), '\x0b'],
    ] as const) {
      const parser = createHeaderParser();
      expect(parser.push(Buffer.from(prefix, 'latin1'))).toBeNull();
      expect(() => parser.push(Buffer.from(bad, 'latin1'))).toThrow(expect.objectContaining({ code: 'PP_ERR_NOT_PROXY' }));
    }
  });

  it('rejects a bad v2 version, command or family byte as soon as it arrives', () => {
    for (const [bytes, code] of [
      [`${SIG} 11`, 'PP_ERR_V2_VERSION'],
      [`${SIG} 23`, 'PP_ERR_V2_COMMAND'],
      [`${SIG} 21 41`, 'PP_ERR_V2_FAMILY'],
      [`${SIG} 21 11 0001`, 'PP_ERR_V2_LENGTH'],
      [`${SIG} 21 11 1001`, 'PP_ERR_V2_TOO_LONG'],
    ] as const) {
      expect(() => createHeaderParser().push(hex(bytes)), bytes).toThrow(expect.objectContaining({ code }));
    }
  });

  it('throws PP_ERR_STATE on push after a complete header and after an error', () => {
    const done = createHeaderParser();
    done.push(HEADERS['v2 LOCAL, length 0']!);
    expect(() => done.push(PAYLOAD)).toThrow(expect.objectContaining({ code: 'PP_ERR_STATE' }));
    expect(() => done.push(Buffer.alloc(0))).toThrow(expect.objectContaining({ code: 'PP_ERR_STATE' }));

    const failed = createHeaderParser();
    expect(failed.push(Buffer.from('PROXY TCP4 1.2.3.4'))).toBeNull();
    expect(() => failed.push(Buffer.from('\n'))).toThrow(expect.objectContaining({ code: 'PP_ERR_V1_MALFORMED' }));
    expect(failed.bytesBuffered).toBe(0);
    expect(() => failed.push(Buffer.from('PROXY UNKNOWN\r\n'))).toThrow(expect.objectContaining({ code: 'PP_ERR_STATE' }));
  });

  it('parseHeader is the same parser over one buffer', () => {
    const input = Buffer.concat([encodeV1({ address: '1.2.3.4', port: 1 }, { address: '5.6.7.8', port: 2 }), PAYLOAD]);
    expect(parseHeader(input)).toEqual(createHeaderParser().push(input));
    expect(parseHeader(input.subarray(0, 5))).toBeNull();
  });
});
