import { describe, expect, it } from 'vitest';
import { parseDuration } from '../../../src/duration.js';

describe('parseDuration', () => {
  it.each([
    ['250ms', 250],
    ['5s', 5000],
    ['1m', 60_000],
    ['1h', 3_600_000],
    ['1m30s', 90_000],
    ['1h2m3s4ms', 3_723_004],
    ['0s', 0],
  ])('%s = %i ms', (text, ms) => {
    expect(parseDuration(text)).toBe(ms);
  });

  it('takes a bare number as seconds', () => {
    expect(parseDuration(5)).toBe(5000);
    expect(parseDuration(0.25)).toBe(250);
    expect(parseDuration(1.1)).toBe(1100);
  });

  it.each(['', '5', '-5s', '5 s', '1.5s', 'abc', '5sec', '30s1m', '1s1s', '5S', ' 5s'])('rejects %j naming the accepted forms', (text) => {
    let err: unknown;
    try {
      parseDuration(text);
    } catch (e) {
      err = e;
    }
    expect(err).toMatchObject({ code: 'ERR_INVALID_DURATION' });
    expect((err as Error).message).toMatch(/"250ms", "5s", "1m", "1h" or "1m30s"/);
  });

  it('rejects negative, non-finite and sub-millisecond numbers', () => {
    expect(() => parseDuration(-1)).toThrow(/negative/);
    expect(() => parseDuration(Infinity)).toThrow(/finite/);
    expect(() => parseDuration(Number.NaN)).toThrow(/finite/);
    expect(() => parseDuration(0.0001)).toThrow(/millisecond/);
  });

  it('rejects values beyond safe integers', () => {
    expect(() => parseDuration('9999999999999999h')).toThrow(/too large/);
  });
});
