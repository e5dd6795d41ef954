// CIDR parsing and matching, pure, over the one IP parser (ip.ts). A network is kept in the
// 16-byte form of the decision table: IPv4 networks as IPv4-mapped prefixes (/p becomes /96+p).
import { InterceptorError } from '../errors.js';
import { formatIPv4, formatIPv6, ipKey, isIPv4Mapped } from './ip.js';

export type IpFamily = 4 | 6;

export interface Cidr {
  readonly family: IpFamily;
  /** The network address in canonical form (IPv6 per RFC 5952). */
  readonly address: string;
  readonly prefix: number;
  /** `${address}/${prefix}` */
  readonly text: string;
  /** The network in the 16-byte form (IPv4 mapped), and its prefix in that 128-bit space. */
  readonly key: Uint8Array;
  readonly keyPrefix: number;
}

const ACCEPTED = 'expected an IPv4 or IPv6 network like "198.18.2.0/24", "fd00:2::/64", or a single address like "198.18.2.7"';

function invalidCidr(text: string, why: string): InterceptorError {
  return new InterceptorError('ERR_INVALID_CIDR', `invalid CIDR ${JSON.stringify(text)}: ${why}; ${ACCEPTED}`);
}

/** key with every bit below `prefix` (of 128) cleared. */
function maskKey(key: Uint8Array, prefix: number): Uint8Array {
  const out = new Uint8Array(16);
  for (let i = 0; i < 16; i++) {
    const bits = Math.min(8, Math.max(0, prefix - i * 8));
    out[i] = key[i]! & ((0xff << (8 - bits)) & 0xff);
  }
  return out;
}

/** Does the network key/prefix hold `key`? */
export function keyInPrefix(network: Uint8Array, prefix: number, key: Uint8Array): boolean {
  const whole = prefix >> 3;
  for (let i = 0; i < whole; i++) if (network[i] !== key[i]) return false;
  const rest = prefix & 7;
  if (rest === 0) return true;
  const mask = (0xff << (8 - rest)) & 0xff;
  return (network[whole]! & mask) === (key[whole]! & mask);
}

/**
 * Parses "198.18.2.0/24", "fd00:2::/64" or a single address (= /32 or /128). Host bits set
 * below the prefix are rejected rather than silently cleared: "10.0.0.5/8" is more often a typo
 * for a /32 than a request for all of 10/8. An IPv4-mapped IPv6 network stays IPv6 text.
 */
export function parseCidr(text: string): Cidr {
  if (typeof text !== 'string') throw invalidCidr(String(text), 'not a string');
  const slash = text.indexOf('/');
  const addrText = slash === -1 ? text : text.slice(0, slash);
  if (addrText.includes('%')) throw invalidCidr(text, 'zone indexes ("%eth0") are not allowed in a network');
  const ip = ipKey(addrText);
  if (ip === null) throw invalidCidr(text, `${JSON.stringify(addrText)} is not an IP address`);
  // "::ffff:10.0.0.0/104" is written as IPv6: its prefix counts in the 128-bit space.
  const family: IpFamily = ip.family === 4 && addrText.includes(':') ? 6 : ip.family;
  const maxPrefix = family === 4 ? 32 : 128;
  let prefix = maxPrefix;
  if (slash !== -1) {
    const p = text.slice(slash + 1);
    if (!/^(0|[1-9]\d{0,2})$/.test(p) || Number(p) > maxPrefix) {
      throw invalidCidr(text, `prefix length must be an integer 0..${maxPrefix}`);
    }
    prefix = Number(p);
  }
  const keyPrefix = family === 4 ? 96 + prefix : prefix;
  const network = maskKey(ip.key, keyPrefix);
  const format = (k: Uint8Array): string => (family === 4 ? formatIPv4(k, 12) : formatIPv6(k, 0));
  if (network.some((b, i) => b !== ip.key[i])) {
    throw invalidCidr(text, `host bits are set below /${prefix}; did you mean ${format(network)}/${prefix} (the network) or ${format(ip.key)}/${maxPrefix} (the single host)?`);
  }
  const address = format(network);
  return { family, address, prefix, text: `${address}/${prefix}`, key: network, keyPrefix };
}

/** Do two networks share any address? (One then contains the other.) */
export function cidrsOverlap(a: string, b: string): boolean {
  const x = parseCidr(a);
  const y = parseCidr(b);
  const prefix = Math.min(x.keyPrefix, y.keyPrefix);
  return keyInPrefix(maskKey(x.key, prefix), prefix, y.key);
}

/**
 * Compiles a list of CIDRs into a predicate over address text. Invalid CIDRs throw here, once;
 * invalid addresses given to the predicate simply do not match. An IPv4 address matches IPv4
 * networks and IPv4-mapped ones alike ("::ffff:a.b.c.d", how a dual-stack socket reports an IPv4
 * peer, is that address).
 */
export function compileCidrMatcher(cidrs: readonly string[]): (ip: string) => boolean {
  const nets = cidrs.map((c) => parseCidr(c));
  const v4 = nets.map((n) => n.keyPrefix >= 96 && isIPv4Mapped(n.key, 0));
  return (ip: string): boolean => {
    if (typeof ip !== 'string') return false;
    // A zone (link-local "fe80::1%eth0") does not change which network the address is in.
    const zone = ip.indexOf('%');
    const k = ipKey(zone === -1 ? ip : ip.slice(0, zone));
    if (k === null) return false;
    const mapped = isIPv4Mapped(k.key, 0);
    for (let i = 0; i < nets.length; i++) {
      // IPv4 addresses are in IPv4 networks only: "::/0" is every IPv6 address, not every address.
      if (v4[i] !== mapped) continue;
      if (keyInPrefix(nets[i]!.key, nets[i]!.keyPrefix, k.key)) return true;
    }
    return false;
  };
}

/** Is `ip` in `cidr` (a network's text or a parsed one)? See compileCidrMatcher for the rules. */
export function cidrContains(cidr: string | Cidr, ip: string): boolean {
  return compileCidrMatcher([typeof cidr === 'string' ? cidr : cidr.text])(ip);
}
