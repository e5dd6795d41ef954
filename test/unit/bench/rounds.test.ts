import { describe, expect, it } from 'vitest';
import { median, mergeRounds, pairedRatios, roundOrder } from '../../../scripts/bench/compute.mjs';
import { formatPairedRatios } from '../../../scripts/bench/format.mjs';

const result = (status: string, connPerSec: number | null, gbit1: number | null, note: string) => ({
  name: 'tpi',
  status,
  metrics: { connPerSec, gbit1 },
  notes: [note],
});

describe('several rounds', () => {
  it('median: the middle value, the mean of the middle two, null for none', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(median([])).toBeNull();
  });

  it('alternates the path order so that no path always runs first or last', () => {
    expect(roundOrder(['a', 'b', 'c'], 0)).toEqual(['a', 'b', 'c']);
    expect(roundOrder(['a', 'b', 'c'], 1)).toEqual(['c', 'b', 'a']);
    expect(roundOrder(['a', 'b', 'c'], 2)).toEqual(['a', 'b', 'c']);
  });

  it('reports each metric as the median of the rounds that measured it, and keeps every round', () => {
    const rounds = [result('ok', 9000, 18, 'first'), result('ok', 11000, null, 'second'), result('ok', 10000, 20, 'third')];
    const merged = mergeRounds(rounds) as ReturnType<typeof result> & { rounds: unknown[] };
    expect(merged.metrics).toEqual({ connPerSec: 10000, gbit1: 19 });
    expect(merged.notes).toEqual(['first', 'median of 3 rounds (3 ok); per round: connPerSec 9000 / 11000 / 10000; gbit1 18 / 20']);
    expect(merged.rounds).toBe(rounds);
  });

  it('a failed round does not fail the path; a single round is returned as it is', () => {
    const merged = mergeRounds([result('failed', null, null, 'broke'), result('ok', 9000, 18, 'fine')]);
    expect(merged).toMatchObject({ status: 'ok', metrics: { connPerSec: 9000, gbit1: 18 }, notes: ['fine', expect.stringContaining('(1 ok)')] });
    const one = result('ok', 1, 2, 'x');
    expect(mergeRounds([one])).toBe(one);
  });

  it("compares each round with the baseline's same round, and says so round by round", () => {
    const haproxy = mergeRounds([result('ok', 10000, 15, ''), result('ok', 12000, 14, ''), result('ok', 11000, null, '')]);
    const tpi = mergeRounds([result('ok', 9800, 15, ''), result('ok', 13320, 14.7, ''), result('failed', null, null, '')]);
    const ratios = pairedRatios(tpi, haproxy, ['connPerSec', 'gbit1', 'p99Ms']);
    expect(ratios.connPerSec).toEqual([0.98, 1.11, null]);
    expect(ratios.gbit1.map((r) => (r === null ? null : +r.toFixed(2)))).toEqual([1, 1.05, null]);
    expect(ratios.p99Ms).toEqual([null, null, null]);
    expect(formatPairedRatios('haproxy', ratios)).toBe('ratios to haproxy round by round: 1-stream Gbit/s 1.00× / 1.05× / -; conn/s 0.98× / 1.11× / -');
    expect(formatPairedRatios('haproxy', { p99Ms: [null] })).toBeNull();
    // A single round has no rounds to pair.
    expect(pairedRatios(result('ok', 1, 1, ''), haproxy, ['connPerSec'])).toEqual({});
  });
});
