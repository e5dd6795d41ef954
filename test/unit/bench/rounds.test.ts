import { describe, expect, it } from 'vitest';
import { median, mergeRounds, roundOrder } from '../../../scripts/bench/compute.mjs';

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
});
