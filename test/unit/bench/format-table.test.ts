import { describe, expect, it } from 'vitest';
import { formatCell, formatElapsed, formatRatio, formatTable, resultBaseName, COLUMNS } from '../../../scripts/bench/format.mjs';
import { baselineOf } from '../../../scripts/bench/plan.mjs';

const metrics = (m: Partial<Record<string, number | null>>) => ({
  gbit1: null, gbit8: null, connPerSec: null, p50Ms: null, p99Ms: null, cpuUsPerConn: null, machineUsPerConn: null, cpuSecPerGiB: null, kibPerIdleConn: null, ...m,
});

const haproxy = {
  name: 'haproxy', label: 'HAProxy', status: 'ok' as const,
  metrics: metrics({ gbit1: 10, gbit8: 12, connPerSec: 5000, p50Ms: 10, p99Ms: 40, cpuUsPerConn: 80, machineUsPerConn: 160, cpuSecPerGiB: 0.2, kibPerIdleConn: 3.5 }),
};
const direct = {
  name: 'direct', label: 'direct routing', status: 'ok' as const,
  metrics: metrics({ gbit1: 25, gbit8: 30, connPerSec: 22000, p50Ms: 2.5, p99Ms: 20, machineUsPerConn: 84 }),
  notApplicable: ['cpuUsPerConn', 'cpuSecPerGiB', 'kibPerIdleConn'],
};

describe('formatTable', () => {
  it('has the columns of the brief, and a separator row that right-aligns the figures', () => {
    const [header, sep] = formatTable([haproxy], baselineOf).split('\n');
    expect(header).toBe('| path | ratios to | 1-stream Gbit/s | 8-stream Gbit/s | conn/s | p50 ms | p99 ms | CPU µs/conn | machine µs/conn | CPU s/GiB | KiB/idle conn |');
    expect(sep).toBe('|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  });

  it('gives every figure its ratio to the baseline, and the baseline its plain figures', () => {
    const lines = formatTable([direct, haproxy], baselineOf).split('\n');
    expect(lines[2]).toBe('| direct routing | haproxy | 25.00 (2.50×) | 30.00 (2.50×) | 22,000 (4.40×) | 2.50 (0.25×) | 20.00 (0.50×) | n/a | 84 (0.53×) | n/a | n/a |');
    expect(lines[3]).toBe('| HAProxy [baseline] | (baseline) | 10.00 | 12.00 | 5,000 | 10.00 | 40.00 | 80 | 160 | 0.200 | 3.50 |');
  });

  it('compares each row with its own baseline, and names it', () => {
    const haproxyPp = { ...haproxy, name: 'haproxy-pp', label: 'HAProxy PROXY v2', metrics: metrics({ gbit1: 5, connPerSec: 4000 }) };
    const tpiPp = { ...haproxy, name: 'tpi-pp', label: 'tpi pp=true', metrics: metrics({ gbit1: 6, connPerSec: 5000 }) };
    const tpi = { ...haproxy, name: 'tpi', label: 'tpi pp=false', metrics: metrics({ gbit1: 6, connPerSec: 5000 }) };
    const lines = formatTable([haproxy, haproxyPp, tpi, tpiPp], baselineOf).split('\n');
    expect(lines[3]).toBe('| HAProxy PROXY v2 [baseline] | (baseline) | 5.00 | - | 4,000 | - | - | - | - | - | - |');
    expect(lines[4]).toBe('| tpi pp=false | haproxy | 6.00 (0.60×) | - | 5,000 (1.00×) | - | - | - | - | - | - |');
    expect(lines[5]).toBe('| tpi pp=true | haproxy-pp | 6.00 (1.20×) | - | 5,000 (1.25×) | - | - | - | - | - | - |');
  });

  it('shows a broken or failed path with its reason instead of figures', () => {
    const broken = { name: 'nginx', label: 'nginx', status: 'broken' as const, reason: 'backend saw 198.18.2.1, not the client 198.18.1.2', metrics: metrics({}) };
    const line = formatTable([haproxy, broken], baselineOf).split('\n')[3];
    expect(line).toBe('| nginx | haproxy | BROKEN: backend saw 198.18.2.1, not the client 198.18.1.2 | - | - | - | - | - | - | - | - |');
  });

  it('leaves out ratios, and says why, when the baseline did not run or failed', () => {
    const failed = { ...haproxy, status: 'failed' as const, reason: 'haproxy exited: [ALERT] x | y', metrics: metrics({}) };
    const lines = formatTable([direct, failed], baselineOf).split('\n');
    expect(lines[2]).toContain('| direct routing | - (haproxy not measured) | 25.00 | 30.00 | 22,000 |');
    expect(lines[3]).toContain('FAILED: haproxy exited: [ALERT] x \\| y');
    const tpiPp = { ...direct, name: 'tpi-pp', label: 'tpi pp=true' };
    expect(formatTable([haproxy, tpiPp], baselineOf).split('\n')[3]).toContain('| tpi pp=true | - (haproxy-pp not measured) | 25.00 |');
  });

  it('puts CPU µs/conn right after p99, with its ratio to the baseline', () => {
    const tpi = { ...haproxy, name: 'tpi', label: 'tpi', metrics: metrics({ cpuUsPerConn: 212 }) };
    const [header, , , row] = formatTable([haproxy, tpi], baselineOf).split('\n');
    const titles = header.split(' | ');
    expect(titles.indexOf('CPU µs/conn')).toBe(titles.indexOf('p99 ms') + 1);
    expect(row.split(' | ')[titles.indexOf('CPU µs/conn')]).toBe('212 (2.65×)');
  });

  it('marks a figure whose measurement failed as error', () => {
    const r = { ...haproxy, name: 'tpi', metrics: metrics({ gbit1: 5 }), metricErrors: { gbit8: 'iperf3: unable to connect' } };
    expect(formatCell(r, COLUMNS[1], haproxy)).toBe('error');
    expect(formatCell(r, COLUMNS[2], haproxy)).toBe('-');
    expect(formatCell(r, COLUMNS[0], haproxy)).toBe('5.00 (0.50×)');
  });
});

describe('formatRatio', () => {
  it('is value / baseline with two decimals, one past 10×', () => {
    expect(formatRatio(1, 3)).toBe('0.33×');
    expect(formatRatio(42, 2)).toBe('21.0×');
    expect(formatRatio(1, 0)).toBeNull();
    expect(formatRatio(null, 1)).toBeNull();
  });
});

describe('names and times', () => {
  it('result files are named by UTC time', () => {
    expect(resultBaseName(new Date(Date.UTC(2026, 0, 2, 3, 4, 5)))).toBe('bench-20260102-030405');
  });

  it('elapsed time reads as minutes and seconds', () => {
    expect(formatElapsed(5.4)).toBe('5s');
    expect(formatElapsed(65)).toBe('1m 05s');
  });
});
