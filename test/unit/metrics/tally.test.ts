// The metrics' per-connection counting, in place from event batches, and what a scrape prints from it.
import { describe, expect, it } from 'vitest';
import { encodeEvent, type ConnectionEvent } from '../../../src/datapath/events.js';
import { createMetricsRegistry, type MetricsSources } from '../../../src/metrics/metrics.js';
import { createTally, PHASE_BUCKETS } from '../../../src/metrics/tally.js';
import { EVENT } from '../datapath/fixtures.js';

const ev = (e: Partial<ConnectionEvent>): Buffer => encodeEvent({ ...EVENT, inboundVersion: 0, ...e });

/** A batch like the engine's: a transparent and a proxy connection done, two refusals, a connect refused, a rejected header, and records that are not ends. */
function batch(): Buffer {
  return Buffer.concat([
    ev({ kind: 'transparent', reason: 'unregistered', bytesIn: 100, bytesOut: 150, acceptedUs: 10, decidedUs: 30, connectedUs: 530, endedUs: 2000 }),
    ev({ kind: 'proxy', reason: 'policy', bytesIn: 1000, bytesOut: 2000, inboundVersion: 2, acceptedUs: 0, decidedUs: 3_000_000, connectedUs: 3_000_200, endedUs: 4_000_000 }),
    ev({ kind: 'refuse', reason: 'port_not_allowed', end: 'refused', bytesIn: 0, bytesOut: 0, connectedUs: 0 }),
    ev({ kind: 'refuse', reason: 'local_destination', end: 'refused', bytesIn: 0, bytesOut: 0, connectedUs: 0 }),
    ev({ kind: 'transparent', reason: 'unregistered', end: 'connect-failed', errno: 111, syscall: 'connect', bytesIn: 0, bytesOut: 0, connectedUs: 0 }),
    ev({ kind: 'transparent', reason: 'unregistered', end: 'connect-failed', errno: 110, syscall: 'connect', bytesIn: 0, bytesOut: 0, connectedUs: 0 }),
    ev({ kind: null, reason: null, end: 'pp-rejected', ppFailure: 'ERR_PP_TIMEOUT', errno: 0, bytesIn: 0, bytesOut: 0, decidedUs: 0, connectedUs: 0, inboundVersion: 0 }),
    ev({ type: 'open', kind: 'transparent', bytesIn: 5, bytesOut: 5 }),
    ev({ type: 'unknown-policy', kind: 'refuse', reason: 'policy_unknown', end: 'refused' }),
  ]);
}

describe('createTally', () => {
  it('counts ends by path and close reason, bytes, phases and error codes; other records are not counted', () => {
    const tally = createTally();
    tally.add(batch());
    tally.add(batch());
    const t = tally.totals();
    expect(Object.fromEntries([...t.closed].map(([p, m]) => [p, Object.fromEntries(m)]))).toEqual({
      transparent: { done: 2, 'connect-failed': 4 },
      proxy: { done: 2 },
      refused: { port_not_allowed: 2, local_destination: 2 },
      none: { 'pp-rejected': 2 },
    });
    expect(t.bytesIn).toBe(2200);
    expect(t.bytesOut).toBe(4300);
    expect(Object.fromEntries(t.errors)).toEqual({ ECONNREFUSED: 2, ERR_CONNECT_TIMEOUT: 2, ERR_PP_TIMEOUT: 2 });
    const decide = t.phases.get('decide')!;
    // every decided connection but the one whose inbound header was awaited
    expect(decide.count).toBe(10);
    const inbound = t.phases.get('inbound_pp')!;
    expect(inbound.count).toBe(2);
    expect(inbound.sum).toBeCloseTo(6, 6);
    expect(inbound.buckets[PHASE_BUCKETS.indexOf(5)]).toBe(2); // 3 s: in the (2.5, 5] bucket
    const connect = t.phases.get('connect')!;
    expect(connect.count).toBe(4);
    expect(connect.sum).toBeCloseTo(2 * 0.0005 + 2 * 0.0002, 9);
    expect(connect.buckets[PHASE_BUCKETS.indexOf(0.0005)]).toBe(2);
    expect(connect.buckets[PHASE_BUCKETS.indexOf(0.00025)]).toBe(2);
  });
});

describe('createMetricsRegistry', () => {
  it('prints every metric from its sources at scrape time, the histogram cumulative', async () => {
    const tally = createTally();
    const sources: MetricsSources = {
      tally,
      engine: () => ({ live: 3, accepted: 42, overCapacity: 5, threads: 2, pipesInUse: 1, pipesPooled: 4, pipePoolMax: 64, pipeSizeRefused: 0, tablesRetired: 0, generation: 7 }),
      instances: () => 9,
      fetches: () => ({ learned: 2, failed: 1 }),
      store: () => ({ kind: 'etcd', state: 'unreachable', since: 0, error: 'x' }),
      storeKind: 'etcd',
      rulesInstalled: () => true,
      backend: 'iptables',
      reloads: () => ({ ok: 4, failed: 1 }),
    };
    const registry = createMetricsRegistry(sources);
    tally.add(batch());
    const text = await registry.metrics();
    const lines = text.split('\n');
    for (const line of [
      'tproxy_interceptor_connections_accepted_total 42',
      'tproxy_interceptor_connections_closed_total{path="transparent",reason="done"} 1',
      'tproxy_interceptor_connections_closed_total{path="transparent",reason="connect-failed"} 2',
      'tproxy_interceptor_connections_closed_total{path="refused",reason="port_not_allowed"} 1',
      'tproxy_interceptor_connections_closed_total{path="none",reason="pp-rejected"} 1',
      'tproxy_interceptor_connections_active 3',
      'tproxy_interceptor_connections_over_capacity_total 5',
      'tproxy_interceptor_bytes_total{direction="client_to_upstream"} 1100',
      'tproxy_interceptor_bytes_total{direction="upstream_to_client"} 2150',
      'tproxy_interceptor_phase_duration_seconds_bucket{phase="connect",le="0.00025"} 1',
      'tproxy_interceptor_phase_duration_seconds_bucket{phase="connect",le="0.0005"} 2',
      'tproxy_interceptor_phase_duration_seconds_bucket{phase="connect",le="+Inf"} 2',
      'tproxy_interceptor_phase_duration_seconds_count{phase="connect"} 2',
      'tproxy_interceptor_phase_duration_seconds_count{phase="decide"} 5',
      'tproxy_interceptor_connection_errors_total{code="ECONNREFUSED"} 1',
      'tproxy_interceptor_pipes{state="in_use"} 1',
      'tproxy_interceptor_registry_instances 9',
      'tproxy_interceptor_registry_fetches_total{outcome="learned"} 2',
      'tproxy_interceptor_registry_store_up{store="etcd"} 0',
      'tproxy_interceptor_rules_installed{backend="iptables"} 1',
      'tproxy_interceptor_reloads_total{result="ok"} 4',
      'tproxy_interceptor_reloads_total{result="failed"} 1',
      '# TYPE tproxy_interceptor_phase_duration_seconds histogram',
      '# TYPE tproxy_interceptor_connections_closed_total counter',
    ]) {
      expect(lines, line).toContain(line);
    }
    expect(text).toMatch(/^process_resident_memory_bytes \d+/m);
    // A second scrape reads the totals again (counters are not added twice).
    tally.add(batch());
    const again = (await registry.metrics()).split('\n');
    expect(again).toContain('tproxy_interceptor_connections_closed_total{path="transparent",reason="done"} 2');
    expect(again).toContain('tproxy_interceptor_phase_duration_seconds_count{phase="connect"} 4');
  });
});
