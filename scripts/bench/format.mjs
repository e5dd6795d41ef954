// The results as a Markdown table, each figure with its ratio to the baseline path. Pure.

/**
 * @typedef {{ gbit1: number|null, gbit8: number|null, connPerSec: number|null, p50Ms: number|null,
 *   p99Ms: number|null, cpuUsPerConn: number|null, machineUsPerConn: number|null, cpuSecPerGiB: number|null, kibPerIdleConn: number|null }} Metrics
 * @typedef {{ name: string, label: string, status: 'ok'|'broken'|'failed', reason?: string|null,
 *   metrics: Metrics, metricErrors?: Record<string, string>, notApplicable?: string[] }} PathResult
 */

export const COLUMNS = Object.freeze([
  { key: 'gbit1', title: '1-stream Gbit/s', digits: 2 },
  { key: 'gbit8', title: '8-stream Gbit/s', digits: 2 },
  { key: 'connPerSec', title: 'conn/s', digits: 0 },
  { key: 'p50Ms', title: 'p50 ms', digits: 2 },
  { key: 'p99Ms', title: 'p99 ms', digits: 2 },
  { key: 'cpuUsPerConn', title: 'CPU µs/conn', digits: 0 },
  { key: 'machineUsPerConn', title: 'machine µs/conn', digits: 0 },
  { key: 'cpuSecPerGiB', title: 'CPU s/GiB', digits: 3 },
  { key: 'kibPerIdleConn', title: 'KiB/idle conn', digits: 2 },
]);

export function formatNumber(value, digits) {
  if (digits === 0) return Math.round(value).toLocaleString('en-US');
  return value.toFixed(digits);
}

/** "0.95×"; null when there is nothing sensible to divide by. */
export function formatRatio(value, baseline) {
  if (typeof value !== 'number' || typeof baseline !== 'number' || !Number.isFinite(value) || !Number.isFinite(baseline)) return null;
  if (baseline === 0) return null;
  const r = value / baseline;
  return `${r >= 10 || r <= -10 ? r.toFixed(1) : r.toFixed(2)}×`;
}

function escapeCell(text) {
  return String(text).replace(/\|/g, '\\|').replace(/\n/g, ' ');
}

/** One cell: the figure, "(ratio)" against the baseline, or why there is none. */
export function formatCell(result, column, baselineResult) {
  const value = result.metrics?.[column.key];
  if (typeof value === 'number' && Number.isFinite(value)) {
    const text = formatNumber(value, column.digits);
    if (!baselineResult || baselineResult === result) return text;
    const ratio = formatRatio(value, baselineResult.metrics?.[column.key]);
    return ratio ? `${text} (${ratio})` : text;
  }
  if (result.notApplicable?.includes(column.key)) return 'n/a';
  if (result.metricErrors?.[column.key]) return 'error';
  return '-';
}

/**
 * The table, each row's ratios to its own baseline path, which the "ratios to" column names:
 * `baselineOf(name)` gives a path's baseline, null for a baseline itself (its row says so and
 * has plain figures). A row whose baseline did not run, or failed, has no ratios.
 * @param {PathResult[]} results in the order measured
 * @param {(name: string) => string | null} baselineOf
 * @returns {string} Markdown table
 */
export function formatTable(results, baselineOf) {
  const ok = new Map(results.filter((r) => r.status === 'ok').map((r) => [r.name, r]));
  const header = ['path', 'ratios to', ...COLUMNS.map((c) => c.title)];
  const lines = [`| ${header.join(' | ')} |`, `|${header.map((_, i) => (i < 2 ? '---' : '---:')).join('|')}|`];
  for (const r of results) {
    const baselineName = baselineOf(r.name);
    const baseline = baselineName ? ok.get(baselineName) ?? null : null;
    const name = baselineName ? r.label : `${r.label} [baseline]`;
    const against = !baselineName ? '(baseline)' : baseline ? baselineName : `- (${baselineName} not measured)`;
    let cells;
    if (r.status === 'ok') cells = COLUMNS.map((c) => formatCell(r, c, baseline));
    else cells = [`${r.status.toUpperCase()}: ${r.reason ?? 'unknown'}`, ...COLUMNS.slice(1).map(() => '-')];
    lines.push(`| ${[name, against, ...cells].map(escapeCell).join(' | ')} |`);
  }
  return lines.join('\n');
}

/** Above this many thread names, names that differ only in a trailing number are summed. */
const THREAD_NAMES_SHOWN = 6;

/**
 * A threadCpuProfile() as one line, busiest first: "tpi-loop-0 0.41 cores, node 0.30,
 * libuv-worker ×4 0.02". When there are more names than fit, "tpi-loop-0" and
 * "tpi-loop-1" become "tpi-loop-* ×2", and what still does not fit is summed as "others".
 * Names below 0.005 cores are left out.
 * @param {{ name: string, threads: number, cores: number }[]} groups
 */
export function formatThreadProfile(groups, maxNames = THREAD_NAMES_SHOWN) {
  let shown = groups;
  if (shown.length > maxNames) {
    const merged = new Map();
    for (const g of shown) {
      const name = g.name.replace(/\d+$/, '*');
      const m = merged.get(name) ?? { name, threads: 0, cores: 0 };
      m.threads += g.threads;
      m.cores += g.cores;
      merged.set(name, m);
    }
    shown = [...merged.values()].sort((a, b) => b.cores - a.cores || a.name.localeCompare(b.name));
  }
  shown = shown.filter((g) => g.cores >= 0.005);
  const rest = shown.slice(maxNames);
  shown = shown.slice(0, maxNames);
  if (rest.length > 0) {
    shown.push({ name: 'others', threads: rest.reduce((n, g) => n + g.threads, 0), cores: rest.reduce((c, g) => c + g.cores, 0) });
  }
  if (shown.length === 0) return 'idle';
  return shown.map((g, i) => `${g.name}${g.threads > 1 ? ` ×${g.threads}` : ''} ${g.cores.toFixed(2)}${i === 0 ? ' cores' : ''}`).join(', ');
}

/**
 * The per-path note: "CPU during wrk by thread: haproxy ×2 0.93 cores (process tree 0.93 cores
 * over 2.04 s)". The tree's figure also holds threads that ended during the run.
 * @param {{ during: string, seconds: number, clockTicksPerSec: number, processTicks: number,
 *   threads: { name: string, threads: number, cores: number }[] }} profile
 */
export function formatThreadNote(profile) {
  const treeCores = profile.processTicks / profile.clockTicksPerSec / profile.seconds;
  return `CPU during ${profile.during} by thread: ${formatThreadProfile(profile.threads)} (process tree ${treeCores.toFixed(2)} cores over ${profile.seconds.toFixed(2)} s)`;
}

/**
 * The per-path note: "packets per connection during wrk on the gateway: eth0 (client side) 4.90
 * out / 5.12 in; eth1 (backend side) 5.00 out / 5.00 in". Links are listed in `labels` order;
 * the others are left out.
 * @param {Record<string, { tx: number, rx: number }>} packets
 * @param {Record<string, string>} labels link name -> what it faces
 */
export function formatPacketNote(packets, labels) {
  const parts = Object.entries(labels)
    .filter(([name]) => packets[name])
    .map(([name, label]) => `${name} (${label}) ${packets[name].tx.toFixed(2)} out / ${packets[name].rx.toFixed(2)} in`);
  return `packets per connection during wrk on the gateway: ${parts.length > 0 ? parts.join('; ') : 'no link counters'}`;
}

/**
 * The per-path note of its rounds' ratios to the baseline's same rounds: "ratios to haproxy
 * round by round: conn/s 0.98× / 1.11× / 1.06×; p99 ms 1.02× / 0.93× / 0.99×". Columns without
 * any ratio are left out; null for no column at all.
 * @param {Record<string, (number|null)[]>} ratios pairedRatios()
 */
export function formatPairedRatios(baselineName, ratios) {
  const parts = COLUMNS.filter((c) => ratios[c.key]?.some((r) => r !== null)).map(
    (c) => `${c.title} ${ratios[c.key].map((r) => (r === null ? '-' : `${r.toFixed(2)}×`)).join(' / ')}`,
  );
  return parts.length > 0 ? `ratios to ${baselineName} round by round: ${parts.join('; ')}` : null;
}

/** Wall-clock seconds as "1m 05s". */
export function formatElapsed(seconds) {
  const s = Math.max(0, Math.round(seconds));
  const m = Math.floor(s / 60);
  return m > 0 ? `${m}m ${String(s % 60).padStart(2, '0')}s` : `${s}s`;
}

/** "bench-20260102-030405" for a Date, in UTC (the soak's report: "soak-20260102-030405"). */
export function resultBaseName(date, tool = 'bench') {
  const p = (n) => String(n).padStart(2, '0');
  return `${tool}-${date.getUTCFullYear()}${p(date.getUTCMonth() + 1)}${p(date.getUTCDate())}-${p(date.getUTCHours())}${p(date.getUTCMinutes())}${p(date.getUTCSeconds())}`;
}
