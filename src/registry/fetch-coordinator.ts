// Which node of a cluster fetches an instance's policy from its guest agent. With one node (the
// SQLite store) it is always this one; with etcd a lease-bound key names the node that fetches,
// and the others wait for its result to arrive through the store.

export type FetchClaim =
  /** This node fetches; `release()` once the result is persisted (or the attempt failed). */
  | { readonly kind: 'mine'; release(): Promise<void> }
  /**
   * Another node fetches (`holder` names it), or this node's copy of the instance was behind.
   * `settled` resolves once that node released its claim or this node caught up: then look at
   * the instance again (learned meanwhile?) before asking for another claim.
   */
  | { readonly kind: 'elsewhere'; readonly holder: string; readonly settled: Promise<void> };

export interface FetchCoordinator {
  acquire(instanceId: string): Promise<FetchClaim>;
}

const MINE: FetchClaim = Object.freeze({ kind: 'mine', release: () => Promise.resolve() });

/** One node: every fetch is this node's. */
export const LOCAL_FETCHES: FetchCoordinator = Object.freeze({ acquire: () => Promise.resolve(MINE) });
