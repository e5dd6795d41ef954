// The body of RegisterCvm as dstack's gateway takes it in prpc's JSON form. Pure.
//
// Upstream (Dstack-TEE/dstack): gateway/rpc/proto/gateway_rpc.proto declares
//   RegisterCvmRequest { string client_public_key = 1; optional PortPolicy port_policy = 2; }
//   PortPolicy { repeated PortAttrs ports = 1; bool restrict_mode = 2; }
//   PortAttrs { uint32 port = 1; bool pp = 2; }
// decoded by serde with every field defaulted (absent = "", [], false, None; unknown keys
// ignored; null only where the field is optional). `register_cvm` in gateway/src/main_service.rs
// then turns each port into a u16 and refuses 0, and collects the ports into a BTreeMap (a port
// listed twice: the last entry wins).
import { makePolicy } from '../registry/policy.js';
import type { PortPolicy } from '../registry/types.js';
import { AttestedRejection } from './errors.js';

export interface RegisterCvmRequest {
  /** dstack's WireGuard public key; accepted and not used (no WireGuard here). null when absent. */
  readonly clientPublicKey: string | null;
  /** null: not reported (the registry keeps or learns a policy); a policy, possibly empty: reported. */
  readonly portPolicy: PortPolicy | null;
}

function invalid(field: string, problem: string): AttestedRejection {
  return new AttestedRejection('body_invalid', `RegisterCvm: ${field}: ${problem}`, { field });
}

/** Parses the request body text. Schema errors name the field (`port_policy.ports[1].port`). */
export function parseRegisterCvmBody(text: string): RegisterCvmRequest {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new AttestedRejection('body_not_json', `RegisterCvm: the body is not JSON: ${(err as Error).message}`);
  }
  if (!isObject(json)) throw invalid('(body)', `expected a JSON object like {"client_public_key": "...", "port_policy": {...}}, got ${describe(json)}`);

  let clientPublicKey: string | null = null;
  const key = json['client_public_key'];
  if (key !== undefined) {
    if (typeof key !== 'string') throw invalid('client_public_key', `expected a string, got ${describe(key)}`);
    clientPublicKey = key;
  }

  const raw = json['port_policy'];
  // `optional PortPolicy`: absent and null are both "not reported".
  const portPolicy = raw === undefined || raw === null ? null : parsePortPolicy(raw);
  return { clientPublicKey, portPolicy };
}

function parsePortPolicy(raw: unknown): PortPolicy {
  const at = 'port_policy';
  if (!isObject(raw)) throw invalid(at, `expected an object {"ports": [...], "restrict_mode": false} or null, got ${describe(raw)}`);
  const restrictMode = bool(raw['restrict_mode'], `${at}.restrict_mode`);
  const list = raw['ports'];
  const ports: Array<[number, boolean]> = [];
  if (list !== undefined) {
    if (!Array.isArray(list)) throw invalid(`${at}.ports`, `expected an array of {"port": 1..65535, "pp": bool}, got ${describe(list)}`);
    list.forEach((entry: unknown, i) => {
      const where = `${at}.ports[${i}]`;
      if (!isObject(entry)) throw invalid(where, `expected an object {"port": 1..65535, "pp": bool}, got ${describe(entry)}`);
      const port = entry['port'];
      if (port === undefined) throw invalid(`${where}.port`, 'missing; expected an integer 1..65535');
      if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) {
        throw invalid(`${where}.port`, `expected an integer 1..65535, got ${describe(port)}`);
      }
      ports.push([port, bool(entry['pp'], `${where}.pp`)]);
    });
  }
  // makePolicy keeps the last entry of a port listed twice, as the BTreeMap upstream does.
  return makePolicy(ports, restrictMode);
}

/** A proto3 bool: absent = false; null or any other type is a schema error. */
function bool(v: unknown, field: string): boolean {
  if (v === undefined) return false;
  if (typeof v !== 'boolean') throw invalid(field, `expected true or false, got ${describe(v)}`);
  return v;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'string') return `the string ${JSON.stringify(v.length > 32 ? `${v.slice(0, 32)}...` : v)}`;
  if (typeof v === 'number') return `the number ${v}`;
  if (typeof v === 'object') return 'an object';
  return String(v);
}
