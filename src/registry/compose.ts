// dstack app-compose.json and the guest agent's Info response: from untrusted bytes to an
// attested port policy. Pure: no I/O. The compose hash check is ours: the dstack gateway does
// not verify that the app_compose it fetched is the one measured into RTMR3.
import { createHash } from 'node:crypto';
import { InterceptorError } from '../errors.js';
import { EMPTY_POLICY, normalizeComposeHash, policyFromJson } from './policy.js';
import type { PortPolicy } from './types.js';

export type Warn = (msg: string, details: object) => void;

/**
 * Anything that stops a policy from being learned. `permanent` errors are not retried:
 * asking again would get the same answer.
 */
export class PolicyFetchError extends InterceptorError {
  readonly permanent: boolean;
  /** ERR_AGENT_HTTP: the status the agent answered with. */
  readonly status?: number;
  /** ERR_COMPOSE_HASH_MISMATCH: the attested hash and the one the fetched bytes hash to. */
  readonly expectedHash?: string;
  readonly actualHash?: string;
  /** ERR_AGENT_CONNECT: the system error's code (`ECONNREFUSED`, `ECONNRESET`, ...); the error itself is `cause`. */
  readonly systemCode?: string;
  constructor(
    code: string,
    message: string,
    options: {
      permanent: boolean;
      cause?: unknown;
      status?: number;
      expectedHash?: string;
      actualHash?: string;
      systemCode?: string;
    },
  ) {
    super(code, message, options.cause === undefined ? undefined : { cause: options.cause });
    this.permanent = options.permanent;
    if (options.status !== undefined) this.status = options.status;
    if (options.expectedHash !== undefined) this.expectedHash = options.expectedHash;
    if (options.actualHash !== undefined) this.actualHash = options.actualHash;
    if (options.systemCode !== undefined) this.systemCode = options.systemCode;
  }
}

/** SHA-256 of the raw bytes (a string is taken as UTF-8), lowercase hex. No normalisation. */
export function composeHash(appComposeText: string | Buffer): string {
  return createHash('sha256').update(appComposeText).digest('hex');
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * The port policy an app-compose.json declares: the merged `port_policy: {ports, restrict_mode}`
 * form, else the earlier top-level `ports: [{port, pp}]` (restrict_mode false), else none
 * (an empty policy: every port pp=false).
 */
export function policyFromAppCompose(appComposeText: string, warn: Warn): PortPolicy {
  let doc: unknown;
  try {
    doc = JSON.parse(appComposeText);
  } catch (err) {
    throw new PolicyFetchError('ERR_COMPOSE_INVALID', `app_compose is not JSON: ${(err as Error).message}`, {
      permanent: true,
    });
  }
  if (!isPlainObject(doc)) {
    throw new PolicyFetchError('ERR_COMPOSE_INVALID', 'app_compose is not a JSON object', { permanent: true });
  }
  const merged = doc['port_policy'];
  if (merged !== undefined && merged !== null) return policyFromJson(merged, warn);
  const legacy = doc['ports'];
  if (legacy !== undefined && legacy !== null) return policyFromJson({ ports: legacy, restrict_mode: false }, warn);
  return EMPTY_POLICY;
}

function mismatch(what: string, expectedHash: string, actualHash: string): PolicyFetchError {
  return new PolicyFetchError(
    'ERR_COMPOSE_HASH_MISMATCH',
    `${what}: expected compose hash ${expectedHash}, got ${actualHash}`,
    { permanent: true, expectedHash, actualHash },
  );
}

/**
 * A hash field of the response: absent ("" / null / missing) => null; present but not 64 hex
 * digits => the response is undecodable.
 */
function hashField(obj: Record<string, unknown>, key: string, where: string): string | null {
  const v = obj[key];
  if (v === undefined || v === null || v === '') return null;
  const h = typeof v === 'string' ? normalizeComposeHash(v) : null;
  if (h === null) {
    throw new PolicyFetchError('ERR_AGENT_BAD_RESPONSE', `${where}.${key} is not a 64-digit hex compose hash`, {
      permanent: false,
    });
  }
  return h;
}

/**
 * The policy attested by a guest agent's Info response. The attested compose hash is the one
 * the registration carried, else the response's `compose_hash`; the app_compose text must hash
 * to it, otherwise nothing from it is believed.
 */
export function policyFromInfoResponse(
  body: Buffer,
  expected: { composeHash: string | null },
  warn: Warn,
): { policy: PortPolicy; composeHash: string } {
  let info: unknown;
  try {
    info = JSON.parse(body.toString('utf8'));
  } catch (err) {
    throw new PolicyFetchError('ERR_AGENT_BAD_RESPONSE', `Info response is not JSON: ${(err as Error).message}`, {
      permanent: false,
    });
  }
  if (!isPlainObject(info)) {
    throw new PolicyFetchError('ERR_AGENT_BAD_RESPONSE', 'Info response is not a JSON object', { permanent: false });
  }

  const expectedHash = expected.composeHash === null ? null : normalizeComposeHash(expected.composeHash);
  if (expected.composeHash !== null && expectedHash === null) {
    // A caller bug, not the agent's: the registry only stores normalised hashes.
    throw new PolicyFetchError('ERR_COMPOSE_HASH_INVALID', 'expected compose hash is not 64 hex digits', {
      permanent: true,
    });
  }
  const reportedHash = hashField(info, 'compose_hash', 'Info');
  if (expectedHash !== null && reportedHash !== null && reportedHash !== expectedHash) {
    throw mismatch('Info compose_hash differs from the registered one', expectedHash, reportedHash);
  }
  const attested = expectedHash ?? reportedHash;
  if (attested === null) {
    throw new PolicyFetchError(
      'ERR_AGENT_BAD_RESPONSE',
      'Info response has no compose_hash and the registration carried none',
      { permanent: false },
    );
  }

  const tcbInfoText = info['tcb_info'];
  if (typeof tcbInfoText !== 'string') {
    throw new PolicyFetchError('ERR_AGENT_TCB_INFO', `tcb_info is ${tcbInfoText === undefined ? 'missing' : 'not a string'}`, {
      permanent: true,
    });
  }
  // public_tcbinfo=false: the app chose not to publish its compose; it declares no ports to us.
  if (tcbInfoText === '') return { policy: EMPTY_POLICY, composeHash: attested };

  let tcbInfo: unknown;
  try {
    tcbInfo = JSON.parse(tcbInfoText);
  } catch (err) {
    throw new PolicyFetchError('ERR_AGENT_TCB_INFO', `tcb_info is not JSON: ${(err as Error).message}`, {
      permanent: true,
    });
  }
  if (!isPlainObject(tcbInfo)) {
    throw new PolicyFetchError('ERR_AGENT_TCB_INFO', 'tcb_info is not a JSON object', { permanent: true });
  }
  const appCompose = tcbInfo['app_compose'];
  if (typeof appCompose !== 'string') {
    throw new PolicyFetchError('ERR_AGENT_NO_APP_COMPOSE', 'tcb_info has no app_compose string', { permanent: true });
  }

  // Check the bytes before believing anything they say.
  const actual = composeHash(appCompose);
  if (actual !== attested) throw mismatch('app_compose does not hash to the attested compose hash', attested, actual);
  const tcbHash = hashField(tcbInfo, 'compose_hash', 'tcb_info');
  if (tcbHash !== null && tcbHash !== actual) throw mismatch('tcb_info.compose_hash differs from app_compose', actual, tcbHash);

  return { policy: policyFromAppCompose(appCompose, warn), composeHash: actual };
}
