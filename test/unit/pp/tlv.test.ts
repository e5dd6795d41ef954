import { describe, expect, it } from 'vitest';
import { crc32c, encodeV2, parseHeader, PP2_TYPE, type PpTlv } from '../../../src/pp/index.js';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const SIG = '0d0a0d0a000d0a515549540a';
const TCP4_ADDR = 'c000020a c6336407 c822 01bb'; // 192.0.2.10:51234 -> 198.51.100.7:443

// Built byte by byte the way HAProxy's make_proxy_line_v2 does (CRC32C placeholder first, then
// ALPN, AUTHORITY, UNIQUE_ID, SSL), checksums from an independent bitwise CRC32C in Python.
const HAPROXY_TCP4_CRC_AUTHORITY_UNIQUE_ID = hex(`${SIG} 21 11 0052 ${TCP4_ADDR}
  03 0004 13c8572f
  02 000b ${Buffer.from('example.com').toString('hex')}
  05 002e ${Buffer.from('7F000001:C822_0A000002:01BB_6650B8E4_0001:1A2B').toString('hex')}`);

const HAPROXY_TCP6_ALPN_SSL = hex(`${SIG} 21 21 0078
  20010db8000000000000000000000010 20010db8000000010000000000000443 9c40 01bb
  01 0002 6832
  20 004c 07 00000000
    21 0007 ${Buffer.from('TLSv1.3').toString('hex')}
    22 000e ${Buffer.from('client.example').toString('hex')}
    25 0007 ${Buffer.from('RSA2048').toString('hex')}
    24 0006 ${Buffer.from('SHA256').toString('hex')}
    23 0016 ${Buffer.from('TLS_AES_256_GCM_SHA384').toString('hex')}`);

/** A PROXY TCP4 header with the given TLV bytes after the address block. */
function withTlvs(tlvHex: string): Buffer {
  const tlvs = hex(tlvHex);
  const head = hex(`${SIG} 21 11 0000 ${TCP4_ADDR}`);
  head.writeUInt16BE(12 + tlvs.length, 14);
  return Buffer.concat([head, tlvs]);
}

function parse(buf: Buffer) {
  const result = parseHeader(buf);
  if (!result) throw new Error('incomplete');
  return result;
}

const codeOf = (buf: Buffer): string | undefined => {
  try {
    parseHeader(buf);
    return undefined;
  } catch (err) {
    return (err as { code?: string }).code;
  }
};

describe('CRC32C', () => {
  it('matches the known answers (check value, RFC 3720 B.4)', () => {
    expect(crc32c(Buffer.from('123456789'))).toBe(0xe3069283);
    expect(crc32c(Buffer.alloc(0))).toBe(0);
    expect(crc32c(Buffer.alloc(32))).toBe(0x8a9136aa);
    expect(crc32c(Buffer.alloc(32, 0xff))).toBe(0x62a8ab43);
    expect(crc32c(Buffer.from(Array.from({ length: 32 }, (_, i) => i)))).toBe(0x46dd794e);
    expect(crc32c(Buffer.from(Array.from({ length: 32 }, (_, i) => 31 - i)))).toBe(0x113fdb5c);
  });

  it('continues from a previous value', () => {
    const data = Buffer.from('The quick brown fox jumps over the lazy dog, again and again.');
    for (let cut = 0; cut <= data.length; cut++) {
      expect(crc32c(data.subarray(cut), crc32c(data.subarray(0, cut)))).toBe(crc32c(data));
    }
  });

  it('rejects bad arguments', () => {
    expect(() => crc32c('abc' as never)).toThrow(TypeError);
    expect(() => crc32c(Buffer.alloc(1), -1)).toThrow(TypeError);
    expect(() => crc32c(Buffer.alloc(1), 2 ** 32)).toThrow(TypeError);
  });
});

describe('v2 TLVs', () => {
  it('decodes a HAProxy header with CRC32C, AUTHORITY and UNIQUE_ID', () => {
    const { header, rest } = parse(Buffer.concat([HAPROXY_TCP4_CRC_AUTHORITY_UNIQUE_ID, Buffer.from('\x16\x03\x01', 'latin1')]));
    expect(header.source).toEqual({ address: '192.0.2.10', port: 51234 });
    expect(header.crc32c).toBe(0x13c8572f);
    expect(header.authority).toBe('example.com');
    expect(header.uniqueId!.toString()).toBe('7F000001:C822_0A000002:01BB_6650B8E4_0001:1A2B');
    expect(header.tlvs.map((t) => t.type)).toEqual([PP2_TYPE.CRC32C, PP2_TYPE.AUTHORITY, PP2_TYPE.UNIQUE_ID]);
    expect(header.tlvs[0]!.value).toEqual(hex('13c8572f'));
    expect(header.length).toBe(98);
    expect(rest).toEqual(hex('160301'));
  });

  it('decodes ALPN and the SSL TLV with its sub-TLVs', () => {
    const { header } = parse(HAPROXY_TCP6_ALPN_SSL);
    expect(header.alpn).toEqual(Buffer.from('h2'));
    expect(header.ssl).toEqual({
      client: 0x07,
      verify: 0,
      version: 'TLSv1.3',
      cn: 'client.example',
      cipher: 'TLS_AES_256_GCM_SHA384',
      sigAlg: 'SHA256',
      keyAlg: 'RSA2048',
      tlvs: [
        { type: PP2_TYPE.SSL_VERSION, value: Buffer.from('TLSv1.3') },
        { type: PP2_TYPE.SSL_CN, value: Buffer.from('client.example') },
        { type: PP2_TYPE.SSL_KEY_ALG, value: Buffer.from('RSA2048') },
        { type: PP2_TYPE.SSL_SIG_ALG, value: Buffer.from('SHA256') },
        { type: PP2_TYPE.SSL_CIPHER, value: Buffer.from('TLS_AES_256_GCM_SHA384') },
      ],
    });
    expect(header.tlvs.map((t) => t.type)).toEqual([PP2_TYPE.ALPN, PP2_TYPE.SSL]);
    expect(header.crc32c).toBeUndefined();
  });

  it('decodes an SSL TLV without sub-TLVs and a non-zero verify result', () => {
    const { header } = parse(withTlvs('20 0005 01 0000000a'));
    expect(header.ssl).toEqual({ client: 1, verify: 10, tlvs: [] });
  });

  it('keeps NOOP, NETNS, custom and unknown TLVs raw and in order', () => {
    const { header } = parse(withTlvs(`04 0003 000000  30 0004 ${Buffer.from('blue').toString('hex')}  e0 0002 abcd  7f 0000`));
    expect(header.netns).toBe('blue');
    expect(header.tlvs).toEqual([
      { type: PP2_TYPE.NOOP, value: hex('000000') },
      { type: PP2_TYPE.NETNS, value: Buffer.from('blue') },
      { type: 0xe0, value: hex('abcd') },
      { type: 0x7f, value: Buffer.alloc(0) },
    ]);
    expect(header.alpn).toBeUndefined();
    expect(header.authority).toBeUndefined();
    expect(header.uniqueId).toBeUndefined();
    expect(header.ssl).toBeUndefined();
  });

  it('keeps the first value of a repeated TLV in the conveniences, all of them in tlvs', () => {
    const a = Buffer.from('a.example').toString('hex');
    const b = Buffer.from('b.example').toString('hex');
    const { header } = parse(withTlvs(`02 0009 ${a} 02 0009 ${b}`));
    expect(header.authority).toBe('a.example');
    expect(header.tlvs).toHaveLength(2);
  });

  it('accepts a UNIQUE_ID of 0 and of 128 bytes, rejects 129', () => {
    expect(parse(withTlvs('05 0000')).header.uniqueId).toEqual(Buffer.alloc(0));
    expect(parse(withTlvs(`05 0080 ${'41'.repeat(128)}`)).header.uniqueId!.length).toBe(128);
    expect(codeOf(withTlvs(`05 0081 ${'41'.repeat(129)}`))).toBe('PP_ERR_TLV');
  });

  it('rejects truncated TLVs', () => {
    expect(codeOf(withTlvs('02'))).toBe('PP_ERR_TLV');
    expect(codeOf(withTlvs('02 00'))).toBe('PP_ERR_TLV');
    expect(codeOf(withTlvs('02 0005 6162'))).toBe('PP_ERR_TLV');
    expect(codeOf(withTlvs('04 0000 02 ffff'))).toBe('PP_ERR_TLV');
  });

  it('rejects a bad SSL structure', () => {
    expect(codeOf(withTlvs('20 0004 01000000'))).toBe('PP_ERR_TLV');
    expect(codeOf(withTlvs('20 0007 01 00000000 21 00'))).toBe('PP_ERR_TLV');
    expect(codeOf(withTlvs('20 0009 01 00000000 21 0005 41'))).toBe('PP_ERR_TLV');
    // Also when it is not the first SSL TLV.
    expect(codeOf(withTlvs('20 0005 01 00000000 20 0001 01'))).toBe('PP_ERR_TLV');
  });

  it('verifies CRC32C over the whole header with its value zeroed, wherever the TLV is', () => {
    for (const tlvs of [[], [{ type: PP2_TYPE.AUTHORITY, value: Buffer.from('x') }]] as PpTlv[][]) {
      const buf = encodeV2({ source: { address: '10.0.0.1', port: 1 }, destination: { address: '10.0.0.2', port: 2 }, tlvs, crc32c: true });
      const { header } = parse(buf);
      const zeroed = Buffer.from(buf);
      zeroed.writeUInt32BE(0, buf.length - 4);
      expect(header.crc32c).toBe(crc32c(zeroed));
    }
    // CRC32C first, as HAProxy sends it: already covered by the HAProxy vector; corrupt a byte after it.
    const corrupt = Buffer.from(HAPROXY_TCP4_CRC_AUTHORITY_UNIQUE_ID);
    corrupt[corrupt.length - 1] = corrupt[corrupt.length - 1]! ^ 0x01;
    expect(codeOf(corrupt)).toBe('PP_ERR_CRC32C');
    // A change in the fixed part is covered too: the destination port.
    const port = Buffer.from(HAPROXY_TCP4_CRC_AUTHORITY_UNIQUE_ID);
    port[27] = port[27]! ^ 0x01;
    expect(codeOf(port)).toBe('PP_ERR_CRC32C');
  });

  it('rejects a wrong checksum, a CRC32C TLV whose length is not 4, and a second CRC32C TLV', () => {
    const buf = encodeV2({ source: { address: '10.0.0.1', port: 1 }, destination: { address: '10.0.0.2', port: 2 }, crc32c: true });
    buf.writeUInt32BE((buf.readUInt32BE(buf.length - 4) + 1) >>> 0, buf.length - 4);
    expect(codeOf(buf)).toBe('PP_ERR_CRC32C');
    expect(codeOf(withTlvs('03 0003 000000'))).toBe('PP_ERR_CRC32C');
    expect(codeOf(withTlvs('03 0005 0000000000'))).toBe('PP_ERR_CRC32C');
    // Two CRC32C TLVs, the first one correct: which one "the" checksum is, is ambiguous.
    const twice = withTlvs('03 0004 00000000 03 0004 00000000');
    twice.writeUInt32BE(crc32c(twice), 31);
    expect(codeOf(twice)).toBe('PP_ERR_CRC32C');
  });

  it('hands out TLV values that do not alias the caller\'s chunk', () => {
    const input = Buffer.from(HAPROXY_TCP4_CRC_AUTHORITY_UNIQUE_ID);
    const { header } = parse(input);
    input.fill(0);
    expect(header.uniqueId!.toString()).toBe('7F000001:C822_0A000002:01BB_6650B8E4_0001:1A2B');
    expect(header.tlvs[1]!.value.toString()).toBe('example.com');
  });
});
