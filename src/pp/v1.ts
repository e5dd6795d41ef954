// PROXY protocol v1: one text line, "PROXY TCP4|TCP6|UNKNOWN ...\r\n", at most 107 bytes.
import { formatIPv4, formatIPv6, mapIPv4, parseIPv4Into, parseIPv6, parseIp, type AddressBytes } from '../net/ip.js';
import { V1_PREFIX } from './constants.js';
import { invalidArg, ProxyProtocolError } from './errors.js';
import type { PpEndpoint, ProxyHeader } from './types.js';

function malformed(why: string): ProxyProtocolError {
  return new ProxyProtocolError('PP_ERR_V1_MALFORMED', `PROXY v1: ${why}`);
}

/** Decimal 0-65535, no sign, no leading zeros. */
function parsePort(text: string): number {
  const n = text.length;
  if (n === 0 || n > 5 || (n > 1 && text.charCodeAt(0) === 0x30)) return -1;
  let value = 0;
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x30 || c > 0x39) return -1;
    value = value * 10 + (c - 0x30);
  }
  return value <= 65535 ? value : -1;
}

const V4_SCRATCH = new Uint8Array(4);

function parseAddress(text: string, v6: boolean, which: string): string {
  if (v6) {
    const bytes = parseIPv6(text);
    if (!bytes) throw malformed(`${which} address is not IPv6`);
    return formatIPv6(bytes, 0);
  }
  // Strict dotted quad is already canonical text.
  if (!parseIPv4Into(text, 0, text.length, V4_SCRATCH, 0)) throw malformed(`${which} address is not IPv4`);
  return text;
}

/**
 * Decodes a complete v1 line; `end` is the index just past its LF. The caller has already
 * checked the "PROXY " prefix and that the only CR/LF is the final CRLF.
 */
export function decodeV1(data: Buffer, end: number): ProxyHeader {
  const line = data.toString('latin1', V1_PREFIX.length, end - 2);
  const sp = line.indexOf(' ');
  const protocol = sp < 0 ? line : line.slice(0, sp);
  if (protocol === 'UNKNOWN') {
    // The spec has the receiver ignore everything after UNKNOWN up to the CRLF.
    return {
      version: 1, command: 'PROXY', family: 'UNSPEC', transport: 'UNSPEC', source: null, destination: null, tlvs: [],
      alpn: undefined, authority: undefined, uniqueId: undefined, netns: undefined, ssl: undefined, crc32c: undefined,
      length: end,
    };
  }
  if (protocol !== 'TCP4' && protocol !== 'TCP6') throw malformed('protocol is not TCP4, TCP6 or UNKNOWN');
  const fields = line.split(' ');
  if (fields.length !== 5) throw malformed(`expected 6 space-separated fields, got ${fields.length + 1}`);
  const v6 = protocol === 'TCP6';
  const srcAddress = parseAddress(fields[1]!, v6, 'source');
  const dstAddress = parseAddress(fields[2]!, v6, 'destination');
  const srcPort = parsePort(fields[3]!);
  if (srcPort < 0) throw malformed('source port is not a decimal in 0-65535 without leading zeros');
  const dstPort = parsePort(fields[4]!);
  if (dstPort < 0) throw malformed('destination port is not a decimal in 0-65535 without leading zeros');
  return {
    version: 1, command: 'PROXY', family: v6 ? 'INET6' : 'INET', transport: 'STREAM',
    source: { address: srcAddress, port: srcPort }, destination: { address: dstAddress, port: dstPort }, tlvs: [],
    alpn: undefined, authority: undefined, uniqueId: undefined, netns: undefined, ssl: undefined, crc32c: undefined,
    length: end,
  };
}

function checkPort(port: unknown, which: string): number {
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw invalidArg(`${which}.port must be an integer in 0-65535`);
  }
  return port;
}

function checkIp(endpoint: PpEndpoint | undefined, which: string): AddressBytes {
  if (endpoint === null || typeof endpoint !== 'object') throw invalidArg(`${which} must be { address, port }`);
  const parsed = typeof endpoint.address === 'string' ? parseIp(endpoint.address) : null;
  if (!parsed) throw invalidArg(`${which}.address must be an IPv4 or IPv6 address, got ${String(endpoint.address)}`);
  return parsed;
}

/**
 * "PROXY TCP4|TCP6 src dst sport dport\r\n". IPv4-mapped IPv6 is sent as TCP4; if only one side
 * is IPv6, both go out as TCP6 (the IPv4 side IPv4-mapped), since a v1 line carries one family.
 */
export function encodeV1(source: PpEndpoint, destination: PpEndpoint): Buffer {
  const src = checkIp(source, 'source');
  const dst = checkIp(destination, 'destination');
  const srcPort = checkPort(source.port, 'source');
  const dstPort = checkPort(destination.port, 'destination');
  let line: string;
  if (src.kind === 4 && dst.kind === 4) {
    line = `PROXY TCP4 ${formatIPv4(src.bytes, 0)} ${formatIPv4(dst.bytes, 0)} ${srcPort} ${dstPort}\r\n`;
  } else {
    const s = src.kind === 6 ? src.bytes : mapIPv4(src.bytes);
    const d = dst.kind === 6 ? dst.bytes : mapIPv4(dst.bytes);
    line = `PROXY TCP6 ${formatIPv6(s, 0)} ${formatIPv6(d, 0)} ${srcPort} ${dstPort}\r\n`;
  }
  return Buffer.from(line, 'latin1');
}

export function encodeV1Unknown(): Buffer {
  return Buffer.from('PROXY UNKNOWN\r\n', 'latin1');
}
