// Registry persistence: what a store does for the registry service, and which one a config picks.
// SQLite (sqlite-store.ts) on one host; etcd (etcd-store.ts) for a cluster of interceptor nodes.
import type { Logger } from 'pino';
import type { RegistryConfig } from '../config.js';
import { InterceptorError } from '../errors.js';
import type { FetchCoordinator } from './fetch-coordinator.js';
import type { InstanceRecord } from './types.js';

/** Applies a change another node made: a record, or undefined for a removal. */
export type RemoteChange = (instanceId: string, record: InstanceRecord | undefined) => void;

export interface StoreStatus {
  readonly kind: 'sqlite' | 'etcd';
  /** `unreachable`: decisions go on from memory, writes fail with ERR_STORE_UNAVAILABLE. */
  readonly state: 'ok' | 'unreachable';
  /** When the current state began (ms since the epoch). */
  readonly since: number;
  /** Why the store is unreachable. */
  readonly error: string | null;
}

export interface RegistryStore {
  /** Opens the store and returns the records. Call once, before anything else. */
  load(): Promise<InstanceRecord[]>;
  /**
   * Resolves once the record is durable. The write is checked against this node's copy of the
   * instance as it is when put() is called: call it in the same tick as the in-memory change it
   * persists (etcd rejects it with StoreConflictError when another node changed the instance).
   */
  put(record: InstanceRecord): Promise<void>;
  /** Resolves once the deletion is durable; same rule as put(). */
  delete(instanceId: string): Promise<void>;
  /** Starts following changes made by other nodes (etcd); from then on `apply` receives them. */
  follow?(apply: RemoteChange): void;
  status?(): StoreStatus;
  /** Which node fetches a policy; absent: this one. */
  readonly coordinator?: FetchCoordinator;
  /** Waits for writes in flight, then closes. */
  close(): Promise<void>;
}

/**
 * Another node changed the instance since this node last saw it: nothing was written. Call
 * `catchUp()` (it brings this node's copy up to date), then apply the change again.
 */
export class StoreConflictError extends InterceptorError {
  readonly instanceId: string;
  readonly catchUp: () => Promise<void>;
  constructor(instanceId: string, catchUp: () => Promise<void>) {
    super(
      'ERR_STORE_CONFLICT',
      `instance ${instanceId} (or the address it claims) was changed by another node while this change was being written; nothing was written, try again`,
    );
    this.instanceId = instanceId;
    this.catchUp = catchUp;
  }
}

/** Opens the store `[registry] store` names. etcd's client is loaded only when it is used. */
export async function openRegistryStore(config: RegistryConfig, logger: Logger): Promise<RegistryStore> {
  if (config.store === 'etcd') {
    const { createEtcdStore } = await import('./etcd-store.js');
    if (config.etcd === null) throw new InterceptorError('ERR_CONFIG', 'config: registry.etcd: missing although registry.store = "etcd"');
    return createEtcdStore({ config: config.etcd, logger });
  }
  const { createSqliteStore } = await import('./sqlite-store.js');
  return createSqliteStore({ dir: config.path, logger });
}
