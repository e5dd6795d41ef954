import { describe, expect, it } from 'vitest';
import { createScenarioResult, EXIT, failureLines, verdict } from '../../../scripts/soak/verdict.mjs';

describe('verdict', () => {
  it('passes only when there are checks and all passed', () => {
    const a = createScenarioResult('load');
    expect(a.check('bytes verified', true, '1 GiB')).toBe(true);
    expect(verdict([a])).toMatchObject({ ok: true, exitCode: EXIT.passed, total: 1, failed: [] });
    expect(verdict([])).toMatchObject({ ok: false, exitCode: EXIT.failed });
  });

  it('a missing feature is a failed check naming the feature, never a skip', () => {
    const c = createScenarioResult('capacity');
    expect(c.missing('max_connections accepted', 'listen.max_connections', 'unknown key')).toBe(false);
    const v = verdict([c]);
    expect(v).toMatchObject({ ok: false, exitCode: EXIT.failed });
    expect(v.missing.map((m) => m.missing)).toEqual(['listen.max_connections']);
    expect(failureLines(v)).toEqual(['FAILED capacity: max_connections accepted [missing feature: listen.max_connections]: unknown key']);
  });

  it('a scenario that recorded nothing fails', () => {
    const v = verdict([createScenarioResult('crash')]);
    expect(v.ok).toBe(false);
    expect(failureLines(v)[0]).toMatch(/^FAILED crash: scenario made checks/);
  });

  it('keeps figures beside the checks', () => {
    const r = createScenarioResult('load');
    r.figure('held', 2000);
    expect(r.figures).toEqual({ held: 2000 });
  });
});
