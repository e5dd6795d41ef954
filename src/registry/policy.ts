// Port policies and instance records: parsing (operator syntax, dstack JSON), and the strict
// JSON form the store persists and the admin API returns. Pure: no I/O, no logging.
import { InterceptorError } from '../errors.js';
import { normalizeIp } from '../net/ip.js';
export { normalizeIp };
import type { InstanceRecord, PolicySource, PortPolicy, PortRule } from './types.js';

/** Operator policy text (`"8080:pp,8081"`) that does not parse. `item` is the offending item. */
export class PolicySyntaxError extends InterceptorError {
  readonly item: string;
  constructor(item: string, problem: string) {
    super('ERR_POLICY_SYNTAX', `port policy: ${JSON.stringify(item)}: ${problem}`);
    this.item = item;
  }
}

/**
 * Stored/admin JSON that does not match the expected shape. `field` is the dotted path of the
 * offending value, e.g. `reported_policy.ports[2].port`.
 */
export class RecordFormatError extends InterceptorError {
  readonly field: string;
  constructor(code: 'ERR_POLICY_INVALID' | 'ERR_STORE_CORRUPT', field: string, problem: string) {
    super(code, `${code === 'ERR_STORE_CORRUPT' ? 'stored record' : 'policy'}: ${field}: ${problem}`);
    this.field = field;
  }
}

const MIN_PORT = 1;
const MAX_PORT = 65535;

const PP_TRUE: PortRule = Object.freeze({ pp: true });
const PP_FALSE: PortRule = Object.freeze({ pp: false });

/** Shared rule objects: a policy holds one of two frozen rules per port. */
function portRule(pp: boolean): PortRule {
  return pp ? PP_TRUE : PP_FALSE;
}

export function isValidPort(port: unknown): port is number {
  return typeof port === 'number' && Number.isInteger(port) && port >= MIN_PORT && port <= MAX_PORT;
}

/** Builds a frozen policy. Ports must already be valid; the map is copied. */
export function makePolicy(ports: Iterable<readonly [number, boolean]>, restrictMode: boolean): PortPolicy {
  const map = new Map<number, PortRule>();
  for (const [port, pp] of ports) map.set(port, portRule(pp));
  return Object.freeze({ ports: map, restrictMode });
}

export const EMPTY_POLICY: PortPolicy = makePolicy([], false);

/**
 * Operator syntax: `"8080:pp,8081,443:nopp"`. `:pp` => pp=true; bare or `:nopp` => pp=false.
 * `""` (or only whitespace) is a reported-empty policy. Every mistake is an error here: this is
 * operator input, nothing is skipped.
 */
export function parsePolicyString(s: string, restrictMode: boolean): PortPolicy {
  const ports = new Map<number, boolean>();
  if (s.trim() === '') return makePolicy(ports, restrictMode);
  for (const raw of s.split(',')) {
    const item = raw.trim();
    if (item === '') throw new PolicySyntaxError(raw, 'empty item');
    const colon = item.indexOf(':');
    const portText = (colon === -1 ? item : item.slice(0, colon)).trim();
    const flag = colon === -1 ? '' : item.slice(colon + 1).trim().toLowerCase();
    if (!/^[0-9]{1,5}$/.test(portText)) throw new PolicySyntaxError(item, 'port must be a number in 1..65535');
    const port = Number(portText);
    if (!isValidPort(port)) throw new PolicySyntaxError(item, 'port must be a number in 1..65535');
    let pp: boolean;
    if (colon === -1 || flag === 'nopp') pp = false;
    else if (flag === 'pp') pp = true;
    else throw new PolicySyntaxError(item, 'flag must be "pp" or "nopp"');
    if (ports.has(port)) throw new PolicySyntaxError(item, `port ${port} listed twice`);
    ports.set(port, pp);
  }
  return makePolicy(ports, restrictMode);
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export interface SerializedPolicy {
  ports: { port: number; pp: boolean }[];
  restrict_mode: boolean;
}

export function serializePolicy(p: PortPolicy): SerializedPolicy {
  const ports = [...p.ports.entries()].sort((a, b) => a[0] - b[0]).map(([port, rule]) => ({ port, pp: rule.pp }));
  return { ports, restrict_mode: p.restrictMode };
}

/**
 * The strict inverse of `serializePolicy`, for our own stored/admin JSON: anything malformed is
 * an error (code `ERR_POLICY_INVALID`, or `ERR_STORE_CORRUPT` when loading a stored record).
 */
export function deserializePolicy(
  json: unknown,
  field = 'policy',
  code: 'ERR_POLICY_INVALID' | 'ERR_STORE_CORRUPT' = 'ERR_POLICY_INVALID',
): PortPolicy {
  if (!isPlainObject(json)) throw new RecordFormatError(code, field, 'not an object');
  const rm = json['restrict_mode'];
  if (typeof rm !== 'boolean') throw new RecordFormatError(code, `${field}.restrict_mode`, 'not a boolean');
  const list = json['ports'];
  if (!Array.isArray(list)) throw new RecordFormatError(code, `${field}.ports`, 'not an array');
  const ports = new Map<number, boolean>();
  for (let i = 0; i < list.length; i++) {
    const at = `${field}.ports[${i}]`;
    const entry: unknown = list[i];
    if (!isPlainObject(entry)) throw new RecordFormatError(code, at, 'not an object');
    const port = entry['port'];
    if (!isValidPort(port)) throw new RecordFormatError(code, `${at}.port`, 'not an integer in 1..65535');
    const pp = entry['pp'];
    if (typeof pp !== 'boolean') throw new RecordFormatError(code, `${at}.pp`, 'not a boolean');
    if (ports.has(port)) throw new RecordFormatError(code, `${at}.port`, `port ${port} listed twice`);
    ports.set(port, pp);
  }
  return makePolicy(ports, rm);
}

/** `"8080:pp,8081"` (sorted); the inverse of `parsePolicyString` minus restrict mode. */
export function formatPolicy(p: PortPolicy): string {
  return [...p.ports.entries()]
    .sort((a, b) => a[0] - b[0])
    .map(([port, rule]) => (rule.pp ? `${port}:pp` : String(port)))
    .join(',');
}

export interface SerializedInstance {
  instance_id: string;
  app_id: string;
  ip: string;
  compose_hash: string | null;
  reported_policy: SerializedPolicy | null;
  policy_source: PolicySource | null;
  policy_compose_hash: string | null;
  override: SerializedPolicy | null;
  registered_at: number;
  updated_at: number;
}

export function serializeInstance(r: InstanceRecord): SerializedInstance {
  return {
    instance_id: r.instanceId,
    app_id: r.appId,
    ip: r.ip,
    compose_hash: r.composeHash,
    reported_policy: r.reportedPolicy === null ? null : serializePolicy(r.reportedPolicy),
    policy_source: r.policySource,
    policy_compose_hash: r.policyComposeHash,
    override: r.override === null ? null : serializePolicy(r.override),
    registered_at: r.registeredAt,
    updated_at: r.updatedAt,
  };
}

// Shared with the registry's input validation so stored and registered values obey one rule.
export const ID_PATTERN = /^[A-Za-z0-9._:-]{1,128}$/;
const HASH_PATTERN = /^[0-9a-f]{64}$/;

/** Lowercase, strip a leading 0x; null when the result is not 64 hex digits. */
export function normalizeComposeHash(value: string): string | null {
  let h = value.trim().toLowerCase();
  if (h.startsWith('0x')) h = h.slice(2);
  return HASH_PATTERN.test(h) ? h : null;
}

/** Strict: every field is checked, the first bad one is named (code `ERR_STORE_CORRUPT`). */
export function deserializeInstance(json: unknown): InstanceRecord {
  const bad = (field: string, problem: string): never => {
    throw new RecordFormatError('ERR_STORE_CORRUPT', field, problem);
  };
  if (!isPlainObject(json)) return bad('(record)', 'not an object');
  const str = (field: string): string => {
    const v = json[field];
    return typeof v === 'string' ? v : bad(field, 'not a string');
  };
  const hashOrNull = (field: string): string | null => {
    const v = json[field];
    if (v === null) return null;
    if (typeof v !== 'string' || !HASH_PATTERN.test(v)) return bad(field, 'not null or 64 lowercase hex digits');
    return v;
  };
  const policyOrNull = (field: string): PortPolicy | null => {
    const v = json[field];
    return v === null ? null : deserializePolicy(v, field, 'ERR_STORE_CORRUPT');
  };
  const time = (field: string): number => {
    const v = json[field];
    return typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : bad(field, 'not a timestamp (ms)');
  };
  // Written by releases before every unknown policy failed closed; their meaning is gone.
  for (const legacy of ['restricted', 'restrict_requested']) {
    if (json[legacy] !== undefined && typeof json[legacy] !== 'boolean') bad(legacy, 'not a boolean');
  }

  const instanceId = str('instance_id');
  if (!ID_PATTERN.test(instanceId)) bad('instance_id', 'not 1..128 characters of [A-Za-z0-9._:-]');
  const appId = str('app_id');
  if (!ID_PATTERN.test(appId)) bad('app_id', 'not 1..128 characters of [A-Za-z0-9._:-]');
  const ip = str('ip');
  if (normalizeIp(ip) !== ip) bad('ip', 'not a normalised IPv4/IPv6 address');
  const composeHash = hashOrNull('compose_hash');
  const reportedPolicy = policyOrNull('reported_policy');
  const src = json['policy_source'];
  let policySource: PolicySource | null;
  if (src === null || src === 'registration' || src === 'agent') policySource = src;
  else return bad('policy_source', 'not null, "registration" or "agent"');
  if ((policySource === null) !== (reportedPolicy === null)) {
    bad('policy_source', 'must be null exactly when reported_policy is null');
  }
  const policyComposeHash = hashOrNull('policy_compose_hash');
  if (reportedPolicy === null && policyComposeHash !== null) {
    bad('policy_compose_hash', 'set although reported_policy is null');
  }
  const override = policyOrNull('override');
  const registeredAt = time('registered_at');
  const updatedAt = time('updated_at');
  return Object.freeze({
    instanceId,
    appId,
    ip,
    composeHash,
    reportedPolicy,
    policySource,
    policyComposeHash,
    override,
    registeredAt,
    updatedAt,
  });
}
