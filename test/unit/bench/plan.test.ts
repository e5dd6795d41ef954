import { describe, expect, it } from 'vitest';
import { baselineOf, estimateSeconds, idleConnectionBudget, portsFor, PATHS, INTERCEPTED_PORTS } from '../../../scripts/bench/plan.mjs';

describe('plan', () => {
  it('sends the pp=true path to the PROXY-aware backend ports, the others to the plain ones', () => {
    const pp = PATHS.find((p) => p.name === 'tpi-pp')!;
    const plain = PATHS.find((p) => p.name === 'tpi')!;
    expect(portsFor(pp)).toEqual({ iperf: 5202, http: 8080, hold: 9000 });
    expect(portsFor(plain)).toEqual({ iperf: 5201, http: 8081, hold: 9000 });
    for (const p of [portsFor(pp), portsFor(plain)]) {
      for (const port of Object.values(p)) expect(INTERCEPTED_PORTS).toContain(port);
    }
  });

  it('compares pp=true with HAProxy sending PROXY headers to the same backend ports, pp=false with transparent HAProxy', () => {
    const haproxyPp = PATHS.find((p) => p.name === 'haproxy-pp')!;
    expect(haproxyPp.proxy).toBe('haproxy');
    expect(portsFor(haproxyPp)).toEqual(portsFor(PATHS.find((p) => p.name === 'tpi-pp')!));
    expect(baselineOf('tpi-pp')).toBe('haproxy-pp');
    for (const name of ['direct', 'nginx', 'tpi']) expect(baselineOf(name)).toBe('haproxy');
    expect(baselineOf('haproxy')).toBeNull();
    expect(baselineOf('haproxy-pp')).toBeNull();
    // Every baseline named is a path, of the same pp kind as the paths compared with it.
    for (const p of PATHS) {
      if (!p.baseline) continue;
      const b = PATHS.find((q) => q.name === p.baseline)!;
      expect(b.baseline).toBeNull();
      if (p.proxy) expect(b.pp).toBe(p.pp);
    }
  });

  it('estimates three measured runs per path plus the idle figure for proxies', () => {
    const direct = estimateSeconds(['direct'], 10);
    const haproxy = estimateSeconds(['haproxy'], 10);
    expect(haproxy).toBeGreaterThan(direct);
    expect(estimateSeconds(['direct', 'haproxy'], 10) - estimateSeconds(['direct', 'haproxy'], 3)).toBeCloseTo(2 * 3 * 7, 0);
    expect(() => estimateSeconds(['squid'], 3)).toThrow(RangeError);
  });

  it('counts only the runs --measure asks for', () => {
    const all = estimateSeconds(['haproxy'], 10, 10_000);
    expect(estimateSeconds(['haproxy'], 10, 10_000, ['connections']) - estimateSeconds(['haproxy'], 1, 10_000, ['connections'])).toBeCloseTo(9, 0);
    expect(estimateSeconds(['haproxy'], 10, 10_000, ['throughput', 'connections'])).toBeLessThan(all);
    expect(estimateSeconds(['haproxy'], 10, 10_000, ['throughput'])).toBeLessThan(estimateSeconds(['haproxy'], 10, 10_000, ['throughput', 'connections']));
  });

  it('holds as many idle connections as two descriptors each allow, in hundreds', () => {
    expect(idleConnectionBudget(10_000, 20_000)).toBe(9_500);
    expect(idleConnectionBudget(10_000, 262_144)).toBe(10_000);
    expect(idleConnectionBudget(10_000, Infinity)).toBe(10_000);
    expect(idleConnectionBudget(10_000, 900)).toBe(0);
  });
});
