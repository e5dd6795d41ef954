import { describe, expect, it } from 'vitest';
import { compareGatewayStates, errorLines, nothingLeft, normalizeRuleset, ourIpRules, summarizeLogLine } from '../../../scripts/soak/gateway-state.mjs';

const listing = (handle: number, packets: number) =>
  JSON.stringify({
    nftables: [
      { metainfo: { version: '1.0.6', json_schema_version: 1 } },
      { table: { family: 'inet', name: 'tpi_soak', handle } },
      { chain: { family: 'inet', table: 'tpi_soak', name: 'pre', handle: handle + 1, type: 'filter', hook: 'prerouting', prio: -150, policy: 'accept' } },
      { rule: { family: 'inet', table: 'tpi_soak', chain: 'pre', handle: handle + 2, expr: [{ counter: { packets, bytes: packets * 60 } }, { accept: null }] } },
    ],
  });

const state = (over: Record<string, unknown> = {}) => ({
  tables: ['inet tpi_soak'],
  table: normalizeRuleset(listing(1, 0)),
  rules4: ['0:\tfrom all lookup local', '9000:\tfrom all fwmark 0x1/0x1 lookup 100', '32766:\tfrom all lookup main'],
  rules6: ['9000:\tfrom all fwmark 0x1/0x1 lookup 100'],
  routes4: ['local default dev lo scope host'],
  routes6: ['local default dev lo metric 1024 pref medium'],
  ...over,
});
const opts = { table: 'tpi_soak', routeTable: 100 };

describe('normalizeRuleset', () => {
  it('ignores handles, counters and the version stamp', () => {
    expect(normalizeRuleset(listing(1, 0))).toBe(normalizeRuleset(listing(40, 9999)));
    expect(normalizeRuleset('not json')).toBeNull();
  });
});

describe('compareGatewayStates', () => {
  it('the same state after a restart is reconciled', () => {
    expect(compareGatewayStates(state(), state(), opts)).toEqual({ ok: true, problems: [] });
  });

  it.each([
    ['a second table', state({ tables: ['inet tpi_soak', 'inet tpi_soak'] }), /2 tables named inet tpi_soak/],
    ['no table', state({ tables: [], table: null }), /0 tables/],
    ['other rules in it', state({ table: '[]' }), /differs from before the crash/],
    ['a duplicate ip rule', state({ rules4: ['9000:\tfrom all fwmark 0x1/0x1 lookup 100', '9000:\tfrom all fwmark 0x1/0x1 lookup 100'] }), /duplicate ip rules \(IPv4\)/],
    ['a lost IPv6 rule', state({ rules6: [] }), /ip rules \(IPv6\) were/],
    ['a lost route', state({ routes4: [] }), /routes of table 100/],
  ])('%s is not', (_name, after, problem) => {
    const r = compareGatewayStates(state(), after, opts);
    expect(r.ok).toBe(false);
    expect(r.problems.join('; ')).toMatch(problem);
  });
});

describe('nothingLeft', () => {
  it('names what a stop left behind', () => {
    expect(nothingLeft(state({ tables: [], rules4: ['0:\tfrom all lookup local'], rules6: [], routes4: [], routes6: [] }), opts)).toEqual([]);
    expect(nothingLeft(state(), opts)).toEqual([
      'table inet tpi_soak',
      'ip rule 9000:\tfrom all fwmark 0x1/0x1 lookup 100',
      'ip rule 9000:\tfrom all fwmark 0x1/0x1 lookup 100',
      'route local default dev lo scope host (table 100)',
      'route local default dev lo metric 1024 pref medium (table 100)',
    ]);
    expect(ourIpRules(['1:\tfrom all lookup 1000', '2:\tfrom all lookup 100'], 100)).toEqual(['2:\tfrom all lookup 100']);
  });
});

describe('summarizeLogLine', () => {
  it('counts levels, messages and reasons (a summary line counts its refusals)', () => {
    const logs = { reasons: {}, levels: {}, messages: {}, errors: {} };
    summarizeLogLine('{"level":30,"msg":"connection closed","reason":"done"}', logs);
    summarizeLogLine('{"level":40,"msg":"connection closed","reason":"connect-failed","err":{"code":"EADDRNOTAVAIL"}}', logs);
    summarizeLogLine('{"level":40,"msg":"connection closed","reason":"refused"}', logs);
    summarizeLogLine('{"level":40,"msg":"connections refused: over capacity","reason":"over_capacity","refused":17}', logs);
    summarizeLogLine('{"level":50,"msg":"admin request failed"}', logs);
    summarizeLogLine('not json', logs);
    summarizeLogLine('{broken', logs);
    expect(logs).toEqual({
      reasons: { 'connection closed': { done: 1, 'connect-failed': 1, refused: 1 }, 'connections refused: over capacity': { over_capacity: 17 } },
      levels: { 30: 1, 40: 3, 50: 1 },
      messages: { 'connection closed': 3, 'connections refused: over capacity': 1, 'admin request failed': 1 },
      errors: { 'connect-failed EADDRNOTAVAIL': 1 },
    });
    expect(errorLines(logs)).toBe(1);
  });
});
