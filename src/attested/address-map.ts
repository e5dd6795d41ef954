// Where the interceptor reaches a registering instance: its TLS peer address, unless an
// `[[registry.attested.address_map]]` entry translates it (the instance registers through NAT, or
// over a management network). Pure.
//
// An entry maps a peer network onto an instance network of the same family and prefix length,
// keeping the host bits: peer = "198.19.0.0/16", instance = "198.18.0.0/16" maps 198.19.2.2 to
// 198.18.2.2. A /32 (/128) maps one address. The most specific matching peer network wins; a
// peer no entry matches registers at its own address. Runs once per registration, not per
// connection, so BigInt arithmetic is fine here.
import type { AddressMapping } from '../config.js';
import { parseCidr } from '../net/cidr.js';
import { normalizeIp } from '../registry/policy.js';

interface CompiledMapping {
  readonly family: 4 | 6;
  readonly shift: bigint;
  readonly peerNet: bigint;
  readonly instanceNet: bigint;
  readonly hostMask: bigint;
  readonly prefix: number;
}

/** Returns the instance address for a peer address (any spelling), or null when the peer is not an IP address. */
export function compileAddressMap(entries: readonly AddressMapping[]): (peer: string) => string | null {
  const compiled: CompiledMapping[] = entries.map((e) => {
    const peer = parseCidr(e.peer);
    const instance = parseCidr(e.instance);
    if (peer.family !== instance.family || peer.prefix !== instance.prefix) {
      // config-parse refuses this; a programmer passing it directly gets told too.
      throw new TypeError(`address mapping ${peer.text} -> ${instance.text}: both sides need the same family and prefix length`);
    }
    const bits = peer.family === 4 ? 32 : 128;
    const shift = BigInt(bits - peer.prefix);
    return {
      family: peer.family,
      shift,
      peerNet: toBigInt(peer.address, peer.family) >> shift,
      instanceNet: toBigInt(instance.address, instance.family) >> shift,
      hostMask: (1n << shift) - 1n,
      prefix: peer.prefix,
    };
  });
  compiled.sort((a, b) => b.prefix - a.prefix);

  return (peerText: string): string | null => {
    const peer = normalizeIp(peerText);
    if (peer === null) return null;
    const family = peer.includes(':') ? 6 : 4;
    const value = toBigInt(peer, family);
    for (const m of compiled) {
      if (m.family !== family || value >> m.shift !== m.peerNet) continue;
      return fromBigInt((m.instanceNet << m.shift) | (value & m.hostMask), family);
    }
    return peer;
  };
}

/** `ip` is canonical (normalizeIp / parseCidr): dotted quad, or IPv6 hex groups with at most one "::". */
function toBigInt(ip: string, family: 4 | 6): bigint {
  if (family === 4) return ip.split('.').reduce((acc, octet) => (acc << 8n) | BigInt(Number(octet)), 0n);
  const [head, tail] = ip.includes('::') ? (ip.split('::') as [string, string]) : [ip, null];
  const headGroups = head === '' ? [] : head.split(':');
  const tailGroups = tail === null || tail === '' ? [] : tail.split(':');
  const groups = tail === null ? headGroups : [...headGroups, ...new Array<string>(8 - headGroups.length - tailGroups.length).fill('0'), ...tailGroups];
  return groups.reduce((acc, g) => (acc << 16n) | BigInt(parseInt(g, 16)), 0n);
}

function fromBigInt(value: bigint, family: 4 | 6): string {
  if (family === 4) return [24n, 16n, 8n, 0n].map((s) => String((value >> s) & 0xffn)).join('.');
  const groups: string[] = [];
  for (let s = 112n; s >= 0n; s -= 16n) groups.push(((value >> s) & 0xffffn).toString(16));
  return normalizeIp(groups.join(':')) as string;
}
