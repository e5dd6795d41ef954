import { describe, expect, it } from 'vitest';
import { descendantsOf, parseNofileHardLimit, parseProcStat, parseVmRssKiB } from '../../../scripts/bench/parse.mjs';
import { cpuSecondsPerGiB, GIB, gbitPerSec, kibPerConnection, totalTicks } from '../../../scripts/bench/compute.mjs';

describe('/proc readings', () => {
  it('parses utime/stime/ppid of a stat line, also when the name holds spaces and parentheses', () => {
    const line = '4242 (nginx: worker (x)) S 4241 4241 4241 0 -1 4194624 120 0 0 0 37 15 0 0 20 0 1 0 123 1000 200 18446744073709551615';
    expect(parseProcStat(line)).toEqual({ pid: 4242, comm: 'nginx: worker (x)', ppid: 4241, utime: 37, stime: 15, starttime: 123 });
  });

  it('reads VmRSS in KiB, 0 when there is none', () => {
    expect(parseVmRssKiB('Name:\thaproxy\nVmPeak:\t  99 kB\nVmRSS:\t   16400 kB\nThreads:\t2\n')).toBe(16400);
    expect(parseVmRssKiB('Name:\tkthreadd\nThreads:\t1\n')).toBe(0);
  });

  it('collects a process and all its descendants (nginx master and workers), nothing else', () => {
    const procs = [
      { pid: 1, ppid: 0 },
      { pid: 10, ppid: 1 },
      { pid: 11, ppid: 10 },
      { pid: 12, ppid: 10 },
      { pid: 13, ppid: 12 },
      { pid: 20, ppid: 1 },
    ];
    expect(descendantsOf(10, procs)).toEqual([10, 11, 12, 13]);
    expect(descendantsOf(99, procs)).toEqual([]);
  });

  it('reads the hard open-files limit', () => {
    const limits = 'Limit                     Soft Limit           Hard Limit           Units\nMax open files            20000                20000                files\n';
    expect(parseNofileHardLimit(limits)).toBe(20000);
    expect(parseNofileHardLimit(limits.replace('20000                files', 'unlimited            files'))).toBe(Infinity);
  });
});

describe('figures', () => {
  it('CPU seconds per GiB from clock ticks', () => {
    expect(cpuSecondsPerGiB(60, 100, 3 * GIB)).toBeCloseTo(0.2);
    expect(() => cpuSecondsPerGiB(60, 100, 0)).toThrow(RangeError);
  });

  it('KiB per held connection from RSS before and after', () => {
    expect(kibPerConnection(16400, 50536, 9500)).toBeCloseTo(3.593, 3);
    expect(() => kibPerConnection(1, 2, 0)).toThrow(RangeError);
  });

  it('Gbit/s and summed ticks', () => {
    expect(gbitPerSec(13_646_844_495)).toBeCloseTo(13.65, 2);
    expect(totalTicks([{ utime: 3, stime: 4 }, { utime: 10, stime: 0 }])).toBe(17);
  });
});

describe('host CPU', () => {
  it('reads busy and total jiffies of /proc/stat and the busy share between two readings', async () => {
    const { parseCpuTimes } = await import('../../../scripts/bench/parse.mjs');
    const { busyPercent } = await import('../../../scripts/bench/compute.mjs');
    const a = parseCpuTimes('cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\n');
    expect(a).toEqual({ busy: 150, total: 1000 });
    const b = parseCpuTimes('cpu  200 0 100 850 50 0 0 0 0 0\n');
    expect(busyPercent(a, b)).toBeCloseTo(75);
  });
});
