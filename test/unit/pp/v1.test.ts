import { describe, expect, it } from 'vitest';
import { encodeV1, encodeV1Unknown, parseHeader, ProxyProtocolError } from '../../../src/pp/index.js';
import { xorshift32 } from '../../../scripts/fuzz-pp.mjs';

const text = (s: string): Buffer => Buffer.from(s, 'latin1');

function parseText(s: string) {
  const result = parseHeader(text(s));
  if (!result) throw new Error('incomplete');
  return result;
}

describe('PROXY v1 parsing', () => {
  it('parses TCP4 (the spec example, largest values)', () => {
    const line = 'PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n';
    const { header, rest } = parseText(line);
    expect(header).toEqual({
      version: 1,
      command: 'PROXY',
      family: 'INET',
      transport: 'STREAM',
      source: { address: '255.255.255.255', port: 65535 },
      destination: { address: '255.255.255.255', port: 65535 },
      tlvs: [],
      length: 56,
    });
    expect(rest.length).toBe(0);
  });

  it('parses TCP6 as HAProxy sends it, with the payload behind it in rest', () => {
    const input = text('PROXY TCP6 2001:db8::10 2001:db8:0:1::443 40000 443\r\nGET / HTTP/1.1\r\n\r\n');
    const result = parseHeader(input)!;
    expect(result.header.family).toBe('INET6');
    expect(result.header.source).toEqual({ address: '2001:db8::10', port: 40000 });
    expect(result.header.destination).toEqual({ address: '2001:db8:0:1::443', port: 443 });
    expect(result.header.length).toBe(53);
    expect(result.rest.toString('latin1')).toBe('GET / HTTP/1.1\r\n\r\n');
  });

  it('parses the longest TCP6 line of the spec (104 bytes)', () => {
    const ff = 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff';
    const { header } = parseText(`PROXY TCP6 ${ff} ${ff} 65535 65535\r\n`);
    expect(header.length).toBe(104);
    expect(header.source).toEqual({ address: ff, port: 65535 });
  });

  it('outputs IPv6 in canonical compressed form whatever the sender wrote', () => {
    const { header } = parseText('PROXY TCP6 2001:0DB8:0000:0000:0000:0000:0000:0001 0:0:0:0:0:0:0:1 1 2\r\n');
    expect(header.source!.address).toBe('2001:db8::1');
    expect(header.destination!.address).toBe('::1');
    // RFC 5952: the longest zero run is compressed, the first one on a tie, never a single group.
    expect(parseText('PROXY TCP6 1:0:0:1:0:0:0:1 1:0:0:2:0:0:3:4 1 2\r\n').header.source!.address).toBe('1:0:0:1::1');
    expect(parseText('PROXY TCP6 1:0:0:1:0:0:0:1 1:0:0:2:0:0:3:4 1 2\r\n').header.destination!.address).toBe('1::2:0:0:3:4');
    expect(parseText('PROXY TCP6 1:0:2:3:4:5:6:7 :: 1 2\r\n').header.source!.address).toBe('1:0:2:3:4:5:6:7');
    expect(parseText('PROXY TCP6 1:0:2:3:4:5:6:7 :: 1 2\r\n').header.destination!.address).toBe('::');
  });

  it('keeps an IPv4-mapped IPv6 address in TCP6 as ::ffff:a.b.c.d', () => {
    const { header } = parseText('PROXY TCP6 ::FFFF:192.0.2.1 ::ffff:c000:202 1 2\r\n');
    expect(header.family).toBe('INET6');
    expect(header.source!.address).toBe('::ffff:192.0.2.1');
    expect(header.destination!.address).toBe('::ffff:192.0.2.2');
  });

  it('accepts ports 0 and 65535', () => {
    const { header } = parseText('PROXY TCP4 10.0.0.1 10.0.0.2 0 65535\r\n');
    expect(header.source!.port).toBe(0);
    expect(header.destination!.port).toBe(65535);
  });

  it('parses "PROXY UNKNOWN" as PROXY/UNSPEC without addresses', () => {
    const { header, rest } = parseText('PROXY UNKNOWN\r\nhello');
    expect(header).toMatchObject({ version: 1, command: 'PROXY', family: 'UNSPEC', transport: 'UNSPEC', source: null, destination: null, tlvs: [], length: 15 });
    expect(rest.toString()).toBe('hello');
  });

  it('ignores the rest of an UNKNOWN line, up to the 107-byte maximum', () => {
    const ff = 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff';
    const line = `PROXY UNKNOWN ${ff} ${ff} 65535 65535\r\n`;
    expect(line.length).toBe(107);
    expect(parseText(line).header).toMatchObject({ family: 'UNSPEC', source: null, length: 107 });
    expect(parseText('PROXY UNKNOWN whatever \x00\x7f junk  here\r\n').header.family).toBe('UNSPEC');
  });

  it('rejects UNKNOWN when its line does not fit in 107 bytes', () => {
    const line = `PROXY UNKNOWN ${'x'.repeat(92)}\r\n`;
    expect(line.length).toBe(108);
    expect(() => parseText(line)).toThrow(expect.objectContaining({ code: 'PP_ERR_V1_TOO_LONG' }));
  });

  it('returns null until the CRLF arrives', () => {
    expect(parseHeader(text('PROXY TCP4 1.2.3.4 5.6.7.8 1 2'))).toBeNull();
    expect(parseHeader(text('PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r'))).toBeNull();
    expect(parseHeader(text('PROX'))).toBeNull();
  });
});

describe('PROXY v1 encoding', () => {
  it('encodes TCP4', () => {
    expect(encodeV1({ address: '192.0.2.1', port: 56324 }, { address: '198.51.100.2', port: 443 }).toString('latin1')).toBe(
      'PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n',
    );
  });

  it('encodes TCP6 in canonical form', () => {
    expect(encodeV1({ address: '2001:DB8:0:0:0:0:0:1', port: 1 }, { address: '::1', port: 2 }).toString('latin1')).toBe('PROXY TCP6 2001:db8::1 ::1 1 2\r\n');
  });

  it('sends IPv4-mapped IPv6 (what a dual-stack socket reports) as TCP4', () => {
    expect(encodeV1({ address: '::ffff:1.2.3.4', port: 1000 }, { address: '::ffff:10.0.0.1', port: 80 }).toString('latin1')).toBe(
      'PROXY TCP4 1.2.3.4 10.0.0.1 1000 80\r\n',
    );
    expect(encodeV1({ address: '::ffff:0102:0304', port: 1 }, { address: '5.6.7.8', port: 2 }).toString('latin1')).toBe('PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n');
  });

  it('sends both sides as TCP6 when only one is IPv6', () => {
    expect(encodeV1({ address: '1.2.3.4', port: 1 }, { address: '2001:db8::1', port: 2 }).toString('latin1')).toBe(
      'PROXY TCP6 ::ffff:1.2.3.4 2001:db8::1 1 2\r\n',
    );
  });

  it('encodes UNKNOWN', () => {
    expect(encodeV1Unknown().toString('latin1')).toBe('PROXY UNKNOWN\r\n');
  });

  it('rejects bad arguments with a TypeError, not a wire error', () => {
    const bad: Array<[unknown, unknown]> = [
      [{ address: 'example.com', port: 1 }, { address: '1.2.3.4', port: 2 }],
      [{ address: '1.2.3.4', port: 65536 }, { address: '1.2.3.4', port: 2 }],
      [{ address: '1.2.3.4', port: 1.5 }, { address: '1.2.3.4', port: 2 }],
      [{ address: '1.2.3.4', port: 1 }, { address: '/run/x.sock', port: 0 }],
      [{ address: 'fe80::1%eth0', port: 1 }, { address: '::1', port: 2 }],
      [null, { address: '::1', port: 2 }],
    ];
    for (const [s, d] of bad) {
      const call = () => encodeV1(s as never, d as never);
      expect(call).toThrow(TypeError);
      expect(call).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
      expect(call).not.toThrow(ProxyProtocolError);
    }
  });

  it('round-trips random addresses and ports, and never exceeds 107 bytes', () => {
    const rng = xorshift32(0x5eed1);
    for (let i = 0; i < 500; i++) {
      const v6 = rng.chance(0.5);
      const addr = (): string => {
        if (!v6) return `${rng.int(256)}.${rng.int(256)}.${rng.int(256)}.${rng.int(256)}`;
        const words = Array.from({ length: 8 }, () => (rng.chance(0.4) ? 0 : rng.int(0x10000)));
        if (words.slice(0, 6).join() === '0,0,0,0,0,65535') words[5] = 0xfffe; // mapped would be sent as TCP4
        return words.map((w) => w.toString(16)).join(':');
      };
      const source = { address: addr(), port: rng.int(65536) };
      const destination = { address: addr(), port: rng.int(65536) };
      const encoded = encodeV1(source, destination);
      expect(encoded.length).toBeLessThanOrEqual(107);
      const payload = rng.bytes(rng.int(20));
      const { header, rest } = parseHeader(Buffer.concat([encoded, payload]))!;
      expect(header.family).toBe(v6 ? 'INET6' : 'INET');
      expect(header.source!.port).toBe(source.port);
      expect(header.destination!.port).toBe(destination.port);
      // The parsed text is canonical: encoding it again gives the same bytes.
      expect(encodeV1(header.source!, header.destination!).toString('latin1')).toBe(encoded.toString('latin1'));
      expect(rest.toString('hex')).toBe(payload.toString('hex'));
    }
  });
});
