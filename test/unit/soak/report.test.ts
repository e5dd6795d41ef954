import { describe, expect, it } from 'vitest';
import { headlineFigures, markdown } from '../../../scripts/soak/report.mjs';
import { createScenarioResult, verdict } from '../../../scripts/soak/verdict.mjs';

function scenarios() {
  const load = createScenarioResult('load');
  load.check('every byte arrived', true, '2000 of 2000 whole');
  load.figure('held', 2000);
  load.figure('heldPp', 1000);
  load.figure('heldV6', 200);
  load.figure('openMs', 900);
  load.figure('bytesVerified', 3 * 2 ** 30);
  load.figure('warmupBytesVerified', 2 ** 30);
  load.figure('resources', { fdsBefore: 30, fdsPeak: 4100, fdsAfter: 31, rssBeforeKiB: 61_440, rssPeakKiB: 122_880, rssAfterKiB: 65_536 });
  const faults = createScenarioResult('backend-faults');
  faults.check('refused | reset', true, 'a | b');
  faults.figure('faults', { injected: 100, handled: 99, kinds: { refused: { injected: 50, asExpected: 50, slowestMs: 12 }, blackholed: { injected: 50, asExpected: 49, slowestMs: 2040 } } });
  const crash = createScenarioResult('crash');
  crash.check('registry intact', true, '42 acknowledged, 0 lost');
  crash.figure('registrations', { acked: 42, lost: 0, inFlightOrFailed: 3 });
  crash.figure('downWindow', { probes: 12, clientsConnected: 0, backendAccepted: 0 });
  crash.figure('restartMs', 400);
  crash.figure('faults', { injected: 1, handled: 1 });
  const capacity = createScenarioResult('capacity');
  capacity.missing('listen.max_connections = 500 accepted', 'listen.max_connections', 'unknown key');
  capacity.figure('failuresStartAt', 984);
  capacity.figure('ramp', { holdMs: 625, stepMs: 5000, maxRateTried: 1600 });
  return [load, faults, crash, capacity];
}

describe('headlineFigures', () => {
  it('gathers what the issue asks to be reported', () => {
    const rows = Object.fromEntries(headlineFigures(scenarios()));
    expect(rows['connections held at once']).toBe('2000 (1000 pp=false, 1000 pp=true; 200 over IPv6), opened in 900 ms');
    expect(rows['bytes verified (every byte compared on arrival, both ways)']).toBe('4.00 GiB');
    expect(rows['daemon descriptors before / peak / after']).toBe('30 / 4100 / 31');
    expect(rows['daemon RSS before / peak / after']).toBe('60.0 / 120.0 / 64.0 MiB');
    expect(rows['faults injected / handled as expected']).toBe('101 / 100 (backend-faults 99/100, crash 1/1)');
    expect(rows['registrations acknowledged before kill -9 / lost']).toBe('42 / 0 (3 in flight at the kill or refused)');
    expect(rows['failures start at (no cap)']).toBe('984 new connections/s, each connection held 625 ms, 5000 ms per step');
  });

  it('leaves out what did not run', () => {
    expect(headlineFigures([createScenarioResult('crash')])).toEqual([]);
  });
});

describe('markdown', () => {
  it('a verdict line, the figures, every check with pipes escaped, and the failures', () => {
    const s = scenarios();
    const md = markdown({
      startedAt: '2026-11-30T00:00:00.000Z',
      elapsedSec: 400,
      host: { cpus: 2, memoryGiB: 23.5, kernel: '6.18', node: 'v20', commit: 'abc123', nofile: 20000 },
      options: { durationMs: 300_000, connections: 2000, cap: 500, settings: [], scenarios: ['load', 'backend-faults', 'crash', 'capacity'] },
      seed: 'seed1',
      scenarios: s,
      verdict: verdict(s),
    });
    expect(md).toMatch(/^# tproxy-interceptor soak, 2026-11-30T00:00:00.000Z: FAILED \(3 of 4 checks passed\)/);
    expect(md).toContain('| pass | backend-faults | refused \\| reset | a \\| b |');
    expect(md).toContain('| **FAIL** | capacity | listen.max_connections = 500 accepted (missing: `listen.max_connections`) | unknown key |');
    expect(md).toContain('- FAILED capacity: listen.max_connections = 500 accepted [missing feature: listen.max_connections]: unknown key');
    expect(md).toContain('--duration 300s --connections 2000 --cap 500 --seed seed1');
  });
});
