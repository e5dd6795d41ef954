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

/**
 * The whole machine's busy CPU (every process, the kernel, the softirqs: two parseCpuTimes()
 * readings of /proc/stat, in clock ticks summed over the CPUs) per connection, in microseconds.
 */
export function machineMicrosPerConnection(before, after, clockTicksPerSec, connections) {
  if (!(connections > 0)) throw new RangeError('no connections completed');
  return (((after.busy - before.busy) / clockTicksPerSec) * 1e6) / connections;
}

/**
 * Packets each way per connection on each link, between two parseLinkPackets() readings.
 * @returns {Record<string, { tx: number, rx: number }>}
 */
export function packetsPerConnection(before, after, connections) {
  if (!(connections > 0)) throw new RangeError('no connections completed');
  const out = {};
  for (const [name, a] of Object.entries(after)) {
    const b = before[name];
    if (b) out[name] = { tx: (a.tx - b.tx) / connections, rx: (a.rx - b.rx) / connections };
  }
  return out;
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

/** The median of numbers (the mean of the middle two for an even count); null for none. */
export function median(values) {
  if (values.length === 0) return null;
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/**
 * Each round's ratio to the baseline's figure of the same round (round i against round i; both
 * ran within minutes of each other, so the machine's drift over a run cancels), per metric: what
 * tells "level" from "ahead" when the medians are close. A round where either lacks the figure
 * gives null.
 * @param {{ rounds?: { metrics: Record<string, number|null> }[] }} result merged (mergeRounds)
 * @param {typeof result} baseline merged
 * @param {string[]} keys
 * @returns {Record<string, (number|null)[]>} empty without rounds on both sides
 */
export function pairedRatios(result, baseline, keys) {
  const a = result.rounds ?? [];
  const b = baseline.rounds ?? [];
  const n = Math.min(a.length, b.length);
  if (n === 0) return {};
  const out = {};
  for (const key of keys) {
    out[key] = [];
    for (let i = 0; i < n; i++) {
      const x = a[i].metrics?.[key];
      const y = b[i].metrics?.[key];
      out[key].push(typeof x === 'number' && typeof y === 'number' && y !== 0 ? x / y : null);
    }
  }
  return out;
}

/** The order of the paths in round `round` (0-based): as given in even rounds, reversed in odd ones. */
export function roundOrder(paths, round) {
  return round % 2 === 0 ? [...paths] : [...paths].reverse();
}

/**
 * One path's result over several rounds: each metric is the median of the rounds that measured it,
 * the rest (notes, raw figures) is the first successful round's, and `rounds` keeps every round.
 * A single round is returned as it is.
 */
export function mergeRounds(rounds) {
  if (rounds.length === 1) return rounds[0];
  const ok = rounds.filter((r) => r.status === 'ok');
  const base = ok[0] ?? rounds[0];
  const metrics = {};
  const perRound = [];
  for (const key of Object.keys(base.metrics)) {
    const values = rounds.map((r) => r.metrics[key]).filter((v) => typeof v === 'number');
    metrics[key] = median(values);
    if (values.length > 0) perRound.push(`${key} ${values.map((v) => +v.toFixed(2)).join(' / ')}`);
  }
  return {
    ...base,
    status: ok.length > 0 ? 'ok' : base.status,
    metrics,
    notes: [...base.notes, `median of ${rounds.length} rounds (${ok.length} ok); per round: ${perRound.join('; ')}`],
    rounds,
  };
}
