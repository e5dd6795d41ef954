// Where the interceptor reaches a registering instance: its TLS peer address, unless an
// `[[registry.attested.address_map]]` entry translates it (the instance registers through NAT, or
// over a management network). Pure.
//
// An entry maps a peer network onto an instance network of the same family and prefix length,
// keeping the host bits: peer = "198.19.0.0/16", instance = "198.18.0.0/16" maps 198.19.2.2 to
// 198.18.2.2. A /32 (/128) maps one address. The most specific matching peer network wins; a
// peer no entry matches registers at its own address. Runs once per registration, not per
// connection; works on the 16-byte keys of net/ip.ts (IPv4 as IPv4-mapped).
import type { AddressMapping } from '../config.js';
import { keyInPrefix, parseCidr } from '../net/cidr.js';
import { formatKey, ipKey, normalizeIp } from '../net/ip.js';

interface CompiledMapping {
  readonly family: 4 | 6;
  /** Both networks in the 16-byte form, and their prefix in that 128-bit space. */
  readonly peer: Uint8Array;
  readonly instance: Uint8Array;
  readonly keyPrefix: number;
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
    return { family: peer.family, peer: peer.key, instance: instance.key, keyPrefix: peer.keyPrefix, prefix: peer.prefix };
  });
  compiled.sort((a, b) => b.prefix - a.prefix);

  return (peerText: string): string | null => {
    const peer = normalizeIp(peerText);
    if (peer === null) return null;
    const k = ipKey(peer)!;
    for (const m of compiled) {
      if (m.family !== k.family || !keyInPrefix(m.peer, m.keyPrefix, k.key)) continue;
      // The instance network's bits above the prefix, the peer's host bits below it.
      const out = new Uint8Array(16);
      for (let i = 0; i < 16; i++) {
        const net = (0xff << (8 - Math.min(8, Math.max(0, m.keyPrefix - i * 8)))) & 0xff;
        out[i] = (m.instance[i]! & net) | (k.key[i]! & ~net & 0xff);
      }
      return formatKey(out);
    }
    return peer;
  };
}
