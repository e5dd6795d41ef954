// v2 TLVs: type(1) length(2, big-endian) value. Known types are decoded into header conveniences;
// every TLV is also kept raw, in order.
import { PP2_TYPE, UNIQUE_ID_MAX_LENGTH } from './constants.js';
import { crc32cUpdate, crc32cZeros } from './crc32c.js';
import { ProxyProtocolError } from './errors.js';
import type { PpSsl, PpTlv, ProxyHeader } from './types.js';

function tlvError(why: string): ProxyProtocolError {
  return new ProxyProtocolError('PP_ERR_TLV', `PROXY v2 TLV: ${why}`);
}

/** Splits region[start, end) into TLVs whose values are views of `region`. */
function splitTlvs(region: Buffer, start: number, end: number, what: string): PpTlv[] {
  const tlvs: PpTlv[] = [];
  let pos = start;
  while (pos < end) {
    if (end - pos < 3) throw tlvError(`${what} at offset ${pos} is truncated (${end - pos} bytes left, 3 needed)`);
    const length = (region[pos + 1]! << 8) | region[pos + 2]!;
    const valueStart = pos + 3;
    if (length > end - valueStart) {
      throw tlvError(`${what} 0x${region[pos]!.toString(16)} at offset ${pos} declares ${length} bytes, ${end - valueStart} left`);
    }
    tlvs.push({ type: region[pos]!, value: region.subarray(valueStart, valueStart + length) });
    pos = valueStart + length;
  }
  return tlvs;
}

function decodeSsl(value: Buffer): PpSsl {
  if (value.length < 5) throw tlvError(`SSL value is ${value.length} bytes, at least 5 needed`);
  const ssl: PpSsl = {
    client: value[0]!,
    verify: value.readUInt32BE(1),
    version: undefined, cn: undefined, cipher: undefined, sigAlg: undefined, keyAlg: undefined,
    tlvs: splitTlvs(value, 5, value.length, 'SSL sub-TLV'),
  };
  for (const sub of ssl.tlvs) {
    switch (sub.type) {
      case PP2_TYPE.SSL_VERSION: ssl.version ??= sub.value.toString('latin1'); break;
      case PP2_TYPE.SSL_CN: ssl.cn ??= sub.value.toString('utf8'); break;
      case PP2_TYPE.SSL_CIPHER: ssl.cipher ??= sub.value.toString('latin1'); break;
      case PP2_TYPE.SSL_SIG_ALG: ssl.sigAlg ??= sub.value.toString('latin1'); break;
      case PP2_TYPE.SSL_KEY_ALG: ssl.keyAlg ??= sub.value.toString('latin1'); break;
    }
  }
  return ssl;
}

/**
 * Parses the TLVs of a complete v2 header `data[0, total)` starting at `start`, filling the
 * conveniences of `header`. Values are views of `region`, which holds the same bytes as `data`
 * from `regionBase` on (the caller copies them when `data` is the sender's chunk, so that the
 * header does not keep a large socket buffer alive). A repeated type keeps its first value in
 * the conveniences; a second CRC32C TLV is rejected because "the" checksum is then ambiguous.
 */
export function decodeTlvs(data: Buffer, start: number, total: number, region: Buffer, regionBase: number, header: ProxyHeader): void {
  const tlvs = splitTlvs(region, start - regionBase, total - regionBase, 'TLV');
  header.tlvs = tlvs;
  for (const tlv of tlvs) {
    const value = tlv.value;
    switch (tlv.type) {
      case PP2_TYPE.ALPN: header.alpn ??= value; break;
      case PP2_TYPE.AUTHORITY: header.authority ??= value.toString('utf8'); break;
      case PP2_TYPE.UNIQUE_ID:
        if (value.length > UNIQUE_ID_MAX_LENGTH) throw tlvError(`UNIQUE_ID is ${value.length} bytes, at most ${UNIQUE_ID_MAX_LENGTH} allowed`);
        header.uniqueId ??= value;
        break;
      case PP2_TYPE.NETNS: header.netns ??= value.toString('latin1'); break;
      case PP2_TYPE.SSL: {
        const ssl = decodeSsl(value);
        header.ssl ??= ssl;
        break;
      }
      case PP2_TYPE.CRC32C: {
        if (value.length !== 4) throw new ProxyProtocolError('PP_ERR_CRC32C', `PROXY v2: CRC32C TLV is ${value.length} bytes, 4 expected`);
        if (header.crc32c !== undefined) throw new ProxyProtocolError('PP_ERR_CRC32C', 'PROXY v2: more than one CRC32C TLV');
        const expected = value.readUInt32BE(0);
        // Over the whole header with the checksum's own 4 bytes taken as zero.
        const at = value.byteOffset - region.byteOffset + regionBase;
        let crc = crc32cUpdate(-1, data, 0, at);
        crc = crc32cZeros(crc, 4);
        crc = ~crc32cUpdate(crc, data, at + 4, total) >>> 0;
        if (crc !== expected) {
          throw new ProxyProtocolError('PP_ERR_CRC32C', `PROXY v2: CRC32C mismatch (header says 0x${expected.toString(16)}, computed 0x${crc.toString(16)})`);
        }
        header.crc32c = expected;
        break;
      }
    }
  }
}
