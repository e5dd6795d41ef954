import { describe, expect, it } from 'vitest';
import { InterceptorError } from '../../../src/errors.js';
import { createHeaderParser, parseHeader, PP_ERROR_CODES, ProxyProtocolError } from '../../../src/pp/index.js';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const text = (s: string): Buffer => Buffer.from(s, 'latin1');
const SIG = '0d0a0d0a000d0a515549540a';
const FF = 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff';

/** The error code for `input`, checked to be the same whole and fed one byte at a time. */
function codeOf(input: Buffer, opts?: { maxV2Length?: number }): string {
  let whole: unknown;
  try {
    parseHeader(input, opts);
  } catch (err) {
    whole = err;
  }
  if (!(whole instanceof ProxyProtocolError)) throw new Error(`no ProxyProtocolError for ${input.toString('hex')}: ${String(whole)}`);
  const parser = createHeaderParser(opts);
  let split: unknown;
  try {
    for (const b of input) parser.push(Buffer.from([b]));
  } catch (err) {
    split = err;
  }
  expect((split as ProxyProtocolError).code).toBe(whole.code);
  return whole.code;
}

const CASES: Record<string, Array<[string, Buffer, { maxV2Length?: number }?]>> = {
  PP_ERR_NOT_PROXY: [
    ['an HTTP request', text('GET / HTTP/1.1\r\n\r\n')],
    ['a TLS ClientHello', hex('16030100f4010000f00303')],
    ['lower case', text('proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n')],
    ['"PROXY" without a space', text('PROXY\r\n')],
    ['a damaged v2 signature', hex('0d0a0d0a000d0a515549540b 21 11 000c')],
    ['an SSH banner', text('SSH-2.0-OpenSSH_9.2\r\n')],
  ],
  PP_ERR_V1_TOO_LONG: [
    ['107 bytes without CRLF', Buffer.concat([text('PROXY '), Buffer.alloc(101, 0x41)])],
    ['UNKNOWN whose CRLF ends at byte 108', text(`PROXY UNKNOWN ${FF} ${FF} 65535 655350\r\n`)],
    ['a TCP4 line of 120 bytes', text(`PROXY TCP4 ${'1'.repeat(107)}\r\n`)],
  ],
  PP_ERR_V1_MALFORMED: [
    ['a lone LF', text('PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n')],
    ['a lone CR', text('PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX\r\n')],
    ['CR CR LF', text('PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n')],
    ['a lone LF in UNKNOWN', text('PROXY UNKNOWN \n\r\n')],
    ['no protocol', text('PROXY \r\n')],
    ['an unknown protocol word', text('PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n')],
    ['UNKNOWN with a suffix', text('PROXY UNKNOWNX\r\n')],
    ['too few fields', text('PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n')],
    ['too many fields', text('PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n')],
    ['TCP4 alone', text('PROXY TCP4\r\n')],
    ['a double space', text('PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n')],
    ['a trailing space', text('PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n')],
    ['a tab', text('PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n')],
    ['IPv6 in TCP4', text('PROXY TCP4 ::1 ::1 1 2\r\n')],
    ['IPv4 in TCP6', text('PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n')],
    ['an IPv4 octet above 255', text('PROXY TCP4 256.2.3.4 5.6.7.8 1 2\r\n')],
    ['an IPv4 octet with a leading zero', text('PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n')],
    ['three IPv4 octets', text('PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n')],
    ['a hostname', text('PROXY TCP4 localhost 5.6.7.8 1 2\r\n')],
    ['an IPv6 zone id', text('PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n')],
    ['two "::"', text('PROXY TCP6 1::2::3 ::1 1 2\r\n')],
    ['nine IPv6 groups', text('PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n')],
    ['a five-digit IPv6 group', text('PROXY TCP6 12345:: ::1 1 2\r\n')],
    ['a port with a leading zero', text('PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n')],
    ['a port above 65535', text('PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n')],
    ['a signed port', text('PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n')],
    ['an empty port', text('PROXY TCP4 1.2.3.4 5.6.7.8  2\r\n')],
    ['a NUL byte', text('PROXY TCP4 1.2.3.4\x005.6.7.8 1 2\r\n')],
  ],
  PP_ERR_V2_VERSION: [
    ['version 1', hex(`${SIG} 11 11 000c`)],
    ['version 3', hex(`${SIG} 31 11 000c`)],
    ['version 0', hex(`${SIG} 01`)],
  ],
  PP_ERR_V2_COMMAND: [
    ['command 2', hex(`${SIG} 22 11 000c`)],
    ['command 15', hex(`${SIG} 2f`)],
  ],
  PP_ERR_V2_FAMILY: [
    ['UNSPEC family with STREAM transport', hex(`${SIG} 21 01 0000`)],
    ['INET with transport 0', hex(`${SIG} 21 10 000c`)],
    ['INET with transport 3', hex(`${SIG} 21 13 000c`)],
    ['family 4', hex(`${SIG} 21 41 000c`)],
    ['LOCAL with family 0xff', hex(`${SIG} 20 ff 0000`)],
  ],
  PP_ERR_V2_LENGTH: [
    ['INET with 11 bytes', hex(`${SIG} 21 11 000b 0102030405060708090a0b`)],
    ['INET6 with 35 bytes', hex(`${SIG} 21 21 0023`)],
    ['UNIX with 215 bytes', hex(`${SIG} 21 31 00d7`)],
    ['UDP over INET with 0 bytes', hex(`${SIG} 21 12 0000`)],
  ],
  PP_ERR_V2_TOO_LONG: [
    ['4097 by default', hex(`${SIG} 21 11 1001`)],
    ['65535 by default', hex(`${SIG} 20 00 ffff`)],
    ['101 above a cap of 100', hex(`${SIG} 21 11 0065`), { maxV2Length: 100 }],
    ['LOCAL with 1 byte above a cap of 0', hex(`${SIG} 20 00 0001`), { maxV2Length: 0 }],
  ],
  PP_ERR_TLV: [
    ['a truncated TLV header', hex(`${SIG} 21 11 000e 01020304 05060708 0001 0002 0200`)],
    ['a TLV longer than the header', hex(`${SIG} 21 11 0010 01020304 05060708 0001 0002 02 0002 61`)],
    ['a 129-byte UNIQUE_ID', Buffer.concat([hex(`${SIG} 21 11 0090 01020304 05060708 0001 0002 05 0081`), Buffer.alloc(129, 0x41)])],
    ['a 4-byte SSL TLV', hex(`${SIG} 21 11 0013 01020304 05060708 0001 0002 20 0004 01000000`)],
    ['a truncated SSL sub-TLV', hex(`${SIG} 21 11 0016 01020304 05060708 0001 0002 20 0007 01 00000000 21 00`)],
  ],
  PP_ERR_CRC32C: [
    ['a wrong checksum', hex(`${SIG} 21 11 0013 01020304 05060708 0001 0002 03 0004 00000000`)],
    ['a 2-byte CRC32C TLV', hex(`${SIG} 21 11 0011 01020304 05060708 0001 0002 03 0002 0000`)],
    ['an empty CRC32C TLV', hex(`${SIG} 21 11 000f 01020304 05060708 0001 0002 03 0000`)],
  ],
};

describe('error codes', () => {
  for (const [code, cases] of Object.entries(CASES)) {
    for (const [name, input, opts] of cases) {
      it(`${code}: ${name}`, () => {
        expect(codeOf(input, opts)).toBe(code);
      });
    }
  }

  it('covers every wire error code above, and PP_ERR_STATE below', () => {
    expect([...Object.keys(CASES), 'PP_ERR_STATE'].sort()).toEqual([...PP_ERROR_CODES].sort());
  });

  it('PP_ERR_STATE: push after completion or failure', () => {
    const parser = createHeaderParser();
    expect(() => parser.push(text('GET /'))).toThrow(expect.objectContaining({ code: 'PP_ERR_NOT_PROXY' }));
    expect(() => parser.push(text('PROXY UNKNOWN\r\n'))).toThrow(expect.objectContaining({ code: 'PP_ERR_STATE' }));
  });

  it('throws ProxyProtocolError, an InterceptorError with a stable code and a name', () => {
    let err: unknown;
    try {
      parseHeader(text('GET / HTTP/1.1\r\n'));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ProxyProtocolError);
    expect(err).toBeInstanceOf(InterceptorError);
    expect(err).toBeInstanceOf(Error);
    expect(err).toMatchObject({ name: 'ProxyProtocolError', code: 'PP_ERR_NOT_PROXY' });
  });

  it('rejects a bad maxV2Length with a TypeError', () => {
    for (const maxV2Length of [-1, 65536, 1.5, Number.NaN, '4096']) {
      expect(() => createHeaderParser({ maxV2Length } as never)).toThrow(TypeError);
      expect(() => parseHeader(Buffer.alloc(0), { maxV2Length } as never)).toThrow(TypeError);
    }
    expect(() => createHeaderParser().push('PROXY' as never)).toThrow(TypeError);
  });

  it('accepts a header exactly at the length cap', () => {
    const header = Buffer.concat([hex(`${SIG} 20 00 0064`), Buffer.alloc(100)]);
    expect(parseHeader(header, { maxV2Length: 100 })!.header.length).toBe(116);
    expect(parseHeader(hex(`${SIG} 20 00 0000`), { maxV2Length: 0 })!.header.length).toBe(16);
  });
});
