// Checks and the verdict. A check is one thing the soak promises (a byte count, a bound, an
// answer), passed or failed with a detail that says what was lost. A feature the daemon does
// not have yet is a failed check too, marked `missing` with what to add: absence is never a skip. Pure.

/**
 * @typedef {{ scenario: string, name: string, ok: boolean, detail: string, missing: string | null }} Check
 */

/** Collects one scenario's checks and figures. */
export function createScenarioResult(scenario) {
  const checks = [];
  const figures = {};
  return {
    scenario,
    checks,
    figures,
    /** Records a check; returns ok. */
    check(name, ok, detail = '', missing = null) {
      checks.push({ scenario, name, ok: Boolean(ok), detail, missing });
      return Boolean(ok);
    },
    /** A feature the daemon lacks: a failed check naming it. */
    missing(name, feature, detail) {
      checks.push({ scenario, name, ok: false, detail, missing: feature });
      return false;
    },
    figure(key, value) {
      figures[key] = value;
    },
  };
}

export const EXIT = Object.freeze({ passed: 0, failed: 1, usage: 2, broken: 4, deadline: 124, interrupted: 130 });

/**
 * Passed when there are checks and all of them passed; a scenario that recorded none fails.
 * @param {Array<{ scenario: string, checks: Check[] }>} scenarios
 * @returns {{ ok: boolean, exitCode: number, total: number, failed: Check[], missing: Check[] }}
 */
export function verdict(scenarios) {
  const all = scenarios.flatMap((s) => s.checks);
  const failed = all.filter((c) => !c.ok);
  const noChecks = scenarios.filter((s) => s.checks.length === 0);
  for (const s of noChecks) failed.push({ scenario: s.scenario, name: 'scenario made checks', ok: false, detail: 'it recorded no check at all', missing: null });
  return {
    ok: failed.length === 0 && all.length > 0,
    exitCode: failed.length === 0 && all.length > 0 ? EXIT.passed : EXIT.failed,
    total: all.length + noChecks.length,
    failed,
    missing: failed.filter((c) => c.missing),
  };
}

/** One line per failed check: "FAILED load: every byte verified: 3 connections lost bytes (...)". */
export function failureLines(v) {
  return v.failed.map((c) => `FAILED ${c.scenario}: ${c.name}${c.missing ? ` [missing feature: ${c.missing}]` : ''}${c.detail ? `: ${c.detail}` : ''}`);
}
