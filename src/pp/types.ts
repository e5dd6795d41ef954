export type PpCommand = 'PROXY' | 'LOCAL';
export type PpFamily = 'INET' | 'INET6' | 'UNIX' | 'UNSPEC';
export type PpTransport = 'STREAM' | 'DGRAM' | 'UNSPEC';

/** UNIX: `address` is the path with its NUL padding removed, `port` is 0. */
export interface PpEndpoint {
  address: string;
  port: number;
}

/** One TLV as it appeared on the wire, in order (NOOP and CRC32C included). */
export interface PpTlv {
  type: number;
  value: Buffer;
}

export interface PpSsl {
  client: number;
  verify: number;
  version?: string;
  cn?: string;
  cipher?: string;
  sigAlg?: string;
  keyAlg?: string;
  /** The SSL TLV's sub-TLVs, raw and in order. */
  tlvs: PpTlv[];
}

export interface ProxyHeader {
  version: 1 | 2;
  /** v1 "UNKNOWN" is command 'PROXY' with family 'UNSPEC' and no addresses. */
  command: PpCommand;
  family: PpFamily;
  transport: PpTransport;
  /** null for LOCAL, UNSPEC and v1 UNKNOWN: use the real connection's endpoints. */
  source: PpEndpoint | null;
  destination: PpEndpoint | null;
  /** v2 PROXY over INET/INET6/UNIX only; [] for v1, LOCAL and UNSPEC (their bytes are opaque). */
  tlvs: PpTlv[];
  alpn?: Buffer;
  authority?: string;
  uniqueId?: Buffer;
  netns?: string;
  ssl?: PpSsl;
  crc32c?: number;
  /** Total header bytes consumed. */
  length: number;
}
