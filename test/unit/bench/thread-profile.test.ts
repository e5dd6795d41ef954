import { describe, expect, it } from 'vitest';
import { parseProcStat } from '../../../scripts/bench/parse.mjs';
import { threadCpuProfile } from '../../../scripts/bench/compute.mjs';
import { formatThreadNote, formatThreadProfile } from '../../../scripts/bench/format.mjs';

// /proc/PID/task/TID/stat as Linux 6.x prints it (from a node process), with name, utime,
// stime and starttime (fields 2, 14, 15, 22) filled in.
const stat = (tid: number, comm: string, utime: number, stime: number, starttime = 971261) =>
  `${tid} (${comm}) S 24646 24646 20654 0 -1 4194368 4 0 0 0 ${utime} ${stime} 0 0 20 0 7 0 ${starttime} 746246144 10532 18446744073709551615 11988992 39846385 140731028463120 0 0 0 512 16781312 17922 1 0 0 -1 0 0 0 0 0 0 90418\n`;
const read = (lines: string[]) => lines.map((l) => parseProcStat(l));

describe('a thread stat line', () => {
  it('gives the tid, the thread name and its own times', () => {
    expect(parseProcStat(stat(24650, 'splice-relay-0', 41, 7))).toEqual({ pid: 24650, comm: 'splice-relay-0', ppid: 24646, utime: 41, stime: 7, starttime: 971261 });
  });
});

describe('threadCpuProfile', () => {
  const before = read([stat(100, 'node', 500, 100), stat(101, 'node', 2, 0), stat(102, 'acceptor-1', 10, 40), stat(103, 'splice-relay-0', 0, 300), stat(104, 'splice-relay-1', 0, 280)]);

  it('sums per thread name the CPU between the readings, as cores over the wall time, busiest first', () => {
    const after = read([stat(100, 'node', 530, 110), stat(101, 'node', 4, 0), stat(102, 'acceptor-1', 12, 50), stat(103, 'splice-relay-0', 1, 381), stat(104, 'splice-relay-1', 0, 330)]);
    expect(threadCpuProfile(before, after, 100, 2)).toEqual([
      { name: 'splice-relay-0', threads: 1, ticks: 82, cores: 0.41 },
      { name: 'splice-relay-1', threads: 1, ticks: 50, cores: 0.25 },
      { name: 'node', threads: 2, ticks: 42, cores: 0.21 },
      { name: 'acceptor-1', threads: 1, ticks: 12, cores: 0.06 },
    ]);
  });

  it('counts a thread that started during the run from zero, also when it reuses a tid', () => {
    const after = read([stat(100, 'node', 500, 100), stat(105, 'libuv-worker', 3, 1, 980000), stat(101, 'haproxy', 6, 4, 990000)]);
    const profile = threadCpuProfile(before.slice(0, 2), after, 100, 1);
    expect(profile).toEqual([
      { name: 'haproxy', threads: 1, ticks: 10, cores: 0.1 },
      { name: 'libuv-worker', threads: 1, ticks: 4, cores: 0.04 },
      { name: 'node', threads: 1, ticks: 0, cores: 0 },
    ]);
  });

  it('refuses a zero-length run', () => {
    expect(() => threadCpuProfile(before, before, 100, 0)).toThrow(RangeError);
  });
});

describe('formatThreadProfile', () => {
  it('lists names busiest first, the first with its unit, leaving out idle ones', () => {
    const line = formatThreadProfile([
      { name: 'splice-relay-0', threads: 1, cores: 0.41 },
      { name: 'node', threads: 7, cores: 0.3 },
      { name: 'acceptor-1', threads: 1, cores: 0.12 },
      { name: 'splice-relay-1', threads: 1, cores: 0.004 },
    ]);
    expect(line).toBe('splice-relay-0 0.41 cores, node ×7 0.30, acceptor-1 0.12');
  });

  it('sums names that differ in a trailing number only when there are too many names', () => {
    const groups = ['a-0', 'a-1', 'b-0', 'b-1', 'c'].map((name, i) => ({ name, threads: 1, cores: 0.5 - i * 0.1 }));
    expect(formatThreadProfile(groups, 5)).toBe('a-0 0.50 cores, a-1 0.40, b-0 0.30, b-1 0.20, c 0.10');
    expect(formatThreadProfile(groups, 4)).toBe('a-* ×2 0.90 cores, b-* ×2 0.50, c 0.10');
  });

  it('sums what still does not fit as others', () => {
    const groups = ['p', 'q', 'r', 's'].map((name, i) => ({ name, threads: 2, cores: 0.4 - i * 0.1 }));
    expect(formatThreadProfile(groups, 2)).toBe('p ×2 0.40 cores, q ×2 0.30, others ×4 0.30');
  });

  it('says idle when no thread used a measurable share', () => {
    expect(formatThreadProfile([{ name: 'haproxy', threads: 2, cores: 0 }])).toBe('idle');
    expect(formatThreadProfile([])).toBe('idle');
  });
});

describe('formatThreadNote', () => {
  it('names the run and gives the whole process tree for comparison', () => {
    const note = formatThreadNote({
      during: 'wrk', seconds: 2.04, clockTicksPerSec: 100, processTicks: 190,
      threads: [{ name: 'haproxy', threads: 2, ticks: 188, cores: 0.9216 }],
    });
    expect(note).toBe('CPU during wrk by thread: haproxy ×2 0.92 cores (process tree 0.93 cores over 2.04 s)');
  });
});
