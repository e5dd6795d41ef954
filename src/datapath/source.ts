// Where the table's DecisionEntries come from: the registry, which owns their semantics
// (src/registry/entry.ts derives them; Registry.decide() reads the same entries).
import type { RegistryService } from '../registry/service.js';
import type { DecisionEntry } from '../registry/types.js';

export interface DecisionSource {
  entries(): Iterable<DecisionEntry>;
  /** Calls `onChange` after every change of any entry; returns the unsubscribe. */
  subscribe(onChange: () => void): () => void;
  /** An instance was refused because its policy is unknown: learn it (deduplicated by the fetcher). */
  requestFetch(instanceId: string): void;
}

export function registrySource(service: RegistryService): DecisionSource {
  return {
    entries: () => service.entries(),
    subscribe: (onChange) => service.subscribeEntries(() => onChange()),
    requestFetch: (id) => service.requestFetch(id),
  };
}
