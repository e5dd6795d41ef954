import { describe, expect, it } from 'vitest';
import type { Target } from '../../../src/config.js';
import { renderDeleteTable, renderNftText, renderRuleset, type FirewallSpec } from '../../../src/firewall/render.js';

const v4: Target = { cidr: '198.18.2.0/24', family: 4, ports: [{ from: 8080, to: 8080 }, { from: 9000, to: 9100 }], interface: 'eth1' };
const v6: Target = { cidr: 'fd00:2::/64', family: 6, ports: [{ from: 443, to: 443 }], interface: null };

function spec(over: Partial<FirewallSpec> = {}): FirewallSpec {
  return {
    table: 'tpi_test',
    mark: 0x1,
    mask: 0x1,
    failClosed: true,
    listen: { address: '127.0.0.1', address6: '::1', port: 15001 },
    targets: [v4, v6],
    ...over,
  };
}

type Cmd = Record<string, Record<string, Record<string, unknown>>>;
const rulesOf = (doc: { nftables: readonly object[] }): unknown[][] =>
  (doc.nftables as Cmd[]).filter((c) => c['add']?.['rule']).map((c) => c['add']!['rule']!['expr'] as unknown[]);
const verdict = (expr: unknown[]): string => Object.keys(expr[expr.length - 1] as object)[0]!;

const maskedMark = (mark: number, mask: number) => ({
  mangle: { key: { meta: { key: 'mark' } }, value: { '|': [{ '&': [{ meta: { key: 'mark' } }, ~mask >>> 0] }, mark] } },
});

describe('renderRuleset', () => {
  it('replaces our table atomically: add, delete, add, then the chain', () => {
    const cmds = renderRuleset(spec()).nftables as Cmd[];
    const table = { family: 'inet', name: 'tpi_test' };
    expect(cmds.slice(0, 3)).toEqual([{ add: { table } }, { delete: { table } }, { add: { table } }]);
    expect(cmds[3]).toEqual({
      add: { chain: { family: 'inet', table: 'tpi_test', name: 'pre', type: 'filter', hook: 'prerouting', prio: -150, policy: 'accept' } },
    });
    expect(typeof (cmds[3]!['add']!['chain'] as Record<string, unknown>)['prio']).toBe('number');
    for (const c of cmds.slice(4)) expect(c['add']!['rule']).toMatchObject({ family: 'inet', table: 'tpi_test', chain: 'pre' });
  });

  it('first rule: established transparent sockets get the mark (masked) and are accepted', () => {
    const [first] = rulesOf(renderRuleset(spec()));
    expect(first).toEqual([
      { match: { op: '==', left: { meta: { key: 'l4proto' } }, right: 'tcp' } },
      { match: { op: '==', left: { socket: { key: 'transparent' } }, right: 1 } },
      { match: { op: '==', left: { socket: { key: 'wildcard' } }, right: 0 } },
      maskedMark(1, 1),
      { accept: null },
    ]);
  });

  it("second rule: this host's own other connections (a socket on one of its addresses) are accepted untouched", () => {
    const [, second] = rulesOf(renderRuleset(spec()));
    expect(second).toEqual([
      { match: { op: '==', left: { meta: { key: 'l4proto' } }, right: 'tcp' } },
      { match: { op: '==', left: { socket: { key: 'wildcard' } }, right: 0 } },
      { accept: null },
    ]);
  });

  it('per target: iifname, daddr prefix, l4proto, dport set, tproxy, mark, accept; then drop when failClosed', () => {
    const rules = rulesOf(renderRuleset(spec()));
    expect(rules.map(verdict)).toEqual(['accept', 'accept', 'accept', 'drop', 'accept', 'drop']);
    const matches = [
      { match: { op: '==', left: { meta: { key: 'iifname' } }, right: 'eth1' } },
      { match: { op: '==', left: { payload: { protocol: 'ip', field: 'daddr' } }, right: { prefix: { addr: '198.18.2.0', len: 24 } } } },
      { match: { op: '==', left: { meta: { key: 'l4proto' } }, right: 'tcp' } },
      { match: { op: '==', left: { payload: { protocol: 'tcp', field: 'dport' } }, right: { set: [8080, { range: [9000, 9100] }] } } },
    ];
    expect(rules[2]).toEqual([...matches, { tproxy: { family: 'ip', addr: '127.0.0.1', port: 15001 } }, maskedMark(1, 1), { accept: null }]);
    expect(rules[3]).toEqual([...matches, { drop: null }]);
  });

  it('IPv6 targets tproxy to listen.address6 with family ip6; a single port is a plain number', () => {
    const rules = rulesOf(renderRuleset(spec()));
    expect(rules[4]).toEqual([
      { match: { op: '==', left: { payload: { protocol: 'ip6', field: 'daddr' } }, right: { prefix: { addr: 'fd00:2::', len: 64 } } } },
      { match: { op: '==', left: { meta: { key: 'l4proto' } }, right: 'tcp' } },
      { match: { op: '==', left: { payload: { protocol: 'tcp', field: 'dport' } }, right: 443 } },
      { tproxy: { family: 'ip6', addr: '::1', port: 15001 } },
      maskedMark(1, 1),
      { accept: null },
    ]);
  });

  it('no drop rules when failClosed is false', () => {
    const rules = rulesOf(renderRuleset(spec({ failClosed: false })));
    expect(rules.map(verdict)).toEqual(['accept', 'accept', 'accept', 'accept']);
    expect(JSON.stringify(rules)).not.toContain('drop');
  });

  it('a single range still renders as a set', () => {
    const t: Target = { ...v4, ports: [{ from: 1, to: 1024 }], interface: null };
    const rules = rulesOf(renderRuleset(spec({ targets: [t] })));
    expect(rules[2]![2]).toEqual({ match: { op: '==', left: { payload: { protocol: 'tcp', field: 'dport' } }, right: { set: [{ range: [1, 1024] }] } } });
  });

  it('keeps bits outside the mask: mark = (mark & ~mask) | value', () => {
    const rules = rulesOf(renderRuleset(spec({ mark: 0x10000, mask: 0x30000 })));
    expect(rules[0]![3]).toEqual(maskedMark(0x10000, 0x30000));
    expect(((rules[0]![3] as { mangle: { value: { '|': [{ '&': [unknown, number] }, number] } } }).mangle.value['|'][0]['&'][1])).toBe(0xfffcffff);
  });

  it('a full mask sets the mark outright', () => {
    const rules = rulesOf(renderRuleset(spec({ mark: 0x4, mask: 0xffffffff })));
    expect(rules[0]![3]).toEqual({ mangle: { key: { meta: { key: 'mark' } }, value: 4 } });
  });

  it('throws for an IPv6 target when listen.address6 is disabled', () => {
    expect(() => renderRuleset(spec({ listen: { address: '127.0.0.1', address6: null, port: 15001 } }))).toThrow(/fd00:2::\/64 is IPv6 but listen.address6 is disabled/);
    expect(() => renderRuleset(spec({ listen: { address: '127.0.0.1', address6: null, port: 15001 }, targets: [v4] }))).not.toThrow();
  });

  it('validates the table name and mark', () => {
    expect(() => renderRuleset(spec({ table: 'bad name' }))).toThrow(RangeError);
    expect(() => renderRuleset(spec({ mark: 3, mask: 1 }))).toThrow(RangeError);
    expect(() => renderRuleset(spec({ mark: 0 }))).toThrow(RangeError);
  });

  it('with no targets only the two socket rules exist', () => {
    expect(rulesOf(renderRuleset(spec({ targets: [] })))).toHaveLength(2);
  });
});

describe('renderDeleteTable', () => {
  it('adds then deletes, so a missing table is not an error', () => {
    const table = { family: 'inet', name: 'tpi_test' };
    expect(renderDeleteTable('tpi_test')).toEqual({ nftables: [{ add: { table } }, { delete: { table } }] });
    expect(() => renderDeleteTable('x;y')).toThrow(RangeError);
  });
});

describe('renderNftText', () => {
  it('writes the JSON document command by command in nft syntax', () => {
    expect(renderNftText(renderRuleset(spec({ mark: 0x10000, mask: 0x30000 })))).toBe(
      [
        'add table inet tpi_test',
        'delete table inet tpi_test',
        'add table inet tpi_test',
        'add chain inet tpi_test pre { type filter hook prerouting priority -150; policy accept; }',
        'add rule inet tpi_test pre meta l4proto tcp socket transparent 1 socket wildcard 0 meta mark set meta mark & 0xfffcffff | 0x00010000 accept',
        'add rule inet tpi_test pre meta l4proto tcp socket wildcard 0 accept',
        'add rule inet tpi_test pre meta iifname "eth1" ip daddr 198.18.2.0/24 meta l4proto tcp tcp dport { 8080, 9000-9100 } tproxy ip to 127.0.0.1:15001 meta mark set meta mark & 0xfffcffff | 0x00010000 accept',
        'add rule inet tpi_test pre meta iifname "eth1" ip daddr 198.18.2.0/24 meta l4proto tcp tcp dport { 8080, 9000-9100 } drop',
        'add rule inet tpi_test pre ip6 daddr fd00:2::/64 meta l4proto tcp tcp dport 443 tproxy ip6 to [::1]:15001 meta mark set meta mark & 0xfffcffff | 0x00010000 accept',
        'add rule inet tpi_test pre ip6 daddr fd00:2::/64 meta l4proto tcp tcp dport 443 drop',
        '',
      ].join('\n'),
    );
  });

  it('a full mask sets the mark outright; a deletion document is two commands', () => {
    expect(renderNftText(renderRuleset(spec({ mark: 4, mask: 0xffffffff, targets: [] })))).toContain('meta mark set 0x00000004 accept');
    expect(renderNftText(renderDeleteTable('tpi_test'))).toBe('add table inet tpi_test\ndelete table inet tpi_test\n');
  });

  it('refuses shapes it has no text for, instead of printing something else', () => {
    expect(() => renderNftText({ nftables: [{ flush: { ruleset: null } }] })).toThrow(TypeError);
    expect(() => renderNftText({ nftables: [{ add: { rule: { family: 'inet', table: 't', chain: 'c', expr: [{ counter: null }] } } }] })).toThrow(TypeError);
  });
});
