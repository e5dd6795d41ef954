// The soak's short form in CI: the same runner as `npm run soak` (scripts/soak/run.mjs), with few
// connections and a short hold, in its own namespaces. One test per scenario, so that a failure
// names its scenario and each check that failed, with what was lost.
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SCENARIO_NAMES } from '../../scripts/soak/plan.mjs';
import { ROOT } from './helpers/lab.js';

interface Check {
  name: string;
  ok: boolean;
  detail: string;
  missing: string | null;
}
interface Report {
  scenarios: Array<{ scenario: string; checks: Check[]; figures: Record<string, unknown> }>;
}

const ARGS = ['--duration', '15s', '--connections', '60', '--cap', '30', '--ramp-max', '400'];

describe('soak, short form', () => {
  let dir: string;
  let report: Report;
  let exit: { code: number | null; stderr: string };

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'tpi-soak-test-'));
    const json = path.join(dir, 'report.json');
    exit = await new Promise((resolve) => {
      execFile('node', [path.join(ROOT, 'scripts', 'soak', 'run.mjs'), ...ARGS, '--json', json, '--out', dir], { maxBuffer: 64 << 20, timeout: 400_000 }, (err, _stdout, stderr) =>
        resolve({ code: err ? ((err as { code?: number }).code ?? null) : 0, stderr }),
      );
    });
    // 0: every check passed, 1: some failed (each test below names them); anything else: it could not run.
    if (exit.code !== 0 && exit.code !== 1) throw new Error(`the soak exited ${exit.code}: ${exit.stderr.slice(-3000)}`);
    report = JSON.parse(await readFile(json, 'utf8')) as Report;
  }, 420_000);
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  for (const name of [...SCENARIO_NAMES, 'teardown']) {
    it(`${name}: every check passes`, () => {
      const s = report.scenarios.find((r) => r.scenario === name);
      expect(s, `the report has no ${name} scenario`).toBeDefined();
      expect(s!.checks.length).toBeGreaterThan(0);
      const failed = s!.checks.filter((c) => !c.ok).map((c) => `${c.name}${c.missing ? ` [missing: ${c.missing}]` : ''}: ${c.detail}`);
      expect(failed).toEqual([]);
    });
  }

  it('exits 0 exactly when every check passed', () => {
    const allPassed = report.scenarios.every((s) => s.checks.every((c) => c.ok));
    expect(exit.code).toBe(allPassed ? 0 : 1);
  });
});
