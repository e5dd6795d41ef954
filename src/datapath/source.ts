// Where the table's DecisionEntries come from. The registry owns their semantics and, once it
// provides them itself (`entries()` and a change subscription), this adapter goes; until then it
// derives them from today's records with today's decision (registry.ts decide()), which the
// differential test checks entry by entry.
import type { RegistryService } from '../registry/service.js';
import type { DecisionEntry, InstanceRecord } from '../registry/types.js';

export interface DecisionSource {
  entries(): Iterable<DecisionEntry>;
  /** Calls `onChange` after every change of any entry; returns the unsubscribe. */
  subscribe(onChange: () => void): () => void;
  /** An instance was refused because its policy is unknown: learn it (deduplicated by the fetcher). */
  requestFetch(instanceId: string): void;
}

const NO_PORTS: ReadonlyMap<number, boolean> = new Map();

/**
 * Today's decision for one record: the override, else the reported or learned policy, decides;
 * with neither, a restricted instance is refused (policy_unknown) and any other passes
 * transparently (source null) while its policy is fetched.
 */
export function entryFromRecord(record: InstanceRecord): DecisionEntry {
  const effective = record.override ?? record.reportedPolicy;
  if (effective === null) {
    return {
      instanceId: record.instanceId,
      ip: record.ip,
      refuseAll: record.restricted ? 'policy_unknown' : null,
      restrictMode: false,
      ports: NO_PORTS,
      source: null,
    };
  }
  const ports = new Map<number, boolean>();
  for (const [port, rule] of effective.ports) ports.set(port, rule.pp);
  return {
    instanceId: record.instanceId,
    ip: record.ip,
    refuseAll: null,
    restrictMode: effective.restrictMode,
    ports,
    source: record.override !== null ? 'override' : 'policy',
  };
}

export function registrySource(service: RegistryService): DecisionSource {
  return {
    entries: () => service.list().map(entryFromRecord),
    subscribe: (onChange) => service.registry.subscribe(() => onChange()),
    requestFetch: (id) => service.requestFetch(id),
  };
}
