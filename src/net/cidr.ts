// CIDR parsing and matching, pure. The matcher runs once per accepted connection (is this peer a
// trusted PROXY-header sender?), so addresses are parsed by hand into 32-bit words instead of
// going through BigInt or string splitting.
import { InterceptorError } from '../errors.js';

export type IpFamily = 4 | 6;

export interface Cidr {
  readonly family: IpFamily;
  /** The network address in canonical form (IPv6 per RFC 5952). */
  readonly address: string;
  readonly prefix: number;
  /** `${address}/${prefix}` */
  readonly text: string;
}

const ACCEPTED = 'expected an IPv4 or IPv6 network like "198.18.2.0/24", "fd00:2::/64", or a single address like "198.18.2.7"';

function invalidCidr(text: string, why: string): InterceptorError {
  return new InterceptorError('ERR_INVALID_CIDR', `invalid CIDR ${JSON.stringify(text)}: ${why}; ${ACCEPTED}`);
}

/** Parses dotted-quad IPv4 into an unsigned 32-bit number; -1 when not a plain IPv4 address. */
function parseIPv4(s: string, start = 0, end = s.length): number {
  let value = 0;
  let octet = 0;
  let digits = 0;
  let dots = 0;
  for (let i = start; i < end; i++) {
    const c = s.charCodeAt(i);
    if (c >= 48 && c <= 57) {
      if (digits > 0 && octet === 0) return -1; // leading zero ("01") is ambiguous (octal in inet_aton)
      octet = octet * 10 + (c - 48);
      if (octet > 255) return -1;
      digits++;
    } else if (c === 46) {
      if (digits === 0 || dots === 3) return -1;
      value = value * 256 + octet;
      octet = 0;
      digits = 0;
      dots++;
    } else {
      return -1;
    }
  }
  if (digits === 0 || dots !== 3) return -1;
  return value * 256 + octet;
}

/**
 * Parses IPv6 text (with "::", an embedded dotted IPv4 tail, and a "%zone" suffix which is
 * ignored) into four unsigned 32-bit words; null when invalid.
 */
function parseIPv6(s: string): [number, number, number, number] | null {
  let end = s.indexOf('%');
  if (end === -1) end = s.length;
  else if (end === s.length - 1) return null;
  const groups: number[] = [];
  let gap = -1; // index in `groups` where "::" stands
  let i = 0;
  if (end >= 2 && s.charCodeAt(0) === 58 && s.charCodeAt(1) === 58) {
    gap = 0;
    i = 2;
    if (i === end) return [0, 0, 0, 0];
  } else if (s.charCodeAt(0) === 58) {
    return null;
  }
  while (i < end) {
    let j = i;
    let value = 0;
    while (j < end && j - i < 5) {
      const c = s.charCodeAt(j);
      let d: number;
      if (c >= 48 && c <= 57) d = c - 48;
      else if (c >= 97 && c <= 102) d = c - 87;
      else if (c >= 65 && c <= 70) d = c - 55;
      else break;
      value = value * 16 + d;
      j++;
    }
    if (j < end && s.charCodeAt(j) === 46) {
      // dotted IPv4 tail: must be the last part and leave room for two groups
      const v4 = parseIPv4(s, i, end);
      if (v4 < 0 || groups.length > 6) return null;
      groups.push(v4 >>> 16, v4 & 0xffff);
      i = end;
      break;
    }
    if (j === i || j - i > 4) return null;
    groups.push(value);
    if (j === end) {
      i = end;
      break;
    }
    if (s.charCodeAt(j) !== 58) return null;
    if (j + 1 < end && s.charCodeAt(j + 1) === 58) {
      if (gap !== -1) return null;
      gap = groups.length;
      i = j + 2;
    } else {
      i = j + 1;
      if (i === end) return null; // trailing single ':'
    }
  }
  if (groups.length > 8) return null;
  if (gap === -1) {
    if (groups.length !== 8) return null;
  } else {
    if (groups.length > 7) return null;
    const zeros = new Array<number>(8 - groups.length).fill(0);
    groups.splice(gap, 0, ...zeros);
  }
  const g = groups as number[];
  return [
    ((g[0]! << 16) | g[1]!) >>> 0,
    ((g[2]! << 16) | g[3]!) >>> 0,
    ((g[4]! << 16) | g[5]!) >>> 0,
    ((g[6]! << 16) | g[7]!) >>> 0,
  ];
}

function formatIPv4(v: number): string {
  return `${v >>> 24}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}`;
}

/** RFC 5952: lowercase, no leading zeros, the longest run (>1) of zero groups as "::", IPv4-mapped in dotted form. */
function formatIPv6(words: readonly number[]): string {
  if (words[0] === 0 && words[1] === 0 && words[2] === 0xffff) return `::ffff:${formatIPv4(words[3]!)}`;
  const g: number[] = [];
  for (const w of words) g.push(w >>> 16, w & 0xffff);
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (a: number[]): string => a.map((x) => x.toString(16)).join(':');
  if (bestStart === -1) return hex(g);
  return `${hex(g.slice(0, bestStart))}::${hex(g.slice(bestStart + bestLen))}`;
}

/** 32-bit mask for the part of `prefix` that falls into word `index` (0-based, 32 bits each). */
function wordMask(prefix: number, index: number): number {
  const bits = Math.min(32, Math.max(0, prefix - index * 32));
  return bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
}

/** 4 for IPv4 text, 6 for IPv6 text (a "%zone" suffix allowed), 0 otherwise. */
export function ipFamily(ip: string): 0 | IpFamily {
  if (parseIPv4(ip) >= 0) return 4;
  if (parseIPv6(ip) !== null) return 6;
  return 0;
}

/**
 * Parses "198.18.2.0/24", "fd00:2::/64" or a single address (= /32 or /128). Host bits set
 * below the prefix are rejected rather than silently cleared: "10.0.0.5/8" is more often a typo
 * for a /32 than a request for all of 10/8.
 */
export function parseCidr(text: string): Cidr {
  if (typeof text !== 'string') throw invalidCidr(String(text), 'not a string');
  const slash = text.indexOf('/');
  const addrText = slash === -1 ? text : text.slice(0, slash);
  if (addrText.includes('%')) throw invalidCidr(text, 'zone indexes ("%eth0") are not allowed in a network');
  let family: IpFamily;
  let words: number[];
  const v4 = parseIPv4(addrText);
  if (v4 >= 0) {
    family = 4;
    words = [v4];
  } else {
    const v6 = parseIPv6(addrText);
    if (v6 === null) throw invalidCidr(text, `${JSON.stringify(addrText)} is not an IP address`);
    family = 6;
    words = v6;
  }
  const maxPrefix = family === 4 ? 32 : 128;
  let prefix = maxPrefix;
  if (slash !== -1) {
    const p = text.slice(slash + 1);
    if (!/^(0|[1-9]\d{0,2})$/.test(p) || Number(p) > maxPrefix) {
      throw invalidCidr(text, `prefix length must be an integer 0..${maxPrefix}`);
    }
    prefix = Number(p);
  }
  const network = words.map((w, i) => (w & wordMask(prefix, i)) >>> 0);
  const format = (ws: readonly number[]): string => (family === 4 ? formatIPv4(ws[0]!) : formatIPv6(ws));
  if (network.some((w, i) => w !== words[i])) {
    throw invalidCidr(text, `host bits are set below /${prefix}; did you mean ${format(network)}/${prefix} (the network) or ${format(words)}/${maxPrefix} (the single host)?`);
  }
  const address = format(network);
  return { family, address, prefix, text: `${address}/${prefix}` };
}

/** Canonical text of a CIDR, e.g. "FD00:2:0::/64" → "fd00:2::/64", "10.0.0.1" → "10.0.0.1/32". */
export function normalizeCidr(text: string): string {
  return parseCidr(text).text;
}

/** Do two networks share any address? (Of one family, one then contains the other.) */
export function cidrsOverlap(a: string, b: string): boolean {
  const x = parseCidr(a);
  const y = parseCidr(b);
  if (x.family !== y.family) return false;
  const prefix = Math.min(x.prefix, y.prefix);
  const wx = x.family === 4 ? [parseIPv4(x.address)] : parseIPv6(x.address)!;
  const wy = y.family === 4 ? [parseIPv4(y.address)] : parseIPv6(y.address)!;
  return wx.every((w, i) => ((w & wordMask(prefix, i)) >>> 0) === ((wy[i]! & wordMask(prefix, i)) >>> 0));
}

/** Does `cidr` contain the address `ip`? IPv4-mapped IPv6 addresses count as IPv4. */
export function cidrContains(cidr: string | Cidr, ip: string): boolean {
  return compileCidrMatcher([typeof cidr === 'string' ? cidr : cidr.text])(ip);
}

interface V6Net {
  readonly w: readonly [number, number, number, number];
  readonly m: readonly [number, number, number, number];
}

/**
 * Compiles a list of CIDRs into a predicate over address text. Invalid CIDRs throw here, once;
 * invalid addresses given to the predicate simply do not match. "::ffff:a.b.c.d" (how Node
 * reports IPv4 peers on a dual-stack socket) is matched as IPv4 a.b.c.d, and IPv4-mapped
 * networks ("::ffff:10.0.0.0/104") are matched as the IPv4 networks they stand for.
 */
export function compileCidrMatcher(cidrs: readonly string[]): (ip: string) => boolean {
  const v4nets: number[] = []; // pairs: network, mask
  const v6nets: V6Net[] = [];
  for (const text of cidrs) {
    const c = parseCidr(text);
    if (c.family === 4) {
      const mask = wordMask(c.prefix, 0);
      v4nets.push(parseIPv4(c.address), mask);
      continue;
    }
    const w = parseIPv6(c.address)!;
    if (c.prefix >= 96 && w[0] === 0 && w[1] === 0 && w[2] === 0xffff) {
      v4nets.push(w[3], wordMask(c.prefix - 96, 0));
      continue;
    }
    const m: [number, number, number, number] = [wordMask(c.prefix, 0), wordMask(c.prefix, 1), wordMask(c.prefix, 2), wordMask(c.prefix, 3)];
    v6nets.push({ w, m });
  }
  const matchV4 = (a: number): boolean => {
    for (let i = 0; i < v4nets.length; i += 2) {
      if (((a & v4nets[i + 1]!) >>> 0) === v4nets[i]) return true;
    }
    return false;
  };
  return (ip: string): boolean => {
    if (typeof ip !== 'string') return false;
    const v4 = parseIPv4(ip);
    if (v4 >= 0) return matchV4(v4);
    const a = parseIPv6(ip);
    if (a === null) return false;
    if (a[0] === 0 && a[1] === 0 && a[2] === 0xffff) return matchV4(a[3]);
    for (const n of v6nets) {
      if (
        ((a[0] & n.m[0]) >>> 0) === n.w[0] &&
        ((a[1] & n.m[1]) >>> 0) === n.w[1] &&
        ((a[2] & n.m[2]) >>> 0) === n.w[2] &&
        ((a[3] & n.m[3]) >>> 0) === n.w[3]
      ) {
        return true;
      }
    }
    return false;
  };
}
