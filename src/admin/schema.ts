// Admin request bodies: their JSON shape, checked strictly (unknown keys are errors naming the
// key) and turned into the registry's inputs. What the values may be (id syntax, addresses,
// hashes, ports) is checked once, by the registry's validateRegistration/validatePolicy.
import { InterceptorError } from '../errors.js';
import { deserializePolicy, isValidPort, makePolicy, RecordFormatError } from '../registry/policy.js';
import type { RegistrationInput } from '../registry/registration.js';
import type { PortPolicy } from '../registry/types.js';

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function invalid(key: string, problem: string): InterceptorError {
  return new InterceptorError('ERR_INVALID_REGISTRATION', `${key}: ${problem}`);
}

function onlyKeys(body: Record<string, unknown>, allowed: readonly string[], hints: Record<string, string> = {}): void {
  for (const key of Object.keys(body)) {
    if (allowed.includes(key)) continue;
    throw new InterceptorError('ERR_BAD_REQUEST', `${key}: ${hints[key] ?? `unknown key; expected ${allowed.join(', ')}`}`);
  }
}

function requiredString(body: Record<string, unknown>, key: string): string {
  const v = body[key];
  if (typeof v !== 'string' || v === '') throw invalid(key, 'required, a non-empty string');
  return v;
}

/** Our JSON policy form (`{"ports": [{"port", "pp"}], "restrict_mode"}`, every field present): ERR_POLICY_INVALID naming the field. */
function policy(json: unknown, key: string): PortPolicy {
  return deserializePolicy(json, key);
}

/** POST /v1/instances */
export function parseRegistrationBody(body: unknown): RegistrationInput {
  if (!isObject(body)) throw invalid('(body)', 'a registration must be a JSON object');
  onlyKeys(body, ['instance_id', 'app_id', 'ip', 'compose_hash', 'policy'], {
    restrict:
      'no longer accepted: an instance whose policy is unknown is refused on every port anyway; ' +
      'restrict mode belongs to a policy ("policy": {"ports": [...], "restrict_mode": true})',
  });
  const input: RegistrationInput = {
    instanceId: requiredString(body, 'instance_id'),
    appId: requiredString(body, 'app_id'),
    ip: requiredString(body, 'ip'),
  };
  const hash = body['compose_hash'];
  if (hash !== undefined && hash !== null && typeof hash !== 'string') throw invalid('compose_hash', 'must be a string or null');
  if (typeof hash === 'string') input.composeHash = hash;
  // Absent (or null) = not reported; an object with no ports = reported empty.
  if (body['policy'] !== undefined && body['policy'] !== null) input.policy = policy(body['policy'], 'policy');
  return input;
}

/** PUT /v1/instances/:id/override */
export function parseOverrideBody(body: unknown): PortPolicy {
  if (!isObject(body)) throw new InterceptorError('ERR_BAD_REQUEST', 'body must be {"policy": {"ports": [...], "restrict_mode": bool}}');
  onlyKeys(body, ['policy']);
  return policy(body['policy'], 'policy');
}

/** Admin.ClearInstancePortPolicy, Admin.GetInstancePortPolicy: `{"instance_id": "..."}`. */
export function parseInstanceIdBody(body: unknown): string {
  if (!isObject(body)) throw new InterceptorError('ERR_BAD_REQUEST', 'body must be {"instance_id": "..."}');
  onlyKeys(body, ['instance_id']);
  const id = body['instance_id'];
  if (typeof id !== 'string' || id === '') throw new InterceptorError('ERR_BAD_REQUEST', 'instance_id: required, a non-empty string');
  return id;
}

/**
 * Admin.SetInstancePortPolicy: `{"instance_id", "policy": {"ports": [{"port", "pp"}], "restrict_mode"}}`
 * read as the dstack gateway reads it: `ports`, `pp` and `restrict_mode` may be left out
 * (empty, false, false), and a port listed twice takes its last entry. Unlike upstream, port 0
 * is refused: no connection has it.
 */
export function parseSetPortPolicyBody(body: unknown): { instanceId: string; policy: PortPolicy } {
  if (!isObject(body)) throw new InterceptorError('ERR_BAD_REQUEST', 'body must be {"instance_id": "...", "policy": {...}}');
  onlyKeys(body, ['instance_id', 'policy']);
  const instanceId = parseInstanceIdBody({ instance_id: body['instance_id'] });
  const p = body['policy'];
  const bad = (at: string, problem: string): never => {
    throw new RecordFormatError('ERR_POLICY_INVALID', at, problem);
  };
  if (!isObject(p)) return bad('policy', 'required, an object {"ports": [...], "restrict_mode": bool}');
  for (const key of Object.keys(p)) if (key !== 'ports' && key !== 'restrict_mode') bad(`policy.${key}`, 'unknown key; expected ports, restrict_mode');
  const rm = p['restrict_mode'] ?? false;
  if (typeof rm !== 'boolean') bad('policy.restrict_mode', 'not a boolean');
  const list = p['ports'] ?? [];
  if (!Array.isArray(list)) return bad('policy.ports', 'not an array');
  const ports = new Map<number, boolean>();
  list.forEach((entry: unknown, i) => {
    const at = `policy.ports[${i}]`;
    if (!isObject(entry)) return bad(at, 'not an object');
    for (const key of Object.keys(entry)) if (key !== 'port' && key !== 'pp') bad(`${at}.${key}`, 'unknown key; expected port, pp');
    const port = entry['port'];
    if (!isValidPort(port)) return bad(`${at}.port`, 'not an integer in 1..65535');
    const pp = entry['pp'] ?? false;
    if (typeof pp !== 'boolean') return bad(`${at}.pp`, 'not a boolean');
    ports.set(port, pp);
  });
  return { instanceId, policy: makePolicy(ports, rm as boolean) };
}
