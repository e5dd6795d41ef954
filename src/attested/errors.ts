// Why an attested registration was refused: stable reasons, each raised with its code from the
// daemon's catalogue (src/errors.ts), which also gives the HTTP status the endpoint answers.
// Callers branch on `reason` (or `code`), never on `message`.
import { errorInfo, InterceptorError } from '../errors.js';

const ATTESTED_REJECTIONS = {
  // TLS: who is calling
  no_client_certificate: { code: 'ERR_ATTESTED_NO_CLIENT_CERT' },
  untrusted_certificate: { code: 'ERR_ATTESTED_UNTRUSTED_CERT' },
  certificate_expired: { code: 'ERR_ATTESTED_CERT_EXPIRED' },
  certificate_not_yet_valid: { code: 'ERR_ATTESTED_CERT_NOT_YET_VALID' },
  certificate_malformed: { code: 'ERR_ATTESTED_CERT_MALFORMED' },
  // The identity the certificate carries
  app_info_missing: { code: 'ERR_ATTESTED_APP_INFO_MISSING' },
  app_info_malformed: { code: 'ERR_ATTESTED_APP_INFO_MALFORMED' },
  app_not_allowed: { code: 'ERR_ATTESTED_APP_NOT_ALLOWED' },
  // The request
  not_found: { code: 'ERR_ATTESTED_NOT_FOUND' },
  method_not_allowed: { code: 'ERR_ATTESTED_METHOD_NOT_ALLOWED' },
  protobuf_unsupported: { code: 'ERR_ATTESTED_PROTOBUF_UNSUPPORTED' },
  body_too_large: { code: 'ERR_ATTESTED_BODY_TOO_LARGE' },
  body_not_json: { code: 'ERR_ATTESTED_BODY_NOT_JSON' },
  body_invalid: { code: 'ERR_ATTESTED_BODY_INVALID' },
  registration_invalid: { code: 'ERR_ATTESTED_REGISTRATION_INVALID' },
  // The registry's state
  instance_app_conflict: { code: 'ERR_ATTESTED_INSTANCE_APP_CONFLICT' },
  instance_address_conflict: { code: 'ERR_ATTESTED_INSTANCE_ADDRESS_CONFLICT' },
  address_in_use: { code: 'ERR_ATTESTED_ADDRESS_IN_USE' },
  registry_unavailable: { code: 'ERR_ATTESTED_REGISTRY_UNAVAILABLE' },
} as const;

export type AttestedRejectionReason = keyof typeof ATTESTED_REJECTIONS;
export type AttestedRejectionCode = (typeof ATTESTED_REJECTIONS)[AttestedRejectionReason]['code'];

/** A refused registration. Nothing was stored when one is thrown. */
export class AttestedRejection extends InterceptorError {
  declare readonly code: AttestedRejectionCode;
  readonly reason: AttestedRejectionReason;
  readonly status: number;
  /** The request field or certificate part at fault, when there is one (e.g. `port_policy.ports[2].port`). */
  readonly field: string | null;
  constructor(reason: AttestedRejectionReason, message: string, opts: { field?: string; cause?: unknown } = {}) {
    const entry = ATTESTED_REJECTIONS[reason];
    super(entry.code, message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.reason = reason;
    this.status = errorInfo(entry.code).status;
    this.field = opts.field ?? null;
  }
}

/** The listener could not start: a TLS file named in [registry.attested] is unreadable or unusable. */
export class AttestedTlsFileError extends InterceptorError {
  /** The dotted config key, e.g. `registry.attested.ca_file`. */
  readonly key: string;
  constructor(key: string, problem: string, options?: { cause?: unknown }) {
    super('ERR_ATTESTED_TLS_FILE', `${key}: ${problem}`, options);
    this.key = key;
  }
}
