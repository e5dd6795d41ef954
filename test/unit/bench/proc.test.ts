import { describe, expect, it } from 'vitest';
import { descendantsOf, parseCpuTimes, parseLinkPackets, parseNofileHardLimit, parseProcStat, parseVmRssKiB } from '../../../scripts/bench/parse.mjs';
import { cpuSecondsPerGiB, GIB, gbitPerSec, kibPerConnection, machineMicrosPerConnection, packetsPerConnection, totalTicks } from '../../../scripts/bench/compute.mjs';
import { formatPacketNote } from '../../../scripts/bench/format.mjs';

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

describe('the whole machine during wrk', () => {
  it('busy CPU of all CPUs per connection, from two /proc/stat readings (idle and iowait left out)', () => {
    const before = parseCpuTimes('cpu  100 0 200 1000 10 0 50 0 0 0\ncpu0 50 0 100 500 5 0 25 0 0 0\n');
    const after = parseCpuTimes('cpu  300 0 700 1100 20 0 350 0 0 0\ncpu0 150 0 350 550 10 0 175 0 0 0\n');
    // busy grew by 200 + 500 + 300 = 1000 ticks = 10 CPU seconds at 100 Hz, over 50,000 connections
    expect(machineMicrosPerConnection(before, after, 100, 50_000)).toBeCloseTo(200);
    expect(() => machineMicrosPerConnection(before, after, 100, 0)).toThrow(RangeError);
  });

  it('reads packet counters per link from `ip -s -j link` and divides their growth per connection', () => {
    const link = (name: string, tx: number, rx: number) => ({ ifname: name, stats64: { rx: { bytes: 1, packets: rx }, tx: { bytes: 1, packets: tx } } });
    const before = parseLinkPackets(JSON.stringify([link('lo', 0, 0), link('eth0', 100, 200), link('eth1', 10, 20)]));
    const after = parseLinkPackets(JSON.stringify([link('lo', 0, 0), link('eth0', 590, 712), link('eth1', 510, 520), link('veth9', 5, 5)]));
    const per = packetsPerConnection(before, after, 100);
    expect(per).toEqual({ lo: { tx: 0, rx: 0 }, eth0: { tx: 4.9, rx: 5.12 }, eth1: { tx: 5, rx: 5 } });
    expect(formatPacketNote(per, { eth0: 'client side', eth1: 'backend side' })).toBe(
      'packets per connection during wrk on the gateway: eth0 (client side) 4.90 out / 5.12 in; eth1 (backend side) 5.00 out / 5.00 in',
    );
    expect(formatPacketNote({}, { eth0: 'client side' })).toBe('packets per connection during wrk on the gateway: no link counters');
    expect(() => parseLinkPackets('ip: not json')).toThrow(/ip -s -j link: not JSON/);
  });
});
