// The soak's report: headline figures gathered from the scenarios, the checks, and the verdict,
// as Markdown (printed and written) beside the JSON. Pure.
import { formatBytes, mib } from './figures.mjs';
import { failureLines } from './verdict.mjs';

const cell = (v) => String(v).replace(/\|/g, '\\|').replace(/\n/g, ' ');

/**
 * @param {Array<{ scenario: string, figures: Record<string, any> }>} scenarios
 * @returns {Array<[string, string]>} figure name and value, in reading order; figures of
 *   scenarios that did not run are left out
 */
export function headlineFigures(scenarios) {
  const f = Object.fromEntries(scenarios.map((s) => [s.scenario, s.figures]));
  const rows = [];
  const load = f.load;
  if (load?.held !== undefined) {
    rows.push(['connections held at once', `${load.held} (${load.held - load.heldPp} pp=false, ${load.heldPp} pp=true; ${load.heldV6} over IPv6), opened in ${load.openMs} ms`]);
  }
  const bytes = scenarios.reduce((n, s) => n + (s.figures.bytesVerified ?? 0) + (s.figures.warmupBytesVerified ?? 0), 0);
  if (bytes > 0) rows.push(['bytes verified (every byte compared on arrival, both ways)', `${formatBytes(bytes)}${load?.bytesLost ? `; ${formatBytes(load.bytesLost)} LOST` : ''}`]);
  if (load?.resources) {
    const r = load.resources;
    rows.push(['daemon descriptors before / peak / after', `${r.fdsBefore} / ${r.fdsPeak} / ${r.fdsAfter}`]);
    rows.push(['daemon RSS before / peak / after', `${mib(r.rssBeforeKiB)} / ${mib(r.rssPeakKiB)} / ${mib(r.rssAfterKiB)} MiB`]);
  }
  const faults = scenarios.filter((s) => s.figures.faults);
  if (faults.length) {
    const injected = faults.reduce((n, s) => n + s.figures.faults.injected, 0);
    const handled = faults.reduce((n, s) => n + s.figures.faults.handled, 0);
    rows.push(['faults injected / handled as expected', `${injected} / ${handled} (${faults.map((s) => `${s.scenario} ${s.figures.faults.handled}/${s.figures.faults.injected}`).join(', ')})`]);
  }
  const bf = f['backend-faults']?.faults?.kinds;
  if (bf) rows.push(['backend faults', Object.entries(bf).map(([k, t]) => `${k} ${t.asExpected}/${t.injected} (slowest ${t.slowestMs} ms)`).join(', ')]);
  if (f.crash?.registrations) {
    const r = f.crash.registrations;
    rows.push(['registrations acknowledged before kill -9 / lost', `${r.acked} / ${r.lost} (${r.inFlightOrFailed} in flight at the kill or refused)`]);
    rows.push(['while down: clients connected / backend accepted', `${f.crash.downWindow.clientsConnected} / ${f.crash.downWindow.backendAccepted} (${f.crash.downWindow.probes} probes); restart took ${f.crash.restartMs} ms`]);
  }
  if (f['hostile-admin']?.flood) {
    const a = f['hostile-admin'].flood;
    rows.push(['stuck admin clients: opened / still held after 2 s / last closed after', `${a.clients} / ${a.heldAfter2s} / ${a.slowestCloseMs} ms; admin answered again after ${a.answeredMs ?? 'never'} ms`]);
  }
  const cap = f.capacity;
  if (cap?.hold) rows.push([`connections against max_connections = ${cap.hold.cap}`, `${cap.hold.total} opened: ${cap.hold.whole} held whole, ${cap.hold.shed} reset at once, ${cap.hold.other} neither`]);
  if (cap && 'sheddingStartsAt' in cap) rows.push(['shedding starts at', rateText(cap.sheddingStartsAt, cap.ramp)]);
  if (cap && 'failuresStartAt' in cap) rows.push(['failures start at (no cap)', rateText(cap.failuresStartAt, cap.ramp)]);
  return rows;
}

function rateText(rate, ramp) {
  const held = ramp ? `, each connection held ${ramp.holdMs} ms, ${ramp.stepMs} ms per step` : '';
  const limit = ramp?.clientLimitRate != null ? `; the client's own limit at ${ramp.clientLimitRate}/s` : '';
  return rate === null ? `none up to ${ramp?.maxRateTried}/s (the highest rate measured${held}${limit})` : `${rate} new connections/s${held}${limit}`;
}

/**
 * @param {{ startedAt: string, elapsedSec: number, host: object, options: object, seed: string,
 *   scenarios: Array<{ scenario: string, checks: object[], figures: object, seconds: number }>, verdict: object }} report
 */
export function markdown(report) {
  const v = report.verdict;
  const h = report.host;
  const o = report.options;
  const lines = [
    `# tproxy-interceptor soak, ${report.startedAt}: ${v.ok ? 'PASSED' : 'FAILED'} (${v.total - v.failed.length} of ${v.total} checks passed)`,
    '',
    `${h.cpus} vCPU, ${h.memoryGiB} GiB, Linux ${h.kernel}, node ${h.node}${h.commit ? `, commit ${h.commit}` : ''}; open-files limit ${h.nofile}. ` +
      `--duration ${o.durationMs / 1000}s --connections ${o.connections} --cap ${o.cap} --seed ${report.seed}` +
      `${o.settings.length ? ` ${o.settings.map(([k, val]) => `--set ${k}=${val}`).join(' ')}` : ''}; scenarios ${o.scenarios.join(', ')}; took ${Math.round(report.elapsedSec)} s.`,
    '',
    '| figure | value |',
    '|---|---|',
    ...headlineFigures(report.scenarios).map(([k, val]) => `| ${cell(k)} | ${cell(val)} |`),
    '',
    '| | scenario | check | detail |',
    '|---|---|---|---|',
    ...report.scenarios.flatMap((s) =>
      s.checks.map((c) => `| ${c.ok ? 'pass' : '**FAIL**'} | ${s.scenario} | ${cell(c.name)}${c.missing ? ` (missing: \`${c.missing}\`)` : ''} | ${cell(c.detail)} |`),
    ),
    '',
  ];
  if (!v.ok) lines.push('## Failed', '', ...failureLines(v).map((l) => `- ${l}`), '');
  return lines.join('\n');
}
