// The project's one IP address parser: text <-> bytes, strict on input (no leading zeros in
// IPv4, no zone ids in IPv6, inet_pton's syntax otherwise), RFC 5952 canonical on output. The
// PROXY codec, CIDRs, the registry's addresses and the decision table all go through it.

/** Parses a dotted quad into out[offset..offset+4]; false unless it is exactly four decimal octets without leading zeros. */
export function parseIPv4Into(text: string, start: number, end: number, out: Uint8Array, offset: number): boolean {
  let octets = 0;
  let i = start;
  while (octets < 4) {
    const first = i;
    let value = 0;
    while (i < end) {
      const c = text.charCodeAt(i);
      if (c < 0x30 || c > 0x39) break;
      value = value * 10 + (c - 0x30);
      i++;
    }
    const digits = i - first;
    if (digits === 0 || digits > 3 || value > 255) return false;
    if (digits > 1 && text.charCodeAt(first) === 0x30) return false;
    out[offset + octets] = value;
    octets++;
    if (octets < 4) {
      if (i >= end || text.charCodeAt(i) !== 0x2e) return false;
      i++;
    }
  }
  return i === end;
}

function parseIPv4(text: string): Uint8Array | null {
  const out = new Uint8Array(4);
  return parseIPv4Into(text, 0, text.length, out, 0) ? out : null;
}

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  return -1;
}

/** inet_pton(AF_INET6) syntax: hex groups, at most one "::", optional dotted-quad tail. No zone id. */
export function parseIPv6(text: string): Uint8Array | null {
  const n = text.length;
  // Longest form: eight full groups, or six groups and a dotted quad (45 chars).
  if (n < 2 || n > 45) return null;
  const words = new Array<number>();
  let gap = -1;
  let i = 0;
  if (text.charCodeAt(0) === 0x3a) {
    if (text.charCodeAt(1) !== 0x3a) return null;
    gap = 0;
    i = 2;
  }
  while (i < n) {
    const start = i;
    let value = 0;
    let h: number;
    while (i < n && (h = hexValue(text.charCodeAt(i))) >= 0) {
      value = (value << 4) | h;
      i++;
    }
    if (i < n && text.charCodeAt(i) === 0x2e) {
      const tail = new Uint8Array(4);
      if (!parseIPv4Into(text, start, n, tail, 0)) return null;
      words.push((tail[0]! << 8) | tail[1]!, (tail[2]! << 8) | tail[3]!);
      i = n;
      break;
    }
    const digits = i - start;
    if (digits === 0 || digits > 4) return null;
    words.push(value);
    if (i === n) break;
    if (text.charCodeAt(i) !== 0x3a) return null;
    i++;
    if (i < n && text.charCodeAt(i) === 0x3a) {
      if (gap >= 0) return null;
      gap = words.length;
      i++;
    } else if (i === n) {
      return null;
    }
  }
  if (gap < 0 ? words.length !== 8 : words.length > 7) return null;
  const out = new Uint8Array(16);
  const tailStart = gap < 0 ? 8 : 8 - (words.length - gap);
  for (let w = 0; w < words.length; w++) {
    const slot = gap >= 0 && w >= gap ? tailStart + (w - gap) : w;
    out[slot * 2] = words[w]! >>> 8;
    out[slot * 2 + 1] = words[w]! & 0xff;
  }
  return out;
}

export function formatIPv4(b: Uint8Array, o: number): string {
  return `${b[o]}.${b[o + 1]}.${b[o + 2]}.${b[o + 3]}`;
}

/** ::ffff:0:0/96 */
export function isIPv4Mapped(b: Uint8Array, o: number): boolean {
  for (let i = 0; i < 10; i++) if (b[o + i] !== 0) return false;
  return b[o + 10] === 0xff && b[o + 11] === 0xff;
}

/**
 * RFC 5952: lowercase, no leading zeros, the longest run (first on a tie) of two or more zero
 * groups as "::", and dotted-quad notation only for IPv4-mapped addresses.
 */
export function formatIPv6(b: Uint8Array, o: number): string {
  if (isIPv4Mapped(b, o)) return `::ffff:${formatIPv4(b, o + 12)}`;
  let bestStart = -1;
  let bestLen = 1;
  let runStart = -1;
  for (let w = 0; w <= 8; w++) {
    const zero = w < 8 && b[o + w * 2] === 0 && b[o + w * 2 + 1] === 0;
    if (zero) {
      if (runStart < 0) runStart = w;
    } else if (runStart >= 0) {
      if (w - runStart > bestLen) {
        bestStart = runStart;
        bestLen = w - runStart;
      }
      runStart = -1;
    }
  }
  let s = '';
  for (let w = 0; w < 8; w++) {
    if (w === bestStart) {
      s += '::';
      w += bestLen - 1;
      continue;
    }
    if (s.length > 0 && !s.endsWith(':')) s += ':';
    s += ((b[o + w * 2]! << 8) | b[o + w * 2 + 1]!).toString(16);
  }
  return s;
}

export type AddressBytes = { kind: 4; bytes: Uint8Array } | { kind: 6; bytes: Uint8Array };

/** IPv4 or IPv6 text to bytes, IPv4-mapped IPv6 folded to IPv4; null if neither. */
export function parseIp(text: string): AddressBytes | null {
  const v4 = parseIPv4(text);
  if (v4) return { kind: 4, bytes: v4 };
  const v6 = parseIPv6(text);
  if (!v6) return null;
  if (isIPv4Mapped(v6, 0)) return { kind: 4, bytes: v6.subarray(12) };
  return { kind: 6, bytes: v6 };
}

/** IPv4 bytes to their IPv4-mapped IPv6 form. */
export function mapIPv4(v4: Uint8Array): Uint8Array {
  const out = new Uint8Array(16);
  out[10] = 0xff;
  out[11] = 0xff;
  out.set(v4, 12);
  return out;
}

/**
 * The 16-byte form the decision table keys on: IPv6 as is, IPv4 (and IPv4-mapped IPv6) as
 * ::ffff:a.b.c.d. null when the text is not an address.
 */
export function ipKey(text: string): { family: 4 | 6; key: Uint8Array } | null {
  const ip = parseIp(text);
  if (ip === null) return null;
  return { family: ip.kind, key: ip.kind === 4 ? mapIPv4(ip.bytes) : ip.bytes };
}

/** The text of a 16-byte key: IPv4 dotted for a mapped key, else RFC 5952. */
export function formatKey(key: Uint8Array, offset = 0): string {
  return isIPv4Mapped(key, offset) ? formatIPv4(key, offset + 12) : formatIPv6(key, offset);
}

/**
 * Canonical text of an IP address, or null when it is not one: IPv4 dotted quad; IPv6
 * lowercase and compressed (RFC 5952, as libuv prints it); IPv4-mapped IPv6 becomes IPv4.
 * Zone ids are refused: an instance address is global to the host.
 */
export function normalizeIp(text: string): string | null {
  if (typeof text !== 'string') return null;
  const ip = parseIp(text);
  if (ip === null) return null;
  // A flat, sequential string: normalised addresses become map keys, and a key that is a rope
  // (template literals, concatenations) makes every lookup by a socket's address walk it.
  return Buffer.from(ip.kind === 4 ? formatIPv4(ip.bytes, 0) : formatIPv6(ip.bytes, 0), 'latin1').toString('latin1');
}
