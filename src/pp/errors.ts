// The one error class of the PROXY protocol codec. Callers branch on `code`, never on `message`.
import { InterceptorError } from '../errors.js';

export const PP_ERROR_CODES = [
  'PP_ERR_NOT_PROXY',
  'PP_ERR_V1_TOO_LONG',
  'PP_ERR_V1_MALFORMED',
  'PP_ERR_V2_VERSION',
  'PP_ERR_V2_COMMAND',
  'PP_ERR_V2_FAMILY',
  'PP_ERR_V2_LENGTH',
  'PP_ERR_V2_TOO_LONG',
  'PP_ERR_TLV',
  'PP_ERR_CRC32C',
  'PP_ERR_STATE',
] as const;

export type PpErrorCode = (typeof PP_ERROR_CODES)[number];

export class ProxyProtocolError extends InterceptorError {
  declare readonly code: PpErrorCode;
  constructor(code: PpErrorCode, message: string) {
    super(code, message);
  }
}

/** Argument errors of the encoders: programmer mistakes, not wire errors, so not a ProxyProtocolError. */
export function invalidArg(message: string): TypeError {
  const err = new TypeError(message) as TypeError & { code: string };
  err.code = 'ERR_INVALID_ARG_VALUE';
  return err;
}
