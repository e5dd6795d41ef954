import { describe, expect, it } from 'vitest';
import { analyzeRamp, formatBytes, percentile, resourceFigures, returnedToBaseline } from '../../../scripts/soak/figures.mjs';

describe('percentile', () => {
  it('nearest rank', () => {
    expect(percentile([5, 1, 4, 2, 3], 50)).toBe(3);
    expect(percentile([5, 1, 4, 2, 3], 99)).toBe(5);
    expect(percentile([], 50)).toBeNull();
  });
});

describe('resources', () => {
  const before = { fds: 30, rssKiB: 60_000 };
  it('peak over before, the samples and after', () => {
    expect(resourceFigures(before, [{ fds: 4030, rssKiB: 90_000 }, { fds: 2000, rssKiB: 95_000 }], { fds: 31, rssKiB: 70_000 })).toEqual({
      fdsBefore: 30, fdsPeak: 4030, fdsAfter: 31, rssBeforeKiB: 60_000, rssPeakKiB: 95_000, rssAfterKiB: 70_000,
    });
  });

  it('back to baseline within the margins, and says which one was not', () => {
    const margins = { fdMargin: 16, rssMarginMiB: 48 };
    expect(returnedToBaseline(before, { fds: 46, rssKiB: 60_000 + 48 * 1024 }, margins).ok).toBe(true);
    const leak = returnedToBaseline(before, { fds: 47, rssKiB: 60_000 }, margins);
    expect(leak).toMatchObject({ ok: false, fdOk: false, rssOk: true });
    expect(leak.detail).toMatch(/descriptors 30 → 47 \(margin 16\): NOT returned/);
    const held = returnedToBaseline(before, { fds: 30, rssKiB: 60_000 + 49 * 1024 }, margins);
    expect(held).toMatchObject({ ok: false, fdOk: true, rssOk: false });
  });

  it('formats bytes', () => {
    expect(formatBytes(812)).toBe('812 B');
    expect(formatBytes(4.5 * 2 ** 20)).toBe('4.5 MiB');
    expect(formatBytes(1.234 * 2 ** 30)).toBe('1.23 GiB');
  });
});

describe('analyzeRamp', () => {
  const step = (rate: number, results: Array<[string, number]>, ms = 1000) => ({ rate, ms, results });

  it('finds where failures, and resets, begin; prompt resets are clean shedding', () => {
    const a = analyzeRamp(
      [
        step(100, Array(100).fill(['completed', 5])),
        step(150, [...Array(140).fill(['completed', 5]), ...Array(10).fill(['reset', 3])]),
        step(225, [...Array(200).fill(['completed', 5]), ...Array(25).fill(['reset', 4])]),
      ],
      2000,
    );
    expect(a.failureStartRate).toBe(150);
    expect(a.resetStartRate).toBe(150);
    expect(a.unclean).toEqual([]);
    expect(a.maxRateTried).toBe(225);
    expect(a.steps[1]).toMatchObject({ rate: 150, achievedRate: 150, attempted: 150, failed: 10, counts: { completed: 140, reset: 10 }, slowestFailureMs: 3 });
  });

  it('timeouts, hangs and late resets are not clean', () => {
    const a = analyzeRamp([step(400, [['completed', 5], ['timeout', 5000], ['reset', 2500], ['hung', 20000], ['closed', 10]])], 2000);
    expect(a.failureStartRate).toBe(400);
    expect(a.unclean).toEqual([
      { rate: 400, outcome: 'timeout', count: 1 },
      { rate: 400, outcome: 'reset after more than 2000 ms', count: 1 },
      { rate: 400, outcome: 'hung', count: 1 },
      { rate: 400, outcome: 'closed', count: 1 },
    ]);
  });

  it('no failure: no onset', () => {
    const a = analyzeRamp([step(25, [['completed', 1]])], 2000);
    expect(a.failureStartRate).toBeNull();
    expect(a.resetStartRate).toBeNull();
  });
});

describe('analyzeRamp at the client\'s own limit', () => {
  it('leaves out the step where the client ran out of descriptors, and every step after it', () => {
    const a = analyzeRamp(
      [
        { rate: 100, ms: 1000, results: Array(100).fill(['completed', 5]) },
        { rate: 150, ms: 1000, results: [...Array(100).fill(['completed', 5]), ['error:EMFILE', 1], ['timeout', 5000]] },
        { rate: 225, ms: 1000, results: [['timeout', 5000]] },
      ],
      2000,
    );
    expect(a.clientLimitRate).toBe(150);
    expect(a.steps.map((s) => s.rate)).toEqual([100]);
    expect(a.failureStartRate).toBeNull();
    expect(a.unclean).toEqual([]);
    expect(a.maxRateTried).toBe(100);
  });
});
