// PROXY protocol v1/v2 codec (HAProxy doc/proxy-protocol.txt). Pure: Buffers in, Buffers and objects out.
export type { PpCommand, PpEndpoint, PpFamily, PpSsl, PpTlv, PpTransport, ProxyHeader } from './types.js';
export { ProxyProtocolError, PP_ERROR_CODES, type PpErrorCode } from './errors.js';
export { PP2_TYPE } from './constants.js';
export { crc32c } from './crc32c.js';
export { encodeV1, encodeV1Unknown } from './v1.js';
export { encodeV2, type EncodeV2Options } from './v2.js';
export { createHeaderParser, parseHeader, type HeaderParser, type HeaderParserOptions } from './parser.js';
