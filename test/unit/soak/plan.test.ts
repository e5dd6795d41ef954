import { describe, expect, it } from 'vitest';
import { parse } from 'smol-toml';
import {
  adminFloodSize, descriptorNeeds, estimateSeconds, rampHoldMs, rampRates, rampStepMs, registrationAddress, renderDaemonConfig, SCENARIO_NAMES,
} from '../../../scripts/soak/plan.mjs';
import { parseConfig } from '../../../src/config-parse.js';

describe('renderDaemonConfig', () => {
  it('is a config the daemon accepts: fail_closed, both target families, the soak registry and socket', () => {
    const text = renderDaemonConfig({ dir: '/tmp/soak-x' });
    const config = parseConfig(text);
    expect(config.intercept.failClosed).toBe(true);
    expect(config.intercept.targets.map((t) => t.cidr)).toEqual(['198.18.2.0/24', 'fd00:18:2::/64']);
    expect(config.registry.adminSocket).toBe('/tmp/soak-x/admin-main.sock');
    expect(config.registry.path).toBe('/tmp/soak-x/registry-main');
    expect(config.upstream.connectTimeoutMs).toBe(2000);
    expect(config.registry.fetch.maxRetries).toBe(2);
  });

  it('writes max_connections and allow_wildcard only when asked (a daemon without them must not see them)', () => {
    expect(renderDaemonConfig({ dir: '/d' })).not.toMatch(/max_connections|allow_wildcard/);
    const doc = parse(renderDaemonConfig({ dir: '/d', maxConnections: 30, allowWildcard: true, listenAddress: '0.0.0.0', listenAddress6: null })) as { listen: Record<string, unknown> };
    expect(doc.listen).toMatchObject({ max_connections: 30, allow_wildcard: true, address: '0.0.0.0', address6: false });
  });

  it('--set pairs add keys, replace keys and open sections, last', () => {
    const doc = parse(renderDaemonConfig({ dir: '/d', name: 'wild', settings: [['listen.threads', '2'], ['upstream.idle_timeout', '"30s"'], ['registry.etcd.endpoints', '["http://a:2379"]']] })) as Record<string, Record<string, unknown>>;
    expect(doc.listen!.threads).toBe(2);
    expect(doc.upstream!.idle_timeout).toBe('30s');
    expect((doc.registry as { etcd: { endpoints: string[] } }).etcd.endpoints).toEqual(['http://a:2379']);
    expect(doc.registry!.path).toBe('/d/registry-wild');
  });
});

describe('registrationAddress', () => {
  it('walks 198.18.128.1 upwards, never a .0 or .255 host', () => {
    expect(registrationAddress(0)).toBe('198.18.128.1');
    expect(registrationAddress(253)).toBe('198.18.128.254');
    expect(registrationAddress(254)).toBe('198.18.129.1');
    const all = Array.from({ length: 3000 }, (_, i) => registrationAddress(i));
    expect(new Set(all).size).toBe(3000);
    expect(all.some((a) => /\.(0|255)$/.test(a))).toBe(false);
    expect(() => registrationAddress(-1)).toThrow(RangeError);
  });
});

describe('the ramp and the sizes', () => {
  it('rates grow by half up to the maximum, which is the last step', () => {
    expect(rampRates(400)).toEqual([25, 38, 57, 86, 129, 194, 291, 400]);
    expect(rampRates(25)).toEqual([25]);
  });

  it('steps last 1..5 s, a sixtieth of the duration', () => {
    expect(rampStepMs(20_000)).toBe(1000);
    expect(rampStepMs(120_000)).toBe(2000);
    expect(rampStepMs(3_600_000)).toBe(5000);
  });

  it('holds ramp connections so that the cap is met halfway up, within 200 ms..2 s', () => {
    expect(rampHoldMs(100, 1600)).toBe(200);
    expect(rampHoldMs(500, 1600)).toBe(625);
    expect(rampHoldMs(5000, 1600)).toBe(2000);
  });

  it('floods the admin socket with more clients than any sane cap, at most 2000', () => {
    expect(adminFloodSize(20)).toBe(200);
    expect(adminFloodSize(2000)).toBe(1000);
    expect(adminFloodSize(50_000)).toBe(2000);
  });

  it('counts two descriptors per connection in the daemon, one in each agent', () => {
    expect(descriptorNeeds(2000, 1000)).toEqual({ daemon: 5512, agent: 3256 });
  });

  it('estimates longer for longer runs and fewer scenarios for less', () => {
    const all = { scenarios: [...SCENARIO_NAMES], durationMs: 60_000, connections: 200, rampMax: 1600 };
    expect(estimateSeconds({ ...all, durationMs: 300_000 })).toBeGreaterThan(estimateSeconds(all));
    expect(estimateSeconds({ ...all, scenarios: ['crash'] })).toBeLessThan(estimateSeconds(all));
  });
});
