import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../../src/config-parse.js';
import { decideReference } from '../../../src/datapath/table.js';
import { ALWAYS_LOCAL, defaultMaxConnections, targetsContainingLocal } from '../../../src/proxy/guard.js';

const { targets } = parseConfig(`
[[intercept.targets]]
cidr = "198.18.2.0/24"
ports = [8080, "9000-9010"]
[[intercept.targets]]
cidr = "fd00:18:2::/64"
ports = [443]
`).intercept;

describe('the destination guard (the decision before any instance is looked at)', () => {
  const spec = { generation: 1, targets, localAddresses: ['198.18.2.1', '198.18.1.1', 'fd00:18:2::1'], localNetworks: ALWAYS_LOCAL, trustedSources: [], entries: [] };
  const guard = (ip: string, port: number): string | null => {
    const d = decideReference(spec, ip, port);
    return d.kind === 'refuse' ? d.reason : null;
  };

  it('lets a target address and port through', () => {
    expect(guard('198.18.2.2', 8080)).toBeNull();
    expect(guard('198.18.2.254', 9000)).toBeNull();
    expect(guard('198.18.2.254', 9010)).toBeNull();
    expect(guard('fd00:18:2::2', 443)).toBeNull();
  });

  it('refuses a port or a network outside the targets', () => {
    expect(guard('198.18.2.2', 8081)).toBe('not_a_target');
    expect(guard('198.18.2.2', 9011)).toBe('not_a_target');
    expect(guard('198.18.3.2', 8080)).toBe('not_a_target');
    expect(guard('fd00:18:2::2', 8080)).toBe('not_a_target');
    expect(guard('fd00:18:3::2', 443)).toBe('not_a_target');
  });

  it("refuses this host's addresses, loopback and the unspecified address, inside the targets or not", () => {
    expect(guard('198.18.2.1', 8080)).toBe('local_destination');
    expect(guard('198.18.1.1', 15001)).toBe('local_destination');
    expect(guard('fd00:18:2::1', 443)).toBe('local_destination');
    expect(guard('127.0.0.1', 15001)).toBe('local_destination');
    expect(guard('127.9.9.9', 8080)).toBe('local_destination');
    expect(guard('::1', 15001)).toBe('local_destination');
    expect(guard('0.0.0.0', 8080)).toBe('local_destination');
    expect(guard('::', 443)).toBe('local_destination');
    // How a dual-stack socket reports an IPv4 address.
    expect(guard('::ffff:198.18.2.1', 8080)).toBe('local_destination');
  });
});

describe('targetsContainingLocal', () => {
  it('names each target that holds an address of this host, with the addresses', () => {
    expect(targetsContainingLocal(targets, ['198.18.2.1', '198.18.1.1', '10.0.0.1'])).toEqual([{ cidr: '198.18.2.0/24', addresses: ['198.18.2.1'] }]);
    expect(targetsContainingLocal(targets, ['10.0.0.1'])).toEqual([]);
  });

  it('a catch-all target contains loopback', () => {
    const all = parseConfig('[[intercept.targets]]\ncidr = "0.0.0.0/0"\nports = [80]\n').intercept.targets;
    expect(targetsContainingLocal(all, [])[0]!.addresses).toEqual(['127.0.0.0', '0.0.0.0']);
  });
});

describe('defaultMaxConnections', () => {
  it('is two descriptors per connection after the reserve (256 + 128 per thread)', () => {
    expect(defaultMaxConnections(20_000, 2)).toBe(Math.floor((20_000 - 256 - 256) / 2));
    expect(defaultMaxConnections(1_048_576, 64)).toBe(Math.floor((1_048_576 - 256 - 64 * 128) / 2));
  });

  it('is at least 1 under a tiny limit', () => {
    expect(defaultMaxConnections(100, 4)).toBe(1);
  });
});
