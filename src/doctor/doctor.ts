// `tproxy-interceptor doctor`: gather facts, probe the backend when asked and possible, check.
import type { Config } from '../config.js';
import { probeBlocker, runChecks } from './checks.js';
import { gatherFacts, type GatherDeps } from './gather.js';
import { probeBackend, type BackendTarget } from './probe.js';
import { summarize, type DoctorReport } from './report.js';

export interface DoctorOptions {
  readonly config: Config;
  readonly deps: GatherDeps;
  /** --backend, already parsed; null when not given. */
  readonly backend: BackendTarget | null;
  /** The spoofed probe source (see probeSource). */
  readonly source: string | null;
  readonly probeTimeoutMs?: number;
}

export async function runDoctor(opts: DoctorOptions): Promise<DoctorReport> {
  const { config, deps } = opts;
  let facts = await gatherFacts(config, deps);
  if (opts.backend !== null && opts.source !== null) {
    const blocker = probeBlocker(facts, config);
    facts = blocker !== null
      ? { ...facts, backendSkipped: blocker }
      : { ...facts, backend: await probeBackend({ backend: opts.backend, source: opts.source, exec: deps.exec, ...(opts.probeTimeoutMs !== undefined ? { timeoutMs: opts.probeTimeoutMs } : {}) }) };
  }
  return summarize(runChecks(facts, config));
}
