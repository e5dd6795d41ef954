import { describe, expect, it } from 'vitest';
import { parseIperf3Json } from '../../../scripts/bench/parse.mjs';

// Trimmed from a real `iperf3 -c ... -P 2 -J` (iperf 3.12) run in the lab.
const OK = JSON.stringify({
  start: { version: 'iperf 3.12' },
  intervals: [],
  end: {
    streams: [{ sender: {} }, { sender: {} }],
    sum_sent: { start: 0, end: 1.000801, seconds: 1.000801, bytes: 1708523520, bits_per_second: 13657248703.788265, retransmits: 3, sender: true },
    sum_received: { start: 0, end: 1.001564, seconds: 1.001564, bytes: 1708523520, bits_per_second: 13646844495.209494, sender: true },
    cpu_utilization_percent: {},
  },
});

describe('parseIperf3Json', () => {
  it('reports what the receiver got, per second of the receiver', () => {
    const r = parseIperf3Json(OK);
    expect(r.bytes).toBe(1708523520);
    expect(r.seconds).toBeCloseTo(1.001564);
    expect(r.bitsPerSecond).toBeCloseTo((1708523520 * 8) / 1.001564, 3);
    expect(r.retransmits).toBe(3);
    expect(r.streams).toBe(2);
  });

  it("throws iperf3's own error message", () => {
    const failed = '{\n\t"start":\t{},\n\t"intervals":\t[],\n\t"end":\t{\n\t},\n\t"error":\t"unable to connect to server: Connection refused"\n}';
    expect(() => parseIperf3Json(failed)).toThrow(/iperf3: unable to connect to server: Connection refused/);
    try {
      parseIperf3Json(failed);
    } catch (err) {
      expect((err as { code?: string }).code).toBe('ERR_BENCH_PARSE');
    }
  });

  it('rejects output that is not JSON or has no receiver summary', () => {
    expect(() => parseIperf3Json('iperf3: error - the server is busy running a test')).toThrow(/not JSON/);
    expect(() => parseIperf3Json('{"end":{}}')).toThrow(/sum_received/);
    expect(() => parseIperf3Json('{"end":{"sum_received":{"bytes":0,"seconds":0}}}')).toThrow(/zero-length/);
  });
});
