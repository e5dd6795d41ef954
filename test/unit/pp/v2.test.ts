import { describe, expect, it } from 'vitest';
import { encodeV2, parseHeader, PP2_TYPE, ProxyProtocolError, type PpTlv } from '../../../src/pp/index.js';
import { xorshift32 } from '../../../scripts/fuzz-pp.mjs';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const SIG = '0d0a0d0a000d0a515549540a';

function parse(buf: Buffer) {
  const result = parseHeader(buf);
  if (!result) throw new Error('incomplete');
  return result;
}

describe('PROXY v2 parsing', () => {
  it('parses PROXY TCP over IPv4', () => {
    // 192.0.2.10:51234 -> 198.51.100.7:443, then payload.
    const input = hex(`${SIG} 21 11 000c c000020a c6336407 c822 01bb 474554`);
    const { header, rest } = parse(input);
    expect(header).toEqual({
      version: 2,
      command: 'PROXY',
      family: 'INET',
      transport: 'STREAM',
      source: { address: '192.0.2.10', port: 51234 },
      destination: { address: '198.51.100.7', port: 443 },
      tlvs: [],
      length: 28,
    });
    expect(rest.toString()).toBe('GET');
  });

  it('parses UDP over IPv4 (0x12)', () => {
    const { header } = parse(hex(`${SIG} 21 12 000c 0a000001 0a000002 0035 0035`));
    expect(header).toMatchObject({ family: 'INET', transport: 'DGRAM', source: { address: '10.0.0.1', port: 53 } });
  });

  it('parses TCP over IPv6 in canonical form', () => {
    const input = hex(`${SIG} 21 21 0024 20010db8000000000000000000000010 20010db8000000010000000000000443 9c40 01bb`);
    const { header } = parse(input);
    expect(header.family).toBe('INET6');
    expect(header.source).toEqual({ address: '2001:db8::10', port: 40000 });
    expect(header.destination).toEqual({ address: '2001:db8:0:1::443', port: 443 });
    expect(header.length).toBe(52);
  });

  it('parses IPv4-mapped IPv6 as ::ffff:a.b.c.d', () => {
    const { header } = parse(hex(`${SIG} 21 22 0024 00000000000000000000ffff01020304 00000000000000000000000000000001 0001 0002`));
    expect(header).toMatchObject({ family: 'INET6', transport: 'DGRAM', source: { address: '::ffff:1.2.3.4' }, destination: { address: '::1' } });
  });

  it('parses UNIX stream and datagram addresses, NUL padding removed', () => {
    for (const fam of [0x31, 0x32]) {
      const body = Buffer.alloc(216);
      body.write('/run/haproxy.sock', 0);
      body.write('\0abstract-name', 108);
      const input = Buffer.concat([hex(`${SIG} 21`), Buffer.from([fam, 0x00, 0xd8]), body]);
      const { header } = parse(input);
      expect(header).toMatchObject({
        family: 'UNIX',
        transport: fam === 0x31 ? 'STREAM' : 'DGRAM',
        source: { address: '/run/haproxy.sock', port: 0 },
        destination: { address: '\0abstract-name', port: 0 },
        length: 232,
      });
    }
  });

  it('parses LOCAL with a length of 0 (HAProxy health checks)', () => {
    const { header, rest } = parse(hex(`${SIG} 20 00 0000 48454c4f`));
    expect(header).toEqual({
      version: 2,
      command: 'LOCAL',
      family: 'UNSPEC',
      transport: 'UNSPEC',
      source: null,
      destination: null,
      tlvs: [],
      length: 16,
    });
    expect(rest.toString()).toBe('HELO');
  });

  it('consumes LOCAL TLVs (HAProxy check with crc32c) as opaque bytes', () => {
    const { header, rest } = parse(hex(`${SIG} 20 00 0007 03 0004 a9b87e8f ff`));
    expect(header).toMatchObject({ command: 'LOCAL', family: 'UNSPEC', source: null, tlvs: [], length: 23 });
    expect(header.crc32c).toBeUndefined();
    expect(rest).toEqual(hex('ff'));
  });

  it('honours the length of LOCAL and UNSPEC without looking inside', () => {
    // Garbage that would be a truncated TLV and a bad checksum if it were parsed.
    const opaque = '03 0004 00000000 05 ffff';
    expect(parse(hex(`${SIG} 20 00 000a ${opaque} aa`)).header.length).toBe(26);
    expect(parse(hex(`${SIG} 21 00 000a ${opaque} aa`)).header).toMatchObject({ command: 'PROXY', family: 'UNSPEC', source: null, tlvs: [], length: 26 });
    // LOCAL over a real family: the address block is ignored, even a short one.
    expect(parse(hex(`${SIG} 20 11 0000`)).header).toMatchObject({ command: 'LOCAL', family: 'INET', transport: 'STREAM', source: null, length: 16 });
    expect(parse(hex(`${SIG} 20 21 0004 01020304`)).header).toMatchObject({ command: 'LOCAL', family: 'INET6', source: null, length: 20 });
  });

  it('always consumes exactly `length` bytes, whatever follows', () => {
    // Address block plus one empty NOOP TLV; the bytes after it, even a signature, are payload.
    const input = hex(`${SIG} 21 11 000f 01020304 05060708 0001 0002 04 0000 ${SIG}`);
    const { header: h, rest } = parse(input);
    expect(h.length).toBe(31);
    expect(h.tlvs).toEqual([{ type: PP2_TYPE.NOOP, value: Buffer.alloc(0) }]);
    expect(rest).toEqual(hex(SIG));
  });

  it('returns null until `length` bytes have arrived', () => {
    expect(parseHeader(hex(`${SIG} 21 11 000c 01020304 05060708 0001`))).toBeNull();
    expect(parseHeader(hex(`${SIG} 21 11 00`))).toBeNull();
    expect(parseHeader(hex(SIG.slice(0, 10)))).toBeNull();
  });
});

describe('PROXY v2 encoding', () => {
  it('encodes PROXY/STREAM over IPv4 by default', () => {
    const buf = encodeV2({ source: { address: '192.0.2.10', port: 51234 }, destination: { address: '198.51.100.7', port: 443 } });
    expect(buf).toEqual(hex(`${SIG} 21 11 000c c000020a c6336407 c822 01bb`));
  });

  it('encodes DGRAM', () => {
    const buf = encodeV2({ transport: 'DGRAM', source: { address: '10.0.0.1', port: 53 }, destination: { address: '10.0.0.2', port: 53 } });
    expect(buf[13]).toBe(0x12);
  });

  it('encodes LOCAL as UNSPEC without addresses, like HAProxy', () => {
    expect(encodeV2({ command: 'LOCAL' })).toEqual(hex(`${SIG} 20 00 0000`));
    // Addresses are meaningless for LOCAL and left out.
    expect(encodeV2({ command: 'LOCAL', source: { address: '1.2.3.4', port: 1 }, destination: { address: '1.2.3.5', port: 2 } })).toEqual(hex(`${SIG} 20 00 0000`));
    expect(encodeV2({ command: 'LOCAL', crc32c: true })).toEqual(hex(`${SIG} 20 00 0007 03 0004 a9b87e8f`));
  });

  it('encodes PROXY without addresses as UNSPEC', () => {
    expect(encodeV2({})).toEqual(hex(`${SIG} 21 00 0000`));
    expect(encodeV2()).toEqual(hex(`${SIG} 21 00 0000`));
  });

  it('folds IPv4-mapped IPv6 to IPv4', () => {
    const buf = encodeV2({ source: { address: '::ffff:192.0.2.10', port: 1 }, destination: { address: '198.51.100.7', port: 2 } });
    expect(buf).toEqual(hex(`${SIG} 21 11 000c c000020a c6336407 0001 0002`));
  });

  it('sends both sides as IPv6 when one is IPv6 (HAProxy does the same)', () => {
    const buf = encodeV2({ source: { address: '192.0.2.10', port: 1 }, destination: { address: '2001:db8::1', port: 2 } });
    expect(buf).toEqual(hex(`${SIG} 21 21 0024 00000000000000000000ffffc000020a 20010db8000000000000000000000001 0001 0002`));
    expect(parse(buf).header.source!.address).toBe('::ffff:192.0.2.10');
  });

  it('encodes UNIX paths, absolute or abstract', () => {
    const buf = encodeV2({ source: { address: '/run/a.sock', port: 0 }, destination: { address: '\0abstract', port: 0 } });
    expect(buf.length).toBe(16 + 216);
    expect(buf[13]).toBe(0x31);
    expect(parse(buf).header).toMatchObject({ family: 'UNIX', source: { address: '/run/a.sock' }, destination: { address: '\0abstract' } });
  });

  it('writes TLVs in order and appends a valid CRC32C last', () => {
    const tlvs: PpTlv[] = [
      { type: PP2_TYPE.AUTHORITY, value: Buffer.from('example.com') },
      { type: PP2_TYPE.NOOP, value: Buffer.alloc(2) },
    ];
    const buf = encodeV2({ source: { address: '::ffff:10.0.0.1', port: 1234 }, destination: { address: '2001:db8::1', port: 443 }, tlvs: [tlvs[0]!], crc32c: true });
    // Reference bytes from an independent implementation (bitwise CRC32C, Python).
    expect(buf).toEqual(
      hex(`${SIG} 2121 0039 00000000000000000000ffff0a000001 20010db8000000000000000000000001 04d2 01bb 02000b6578616d706c652e636f6d 030004b33bca74`),
    );
    const { header } = parse(encodeV2({ source: { address: '1.2.3.4', port: 1 }, destination: { address: '5.6.7.8', port: 2 }, tlvs, crc32c: true }));
    expect(header.tlvs.map((t) => t.type)).toEqual([PP2_TYPE.AUTHORITY, PP2_TYPE.NOOP, PP2_TYPE.CRC32C]);
    expect(header.crc32c).toBeTypeOf('number');
  });

  it('rejects bad arguments with a TypeError, not a wire error', () => {
    const ep = { address: '1.2.3.4', port: 1 };
    const bad: unknown[] = [
      { source: ep },
      { destination: ep },
      { source: { address: 'localhost', port: 1 }, destination: ep },
      { source: { address: '1.2.3.4', port: -1 }, destination: ep },
      { source: { address: '/run/a', port: 0 }, destination: ep },
      { source: { address: `/${'x'.repeat(108)}`, port: 0 }, destination: { address: '/b', port: 0 } },
      { command: 'RELAY' },
      { transport: 'SEQPACKET' },
      { tlvs: [{ type: 256, value: Buffer.alloc(0) }] },
      { tlvs: [{ type: 1, value: 'h2' }] },
      { tlvs: [{ type: PP2_TYPE.CRC32C, value: Buffer.alloc(4) }], crc32c: true },
      { tlvs: [{ type: 0xe0, value: Buffer.alloc(65535) }] },
    ];
    for (const opts of bad) {
      const call = () => encodeV2(opts as never);
      expect(call, JSON.stringify(opts)).toThrow(TypeError);
      expect(call).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
      expect(call).not.toThrow(ProxyProtocolError);
    }
  });

  it('encodes the largest header the length field allows', () => {
    const buf = encodeV2({ source: { address: '1.2.3.4', port: 1 }, destination: { address: '5.6.7.8', port: 2 }, tlvs: [{ type: 0xe0, value: Buffer.alloc(65535 - 12 - 3) }] });
    expect(buf.length).toBe(16 + 65535);
    expect(parseHeader(buf, { maxV2Length: 65535 })!.header.tlvs[0]!.value.length).toBe(65520);
  });

  it('round-trips random addresses, ports, transports and TLVs', () => {
    const rng = xorshift32(0x5eed2);
    const v4 = () => `${rng.int(256)}.${rng.int(256)}.${rng.int(256)}.${rng.int(256)}`;
    const v6 = () => {
      const words = Array.from({ length: 8 }, () => (rng.chance(0.4) ? 0 : rng.int(0x10000)));
      if (words.slice(0, 6).join() === '0,0,0,0,0,65535') words[0] = 1;
      return words.map((w) => w.toString(16)).join(':');
    };
    for (let i = 0; i < 500; i++) {
      const family = rng.pick(['INET', 'INET6'] as const);
      const addr = family === 'INET' ? v4 : v6;
      const source = { address: addr(), port: rng.int(65536) };
      const destination = { address: addr(), port: rng.int(65536) };
      const transport = rng.pick(['STREAM', 'DGRAM'] as const);
      const tlvs = Array.from({ length: rng.int(6) }, () => ({
        type: rng.pick([PP2_TYPE.ALPN, PP2_TYPE.AUTHORITY, PP2_TYPE.NOOP, PP2_TYPE.UNIQUE_ID, PP2_TYPE.NETNS, 0xe0, 0xef, 0x00]),
        value: rng.bytes(rng.int(100)),
      }));
      const crc32c = rng.chance(0.5);
      const payload = rng.bytes(rng.int(30));
      const encoded = encodeV2({ transport, source, destination, tlvs, crc32c });
      const { header, rest } = parse(Buffer.concat([encoded, payload]));
      expect(header).toMatchObject({ version: 2, command: 'PROXY', family, transport, length: encoded.length });
      expect(header.source!.port).toBe(source.port);
      expect(header.destination!.port).toBe(destination.port);
      // Hex strings: vitest's deep equality walks Buffers byte by byte, too slow for thousands of cases.
      const asHex = (list: PpTlv[]) => list.map((t) => `${t.type}:${t.value.toString('hex')}`);
      expect(asHex(header.tlvs)).toEqual([...asHex(tlvs), ...(crc32c ? [`3:${encoded.subarray(-4).toString('hex')}`] : [])]);
      expect(header.crc32c !== undefined).toBe(crc32c);
      expect(encodeV2({ transport, source: header.source!, destination: header.destination!, tlvs: header.tlvs }).toString('hex')).toBe(encoded.toString('hex'));
      expect(rest.toString('hex')).toBe(payload.toString('hex'));
    }
  });
});
