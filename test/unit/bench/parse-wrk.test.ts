import { describe, expect, it } from 'vitest';
import { parseWrkOutput, parseWrkTime } from '../../../scripts/bench/parse.mjs';

// A real `wrk -c 4 -t 2 --latency -d 1s -H "Connection: close"` (wrk 4.1.0) run in the lab.
const CLEAN = `Running 1s test @ http://198.18.2.2:8081/
  2 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     5.05ms    3.41ms  30.15ms   86.23%
    Req/Sec   419.60     91.77   584.00     75.00%
  Latency Distribution
     50%    4.10ms
     75%    6.13ms
     90%    8.58ms
     99%   19.18ms
  837 requests in 1.00s, 835.37KB read
Requests/sec:    835.43
Transfer/sec:    833.80KB
`;

const WITH_ERRORS = `Running 10s test @ http://198.18.2.2:8080/
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   812.00us    1.20ms   1.02s    99.00%
    Req/Sec    10.20k     1.10k   12.00k    70.00%
  Latency Distribution
     50%  812.00us
     75%    1.10ms
     90%    2.00ms
     99%    1.02s
  203456 requests in 10.00s, 40.12MB read
  Socket errors: connect 0, read 17, write 2, timeout 5
  Non-2xx or 3xx responses: 3
Requests/sec:  20345.60
Transfer/sec:      4.01MB
`;

describe('parseWrkOutput', () => {
  it('reads the rate, the request count and the 50th/99th percentiles in ms', () => {
    const r = parseWrkOutput(CLEAN);
    expect(r.requestsPerSec).toBe(835.43);
    expect(r.requests).toBe(837);
    expect(r.seconds).toBe(1);
    expect(r.p50Ms).toBeCloseTo(4.1);
    expect(r.p99Ms).toBeCloseTo(19.18);
    expect(r.socketErrors).toEqual({ connect: 0, read: 0, write: 0, timeout: 0 });
    expect(r.non2xx).toBe(0);
  });

  it('converts us and s, and reads socket errors and non-2xx responses', () => {
    const r = parseWrkOutput(WITH_ERRORS);
    expect(r.p50Ms).toBeCloseTo(0.812);
    expect(r.p99Ms).toBeCloseTo(1020);
    expect(r.socketErrors).toEqual({ connect: 0, read: 17, write: 2, timeout: 5 });
    expect(r.non2xx).toBe(3);
  });

  it('refuses output without a rate or without --latency percentiles', () => {
    expect(() => parseWrkOutput('unable to connect to 198.18.2.2:8081 Connection refused')).toThrow(/Requests\/sec/);
    const noLatency = CLEAN.replace(/ {2}Latency Distribution[\s\S]*?99%\s+\S+\n/, '');
    expect(() => parseWrkOutput(noLatency)).toThrow(/50% line/);
  });
});

describe('parseWrkTime', () => {
  it.each([
    ['812.00us', 0.812],
    ['4.69ms', 4.69],
    ['1.02s', 1020],
    ['2.00m', 120_000],
  ])('%s is %f ms', (text, ms) => {
    expect(parseWrkTime(text)).toBeCloseTo(ms);
  });

  it('rejects what is not a time', () => {
    expect(() => parseWrkTime('12.3')).toThrow(/not a time/);
    expect(() => parseWrkTime('fast')).toThrow(/not a time/);
  });
});
