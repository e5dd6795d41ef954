import { describe, expect, it } from 'vitest';
import { connectionSeed, createVerifier, keystream } from '../../../scripts/soak/stream.mjs';

describe('keystream', () => {
  it('is the same bytes however it is cut, and differs per seed and direction', () => {
    const whole = keystream('s1', 'up').next(100_000);
    const a = keystream('s1', 'up');
    const pieces = Buffer.concat([a.next(1), a.next(65_535), a.next(70_000 - 65_536), a.next(30_000)]);
    expect(pieces.equals(whole)).toBe(true);
    expect(a.offset).toBe(100_000);
    expect(keystream('s1', 'down').next(64).equals(whole.subarray(0, 64))).toBe(false);
    expect(keystream('s2', 'up').next(64).equals(whole.subarray(0, 64))).toBe(false);
  });
});

describe('createVerifier', () => {
  it('accepts the stream in any chunking', () => {
    const data = keystream('seed', 'down').next(10_000);
    const v = createVerifier('seed', 'down');
    for (let i = 0; i < data.length; i += 777) expect(v.push(data.subarray(i, i + 777))).toBe(true);
    expect(v).toMatchObject({ verified: 10_000, received: 10_000, mismatchAt: null });
  });

  it('names the offset of the first wrong byte and stops counting there', () => {
    const data = Buffer.from(keystream('seed', 'up').next(5000));
    data[3210] ^= 0x01;
    const v = createVerifier('seed', 'up');
    expect(v.push(data.subarray(0, 3000))).toBe(true);
    expect(v.push(data.subarray(3000))).toBe(false);
    expect(v.push(Buffer.from('more'))).toBe(false);
    expect(v).toMatchObject({ verified: 3210, received: 5004, mismatchAt: 3210 });
  });

  it('catches a stream that restarts (a replayed or duplicated segment)', () => {
    const ks = keystream('x', 'up');
    const first = ks.next(100);
    const v = createVerifier('x', 'up');
    v.push(first);
    v.push(first);
    expect(v.mismatchAt).toBe(100);
  });
});

describe('connectionSeed', () => {
  it('is fixed per run seed and id', () => {
    expect(connectionSeed('run', 'load.1-0')).toBe(connectionSeed('run', 'load.1-0'));
    expect(connectionSeed('run', 'load.1-0')).not.toBe(connectionSeed('run', 'load.1-1'));
    expect(connectionSeed('run', 'load.1-0')).toMatch(/^[0-9a-f]{24}$/);
  });
});
