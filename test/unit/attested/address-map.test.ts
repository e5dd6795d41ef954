// Peer address → instance address. Peers stand behind NAT in 198.19.0.0/16 here, instances are
// reached in 198.18.0.0/16.
import { describe, expect, it } from 'vitest';
import { compileAddressMap } from '../../../src/attested/address-map.js';

describe('compileAddressMap', () => {
  it('no entries: the peer address, normalised', () => {
    const map = compileAddressMap([]);
    expect(map('198.18.2.2')).toBe('198.18.2.2');
    expect(map('::ffff:198.18.2.2')).toBe('198.18.2.2');
    expect(map('FD00:18:2:0::2')).toBe('fd00:18:2::2');
    expect(map('not an address')).toBeNull();
  });

  it('translates a network, keeping the host bits; unmatched peers keep their address', () => {
    const map = compileAddressMap([{ peer: '198.19.0.0/16', instance: '198.18.0.0/16' }]);
    expect(map('198.19.2.2')).toBe('198.18.2.2');
    expect(map('::ffff:198.19.255.1')).toBe('198.18.255.1');
    expect(map('198.18.7.7')).toBe('198.18.7.7');
  });

  it('the most specific peer network wins, whatever the order', () => {
    const map = compileAddressMap([
      { peer: '198.19.0.0/16', instance: '198.18.0.0/16' },
      { peer: '198.19.9.9/32', instance: '198.18.2.2/32' },
    ]);
    expect(map('198.19.9.9')).toBe('198.18.2.2');
    expect(map('198.19.1.2')).toBe('198.18.1.2');
  });

  it('IPv6 networks', () => {
    const map = compileAddressMap([{ peer: 'fd00:9::/64', instance: 'fd00:18:2::/64' }]);
    expect(map('fd00:9::2')).toBe('fd00:18:2::2');
    expect(map('fd00:9:0:0:abcd::7')).toBe('fd00:18:2:0:abcd::7');
    expect(map('198.18.2.2')).toBe('198.18.2.2');
  });

  it('refuses sides of different families or prefix lengths', () => {
    expect(() => compileAddressMap([{ peer: '198.19.0.0/16', instance: '198.18.0.0/24' }])).toThrow(TypeError);
    expect(() => compileAddressMap([{ peer: '198.19.0.0/16', instance: 'fd00::/16' }])).toThrow(TypeError);
  });
});
