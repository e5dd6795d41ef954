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
