// Bounded run of the fuzzer in scripts/fuzz-pp.mjs against the TypeScript sources. Long runs:
// `npx tsc -p tsconfig.json && node scripts/fuzz-pp.mjs --cases 1000000 --seed S`.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as pp from '../../../src/pp/index.js';
import { caseSeed, checkInput, runFuzz, xorshift32 } from '../../../scripts/fuzz-pp.mjs';

const KNOWN_CODES = new Set<string>(pp.PP_ERROR_CODES);

const SEED = 0x00c0ffee;
const CASES = 6000;

describe('fuzz', () => {
  let stackTraceLimit: number;
  beforeAll(() => {
    // Most inputs are rejected; capturing a stack per rejection would be most of the run time.
    stackTraceLimit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
  });
  afterAll(() => {
    Error.stackTraceLimit = stackTraceLimit;
  });

  it(`survives ${CASES} seeded cases fed whole, split and byte by byte`, { timeout: 15_000 }, () => {
    let result;
    try {
      result = runFuzz(pp, { cases: CASES, seed: SEED });
    } catch (err) {
      const details = (err as { details?: unknown }).details;
      throw new Error(`${(err as Error).message}\n${JSON.stringify(details)}`);
    }
    expect(result.cases).toBe(CASES);
    // The inputs reach every wire error and both versions, so the oracle was exercised everywhere.
    const seen = Object.keys(result.histogram);
    for (const code of KNOWN_CODES) if (code !== 'PP_ERR_STATE') expect(seen, code).toContain(code);
    expect(seen).toEqual(expect.arrayContaining(['ok v1', 'ok v2', 'incomplete']));
    expect(result.maxBuffered).toBeLessThanOrEqual(16 + 65535);
  });

  it('feeds pure random bytes without surprises', () => {
    const stats = { maxBuffered: 0 };
    for (let i = 0; i < 300; i++) {
      const rng = xorshift32(caseSeed(SEED ^ 0x5a5a, i));
      const input = rng.bytes(rng.int(200));
      // Random bytes almost never start like a header; force half of them to.
      if (i % 2 === 0 && input.length > 0) input[0] = rng.chance(0.5) ? 0x50 : 0x0d;
      const outcome = checkInput(pp, input, rng, undefined, stats);
      if (outcome.kind === 'error') expect(KNOWN_CODES.has(outcome.code)).toBe(true);
    }
    expect(stats.maxBuffered).toBeLessThanOrEqual(16 + 4096);
  });

  it('is deterministic for a seed', () => {
    const a = runFuzz(pp, { cases: 200, seed: 42 });
    const b = runFuzz(pp, { cases: 200, seed: 42 });
    expect(a).toEqual(b);
  });
});
