// Daemon errors: one catalogue of stable codes, and the error class that carries them. Callers
// branch on `code`, never on `message`. The PROXY protocol codec keeps its own catalogue
// (src/pp/errors.ts, `PP_ERR_*`).
import { getSystemErrorName } from 'node:util';

export type ErrorLevel = 'debug' | 'info' | 'warn' | 'error';

export interface ErrorInfo {
  /** What the admin API answers with when a request fails with this code. */
  readonly status: number;
  /** The level a failure with this code is logged at. */
  readonly level: ErrorLevel;
  readonly description: string;
}

// One line per code, sorted by code: add yours in its place. `status` is what an admin client
// sees (4xx: the request was wrong, 5xx: the daemon or something behind it failed).
const CATALOGUE = {
  ERR_ADDON_MISSING: { status: 500, level: 'error', description: 'the native addon could not be loaded (run `npm run build`)' },
  ERR_ADMIN_PROTOCOL: { status: 502, level: 'error', description: 'the admin API answered something this client does not understand' },
  ERR_ADMIN_SOCKET_IN_USE: { status: 500, level: 'error', description: 'the admin socket path is taken by another file or a live socket' },
  ERR_ADMIN_TIMEOUT: { status: 504, level: 'error', description: 'the admin API did not answer in time' },
  ERR_ADMIN_UNREACHABLE: { status: 503, level: 'error', description: "the daemon's admin socket cannot be reached" },
  ERR_AGENT_ABORTED: { status: 503, level: 'debug', description: 'a guest agent request was cancelled (shutdown)' },
  ERR_AGENT_BAD_RESPONSE: { status: 502, level: 'warn', description: "the guest agent's Info answer is not a decodable Info response (transient)" },
  ERR_AGENT_CONNECT: { status: 502, level: 'warn', description: 'the guest agent could not be reached or dropped the connection (transient)' },
  ERR_AGENT_HTTP: { status: 502, level: 'warn', description: 'the guest agent answered with an HTTP status other than 200 (transient)' },
  ERR_AGENT_NO_APP_COMPOSE: { status: 502, level: 'warn', description: 'tcb_info carries no app_compose string (permanent)' },
  ERR_AGENT_RESPONSE_TOO_LARGE: { status: 502, level: 'warn', description: 'the Info answer exceeds registry.fetch.max_response_bytes (permanent)' },
  ERR_AGENT_TCB_INFO: { status: 502, level: 'warn', description: 'tcb_info is not JSON (permanent)' },
  ERR_AGENT_TIMEOUT: { status: 504, level: 'warn', description: 'the guest agent did not answer completely within registry.fetch.timeout (transient)' },
  ERR_ATTESTED_ADDRESS_IN_USE: { status: 409, level: 'warn', description: 'an attested registration from an address another instance holds' },
  ERR_ATTESTED_APP_INFO_MALFORMED: { status: 403, level: 'warn', description: "the client certificate's app-info extension does not decode as dstack's AppInfo" },
  ERR_ATTESTED_APP_INFO_MISSING: { status: 403, level: 'warn', description: 'the client certificate carries no app-info extension (and app_id_fallback is off)' },
  ERR_ATTESTED_APP_NOT_ALLOWED: { status: 403, level: 'warn', description: 'the certificate names an app outside registry.attested.allowed_apps' },
  ERR_ATTESTED_BODY_INVALID: { status: 400, level: 'warn', description: "a RegisterCvm body that does not match dstack's RegisterCvmRequest schema" },
  ERR_ATTESTED_BODY_NOT_JSON: { status: 400, level: 'warn', description: 'a RegisterCvm body that is not JSON' },
  ERR_ATTESTED_BODY_TOO_LARGE: { status: 413, level: 'warn', description: 'a RegisterCvm body over the size limit' },
  ERR_ATTESTED_CERT_EXPIRED: { status: 403, level: 'warn', description: "a certificate in the client's chain has expired" },
  ERR_ATTESTED_CERT_MALFORMED: { status: 403, level: 'warn', description: 'the client certificate does not parse as X.509' },
  ERR_ATTESTED_CERT_NOT_YET_VALID: { status: 403, level: 'warn', description: "a certificate in the client's chain is not valid yet" },
  ERR_ATTESTED_INSTANCE_ADDRESS_CONFLICT: { status: 409, level: 'warn', description: 'a registered instance registering from a new address (allow_address_change is off)' },
  ERR_ATTESTED_INSTANCE_APP_CONFLICT: { status: 409, level: 'warn', description: 'an instance id already registered under another app' },
  ERR_ATTESTED_METHOD_NOT_ALLOWED: { status: 405, level: 'debug', description: 'the registration endpoint does not take this HTTP method' },
  ERR_ATTESTED_NOT_FOUND: { status: 404, level: 'debug', description: 'no RPC at this path of the registration endpoint' },
  ERR_ATTESTED_NO_CLIENT_CERT: { status: 401, level: 'warn', description: 'an attested registration without a client certificate' },
  ERR_ATTESTED_PROTOBUF_UNSUPPORTED: { status: 415, level: 'debug', description: 'a RegisterCvm body in protobuf (only ?json is served)' },
  ERR_ATTESTED_REGISTRATION_INVALID: { status: 400, level: 'warn', description: 'the registry refused the registration the certificate and body describe' },
  ERR_ATTESTED_REGISTRY_UNAVAILABLE: { status: 503, level: 'error', description: 'the registry could not store an attested registration' },
  ERR_ATTESTED_TLS_FILE: { status: 500, level: 'error', description: 'a TLS file named in [registry.attested] is unreadable or unusable' },
  ERR_ATTESTED_UNTRUSTED_CERT: { status: 403, level: 'warn', description: 'the client certificate does not chain to registry.attested.ca_file' },
  ERR_BAD_REQUEST: { status: 400, level: 'debug', description: 'an admin request that is not well-formed' },
  ERR_BODY_TOO_LARGE: { status: 413, level: 'debug', description: 'an admin request body over the size limit' },
  ERR_COMPOSE_HASH_MISMATCH: { status: 502, level: 'error', description: 'app_compose does not hash to the attested compose hash (a security event, permanent)' },
  ERR_COMPOSE_INVALID: { status: 502, level: 'warn', description: "app_compose does not parse as dstack's AppCompose (permanent)" },
  ERR_CONFIG: { status: 400, level: 'error', description: 'the configuration is invalid' },
  ERR_CONNECT_TIMEOUT: { status: 504, level: 'warn', description: 'the upstream connect timed out' },
  ERR_FETCH_ELSEWHERE: { status: 503, level: 'debug', description: 'another node of the cluster is fetching this policy (not a failure)' },
  ERR_FETCH_UNEXPECTED: { status: 500, level: 'error', description: 'a policy fetch failed for a reason that is not a fetch error (a bug, or the store)' },
  ERR_INTERNAL: { status: 500, level: 'error', description: 'an unexpected failure inside the daemon (a bug)' },
  ERR_INVALID_ARG_VALUE: { status: 500, level: 'error', description: 'a function got an argument it does not accept (a programming error)' },
  ERR_INVALID_CIDR: { status: 400, level: 'error', description: 'not an IPv4/IPv6 network or address' },
  ERR_INVALID_DURATION: { status: 400, level: 'error', description: 'not a duration' },
  ERR_INVALID_REGISTRATION: { status: 400, level: 'debug', description: 'a registration with a missing or invalid field' },
  ERR_IPTABLES_FAILED: { status: 500, level: 'error', description: 'an iptables-restore / iptables-save command failed' },
  ERR_IPTABLES_MISSING: { status: 500, level: 'error', description: 'the iptables tools (the variant intercept.iptables_variant names) are not installed' },
  ERR_IP_FAILED: { status: 500, level: 'error', description: 'an `ip` command failed' },
  ERR_IP_IN_USE: { status: 409, level: 'debug', description: 'the address is registered to another instance' },
  ERR_IP_MISSING: { status: 500, level: 'error', description: 'the `ip` tool (iproute2) is not installed' },
  ERR_METHOD_NOT_ALLOWED: { status: 405, level: 'debug', description: 'the admin route does not take this HTTP method' },
  ERR_NFT_FAILED: { status: 500, level: 'error', description: 'an `nft` command failed' },
  ERR_NFT_MISSING: { status: 500, level: 'error', description: 'the `nft` tool (nftables) is not installed' },
  ERR_NOT_FOUND: { status: 404, level: 'debug', description: 'no such admin route' },
  ERR_NO_CAP_NET_ADMIN: { status: 500, level: 'error', description: 'root or CAP_NET_ADMIN is needed' },
  ERR_NO_TARGETS: { status: 400, level: 'error', description: 'the configuration has no [[intercept.targets]]' },
  ERR_PIPE_SIZE: { status: 500, level: 'error', description: 'the kernel refused upstream.pipe_size' },
  ERR_POLICY_INVALID: { status: 400, level: 'debug', description: 'a port policy in JSON that does not have the expected shape' },
  ERR_POLICY_SYNTAX: { status: 400, level: 'debug', description: 'a port policy string ("8080:pp,8081") that does not parse' },
  ERR_PP_INCOMPLETE: { status: 400, level: 'warn', description: 'a trusted source closed before its PROXY header was complete' },
  ERR_PP_TIMEOUT: { status: 408, level: 'warn', description: 'a trusted source sent no complete PROXY header in time' },
  ERR_REGISTRY_CLOSED: { status: 503, level: 'info', description: 'the registry is shutting down' },
  ERR_RELOAD_RESTART_REQUIRED: { status: 409, level: 'warn', description: 'a reload changes keys only a restart applies (listen.*, the firewall identity, the store...): nothing was reloaded' },
  ERR_STATUS_TIMEOUT: { status: 504, level: 'error', description: 'a loop thread did not answer a status snapshot in time (a bug)' },
  ERR_STOPPING: { status: 503, level: 'info', description: 'the daemon is stopping: a reload is not done' },
  ERR_STORE_AUTH: { status: 500, level: 'error', description: 'etcd refused the configured user, password or client certificate' },
  ERR_STORE_CONFLICT: { status: 409, level: 'warn', description: 'a registry write lost its compare-and-swap race too many times' },
  ERR_STORE_CORRUPT: { status: 500, level: 'error', description: 'the registry store holds a record that does not parse' },
  ERR_STORE_LOCKED: { status: 500, level: 'error', description: 'another daemon holds the registry store' },
  ERR_STORE_MIGRATION: { status: 500, level: 'error', description: 'migrating the old journal into SQLite failed' },
  ERR_STORE_STATE: { status: 500, level: 'error', description: 'the registry store was used out of order (a bug)' },
  ERR_STORE_UNAVAILABLE: { status: 503, level: 'warn', description: 'the registry store (etcd) cannot be reached: writes fail, decisions go on from memory' },
  ERR_STORE_UNREADABLE: { status: 500, level: 'error', description: 'the registry store cannot be read' },
  ERR_STORE_VERSION: { status: 500, level: 'error', description: 'the registry database was written by a newer, incompatible version' },
  ERR_STORE_WRITE: { status: 500, level: 'error', description: 'a registry store write failed' },
  ERR_TABLE: { status: 500, level: 'error', description: "the data path's decision table could not be compiled (two instances on one address, a bad entry: a bug)" },
  ERR_UNKNOWN_INSTANCE: { status: 404, level: 'debug', description: 'no instance is registered with this id' },
  ERR_USAGE: { status: 400, level: 'error', description: 'a command line that does not parse' },
} as const satisfies Record<string, ErrorInfo>;

export type ErrorCode = keyof typeof CATALOGUE;

export const ERROR_CODES: readonly ErrorCode[] = Object.freeze(Object.keys(CATALOGUE) as ErrorCode[]);

const UNCATALOGUED: ErrorInfo = Object.freeze({ status: 500, level: 'error', description: 'a code missing from the catalogue (a bug)' });

export function isErrorCode(code: unknown): code is ErrorCode {
  return typeof code === 'string' && Object.hasOwn(CATALOGUE, code);
}

/** What a code means; a code missing from the catalogue is treated as an internal error. */
export function errorInfo(code: string): ErrorInfo {
  return isErrorCode(code) ? CATALOGUE[code] : UNCATALOGUED;
}

export class InterceptorError extends Error {
  readonly code: string;
  // `string` and not ErrorCode: a few callers pass codes computed at run time (`ERR_${TOOL}_FAILED`,
  // a worker's error relayed over IPC). test/unit/errors.test.ts checks that every code the
  // sources name is in the catalogue.
  constructor(code: ErrorCode | (string & {}), message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

export class ConfigError extends InterceptorError {
  /** The dotted key the problem is about, e.g. `intercept.targets[0].cidr`. */
  readonly key: string;
  constructor(key: string, problem: string) {
    super('ERR_CONFIG', `config: ${key}: ${problem}`);
    this.key = key;
  }
}

export interface SystemError extends Error {
  code: string;
  errno: number;
  syscall: string;
  address?: string;
  port?: number;
}

/** A Node-shaped system error from a negative errno returned by the addon. */
export function systemError(
  negErrno: number,
  syscall: string,
  details: { address?: string; port?: number; hint?: string } = {},
): SystemError {
  const code = getSystemErrorName(negErrno);
  let where = '';
  if (details.address !== undefined) where = ` ${details.address}${details.port !== undefined ? `:${details.port}` : ''}`;
  const hint = details.hint ? ` (${details.hint})` : '';
  const err = new Error(`${syscall} ${code}${where}${hint}`) as SystemError;
  err.code = code;
  err.errno = negErrno;
  err.syscall = syscall;
  if (details.address !== undefined) err.address = details.address;
  if (details.port !== undefined) err.port = details.port;
  return err;
}
