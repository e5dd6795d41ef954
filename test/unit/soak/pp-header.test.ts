import { describe, expect, it } from 'vitest';
import { formatIpv6, parsePpHeader } from '../../../scripts/soak/pp-header.mjs';

const SIG = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);

function v2(cmd: number, fam: number, body: Buffer): Buffer {
  const head = Buffer.alloc(4);
  head[0] = 0x20 | cmd;
  head[1] = fam;
  head.writeUInt16BE(body.length, 2);
  return Buffer.concat([SIG, head, body]);
}

describe('parsePpHeader', () => {
  it('reads a v2 TCP4 header, skipping TLVs, and says how long it was', () => {
    const body = Buffer.from([198, 18, 1, 2, 198, 18, 2, 2, 0xa4, 0x10, 0x23, 0x2a, 0x04, 0x00, 0x01, 0x00]);
    const h = parsePpHeader(Buffer.concat([v2(1, 0x11, body), Buffer.from('SOAK1')]));
    expect(h).toEqual({ length: 32, version: 2, command: 'PROXY', source: { address: '198.18.1.2', port: 42000 }, destination: { address: '198.18.2.2', port: 9002 } });
  });

  it('reads a v2 TCP6 header', () => {
    const src = Buffer.alloc(16);
    src.writeUInt16BE(0xfd00, 0);
    src.writeUInt16BE(0x18, 2);
    src.writeUInt16BE(0x1, 4);
    src[15] = 2;
    const dst = Buffer.from(src);
    dst.writeUInt16BE(0x2, 4);
    const ports = Buffer.from([0x30, 0x39, 0x23, 0x2a]);
    const h = parsePpHeader(v2(1, 0x21, Buffer.concat([src, dst, ports])));
    expect(h?.source).toEqual({ address: 'fd00:18:1::2', port: 12345 });
    expect(h?.destination).toEqual({ address: 'fd00:18:2::2', port: 9002 });
  });

  it('reads LOCAL (no addresses) and v1', () => {
    expect(parsePpHeader(v2(0, 0x00, Buffer.alloc(0)))).toMatchObject({ length: 16, command: 'LOCAL', source: null });
    const line = 'PROXY TCP4 198.18.1.2 198.18.2.2 40000 9002\r\n';
    expect(parsePpHeader(Buffer.from(`${line}rest`))).toEqual({ length: line.length, version: 1, command: 'PROXY', source: { address: '198.18.1.2', port: 40000 }, destination: { address: '198.18.2.2', port: 9002 } });
  });

  it('waits for more bytes while a header is incomplete', () => {
    const full = v2(1, 0x11, Buffer.alloc(12));
    for (const n of [1, 11, 12, 15, 16, 27]) expect(parsePpHeader(full.subarray(0, n))).toBeNull();
    expect(parsePpHeader(Buffer.from('PROXY TCP4 1.2.3.4'))).toBeNull();
  });

  it.each([
    ['no header at all', Buffer.from('SOAK1 {}\n'), /no PROXY header/],
    ['v2 version 1', Buffer.concat([SIG, Buffer.from([0x11, 0x11, 0, 12]), Buffer.alloc(12)]), /version 1/],
    ['v2 command 2', v2(2, 0x11, Buffer.alloc(12)), /command 2/],
    ['v2 UDP', v2(1, 0x12, Buffer.alloc(12)), /not TCP/],
    ['v2 TCP4 too short', v2(1, 0x11, Buffer.alloc(8)), /shorter/],
    ['v1 UNKNOWN', Buffer.from('PROXY UNKNOWN\r\n'), /malformed/],
    ['v1 bad port', Buffer.from('PROXY TCP4 1.2.3.4 5.6.7.8 70000 1\r\n'), /bad port/],
    ['v1 without CRLF', Buffer.from(`PROXY TCP4 ${'1'.repeat(120)}`), /no CRLF/],
  ])('refuses %s', (_name, buf, message) => {
    expect(() => parsePpHeader(buf)).toThrow(message);
  });
});

describe('formatIpv6', () => {
  it.each([
    ['fd00:18:1::2', [0xfd, 0, 0, 0x18, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]],
    ['::1', [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]],
    ['::', Array(16).fill(0)],
    ['1:0:2::3', [0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3]],
    ['1:2:3:4:5:6:7:8', [0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0, 7, 0, 8]],
  ])('%s', (text, bytes) => expect(formatIpv6(Buffer.from(bytes))).toBe(text));
});
