import { describe, expect, it } from 'vitest';
import { encodeHello, parseHello, PLANS } from '../../../scripts/soak/wire.mjs';

describe('the hello line', () => {
  const hello = { id: 'load.1-7', seed: 'abc123', down: { chunk: 1024, intervalMs: 1000, total: null, afterEof: 4096 } };

  it('round-trips, and says where the stream starts', () => {
    const bytes = Buffer.concat([encodeHello(hello), Buffer.from([1, 2, 3])]);
    const r = parseHello(bytes);
    expect(r?.hello).toEqual(hello);
    expect(bytes.subarray(r!.length)).toEqual(Buffer.from([1, 2, 3]));
  });

  it('waits for the end of the line', () => {
    const bytes = encodeHello(hello);
    expect(parseHello(bytes.subarray(0, 3))).toBeNull();
    expect(parseHello(bytes.subarray(0, bytes.length - 1))).toBeNull();
  });

  it.each([
    ['another protocol', 'GET / HTTP/1.1\r\n'],
    ['not JSON', 'SOAK1 {id\n'],
    ['no plan', 'SOAK1 {"id":"a","seed":"b"}\n'],
    ['a zero chunk', 'SOAK1 {"id":"a","seed":"b","down":{"chunk":0,"intervalMs":0,"total":1}}\n'],
    ['a fractional total', 'SOAK1 {"id":"a","seed":"b","down":{"chunk":1,"intervalMs":0,"total":1.5}}\n'],
    ['no line end in 4 KiB', `SOAK1 ${'x'.repeat(5000)}`],
  ])('refuses %s with ERR_SOAK_WIRE', (_name, text) => {
    expect(() => parseHello(Buffer.from(text))).toThrow(expect.objectContaining({ code: 'ERR_SOAK_WIRE' }));
  });
});

describe('PLANS', () => {
  it('every plan a backend accepts', () => {
    for (const plan of [PLANS.load(1000), PLANS.slowWriter(), PLANS.slowReader(), PLANS.halfOpen(), PLANS.short(500)]) {
      expect(parseHello(encodeHello({ id: 'i', seed: 's', down: plan.down }))?.hello.down).toEqual(plan.down);
    }
  });
});
