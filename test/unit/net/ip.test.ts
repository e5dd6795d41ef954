import { describe, expect, it } from 'vitest';
import { formatKey, ipKey, normalizeIp } from '../../../src/net/ip.js';

/** The registry's normaliser before the one parser (WHATWG URL host parsing): the reference. */
function urlNormalizeIp(ip: string): string | null {
  if (/^(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])$/.test(ip)) return ip;
  if (!ip.includes(':') || ip.includes('%') || ip.includes('[') || ip.includes('/')) return null;
  let host: string;
  try {
    host = new URL(`http://[${ip}]/`).hostname;
  } catch {
    return null;
  }
  const v6 = host.slice(1, -1);
  const mapped = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(v6);
  if (mapped) {
    const hi = parseInt(mapped[1]!, 16);
    const lo = parseInt(mapped[2]!, 16);
    return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
  }
  return v6;
}

/** xorshift32: the same cases on every run. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

function randomAddressText(r: () => number): string {
  const pick = <T>(a: readonly T[]): T => a[Math.floor(r() * a.length)]!;
  const group = (): string => {
    const v = r() < 0.4 ? 0 : Math.floor(r() * 0x10000);
    const t = v.toString(16);
    return r() < 0.1 ? t.toUpperCase() : r() < 0.1 ? t.padStart(4, '0') : t;
  };
  const octet = (): string => String(r() < 0.1 ? pick([0, 255, 256, 300]) : Math.floor(r() * 256)) + (r() < 0.03 ? '0' : '');
  const kind = Math.floor(r() * 6);
  let s: string;
  if (kind === 0) s = [octet(), octet(), octet(), octet()].join('.');
  else if (kind === 1) s = `::ffff:${[octet(), octet(), octet(), octet()].join('.')}`;
  else {
    const groups = Array.from({ length: 8 }, group);
    if (kind === 2) s = groups.join(':');
    else {
      const a = Math.floor(r() * 8);
      const b = a + Math.floor(r() * (8 - a));
      s = `${groups.slice(0, a).join(':')}::${groups.slice(b + 1).join(':')}`;
      if (kind === 5) s = `${s}${s.endsWith(':') ? '' : ':'}${[octet(), octet(), octet(), octet()].join('.')}`;
    }
  }
  // Mutations: what a hostile or sloppy input looks like.
  const m = r();
  if (m < 0.05) s = s.replace(/:/, ':::');
  else if (m < 0.1) s = `${s}%eth0`;
  else if (m < 0.13) s = `0${s}`;
  else if (m < 0.16) s = s.slice(0, Math.floor(r() * s.length));
  else if (m < 0.18) s = `${s}:`;
  else if (m < 0.2) s = ` ${s}`;
  return s;
}

describe('normalizeIp', () => {
  it('gives the same answer as the URL-based normaliser it replaced, over 100,000 random inputs', () => {
    const r = rng(20261130);
    let valid = 0;
    for (let i = 0; i < 100_000; i++) {
      const text = randomAddressText(r);
      const expected = urlNormalizeIp(text);
      expect(normalizeIp(text), text).toBe(expected);
      if (expected !== null) valid++;
    }
    // Both outcomes are well represented.
    expect(valid).toBeGreaterThan(25_000);
    expect(valid).toBeLessThan(95_000);
  });

  it('canonical forms', () => {
    expect(normalizeIp('10.0.0.1')).toBe('10.0.0.1');
    expect(normalizeIp('::FFFF:10.0.0.1')).toBe('10.0.0.1');
    expect(normalizeIp('FD00:0:0:0:0:0:0:1')).toBe('fd00::1');
    expect(normalizeIp('2001:db8:0:0:1:0:0:1')).toBe('2001:db8::1:0:0:1');
    expect(normalizeIp('010.0.0.1')).toBeNull();
    expect(normalizeIp('fe80::1%eth0')).toBeNull();
  });
});

describe('ipKey / formatKey', () => {
  it('keys IPv4 as IPv4-mapped IPv6 and formats back', () => {
    const k = ipKey('198.18.2.2')!;
    expect(k.family).toBe(4);
    expect(Buffer.from(k.key).toString('hex')).toBe('00000000000000000000ffffc6120202');
    expect(formatKey(k.key)).toBe('198.18.2.2');
    const k6 = ipKey('fd00:18:2::2')!;
    expect(k6.family).toBe(6);
    expect(formatKey(k6.key)).toBe('fd00:18:2::2');
    expect(ipKey('::ffff:198.18.2.2')!.family).toBe(4);
    expect(ipKey('nope')).toBeNull();
  });
});
