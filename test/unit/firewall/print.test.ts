import { describe, expect, it } from 'vitest';
import { renderIptablesInstall } from '../../../src/firewall/iptables-render.js';
import { defaultRulesFormat, printRuleset } from '../../../src/firewall/print.js';
import { renderNftText, renderRuleset, type FirewallSpec } from '../../../src/firewall/render.js';

const spec: FirewallSpec = {
  table: 'tpi_test',
  mark: 1,
  mask: 1,
  failClosed: true,
  listen: { address: '127.0.0.1', address6: '::1', port: 15001 },
  targets: [{ cidr: '198.18.2.0/24', family: 4, ports: [{ from: 8080, to: 8080 }], interface: null }],
};

describe('printRuleset (what `rules` prints)', () => {
  it('each backend prints by default what it applies', () => {
    expect(defaultRulesFormat('nftables')).toBe('nft');
    expect(defaultRulesFormat('iptables')).toBe('iptables');
    expect(printRuleset(spec, 'nftables', 'nft')).toBe(renderNftText(renderRuleset(spec)));
    expect(JSON.parse(printRuleset(spec, 'nftables', 'json'))).toEqual(renderRuleset(spec));
    expect(printRuleset(spec, 'iptables', 'iptables')).toBe(renderIptablesInstall(spec, 4));
    expect(printRuleset(spec, 'iptables', 'ip6tables')).toBe(renderIptablesInstall(spec, 6));
  });

  it('no comment lines: the output is the tool input as it is', () => {
    for (const [backend, format] of [['nftables', 'nft'], ['nftables', 'json'], ['iptables', 'iptables']] as const) {
      expect(printRuleset(spec, backend, format)).not.toMatch(/^#/m);
    }
  });

  it('refuses a format of the other backend, and ip6tables with IPv6 off', () => {
    expect(() => printRuleset(spec, 'iptables', 'nft')).toThrow(/intercept.backend is "iptables": use --format iptables or ip6tables/);
    expect(() => printRuleset(spec, 'nftables', 'iptables')).toThrow(/use --format nft or json/);
    expect(() => printRuleset({ ...spec, listen: { ...spec.listen, address6: null } }, 'iptables', 'ip6tables')).toThrow(/IPv6 is disabled/);
  });
});
