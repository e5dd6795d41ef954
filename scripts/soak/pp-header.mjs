// The soak backend's own reading of the PROXY header (HAProxy doc/proxy-protocol.txt), written
// apart from the daemon's codec on purpose: the suite checks the daemon from outside. Strict:
// v1 TCP4/TCP6 and v2 PROXY/LOCAL over TCP; TLVs are skipped. Pure.

const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
const V1_PREFIX = Buffer.from('PROXY ');
const V1_MAX = 107;

export class PpHeaderError extends Error {
  constructor(message) {
    super(message);
    this.code = 'ERR_SOAK_PP_HEADER';
  }
}

/** RFC 5952 text of 16 address bytes. */
export function formatIpv6(bytes) {
  const groups = [];
  for (let i = 0; i < 16; i += 2) groups.push((bytes[i] << 8) | bytes[i + 1]);
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

/**
 * @param {Buffer} buf the first bytes of a connection
 * @returns {null | { length: number, version: 1 | 2, command: 'PROXY' | 'LOCAL',
 *   source: { address: string, port: number } | null, destination: { address: string, port: number } | null }}
 *   null while more bytes are needed
 */
export function parsePpHeader(buf) {
  const sigLen = Math.min(buf.length, V2_SIGNATURE.length);
  if (buf.subarray(0, sigLen).equals(V2_SIGNATURE.subarray(0, sigLen))) return parseV2(buf);
  const preLen = Math.min(buf.length, V1_PREFIX.length);
  if (buf.subarray(0, preLen).equals(V1_PREFIX.subarray(0, preLen))) return parseV1(buf);
  throw new PpHeaderError('no PROXY header: the connection does not start with one');
}

function parseV2(buf) {
  if (buf.length < 16) return null;
  const verCmd = buf[12];
  if (verCmd >> 4 !== 2) throw new PpHeaderError(`v2: version ${verCmd >> 4}`);
  const command = verCmd & 0x0f;
  if (command > 1) throw new PpHeaderError(`v2: command ${command}`);
  const length = 16 + buf.readUInt16BE(14);
  if (buf.length < length) return null;
  if (command === 0) return { length, version: 2, command: 'LOCAL', source: null, destination: null };
  const fam = buf[13];
  const body = buf.subarray(16, length);
  if (fam === 0x11) {
    if (body.length < 12) throw new PpHeaderError('v2: TCP4 block shorter than 12 bytes');
    return {
      length,
      version: 2,
      command: 'PROXY',
      source: { address: [...body.subarray(0, 4)].join('.'), port: body.readUInt16BE(8) },
      destination: { address: [...body.subarray(4, 8)].join('.'), port: body.readUInt16BE(10) },
    };
  }
  if (fam === 0x21) {
    if (body.length < 36) throw new PpHeaderError('v2: TCP6 block shorter than 36 bytes');
    return {
      length,
      version: 2,
      command: 'PROXY',
      source: { address: formatIpv6(body.subarray(0, 16)), port: body.readUInt16BE(32) },
      destination: { address: formatIpv6(body.subarray(16, 32)), port: body.readUInt16BE(34) },
    };
  }
  throw new PpHeaderError(`v2: family/transport 0x${fam.toString(16)} is not TCP over IPv4 or IPv6`);
}

function parseV1(buf) {
  const end = buf.indexOf('\r\n');
  if (end < 0) {
    if (buf.length >= V1_MAX) throw new PpHeaderError('v1: no CRLF within 107 bytes');
    return null;
  }
  if (end + 2 > V1_MAX) throw new PpHeaderError('v1: longer than 107 bytes');
  const parts = buf.subarray(0, end).toString('latin1').split(' ');
  if (parts.length !== 6 || (parts[1] !== 'TCP4' && parts[1] !== 'TCP6')) throw new PpHeaderError(`v1: malformed line ${JSON.stringify(parts.join(' '))}`);
  const port = (t) => {
    if (!/^\d{1,5}$/.test(t) || Number(t) > 65535) throw new PpHeaderError(`v1: bad port ${JSON.stringify(t)}`);
    return Number(t);
  };
  return {
    length: end + 2,
    version: 1,
    command: 'PROXY',
    source: { address: parts[2], port: port(parts[4]) },
    destination: { address: parts[3], port: port(parts[5]) },
  };
}
