// Arithmetic of the figures. Pure.

export const GIB = 1024 ** 3;

export function gbitPerSec(bitsPerSecond) {
  return bitsPerSecond / 1e9;
}

/** CPU seconds (utime + stime, in clock ticks) per GiB relayed. */
export function cpuSecondsPerGiB(ticks, clockTicksPerSec, bytes) {
  if (!(bytes > 0)) throw new RangeError('no bytes relayed');
  return ticks / clockTicksPerSec / (bytes / GIB);
}

/** CPU microseconds (utime + stime, in clock ticks) per connection completed. */
export function cpuMicrosPerConnection(ticks, clockTicksPerSec, connections) {
  if (!(connections > 0)) throw new RangeError('no connections completed');
  return ((ticks / clockTicksPerSec) * 1e6) / connections;
}

/** Resident memory growth per held connection, in KiB (RSS as /proc reports it, in KiB). */
export function kibPerConnection(rssBeforeKiB, rssAfterKiB, connections) {
  if (!(connections > 0)) throw new RangeError('no connections held');
  return (rssAfterKiB - rssBeforeKiB) / connections;
}

/** Sum of utime + stime over process snapshots (from parseProcStat). */
export function totalTicks(stats) {
  return stats.reduce((sum, s) => sum + s.utime + s.stime, 0);
}

/** Percentage of the machine's CPU that was busy between two parseCpuTimes() readings. */
export function busyPercent(before, after) {
  const total = after.total - before.total;
  return total > 0 ? (100 * (after.busy - before.busy)) / total : 0;
}

/**
 * CPU per thread name between two readings of the same processes' threads (parseProcStat of
 * /proc/PID/task/TID/stat): `cores` is CPU seconds per wall second. A thread is the same one only
 * with the same tid and start time; one that started in between counts from zero, one that ended
 * in between is missing (the kernel moves its time to its process's total).
 * @param {{ pid: number, comm: string, starttime: number, utime: number, stime: number }[]} before
 * @param {typeof before} after
 * @returns {{ name: string, threads: number, ticks: number, cores: number }[]} busiest first
 */
export function threadCpuProfile(before, after, clockTicksPerSec, seconds) {
  if (!(seconds > 0)) throw new RangeError('no time elapsed');
  const key = (t) => `${t.pid}/${t.starttime}`;
  const start = new Map(before.map((t) => [key(t), t.utime + t.stime]));
  const groups = new Map();
  for (const t of after) {
    const ticks = t.utime + t.stime - (start.get(key(t)) ?? 0);
    const g = groups.get(t.comm) ?? { name: t.comm, threads: 0, ticks: 0 };
    g.threads++;
    g.ticks += ticks;
    groups.set(t.comm, g);
  }
  return [...groups.values()]
    .map((g) => ({ ...g, cores: g.ticks / clockTicksPerSec / seconds }))
    .sort((a, b) => b.ticks - a.ticks || a.name.localeCompare(b.name));
}
