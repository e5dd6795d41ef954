// Wire constants of HAProxy's doc/proxy-protocol.txt.

/** The 12-byte v2 signature. */
export const V2_SIGNATURE: Buffer = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
/** What every v1 header starts with: "PROXY ". */
export const V1_PREFIX: Buffer = Buffer.from('PROXY ', 'latin1');

/** Longest v1 header, CRLF included ("PROXY UNKNOWN" + two full IPv6 addresses and ports). */
export const V1_MAX_LENGTH = 107;
/** Signature, version/command, family/transport, 2-byte length. */
export const V2_FIXED_LENGTH = 16;
/** The largest value the 2-byte length field can carry. */
export const V2_MAX_PAYLOAD = 65535;
/** Default cap on the v2 length field: a trusted sender's headers are a few hundred bytes. */
export const V2_DEFAULT_MAX_LENGTH = 4096;
/** Longest UNIQUE_ID value the spec allows. */
export const UNIQUE_ID_MAX_LENGTH = 128;
/** sun_path size on Linux, the size of each UNIX address in a v2 header. */
export const UNIX_PATH_LENGTH = 108;

export const PP2_TYPE = {
  ALPN: 0x01,
  AUTHORITY: 0x02,
  CRC32C: 0x03,
  NOOP: 0x04,
  UNIQUE_ID: 0x05,
  SSL: 0x20,
  SSL_VERSION: 0x21,
  SSL_CN: 0x22,
  SSL_CIPHER: 0x23,
  SSL_SIG_ALG: 0x24,
  SSL_KEY_ALG: 0x25,
  NETNS: 0x30,
} as const;

/** Address block size per v2 family/transport byte; a byte not listed is rejected. */
export const V2_ADDRESS_LENGTH: ReadonlyMap<number, number> = new Map([
  [0x00, 0],
  [0x11, 12],
  [0x12, 12],
  [0x21, 36],
  [0x22, 36],
  [0x31, 216],
  [0x32, 216],
]);
