// What a registration may say, checked once: the registry, the admin API and the CLI all call
// validateRegistration(). Pure, except that the address rule is handed the host's addresses.
import { networkInterfaces } from 'node:os';
import { InterceptorError } from '../errors.js';
import { compileCidrMatcher } from '../net/cidr.js';
import { ID_PATTERN, isValidPort, makePolicy, normalizeComposeHash, normalizeIp } from './policy.js';
import type { PortPolicy } from './types.js';

export interface RegistrationInput {
  instanceId: string;
  appId: string;
  ip: string;
  composeHash?: string | null;
  /** undefined (or null) = not reported; a PortPolicy, possibly with no ports = reported. */
  policy?: PortPolicy | null;
}

/** A registration after validation: normalised address and hash, a private frozen policy. */
export interface Registration {
  readonly instanceId: string;
  readonly appId: string;
  readonly ip: string;
  readonly composeHash: string | null;
  readonly policy: PortPolicy | null;
}

export type RegistrationField = 'instanceId' | 'appId' | 'ip' | 'composeHash' | 'policy' | 'override' | '(input)';

export class RegistrationError extends InterceptorError {
  /** The RegistrationInput field that is invalid. */
  readonly field: RegistrationField;
  /** What is wrong with it, without the field's name. */
  readonly problem: string;
  constructor(field: RegistrationField, problem: string) {
    super('ERR_INVALID_REGISTRATION', `registration: ${field}: ${problem}`);
    this.field = field;
    this.problem = problem;
  }
}

export class IpInUseError extends InterceptorError {
  readonly ip: string;
  /** The instance that holds the address. */
  readonly heldBy: string;
  constructor(ip: string, heldBy: string) {
    super('ERR_IP_IN_USE', `ip ${ip} is already registered to instance ${heldBy}`);
    this.ip = ip;
    this.heldBy = heldBy;
  }
}

export class UnknownInstanceError extends InterceptorError {
  readonly instanceId: string;
  constructor(instanceId: string) {
    super('ERR_UNKNOWN_INSTANCE', `no instance registered with id ${JSON.stringify(instanceId)}`);
    this.instanceId = instanceId;
  }
}

const ID_RULE = 'must be 1..128 characters of [A-Za-z0-9._:-]';

/**
 * Which addresses an instance may have. An instance address is where intercepted connections
 * go and where the fetcher POSTs: it must name one remote unicast host.
 */
export interface AddressRule {
  /** intercept.local_backends: instances on this host's loopback are allowed. */
  readonly allowLoopback: boolean;
  /** The host's own addresses, with their prefix lengths (read at each registration). */
  readonly hostAddresses: () => readonly { readonly address: string; readonly prefix: number }[];
}

// Never a single remote unicast host: unspecified ("this network"), multicast, reserved (with
// 255.255.255.255, the limited broadcast), and IPv6 link-local (meaningless without a zone,
// which the registry does not keep).
const NEVER = compileCidrMatcher(['0.0.0.0/8', '224.0.0.0/4', '240.0.0.0/4', '::/128', 'ff00::/8', 'fe80::/10']);
const LOOPBACK = compileCidrMatcher(['127.0.0.0/8', '::1/128']);

/** The host's addresses as os.networkInterfaces() reports them in this network namespace. */
export function hostAddresses(): { address: string; prefix: number }[] {
  const out: { address: string; prefix: number }[] = [];
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) {
      const prefix = a.cidr === null ? (a.family === 'IPv4' ? 32 : 128) : Number(a.cidr.slice(a.cidr.indexOf('/') + 1));
      const ip = normalizeIp(a.address);
      if (ip !== null) out.push({ address: ip, prefix });
    }
  }
  return out;
}

/** The directed broadcast address of an IPv4 network (none for /31 and /32). */
function broadcastOf(address: string, prefix: number): string | null {
  if (address.includes(':') || prefix > 30) return null;
  const octets = address.split('.').map(Number);
  const value = ((octets[0]! << 24) | (octets[1]! << 16) | (octets[2]! << 8) | octets[3]!) >>> 0;
  const host = prefix === 0 ? 0xffffffff : (1 << (32 - prefix)) - 1;
  const b = (value | host) >>> 0;
  return `${b >>> 24}.${(b >>> 16) & 255}.${(b >>> 8) & 255}.${b & 255}`;
}

/** Why `ip` (normalised) cannot be an instance address, or null when it can. */
function instanceAddressProblem(ip: string, rule: AddressRule): string | null {
  if (NEVER(ip)) return 'not a unicast host address (unspecified, multicast, broadcast, reserved or IPv6 link-local)';
  const loopback = LOOPBACK(ip);
  if (loopback && !rule.allowLoopback) {
    return 'a loopback address; instances on this host need intercept.local_backends = true';
  }
  for (const own of rule.hostAddresses()) {
    if (own.address === ip && !(loopback && rule.allowLoopback)) {
      return 'an address of this host: connections to it are not forwarded, and the policy fetch would ask the daemon itself';
    }
    if (broadcastOf(own.address, own.prefix) === ip) {
      return `the broadcast address of this host's network ${own.address}/${own.prefix}`;
    }
  }
  return null;
}

function checkPolicy(policy: unknown, field: 'policy' | 'override'): PortPolicy {
  const p = policy as PortPolicy;
  if (typeof p !== 'object' || p === null || !(p.ports instanceof Map) || typeof p.restrictMode !== 'boolean') {
    throw new RegistrationError(field, 'not a port policy');
  }
  const ports: [number, boolean][] = [];
  for (const [port, rule] of p.ports) {
    if (!isValidPort(port)) throw new RegistrationError(field, `port ${String(port)} is not in 1..65535`);
    if (typeof rule?.pp !== 'boolean') throw new RegistrationError(field, `port ${port}: pp is not a boolean`);
    ports.push([port, rule.pp]);
  }
  // A private frozen copy: records are immutable, whatever the caller does with its map later.
  return makePolicy(ports, p.restrictMode);
}

/** A policy an operator or the fetcher hands in, checked and copied. */
export function validatePolicy(policy: unknown, field: 'policy' | 'override' = 'policy'): PortPolicy {
  return checkPolicy(policy, field);
}

/**
 * Checks and normalises a registration. `rule` adds the address rule (the daemon has it; the
 * CLI checks the rest before anything is sent). Errors name the field.
 */
export function validateRegistration(input: RegistrationInput, rule?: AddressRule): Registration {
  if (typeof input !== 'object' || input === null) throw new RegistrationError('(input)', 'not an object');
  const { instanceId, appId } = input;
  if (typeof instanceId !== 'string' || !ID_PATTERN.test(instanceId)) throw new RegistrationError('instanceId', ID_RULE);
  if (typeof appId !== 'string' || !ID_PATTERN.test(appId)) throw new RegistrationError('appId', ID_RULE);
  const ip = typeof input.ip === 'string' ? normalizeIp(input.ip) : null;
  if (ip === null) throw new RegistrationError('ip', 'not an IPv4 or IPv6 address (zone ids are not accepted)');
  if (rule !== undefined) {
    const problem = instanceAddressProblem(ip, rule);
    if (problem !== null) throw new RegistrationError('ip', `${ip} is ${problem}`);
  }
  let composeHash: string | null = null;
  if (input.composeHash !== undefined && input.composeHash !== null) {
    composeHash = typeof input.composeHash === 'string' ? normalizeComposeHash(input.composeHash) : null;
    if (composeHash === null) throw new RegistrationError('composeHash', 'must be 64 hex digits (optionally 0x-prefixed)');
  }
  const policy = input.policy === undefined || input.policy === null ? null : checkPolicy(input.policy, 'policy');
  return Object.freeze({ instanceId, appId, ip, composeHash, policy });
}
