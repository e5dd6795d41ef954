// Figures from what the soak sampled: peaks, returns to baseline, percentiles, the ramp's
// failure (or shedding) onset. Pure.

/** The p-th percentile (0..100, nearest rank) of numbers; null for none. */
export function percentile(values, p) {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length)));
  return sorted[rank - 1];
}

/**
 * Descriptors and RSS of the daemon: before, the highest seen, after.
 * @param {{ fds: number, rssKiB: number }} before
 * @param {Array<{ fds: number, rssKiB: number }>} during samples taken while loaded
 * @param {{ fds: number, rssKiB: number }} after
 */
export function resourceFigures(before, during, after) {
  // No Math.max(...array): a day of samples would overflow the call stack.
  const peak = (key) => during.reduce((m, s) => Math.max(m, s[key]), Math.max(before[key], after[key]));
  return {
    fdsBefore: before.fds,
    fdsPeak: peak('fds'),
    fdsAfter: after.fds,
    rssBeforeKiB: before.rssKiB,
    rssPeakKiB: peak('rssKiB'),
    rssAfterKiB: after.rssKiB,
  };
}

/**
 * Whether the daemon gave back what a scenario took: descriptors within fdMargin of before, RSS
 * within rssMarginMiB. Returns { ok, detail }.
 */
export function returnedToBaseline(before, after, { fdMargin, rssMarginMiB }) {
  const fdOk = after.fds <= before.fds + fdMargin;
  const rssOk = after.rssKiB <= before.rssKiB + rssMarginMiB * 1024;
  const parts = [
    `descriptors ${before.fds} → ${after.fds} (margin ${fdMargin})${fdOk ? '' : ': NOT returned'}`,
    `RSS ${mib(before.rssKiB)} → ${mib(after.rssKiB)} MiB (margin ${rssMarginMiB} MiB)${rssOk ? '' : ': NOT returned'}`,
  ];
  return { ok: fdOk && rssOk, fdOk, rssOk, detail: parts.join('; ') };
}

export function mib(kib) {
  return (kib / 1024).toFixed(1);
}

/** "1.23 GiB", "4.5 MiB", "812 B". */
export function formatBytes(n) {
  if (n >= 2 ** 30) return `${(n / 2 ** 30).toFixed(2)} GiB`;
  if (n >= 2 ** 20) return `${(n / 2 ** 20).toFixed(1)} MiB`;
  if (n >= 2 ** 10) return `${(n / 2 ** 10).toFixed(1)} KiB`;
  return `${n} B`;
}

/**
 * One ramp step as the client agent reports it: each connection's outcome (outcomeOf) and the
 * ms from its start to its end.
 * @typedef {{ rate: number, ms: number, results: Array<[string, number]> }} RampStep
 */

/** Errors of the client's own machine (its descriptors, ports, buffers): the lab's limit, not the daemon's. */
export const CLIENT_LIMITS = Object.freeze(['error:EMFILE', 'error:ENFILE', 'error:EADDRNOTAVAIL', 'error:ENOBUFS', 'error:ENOMEM']);

/**
 * @param {RampStep[]} steps in increasing rate
 * @param {number} promptMs a refused connection must end within this
 * @returns {{ steps: Array<{ rate: number, achievedRate: number, attempted: number, counts: Record<string, number>, failed: number, slowestFailureMs: number | null }>,
 *   failureStartRate: number | null, resetStartRate: number | null, unclean: Array<{ rate: number, outcome: string, count: number }>,
 *   maxRateTried: number | null, clientLimitRate: number | null }}
 *   failureStartRate: the first rate with any connection that did not complete;
 *   resetStartRate: the first with a reset (shedding); unclean: failures that were not prompt resets;
 *   clientLimitRate: the first rate at which the client ran out of its own resources: that step
 *   and those after it say nothing about the daemon and are left out
 */
export function analyzeRamp(steps, promptMs) {
  const out = [];
  let failureStartRate = null;
  let resetStartRate = null;
  let clientLimitRate = null;
  const unclean = [];
  for (const step of steps) {
    if (step.results.some(([outcome]) => CLIENT_LIMITS.includes(outcome))) {
      clientLimitRate = step.rate;
      break;
    }
    const counts = {};
    let failed = 0;
    let slowestFailureMs = null;
    const uncleanHere = {};
    for (const [outcome, ms] of step.results) {
      counts[outcome] = (counts[outcome] ?? 0) + 1;
      if (outcome === 'completed') continue;
      failed++;
      slowestFailureMs = Math.max(slowestFailureMs ?? 0, ms);
      const prompt = (outcome === 'reset' || outcome === 'refused') && ms <= promptMs;
      if (!prompt) {
        const key = outcome === 'reset' || outcome === 'refused' ? `${outcome} after more than ${promptMs} ms` : outcome;
        uncleanHere[key] = (uncleanHere[key] ?? 0) + 1;
      }
    }
    if (failed > 0 && failureStartRate === null) failureStartRate = step.rate;
    if ((counts.reset ?? 0) > 0 && resetStartRate === null) resetStartRate = step.rate;
    for (const [outcome, count] of Object.entries(uncleanHere)) unclean.push({ rate: step.rate, outcome, count });
    out.push({
      rate: step.rate,
      achievedRate: step.ms > 0 ? Math.round((step.results.length * 1000) / step.ms) : 0,
      attempted: step.results.length,
      counts,
      failed,
      slowestFailureMs,
    });
  }
  return { steps: out, failureStartRate, resetStartRate, unclean, maxRateTried: out.length ? out[out.length - 1].rate : null, clientLimitRate };
}
