import { describe, expect, it } from 'vitest';
import {
  DEFAULT_RULE_PRIORITY,
  renderRoutingPlan,
  routingInstallSteps,
  routingRemoveSteps,
  ruleMatches,
  type RoutingSpec,
} from '../../../src/routing/render.js';

const base: RoutingSpec = { mark: 0x1, mask: 0x1, routeTable: 100, localBackends: false, ipv6: false };
const renderRoutingCommands = (spec: RoutingSpec): string[][] => routingInstallSteps(spec).map((s) => s.argv);

describe('routingInstallSteps / routingRemoveSteps', () => {
  it('each step carries the rule or route its command is about (ip.ts checks rules against what exists)', () => {
    const plan = renderRoutingPlan({ ...base, ipv6: true });
    expect(routingInstallSteps({ ...base, ipv6: true })).toEqual([
      { argv: expect.any(Array), route: plan.routes[0] },
      { argv: expect.any(Array), rule: plan.rules[0] },
      { argv: expect.any(Array), route: plan.routes[1] },
      { argv: expect.any(Array), rule: plan.rules[1] },
    ]);
  });

  it('IPv4 only: the local route, then the fwmark rule', () => {
    expect(renderRoutingCommands(base)).toEqual([
      ['ip', '-4', 'route', 'replace', 'local', '0.0.0.0/0', 'dev', 'lo', 'table', '100'],
      ['ip', '-4', 'rule', 'add', 'fwmark', '0x1/0x1', 'lookup', '100', 'priority', String(DEFAULT_RULE_PRIORITY)],
    ]);
    expect(DEFAULT_RULE_PRIORITY).toBe(9000);
  });

  it('IPv6 and local backends', () => {
    expect(renderRoutingCommands({ ...base, mark: 0x10000, mask: 0x30000, routeTable: 4242, localBackends: true, ipv6: true, priority: 8123 })).toEqual([
      ['ip', '-4', 'route', 'replace', 'local', '0.0.0.0/0', 'dev', 'lo', 'table', '4242'],
      ['ip', '-4', 'rule', 'add', 'fwmark', '0x10000/0x30000', 'lookup', '4242', 'priority', '8123'],
      ['ip', '-4', 'rule', 'add', 'from', '127.0.0.0/8', 'iif', 'lo', 'lookup', '4242', 'priority', '8123'],
      ['ip', '-6', 'route', 'replace', 'local', '::/0', 'dev', 'lo', 'table', '4242'],
      ['ip', '-6', 'rule', 'add', 'fwmark', '0x10000/0x30000', 'lookup', '4242', 'priority', '8123'],
      ['ip', '-6', 'rule', 'add', 'from', '::1/128', 'iif', 'lo', 'lookup', '4242', 'priority', '8123'],
    ]);
  });

  it('removal deletes the same rules (all selectors) before the routes', () => {
    const steps = routingRemoveSteps({ ...base, localBackends: true });
    expect(steps.map((s) => ('rule' in s ? 'rule' : 'route'))).toEqual(['rule', 'rule', 'route']);
    expect(steps.map((s) => s.argv)).toEqual([
      ['ip', '-4', 'rule', 'del', 'fwmark', '0x1/0x1', 'lookup', '100', 'priority', '9000'],
      ['ip', '-4', 'rule', 'del', 'from', '127.0.0.0/8', 'iif', 'lo', 'lookup', '100', 'priority', '9000'],
      ['ip', '-4', 'route', 'del', 'local', '0.0.0.0/0', 'dev', 'lo', 'table', '100'],
    ]);
  });

  it('validates mark, mask, table and priority', () => {
    expect(() => renderRoutingCommands({ ...base, mark: 2 })).toThrow(RangeError);
    expect(() => renderRoutingCommands({ ...base, routeTable: 254 })).toThrow(/253, 254, 255/);
    expect(() => renderRoutingCommands({ ...base, routeTable: 0 })).toThrow(RangeError);
    expect(() => renderRoutingCommands({ ...base, priority: 0 })).toThrow(/priority/);
    expect(() => renderRoutingCommands({ ...base, priority: 32766 })).toThrow(/priority/);
  });
});

describe('ruleMatches (ip -N -j rule show, iproute2 6.1)', () => {
  const plan = renderRoutingPlan({ ...base, localBackends: true, ipv6: true });
  const [mark4, lo4, mark6, lo6] = plan.rules as [never, never, never, never];

  it('recognises our rules as iproute2 prints them', () => {
    expect(ruleMatches({ priority: 9000, src: 'all', fwmark: '0x1', fwmask: '0x1', table: '100' }, mark4)).toBe(true);
    expect(ruleMatches({ priority: 9000, src: '127.0.0.0', srclen: 8, iif: 'lo', table: '100' }, lo4)).toBe(true);
    expect(ruleMatches({ priority: 9000, src: 'all', fwmark: '0x1', fwmask: '0x1', table: '100' }, mark6)).toBe(true);
    expect(ruleMatches({ priority: 9000, src: '::1', iif: 'lo', table: '100' }, lo6)).toBe(true);
  });

  it('a full mask is printed without fwmask', () => {
    const [rule] = renderRoutingPlan({ ...base, mark: 5, mask: 0xffffffff }).rules;
    expect(ruleMatches({ priority: 9000, src: 'all', fwmark: '0x5', table: '100' }, rule!)).toBe(true);
    expect(ruleMatches({ priority: 9000, src: 'all', fwmark: '0x5', fwmask: '0xff', table: '100' }, rule!)).toBe(false);
  });

  it('anything different is not ours', () => {
    const ours = { priority: 9000, src: 'all', fwmark: '0x1', fwmask: '0x1', table: '100' };
    expect(ruleMatches({ ...ours, priority: 9001 }, mark4)).toBe(false);
    expect(ruleMatches({ ...ours, table: '101' }, mark4)).toBe(false);
    expect(ruleMatches({ ...ours, table: 'main' }, mark4)).toBe(false);
    expect(ruleMatches({ ...ours, fwmark: '0x2', fwmask: '0x2' }, mark4)).toBe(false);
    expect(ruleMatches({ ...ours, fwmask: '0x3' }, mark4)).toBe(false);
    expect(ruleMatches({ ...ours, iif: 'eth0' }, mark4)).toBe(false);
    expect(ruleMatches({ ...ours, not: null }, mark4)).toBe(false);
    expect(ruleMatches({ ...ours, src: '10.0.0.0', srclen: 8 }, mark4)).toBe(false);
    expect(ruleMatches({ priority: 9000, src: '127.0.0.0', srclen: 16, iif: 'lo', table: '100' }, lo4)).toBe(false);
    expect(ruleMatches({ priority: 9000, src: '127.0.0.0', srclen: 8, table: '100' }, lo4)).toBe(false);
    expect(ruleMatches({ priority: 9000, src: '127.0.0.0', srclen: 8, iif: 'lo', fwmark: '0x1', table: '100' }, lo4)).toBe(false);
    expect(ruleMatches(null, mark4)).toBe(false);
    expect(ruleMatches('x', mark4)).toBe(false);
  });
});
