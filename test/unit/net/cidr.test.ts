import { describe, expect, it } from 'vitest';
import { cidrsOverlap, compileCidrMatcher, parseCidr } from '../../../src/net/cidr.js';

const normalizeCidr = (text: string): string => parseCidr(text).text;
const cidrContains = (cidr: string, ip: string): boolean => compileCidrMatcher([cidr])(ip);

describe('parseCidr', () => {
  it('parses IPv4 networks and single addresses', () => {
    expect(parseCidr('198.18.2.0/24')).toMatchObject({ family: 4, address: '198.18.2.0', prefix: 24, text: '198.18.2.0/24' });
    expect(parseCidr('198.18.2.7')).toMatchObject({ family: 4, address: '198.18.2.7', prefix: 32, text: '198.18.2.7/32' });
    expect(parseCidr('0.0.0.0/0').text).toBe('0.0.0.0/0');
  });

  it('parses and canonicalises IPv6 networks', () => {
    expect(parseCidr('fd00:2::/64')).toMatchObject({ family: 6, address: 'fd00:2::', prefix: 64, text: 'fd00:2::/64' });
    expect(normalizeCidr('FD00:0002:0000:0000:0000:0000:0000:0000/64')).toBe('fd00:2::/64');
    expect(normalizeCidr('::1')).toBe('::1/128');
    expect(normalizeCidr('::/0')).toBe('::/0');
    expect(normalizeCidr('2001:db8:0:0:1:0:0:1')).toBe('2001:db8::1:0:0:1/128');
    expect(normalizeCidr('2001:0:0:1:0:0:0:0/64')).toBe('2001:0:0:1::/64');
    expect(normalizeCidr('::ffff:10.0.0.0/104')).toBe('::ffff:10.0.0.0/104');
  });

  it('rejects host bits below the prefix, suggesting the network address', () => {
    expect(() => parseCidr('198.18.2.7/24')).toThrow(/host bits .* did you mean 198\.18\.2\.0\/24 .* or 198\.18\.2\.7\/32/);
    expect(() => parseCidr('fd00:2::1/64')).toThrow(/did you mean fd00:2::\/64/);
    try {
      parseCidr('10.0.0.1/8');
    } catch (err) {
      expect(err).toMatchObject({ code: 'ERR_INVALID_CIDR' });
    }
  });

  it.each(['', 'abc', '1.2.3', '1.2.3.4/33', '1.2.3.4/', '1.2.3.4/-1', '1.2.3.4/08', '01.2.3.4', '256.1.1.1', '1:2:3:4:5:6:7:8:9', 'fd00::1::2', ':::', 'fd00::/129', 'fe80::1%eth0/64', '1.2.3.4 /8'])(
    'rejects %j with the accepted form',
    (text) => {
      expect(() => parseCidr(text)).toThrow(/expected an IPv4 or IPv6 network like "198\.18\.2\.0\/24"/);
    },
  );
});

describe('cidrsOverlap', () => {
  it('is true when one network holds the other, of one family only', () => {
    expect(cidrsOverlap('198.18.0.0/16', '198.18.2.0/24')).toBe(true);
    expect(cidrsOverlap('198.18.2.0/24', '198.18.0.0/16')).toBe(true);
    expect(cidrsOverlap('198.18.2.0/24', '198.18.3.0/24')).toBe(false);
    expect(cidrsOverlap('0.0.0.0/0', '10.0.0.1')).toBe(true);
    expect(cidrsOverlap('fd00::/8', 'fd00:2::/64')).toBe(true);
    expect(cidrsOverlap('fd00::/16', 'fd01::/16')).toBe(false);
    expect(cidrsOverlap('::/0', '10.0.0.0/8')).toBe(true);
  });
});

describe('compileCidrMatcher', () => {
  const match = compileCidrMatcher(['10.0.0.0/8', '192.168.1.7', 'fd00:2::/64', '2001:db8::1']);

  it('matches IPv4', () => {
    expect(match('10.255.0.1')).toBe(true);
    expect(match('11.0.0.1')).toBe(false);
    expect(match('192.168.1.7')).toBe(true);
    expect(match('192.168.1.8')).toBe(false);
  });

  it('matches IPv4-mapped IPv6 as IPv4', () => {
    expect(match('::ffff:10.1.2.3')).toBe(true);
    expect(match('::ffff:a01:203')).toBe(true);
    expect(match('::ffff:11.1.2.3')).toBe(false);
  });

  it('matches IPv6, ignoring a zone index', () => {
    expect(match('fd00:2::1234')).toBe(true);
    expect(match('fd00:2:0:0:ffff:ffff:ffff:ffff')).toBe(true);
    expect(match('fd00:3::1')).toBe(false);
    expect(match('2001:db8::1')).toBe(true);
    expect(match('2001:db8::2')).toBe(false);
    expect(match('fd00:2::1%eth0')).toBe(true);
  });

  it('does not match garbage and does not throw', () => {
    expect(match('')).toBe(false);
    expect(match('not an ip')).toBe(false);
    expect(match('10.0.0')).toBe(false);
    expect(match(undefined as unknown as string)).toBe(false);
  });

  it('matches IPv4 addresses against IPv4-mapped networks', () => {
    const m = compileCidrMatcher(['::ffff:10.0.0.0/104']);
    expect(m('10.9.9.9')).toBe(true);
    expect(m('::ffff:10.9.9.9')).toBe(true);
    expect(m('11.0.0.1')).toBe(false);
  });

  it('handles /0 and prefixes that cross word boundaries', () => {
    expect(compileCidrMatcher(['0.0.0.0/0'])('1.2.3.4')).toBe(true);
    expect(compileCidrMatcher(['0.0.0.0/0'])('fd00::1')).toBe(false);
    expect(compileCidrMatcher(['::/0'])('fd00::1')).toBe(true);
    expect(cidrContains('2001:db8:0:2::/63', '2001:db8:0:3:ffff::1')).toBe(true);
    expect(cidrContains('2001:db8:0:2::/63', '2001:db8:0:4::1')).toBe(false);
    expect(cidrContains('2001:db8:0:0:8000::/65', '2001:db8::7fff:0:0:1')).toBe(false);
    expect(cidrContains('2001:db8:0:0:8000::/65', '2001:db8::8000:0:0:1')).toBe(true);
  });

  it('an empty list matches nothing', () => {
    expect(compileCidrMatcher([])('10.0.0.1')).toBe(false);
  });

  it('throws once at compile time for an invalid CIDR', () => {
    expect(() => compileCidrMatcher(['10.0.0.1/8'])).toThrow(/host bits/);
  });
});
