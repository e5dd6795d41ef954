import { describe, expect, it } from 'vitest';
import { loadChunk, loadTarget, makeSpec, TARGETS } from '../../../scripts/soak/specs.mjs';
import { PLANS } from '../../../scripts/soak/wire.mjs';

describe('the load mix', () => {
  it('half pp=true, one in ten over IPv6', () => {
    const targets = Array.from({ length: 1000 }, (_, i) => loadTarget(i));
    expect(targets.filter((t) => t.pp).length).toBe(500);
    expect(targets.filter((t) => t.host.includes(':')).length).toBe(100);
    expect(new Set(targets)).toEqual(new Set(Object.values(TARGETS)));
  });

  it('chunks of 512..2047 bytes, fixed per connection', () => {
    const chunks = Array.from({ length: 500 }, (_, i) => loadChunk('run', i));
    expect(Math.min(...chunks)).toBeGreaterThanOrEqual(512);
    expect(Math.max(...chunks)).toBeLessThan(2048);
    expect(loadChunk('run', 7)).toBe(chunks[7]);
  });
});

describe('makeSpec', () => {
  it('where, how, and a seed of its own', () => {
    const plan = PLANS.short(300);
    const spec = makeSpec('run', 'g-1', TARGETS.v6pp, plan, { connectTimeoutMs: 1500 });
    expect(spec).toMatchObject({ id: 'g-1', host: 'fd00:18:2::2', port: 9002, pp: true, up: plan.up, down: plan.down, endDelayMs: 300, connectTimeoutMs: 1500 });
    expect(spec.seed).not.toBe(makeSpec('run', 'g-2', TARGETS.v6pp, plan).seed);
    expect(makeSpec('run', 'g-3', TARGETS.v4, PLANS.load(1000))).not.toHaveProperty('readPause');
  });
});
