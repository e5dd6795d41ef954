// PROXY protocol v2: 16 fixed bytes, an address block sized by the family, then TLVs.
import { formatIPv4, formatIPv6, mapIPv4, parseIp } from '../net/ip.js';
import { PP2_TYPE, UNIX_PATH_LENGTH, V2_ADDRESS_LENGTH, V2_FIXED_LENGTH, V2_MAX_PAYLOAD, V2_SIGNATURE } from './constants.js';
import { crc32c } from './crc32c.js';
import { invalidArg, ProxyProtocolError } from './errors.js';
import { decodeTlvs } from './tlv.js';
import type { PpCommand, PpEndpoint, PpFamily, PpTlv, PpTransport, ProxyHeader } from './types.js';

/** Validates byte 13 (version high nibble, command low nibble). */
export function checkVersionCommand(byte: number): void {
  if (byte >> 4 !== 2) throw new ProxyProtocolError('PP_ERR_V2_VERSION', `PROXY v2: version nibble is ${byte >> 4}, 2 expected`);
  if ((byte & 0x0f) > 1) throw new ProxyProtocolError('PP_ERR_V2_COMMAND', `PROXY v2: command nibble is ${byte & 0x0f}, 0 (LOCAL) or 1 (PROXY) expected`);
}

/** Validates byte 14 (family/transport) and returns the size of its address block. */
export function addressLength(byte: number): number {
  const length = V2_ADDRESS_LENGTH.get(byte);
  if (length === undefined) throw new ProxyProtocolError('PP_ERR_V2_FAMILY', `PROXY v2: family/transport byte 0x${byte.toString(16).padStart(2, '0')} is not supported`);
  return length;
}

/**
 * Validates the length field (bytes 15-16) against the family and the cap; returns the total
 * header size. LOCAL's address block is ignored, so any length is acceptable for it.
 */
export function checkLength(data: Buffer, maxLength: number): number {
  const length = (data[14]! << 8) | data[15]!;
  const needed = addressLength(data[13]!);
  if ((data[12]! & 0x0f) === 1 && length < needed) {
    throw new ProxyProtocolError('PP_ERR_V2_LENGTH', `PROXY v2: length ${length} is shorter than the ${needed}-byte address block of family 0x${data[13]!.toString(16)}`);
  }
  if (length > maxLength) throw new ProxyProtocolError('PP_ERR_V2_TOO_LONG', `PROXY v2: length ${length} exceeds the limit of ${maxLength}`);
  return V2_FIXED_LENGTH + length;
}

const FAMILIES: Record<number, PpFamily> = { 0: 'UNSPEC', 1: 'INET', 2: 'INET6', 3: 'UNIX' };
const TRANSPORTS: Record<number, PpTransport> = { 0: 'UNSPEC', 1: 'STREAM', 2: 'DGRAM' };

function unixPath(data: Buffer, offset: number): string {
  let end = offset + UNIX_PATH_LENGTH;
  while (end > offset && data[end - 1] === 0) end--;
  return data.toString('utf8', offset, end);
}

/**
 * Decodes a complete v2 header `data[0, total)` whose fixed part was validated already.
 * `owned`: `data` belongs to the parser and holds exactly this header, so TLV values may be
 * views of it; otherwise (`data` is the sender's chunk) the TLV bytes are copied once.
 */
export function decodeV2(data: Buffer, total: number, owned: boolean): ProxyHeader {
  const command: PpCommand = (data[12]! & 0x0f) === 1 ? 'PROXY' : 'LOCAL';
  const famByte = data[13]!;
  const header: ProxyHeader = {
    version: 2, command, family: FAMILIES[famByte >> 4]!, transport: TRANSPORTS[famByte & 0x0f]!,
    source: null, destination: null, tlvs: [],
    alpn: undefined, authority: undefined, uniqueId: undefined, netns: undefined, ssl: undefined, crc32c: undefined,
    length: total,
  };
  // LOCAL and UNSPEC carry nothing the receiver may use: their bytes are skipped unparsed.
  if (command === 'LOCAL' || famByte === 0) return header;
  const a = V2_FIXED_LENGTH;
  let tlvStart: number;
  switch (famByte >> 4) {
    case 1:
      header.source = { address: formatIPv4(data, a), port: (data[a + 8]! << 8) | data[a + 9]! };
      header.destination = { address: formatIPv4(data, a + 4), port: (data[a + 10]! << 8) | data[a + 11]! };
      tlvStart = a + 12;
      break;
    case 2:
      header.source = { address: formatIPv6(data, a), port: (data[a + 32]! << 8) | data[a + 33]! };
      header.destination = { address: formatIPv6(data, a + 16), port: (data[a + 34]! << 8) | data[a + 35]! };
      tlvStart = a + 36;
      break;
    default:
      header.source = { address: unixPath(data, a), port: 0 };
      header.destination = { address: unixPath(data, a + UNIX_PATH_LENGTH), port: 0 };
      tlvStart = a + 2 * UNIX_PATH_LENGTH;
  }
  if (tlvStart < total) {
    if (owned) decodeTlvs(data, tlvStart, total, data, 0, header);
    else {
      // Unpooled: the header may live as long as the connection and should pin only its own bytes.
      const copy = Buffer.allocUnsafeSlow(total - tlvStart);
      data.copy(copy, 0, tlvStart, total);
      decodeTlvs(data, tlvStart, total, copy, tlvStart, header);
    }
  }
  return header;
}

type Side = { kind: 4 | 6; bytes: Uint8Array } | { kind: 'unix'; path: Buffer };

function side(endpoint: PpEndpoint, which: string): Side {
  if (endpoint === null || typeof endpoint !== 'object' || typeof endpoint.address !== 'string') {
    throw invalidArg(`${which} must be { address, port }`);
  }
  const address = endpoint.address;
  const ip = parseIp(address);
  if (ip) {
    const port = endpoint.port;
    if (typeof port !== 'number' || !Number.isInteger(port) || port < 0 || port > 65535) throw invalidArg(`${which}.port must be an integer in 0-65535`);
    return ip;
  }
  // A UNIX path is absolute, or Linux-abstract (leading NUL); anything else is a typo'd IP.
  if (address.startsWith('/') || address.startsWith('\0')) {
    const path = Buffer.from(address, 'utf8');
    if (path.length > UNIX_PATH_LENGTH) throw invalidArg(`${which}.address is ${path.length} bytes, a UNIX path holds at most ${UNIX_PATH_LENGTH}`);
    return { kind: 'unix', path };
  }
  throw invalidArg(`${which}.address must be an IPv4/IPv6 address or an absolute UNIX path, got ${JSON.stringify(address)}`);
}

export interface EncodeV2Options {
  command?: PpCommand;
  transport?: 'STREAM' | 'DGRAM';
  source?: PpEndpoint;
  destination?: PpEndpoint;
  tlvs?: PpTlv[];
  crc32c?: boolean;
}

/**
 * Builds a v2 header. PROXY/STREAM by default; LOCAL, or PROXY without addresses, is sent as
 * UNSPEC with no address block. IPv4-mapped IPv6 is sent as IPv4; if one side is still IPv6,
 * both are sent as IPv6. TLVs go out in order; `crc32c: true` appends a CRC32C TLV last.
 */
export function encodeV2(opts: EncodeV2Options = {}): Buffer {
  const command = opts.command ?? 'PROXY';
  if (command !== 'PROXY' && command !== 'LOCAL') throw invalidArg(`command must be 'PROXY' or 'LOCAL'`);
  const transport = opts.transport ?? 'STREAM';
  if (transport !== 'STREAM' && transport !== 'DGRAM') throw invalidArg(`transport must be 'STREAM' or 'DGRAM'`);
  const tlvs = opts.tlvs ?? [];
  if (!Array.isArray(tlvs)) throw invalidArg('tlvs must be an array');
  const withCrc = opts.crc32c === true;

  let famByte = 0x00;
  let src: Side | null = null;
  let dst: Side | null = null;
  if (command === 'PROXY' && (opts.source !== undefined || opts.destination !== undefined)) {
    if (opts.source === undefined || opts.destination === undefined) throw invalidArg('source and destination go together');
    src = side(opts.source, 'source');
    dst = side(opts.destination, 'destination');
    if (src.kind === 'unix' || dst.kind === 'unix') {
      if (src.kind !== dst.kind) throw invalidArg('cannot mix a UNIX path with an IP address');
      famByte = 0x30;
    } else {
      famByte = src.kind === 4 && dst.kind === 4 ? 0x10 : 0x20;
    }
    famByte |= transport === 'STREAM' ? 0x01 : 0x02;
  }
  const addrLength = V2_ADDRESS_LENGTH.get(famByte)!;

  let tlvLength = withCrc ? 7 : 0;
  for (const [i, tlv] of tlvs.entries()) {
    if (tlv === null || typeof tlv !== 'object' || !Number.isInteger(tlv.type) || tlv.type < 0 || tlv.type > 255) {
      throw invalidArg(`tlvs[${i}].type must be an integer in 0-255`);
    }
    if (!(tlv.value instanceof Uint8Array)) throw invalidArg(`tlvs[${i}].value must be a Buffer`);
    if (withCrc && tlv.type === PP2_TYPE.CRC32C) throw invalidArg(`tlvs[${i}] is a CRC32C TLV while crc32c: true adds one`);
    tlvLength += 3 + tlv.value.length;
  }
  const length = addrLength + tlvLength;
  if (length > V2_MAX_PAYLOAD) throw invalidArg(`header payload is ${length} bytes, at most ${V2_MAX_PAYLOAD} fit`);

  const buf = Buffer.alloc(V2_FIXED_LENGTH + length);
  V2_SIGNATURE.copy(buf, 0);
  buf[12] = 0x20 | (command === 'PROXY' ? 1 : 0);
  buf[13] = famByte;
  buf.writeUInt16BE(length, 14);
  let pos = V2_FIXED_LENGTH;
  if (src && dst) {
    if (src.kind === 'unix' && dst.kind === 'unix') {
      src.path.copy(buf, pos);
      dst.path.copy(buf, pos + UNIX_PATH_LENGTH);
    } else if (src.kind !== 'unix' && dst.kind !== 'unix') {
      const v6 = famByte >> 4 === 2;
      const s = v6 && src.kind === 4 ? mapIPv4(src.bytes) : src.bytes;
      const d = v6 && dst.kind === 4 ? mapIPv4(dst.bytes) : dst.bytes;
      buf.set(s, pos);
      buf.set(d, pos + s.length);
      buf.writeUInt16BE(opts.source!.port, pos + 2 * s.length);
      buf.writeUInt16BE(opts.destination!.port, pos + 2 * s.length + 2);
    }
    pos += addrLength;
  }
  for (const tlv of tlvs) {
    buf[pos] = tlv.type;
    buf.writeUInt16BE(tlv.value.length, pos + 1);
    buf.set(tlv.value, pos + 3);
    pos += 3 + tlv.value.length;
  }
  if (withCrc) {
    buf[pos] = PP2_TYPE.CRC32C;
    buf.writeUInt16BE(4, pos + 1);
    // The value bytes are still zero here, which is what the checksum is defined over.
    buf.writeUInt32BE(crc32c(buf), pos + 3);
  }
  return buf;
}
