import { describe, expect, it } from 'vitest';
import type { Target } from '../../../src/config.js';
import {
  NOTHING_INSTALLED,
  parseChainState,
  renderChainRules,
  renderIptablesInstall,
  renderIptablesRemove,
} from '../../../src/firewall/iptables-render.js';
import type { FirewallSpec } from '../../../src/firewall/render.js';

const v4: Target = { cidr: '198.18.2.0/24', family: 4, ports: [{ from: 8080, to: 8080 }, { from: 9000, to: 9100 }], interface: 'eth1' };
const v6: Target = { cidr: 'fd00:2::/64', family: 6, ports: [{ from: 443, to: 443 }], interface: null };

function spec(over: Partial<FirewallSpec> = {}): FirewallSpec {
  return {
    table: 'tpi_test',
    mark: 0x10000,
    mask: 0x30000,
    failClosed: true,
    listen: { address: '127.0.0.1', address6: '::1', port: 15001 },
    targets: [v4, v6],
    ...over,
  };
}

describe('renderIptablesInstall', () => {
  it('IPv4: our chain declared and flushed, the socket rules, TPROXY then DROP per target, one jump first in PREROUTING', () => {
    expect(renderIptablesInstall(spec(), 4)).toBe(
      [
        '*mangle',
        ':tpi_test - [0:0]',
        '-F tpi_test',
        '-A tpi_test -p tcp -m socket --transparent -j MARK --set-xmark 0x10000/0x30000',
        '-A tpi_test -p tcp -m socket --transparent -j ACCEPT',
        '-A tpi_test -p tcp -m socket -j ACCEPT',
        '-A tpi_test -i eth1 -d 198.18.2.0/24 -p tcp -m multiport --dports 8080,9000:9100 -j TPROXY --on-ip 127.0.0.1 --on-port 15001 --tproxy-mark 0x10000/0x30000',
        '-A tpi_test -i eth1 -d 198.18.2.0/24 -p tcp -m multiport --dports 8080,9000:9100 -j DROP',
        '-I PREROUTING 1 -j tpi_test',
        'COMMIT',
        '',
      ].join('\n'),
    );
  });

  it('IPv6: only the IPv6 targets, to listen.address6', () => {
    const text = renderIptablesInstall(spec(), 6);
    expect(text).toContain('-A tpi_test -d fd00:2::/64 -p tcp --dport 443 -j TPROXY --on-ip ::1 --on-port 15001 --tproxy-mark 0x10000/0x30000\n');
    expect(text).not.toContain('198.18.2.0');
    expect(() => renderIptablesInstall(spec({ listen: { address: '127.0.0.1', address6: null, port: 15001 } }), 6)).toThrow(/listen.address6 is disabled/);
  });

  it('the socket match keeps xt_socket ignoring wildcard-bound sockets (no --nowildcard), like nft `socket wildcard 0`', () => {
    expect(renderIptablesInstall(spec(), 4)).not.toContain('--nowildcard');
  });

  it('after a crash: the jump that is there stays, duplicates go; the chain is redeclared (flushed) either way', () => {
    const once = renderIptablesInstall(spec(), 4, { chain: true, jumps: 1 });
    expect(once).not.toMatch(/PREROUTING/);
    expect(once).toContain(':tpi_test - [0:0]\n-F tpi_test\n');
    const thrice = renderIptablesInstall(spec(), 4, { chain: true, jumps: 3 });
    expect(thrice.match(/^-D PREROUTING -j tpi_test$/gm)).toHaveLength(2);
    expect(thrice).not.toMatch(/-I PREROUTING/);
  });

  it('no DROP rules when failClosed is false', () => {
    expect(renderIptablesInstall(spec({ failClosed: false }), 4)).not.toContain('DROP');
  });

  it('a single port or range needs no multiport; more than 15 slots split into several rules', () => {
    const one = renderChainRules(spec({ targets: [{ ...v4, ports: [{ from: 9000, to: 9100 }] }] }), 4);
    expect(one[3]).toEqual(['-i', 'eth1', '-d', '198.18.2.0/24', '-p', 'tcp', '--dport', '9000:9100', '-j', 'TPROXY', '--on-ip', '127.0.0.1', '--on-port', '15001', '--tproxy-mark', '0x10000/0x30000']);
    // 10 single ports (10 slots) and 4 ranges (8 slots): 18 slots
    const ports = [...Array.from({ length: 10 }, (_, i) => ({ from: 100 + 2 * i, to: 100 + 2 * i })), ...Array.from({ length: 4 }, (_, i) => ({ from: 1000 * (i + 1), to: 1000 * (i + 1) + 10 }))];
    const rules = renderChainRules(spec({ targets: [{ ...v4, ports }] }), 4);
    const tproxy = rules.filter((r) => r.includes('TPROXY'));
    expect(tproxy.map((r) => r[r.indexOf('--dports') + 1] ?? r[r.indexOf('--dport') + 1])).toEqual([
      '100,102,104,106,108,110,112,114,116,118,1000:1010,2000:2010',
      '3000:3010,4000:4010',
    ]);
    expect(rules.filter((r) => r.includes('DROP'))).toHaveLength(2);
  });

  it('a full mask sets the mark outright (the same --set-xmark form)', () => {
    expect(renderChainRules(spec({ mark: 4, mask: 0xffffffff }), 4)[0]).toContain('0x4/0xffffffff');
  });

  it('refuses what iptables would read differently or cannot hold', () => {
    expect(() => renderChainRules(spec({ table: 'x'.repeat(29) }), 4)).toThrow(/28/);
    expect(() => renderChainRules(spec({ table: 'PREROUTING' }), 4)).toThrow(/built-in/);
    expect(() => renderChainRules(spec({ table: 'a b' }), 4)).toThrow(RangeError);
    expect(() => renderChainRules(spec({ mark: 3, mask: 1 }), 4)).toThrow(RangeError);
    expect(() => renderChainRules(spec({ targets: [{ ...v4, interface: 'veth+' }] }), 4)).toThrow(/wildcard/);
  });
});

describe('renderIptablesRemove', () => {
  it('deletes every jump, then flushes and deletes the chain', () => {
    expect(renderIptablesRemove('tpi_test', { chain: true, jumps: 2 })).toBe(
      ['*mangle', '-D PREROUTING -j tpi_test', '-D PREROUTING -j tpi_test', '-F tpi_test', '-X tpi_test', 'COMMIT', ''].join('\n'),
    );
  });

  it('nothing to do when nothing of ours is there', () => {
    expect(renderIptablesRemove('tpi_test', NOTHING_INSTALLED)).toBeNull();
  });
});

describe('parseChainState (iptables-save -t mangle)', () => {
  const save = [
    '# Generated by iptables-nft-save v1.8.9 (nf_tables)',
    '*mangle',
    ':PREROUTING ACCEPT [0:0]',
    ':tpi_test - [0:0]',
    ':tpi_test_other - [0:0]',
    '-A PREROUTING -j tpi_test',
    '-A PREROUTING -p tcp -j tpi_test',
    '-A PREROUTING -j tpi_test_other',
    '-A PREROUTING -j tpi_test',
    'COMMIT',
    '*nat',
    ':tpi_test - [0:0]',
    '-A PREROUTING -j tpi_test',
    'COMMIT',
  ].join('\n');

  it('counts only our plain jumps in mangle, and sees our chain', () => {
    expect(parseChainState(save, 'tpi_test')).toEqual({ chain: true, jumps: 2 });
    expect(parseChainState(save, 'tpi')).toEqual({ chain: false, jumps: 0 });
    expect(parseChainState('', 'tpi_test')).toEqual(NOTHING_INSTALLED);
  });
});
