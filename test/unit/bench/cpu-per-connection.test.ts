import { describe, expect, it } from 'vitest';
import { cpuMicrosPerConnection } from '../../../scripts/bench/compute.mjs';
import { formatCell, COLUMNS } from '../../../scripts/bench/format.mjs';

describe('cpuMicrosPerConnection', () => {
  it('is the proxy tree CPU during wrk in µs, per request wrk completed (one connection each)', () => {
    // 1.62 CPU s (162 ticks at 100 Hz) for 15,600 requests in a 2 s run.
    expect(cpuMicrosPerConnection(162, 100, 15_600)).toBeCloseTo(103.85, 2);
    expect(cpuMicrosPerConnection(0, 100, 10)).toBe(0);
  });

  it('uses the clock tick rate it is given', () => {
    expect(cpuMicrosPerConnection(250, 250, 1000)).toBeCloseTo(1000);
  });

  it('refuses a run in which no request completed', () => {
    expect(() => cpuMicrosPerConnection(12, 100, 0)).toThrow(RangeError);
    expect(() => cpuMicrosPerConnection(12, 100, Number.NaN)).toThrow(/no connections completed/);
  });
});

describe('the CPU µs/conn cell', () => {
  const column = COLUMNS.find((c) => c.key === 'cpuUsPerConn')!;
  const base = { name: 'haproxy', label: 'HAProxy', status: 'ok' as const, metrics: { cpuUsPerConn: 84.6 } };

  it('is whole µs with the ratio to the baseline; lower is better, so a ratio above 1 is worse', () => {
    expect(column.title).toBe('CPU µs/conn');
    expect(formatCell(base, column, base)).toBe('85');
    expect(formatCell({ ...base, name: 'tpi', metrics: { cpuUsPerConn: 1_523.4 } }, column, base)).toBe('1,523 (18.0×)');
  });

  it('is n/a for direct routing and error when wrk failed', () => {
    const direct = { name: 'direct', label: 'direct', status: 'ok' as const, metrics: { cpuUsPerConn: null }, notApplicable: ['cpuUsPerConn'] };
    expect(formatCell(direct, column, base)).toBe('n/a');
    const failed = { ...base, name: 'tpi', metrics: { cpuUsPerConn: null }, metricErrors: { cpuUsPerConn: 'wrk completed no requests' } };
    expect(formatCell(failed, column, base)).toBe('error');
  });
});
