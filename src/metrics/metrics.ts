// The Prometheus metrics, with prom-client: every value is read when scraped, from the tally of
// the connections' ends (tally.ts), the engine's own counters, the registry and the daemon's state.
// Nothing here runs per connection. The README lists every metric (Operations > Metrics).
import client from 'prom-client';
import type { EngineStats } from '../native/engine.js';
import type { StoreStatus } from '../registry/store.js';
import { PHASE_BUCKETS, type Tally, type Totals } from './tally.js';

export const PREFIX = 'tproxy_interceptor_';

/** What the daemon tells the metrics, each read at scrape time. */
export interface MetricsSources {
  readonly tally: Tally;
  /** The loop threads' counters; null before start and after stop. */
  engine(): EngineStats | null;
  /** Registered instances. */
  instances(): number;
  /** Policy fetch attempts by outcome since start. */
  fetches(): { readonly learned: number; readonly failed: number };
  store(): StoreStatus | null;
  storeKind: 'sqlite' | 'etcd';
  /** Are our firewall rules and policy routing installed (as far as this daemon knows)? */
  rulesInstalled(): boolean;
  backend: string;
  reloads(): { readonly ok: number; readonly failed: number };
}

type Series = { labels: Record<string, string | number>; value: number; metricName: string };

/**
 * A histogram whose values come from the tally: prom-client's Histogram, with get() answering
 * from the tally's bucket counts instead of its own observe() (which would cost every connection).
 */
class PhaseHistogram extends client.Histogram<'phase'> {
  constructor(
    private readonly metricName: string,
    private readonly metricHelp: string,
    private readonly read: () => Totals['phases'],
    registry: client.Registry,
  ) {
    super({ name: metricName, help: metricHelp, labelNames: ['phase'], buckets: [...PHASE_BUCKETS], registers: [registry] });
  }

  override async get(): Promise<client.MetricObjectWithValues<client.MetricValueWithName<'phase'>>> {
    const name = this.metricName;
    const values: Series[] = [];
    for (const [phase, h] of this.read()) {
      let cumulative = 0;
      PHASE_BUCKETS.forEach((le, i) => {
        cumulative += h.buckets[i]!;
        values.push({ labels: { phase, le }, value: cumulative, metricName: `${name}_bucket` });
      });
      values.push({ labels: { phase, le: '+Inf' }, value: h.count, metricName: `${name}_bucket` });
      values.push({ labels: { phase }, value: h.sum, metricName: `${name}_sum` });
      values.push({ labels: { phase }, value: h.count, metricName: `${name}_count` });
    }
    // `type` as prom-client sets it at run time ('histogram'; its typings declare an enum it does not export).
    const { type } = this as unknown as { type: client.MetricType };
    return { name, help: this.metricHelp, type, values: values as client.MetricValueWithName<'phase'>[], aggregator: 'sum', collect: () => {} };
  }

  // The registry prefers this one when it exists (prom-client's own reads its observations).
  getForPromString(): Promise<client.MetricObjectWithValues<client.MetricValueWithName<'phase'>>> {
    return this.get();
  }
}

export function createMetricsRegistry(src: MetricsSources): client.Registry {
  const registry = new client.Registry();
  const registers = [registry];
  const totals = (): Totals => src.tally.totals();
  const engine = (): EngineStats | null => src.engine();

  new client.Counter({
    name: `${PREFIX}connections_accepted_total`,
    help: 'Connections the listeners accepted (every one, those reset over capacity included).',
    registers,
    collect() {
      this.reset();
      this.inc(engine()?.accepted ?? 0);
    },
  });
  new client.Counter({
    name: `${PREFIX}connections_closed_total`,
    help: 'Connections that ended, by path (transparent, proxy: with a PROXY header, refused; none: a trusted source\'s header was rejected before a decision) and close reason (a refusal\'s reason for refused).',
    labelNames: ['path', 'reason'],
    registers,
    collect() {
      this.reset();
      for (const [path, byReason] of totals().closed) for (const [reason, n] of byReason) this.inc({ path, reason }, n);
    },
  });
  new client.Gauge({
    name: `${PREFIX}connections_active`,
    help: 'Connections held now (both sockets open).',
    registers,
    collect() {
      this.set(engine()?.live ?? 0);
    },
  });
  new client.Counter({
    name: `${PREFIX}connections_over_capacity_total`,
    help: 'Connections reset at once because listen.max_connections was reached or the process was out of descriptors.',
    registers,
    collect() {
      this.reset();
      this.inc(engine()?.overCapacity ?? 0);
    },
  });
  new client.Counter({
    name: `${PREFIX}bytes_total`,
    help: 'Bytes relayed by connections that ended: client_to_upstream (our PROXY header excluded) and upstream_to_client.',
    labelNames: ['direction'],
    registers,
    collect() {
      this.reset();
      const t = totals();
      this.inc({ direction: 'client_to_upstream' }, t.bytesIn);
      this.inc({ direction: 'upstream_to_client' }, t.bytesOut);
    },
  });
  new PhaseHistogram(
    `${PREFIX}phase_duration_seconds`,
    'Time per connection phase: decide (accept to decision), inbound_pp (accept to decision, a trusted source\'s PROXY header awaited), connect (decision to upstream connected).',
    () => totals().phases,
    registry,
  );
  new client.Counter({
    name: `${PREFIX}connection_errors_total`,
    help: 'Connections that ended with an error, by code (ECONNREFUSED, ERR_CONNECT_TIMEOUT, PP_ERR_*, ...).',
    labelNames: ['code'],
    registers,
    collect() {
      this.reset();
      for (const [code, n] of totals().errors) this.inc({ code }, n);
    },
  });
  new client.Gauge({
    name: `${PREFIX}pipes`,
    help: 'Splice pipes held by connections with bytes in flight (in_use) and kept empty by the loop threads (pooled).',
    labelNames: ['state'],
    registers,
    collect() {
      const s = engine();
      this.set({ state: 'in_use' }, s?.pipesInUse ?? 0);
      this.set({ state: 'pooled' }, s?.pipesPooled ?? 0);
    },
  });
  new client.Gauge({
    name: `${PREFIX}registry_instances`,
    help: 'Instances in the port-policy registry.',
    registers,
    collect() {
      this.set(src.instances());
    },
  });
  new client.Counter({
    name: `${PREFIX}registry_fetches_total`,
    help: 'Policy fetches from guest agents by outcome: learned (a policy), failed (an attempt failed; transient ones are retried).',
    labelNames: ['outcome'],
    registers,
    collect() {
      this.reset();
      const f = src.fetches();
      this.inc({ outcome: 'learned' }, f.learned);
      this.inc({ outcome: 'failed' }, f.failed);
    },
  });
  new client.Gauge({
    name: `${PREFIX}registry_store_up`,
    help: 'The registry store can be written (1), or is unreachable (0: decisions go on from memory, writes fail).',
    labelNames: ['store'],
    registers,
    collect() {
      this.set({ store: src.storeKind }, (src.store()?.state ?? 'ok') === 'ok' ? 1 : 0);
    },
  });
  new client.Gauge({
    name: `${PREFIX}rules_installed`,
    help: 'Our firewall rules and policy routing are installed (1) or not (0), as this daemon installed them.',
    labelNames: ['backend'],
    registers,
    collect() {
      this.set({ backend: src.backend }, src.rulesInstalled() ? 1 : 0);
    },
  });
  new client.Counter({
    name: `${PREFIX}reloads_total`,
    help: 'Config reloads (SIGHUP or `reload`) by result: ok (applied, or nothing changed), failed (refused or not applied; the running config stays).',
    labelNames: ['result'],
    registers,
    collect() {
      this.reset();
      const r = src.reloads();
      this.inc({ result: 'ok' }, r.ok);
      this.inc({ result: 'failed' }, r.failed);
    },
  });
  // The process (CPU, memory, descriptors) and Node's event loop lag, heap and GC.
  client.collectDefaultMetrics({ register: registry });
  return registry;
}
