// Which node of a cluster fetches a policy: the one that creates `fetch/<instance_id>` under the
// prefix, on its lease. The others wait for that key to go (released once the learned policy is
// written, or expired with the lease of a node that died) and find the policy in the registry.
import type { Etcd3, ICompare, Lease } from 'etcd3';
import type { Logger } from 'pino';
import type { FetchClaim, FetchCoordinator } from './fetch-coordinator.js';

/** A claim outlives its node by at most this long. */
const LEASE_TTL_S = 10;
/** Waiting for another node's fetch: look again after this long even if nothing was heard. */
const WAIT_MAX_MS = 60_000;

/** What the claims need from the store's copy of etcd. */
export interface ClaimsView {
  /** Holds while this node's copy of `key` is current. */
  compareMod(key: string): ICompare;
  /** Takes in a key's state as etcd just answered it (value null: absent at revision `mod`). */
  observe(key: string, mod: number, value: Buffer | null): void;
  /** The watch has passed revision `mod`, and `key` is not there. */
  goneSince(key: string, mod: number): boolean;
  reachable(): boolean;
}

export interface EtcdFetchClaims {
  readonly coordinator: FetchCoordinator;
  /** The watch saw the claim `key` go. */
  released(key: string): void;
  /** etcd answers again: releases that did not reach it are sent again. */
  retryReleases(): void;
  /** Stops waiting; `revoke`: drop this node's claims now rather than when the lease expires. */
  close(revoke: boolean): Promise<void>;
}

const LOCAL: FetchClaim = Object.freeze({ kind: 'mine', release: () => Promise.resolve() });

export function createEtcdFetchClaims(opts: {
  client: Etcd3;
  logger: Logger;
  nodeName: string;
  claimPrefix: string;
  instancePrefix: string;
  callOptions: () => { deadline: number };
  view: ClaimsView;
}): EtcdFetchClaims {
  const { client, logger, nodeName, claimPrefix, instancePrefix, callOptions, view } = opts;
  let lease: Lease | null = null;
  let leaseId: Promise<string> | null = null;
  const waiters = new Map<string, Set<() => void>>();
  /** Claims whose release failed (etcd unreachable): released again once it answers. */
  const unreleased = new Map<string, number>();

  function ownLease(): Promise<string> {
    if (leaseId === null) {
      const l = client.lease(LEASE_TTL_S, callOptions());
      const forget = (): void => {
        if (lease === l) {
          lease = null;
          leaseId = null;
        }
      };
      l.on('lost', forget);
      lease = l;
      leaseId = l.grant();
      leaseId.catch(forget);
    }
    return leaseId;
  }

  function released(key: string): void {
    const set = waiters.get(key);
    if (set === undefined) return;
    waiters.delete(key);
    for (const wake of set) wake();
  }

  /** Resolves once the claim `key`, last written at revision `mod`, is gone. */
  function waitForRelease(key: string, mod: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, WAIT_MAX_MS);
      timer.unref();
      function done(): void {
        clearTimeout(timer);
        waiters.get(key)?.delete(done);
        resolve();
      }
      // The watch may have carried its deletion already, between etcd's answer and now.
      if (view.goneSince(key, mod)) {
        done();
        return;
      }
      let set = waiters.get(key);
      if (set === undefined) waiters.set(key, (set = new Set()));
      set.add(done);
    });
  }

  async function release(key: string, created: number): Promise<void> {
    try {
      await client.kv.txn(
        {
          compare: [{ key: Buffer.from(key), target: 'Create', result: 'Equal', create_revision: created }],
          success: [{ request_delete_range: { key: Buffer.from(key) } }],
          failure: [],
        },
        callOptions(),
      );
      unreleased.delete(key);
    } catch (err) {
      unreleased.set(key, created);
      logger.warn({ key, error: (err as Error).message }, 'releasing a fetch claim failed; it is released once etcd answers');
    }
  }

  const coordinator: FetchCoordinator = {
    async acquire(instanceId) {
      // Unreachable: fetch here. The policy then serves this node from memory only.
      if (!view.reachable()) return LOCAL;
      const key = claimPrefix + instanceId;
      const instanceKey = instancePrefix + instanceId;
      try {
        const id = await ownLease();
        const res = await client.kv.txn(
          {
            // Free, and this node's copy of the instance is current: otherwise the policy may
            // just have been learned elsewhere.
            compare: [{ key: Buffer.from(key), target: 'Create', result: 'Equal', create_revision: 0 }, view.compareMod(instanceKey)],
            success: [{ request_put: { key: Buffer.from(key), value: Buffer.from(nodeName), lease: id } }],
            failure: [{ request_range: { key: Buffer.from(key) } }, { request_range: { key: Buffer.from(instanceKey) } }],
          },
          callOptions(),
        );
        if (res.succeeded) {
          const created = Number(res.header.revision);
          return { kind: 'mine', release: () => release(key, created) };
        }
        const holder = res.responses[0]?.response_range.kvs[0];
        const instance = res.responses[1]?.response_range.kvs[0];
        view.observe(instanceKey, instance === undefined ? Number(res.header.revision) : Number(instance.mod_revision), instance?.value ?? null);
        if (holder === undefined) return { kind: 'elsewhere', holder: 'this node, catching up', settled: Promise.resolve() };
        const name = holder.value.toString('utf8');
        // Left by this node's own earlier claim (its release did not reach etcd).
        if (name === nodeName) return { kind: 'mine', release: () => release(key, Number(holder.create_revision)) };
        return { kind: 'elsewhere', holder: `node ${name}`, settled: waitForRelease(key, Number(holder.mod_revision)) };
      } catch (err) {
        logger.warn({ instanceId, error: (err as Error).message }, 'cannot claim the policy fetch in etcd; fetching here');
        return LOCAL;
      }
    },
  };

  return {
    coordinator,
    released,
    retryReleases() {
      for (const [key, created] of unreleased) void release(key, created);
    },
    async close(revoke) {
      for (const key of [...waiters.keys()]) released(key);
      if (revoke && lease !== null) {
        await lease.revoke(callOptions()).catch((err: unknown) => logger.warn({ error: (err as Error).message }, 'revoking the fetch lease failed'));
      } else {
        lease?.release();
      }
    },
  };
}
