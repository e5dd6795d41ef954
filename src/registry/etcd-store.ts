// The registry of a cluster of interceptor nodes, in etcd. Keys under [registry.etcd] prefix:
//
//   instances/<instance_id>   the record as JSON (registration, learned policy with the compose
//                             hash it was learned for, operator override)
//   ips/<ip>                  the instance holding that address: two nodes cannot register
//                             two instances on one address
//   fetch/<instance_id>       the node fetching that instance's policy, on its lease
//
// Every node holds the whole registry in memory and follows etcd with one watch from the
// revision it loaded, so no decision waits for etcd. A write compares the mod revisions of the
// keys it touches with what this node last saw of them (compare-and-swap): a node that missed
// another node's write gets a StoreConflictError and writes nothing. A probe notices when etcd is
// unreachable; writes then fail at once with ERR_STORE_UNAVAILABLE, and once it answers again the
// watch resumes from the last revision seen (or, past a compaction, the registry is reloaded).
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { noop } from 'cockatiel';
import { Etcd3 } from 'etcd3';
import type { ICompare, IKeyValue, IRequestOp, IWatchResponse } from 'etcd3';
import type { Logger } from 'pino';
import type { EtcdConfig } from '../config.js';
import { InterceptorError } from '../errors.js';
import { createEtcdFetchClaims } from './etcd-fetch-claims.js';
import type { FetchCoordinator } from './fetch-coordinator.js';
import { deserializeInstance, serializeInstance } from './policy.js';
import { StoreConflictError } from './store.js';
import type { RegistryStore, RemoteChange, StoreStatus } from './store.js';
import type { InstanceRecord } from './types.js';

export interface EtcdStoreOptions {
  config: EtcdConfig;
  logger: Logger;
  /** How this node names itself in fetch claims; default `<hostname>:<pid>`. */
  nodeName?: string;
  /** Between two reachability probes; default min(1 s, timeout). */
  probeIntervalMs?: number;
}

export interface EtcdStore extends RegistryStore {
  readonly coordinator: FetchCoordinator;
  status(): StoreStatus;
  follow(apply: RemoteChange): void;
}

/** What this node last saw of a key: the base of its next compare-and-swap. */
interface Seen {
  mod: number;
  present: boolean;
}

export function createEtcdStore(opts: EtcdStoreOptions): EtcdStore {
  const { config } = opts;
  const prefix = config.prefix;
  const INSTANCES = `${prefix}instances/`;
  const IPS = `${prefix}ips/`;
  const FETCH = `${prefix}fetch/`;
  const nodeName = opts.nodeName ?? `${hostname()}:${process.pid}`;
  const logger = opts.logger.child({ component: 'registry-store', store: 'etcd', endpoints: config.endpoints, prefix });
  const timeoutMs = config.timeoutMs;
  const probeIntervalMs = opts.probeIntervalMs ?? Math.min(1000, timeoutMs);
  const callOptions = () => ({ deadline: Date.now() + timeoutMs });

  const client = new Etcd3({
    hosts: [...config.endpoints],
    ...credentials(config),
    ...(config.username !== null && config.password !== null
      ? { auth: { username: config.username, password: config.password, callOptions } }
      : {}),
    // Retries and circuit breaking are this module's business: a write fails fast, and the probe
    // decides when etcd is back.
    faultHandling: { host: () => noop, global: noop },
    // A connection that died silently (a cut link) is noticed by the probe's deadline; the
    // keepalive lets gRPC drop it and dial again. etcd refuses pings more often than every 5 s.
    grpcOptions: { 'grpc.keepalive_time_ms': 10_000, 'grpc.keepalive_timeout_ms': 5_000 },
  });

  const seen = new Map<string, Seen>();
  /** The keys of `seen` that are deletions. */
  const deleted = new Set<string>();
  /** The address each instance holds, as this node last saw it: which ips/ key a write moves. */
  const ipOf = new Map<string, string>();
  /** Every change up to this revision has been applied. */
  let revision = 0;
  let apply: RemoteChange | null = null;
  let phase: 'new' | 'open' | 'closed' = 'new';
  let state: StoreStatus['state'] = 'unreachable';
  let since = Date.now();
  let lastError: string | null = 'not connected yet';
  let watchGeneration = 0;
  /** A watch is being set up or runs (of generation watchGeneration). */
  let watching = false;
  let watchStream: { cancel(): void } | null = null;
  let probeTimer: NodeJS.Timeout | null = null;
  let probing = false;
  let reloading: Promise<void> | null = null;

  // ---- applying what etcd says ------------------------------------------------------------

  /**
   * Takes in one key's state at revision `mod` (value null: absent), unless this node already
   * saw it at that revision or later. The watch, the reads after a lost compare-and-swap and a
   * full reload all pass through here, so they can arrive in any order.
   */
  function observe(key: string, mod: number, value: Buffer | null): void {
    const prev = seen.get(key);
    if (prev !== undefined && mod <= prev.mod) return;
    see(key, mod, value !== null);
    if (key.startsWith(INSTANCES)) {
      const id = key.slice(INSTANCES.length);
      if (value === null) {
        ipOf.delete(id);
        apply?.(id, undefined);
        return;
      }
      let record: InstanceRecord;
      try {
        record = decode(key, value);
      } catch (err) {
        // Keep what this node had: dropping the instance would let its connections through.
        logger.error({ err, key, mod }, 'etcd holds an invalid registry record; this node keeps its previous copy');
        return;
      }
      ipOf.set(id, record.ip);
      apply?.(id, record);
    } else if (key.startsWith(FETCH) && value === null) {
      claims.released(key);
    }
  }

  function decode(key: string, value: Buffer): InstanceRecord {
    const record = deserializeInstance(JSON.parse(value.toString('utf8')));
    if (INSTANCES + record.instanceId !== key) throw new Error(`the record is for instance ${record.instanceId}`);
    return record;
  }

  function see(key: string, mod: number, present: boolean): void {
    seen.set(key, { mod, present });
    if (present) deleted.delete(key);
    else deleted.add(key);
  }

  /** Drops deletions that only guarded against stale events: the watch is past them. */
  function forgetDeletions(): void {
    for (const key of deleted) {
      const s = seen.get(key);
      if (s === undefined || s.present) deleted.delete(key);
      else if (s.mod <= revision) {
        seen.delete(key);
        deleted.delete(key);
      }
    }
  }

  // ---- loading and following ----------------------------------------------------------------

  async function readAll(): Promise<{ revision: number; kvs: IKeyValue[] }> {
    const res = await client.kv.range({ key: Buffer.from(prefix), range_end: prefixEnd(prefix) }, callOptions());
    return { revision: Number(res.header.revision), kvs: res.kvs };
  }

  async function load(): Promise<InstanceRecord[]> {
    if (phase !== 'new') throw new InterceptorError('ERR_STORE_STATE', 'etcd registry store: load() called twice or after close()');
    phase = 'closed';
    let all: { revision: number; kvs: IKeyValue[] };
    try {
      all = await readAll();
    } catch (err) {
      client.close();
      throw unavailable(`loading the registry from ${config.endpoints.join(', ')}`, err, false, 'The daemon does not start without its registry.');
    }
    const records: InstanceRecord[] = [];
    for (const kv of all.kvs) {
      const key = kv.key.toString('utf8');
      if (key.startsWith(INSTANCES)) {
        try {
          const record = decode(key, kv.value);
          records.push(record);
          ipOf.set(record.instanceId, record.ip);
        } catch (err) {
          client.close();
          throw new InterceptorError(
            'ERR_STORE_CORRUPT',
            `etcd key ${key} (mod revision ${kv.mod_revision}) does not hold a valid registry record: ${(err as Error).message}. ` +
              `Nothing was changed and no rule was installed. Fix or delete that key, then start again.`,
          );
        }
      }
      see(key, Number(kv.mod_revision), true);
    }
    revision = all.revision;
    phase = 'open';
    state = 'ok';
    since = Date.now();
    lastError = null;
    logger.info({ records: records.length, revision, node: nodeName }, 'registry loaded from etcd');
    return records;
  }

  function follow(fn: RemoteChange): void {
    if (phase !== 'open') throw new InterceptorError('ERR_STORE_STATE', 'etcd registry store: follow() before load()');
    apply = fn;
    startWatch();
    probeTimer = setInterval(() => void probe(), probeIntervalMs);
    probeTimer.unref();
  }

  function startWatch(): void {
    const generation = ++watchGeneration;
    const from = revision + 1;
    watching = true;
    client.watchClient.watch().then(
      (stream) => {
        if (generation !== watchGeneration || phase !== 'open') {
          stream.cancel();
          return;
        }
        watchStream = stream;
        stream.on('data', (res: IWatchResponse) => {
          if (generation === watchGeneration) onWatchResponse(res);
        });
        stream.on('error', (err: Error) => {
          if (generation === watchGeneration) watchLost(err);
        });
        stream.on('end', () => {
          if (generation === watchGeneration) watchLost(new Error('the watch stream ended'));
        });
        stream.write({
          create_request: { key: Buffer.from(prefix), range_end: prefixEnd(prefix), start_revision: String(from), progress_notify: true },
        });
      },
      (err: unknown) => {
        if (generation === watchGeneration) watchLost(err);
      },
    );
  }

  function stopWatch(): void {
    watchGeneration++;
    watching = false;
    const stream = watchStream;
    watchStream = null;
    stream?.cancel();
  }

  function onWatchResponse(res: IWatchResponse): void {
    if (res.canceled) {
      const compacted = Number(res.compact_revision);
      stopWatch();
      if (compacted > 0) void reload(`the watch fell behind a compaction (revision ${revision + 1} is compacted, etcd keeps ${compacted} on)`);
      else watchLost(new Error(`etcd canceled the watch: ${res.cancel_reason || 'no reason given'}`));
      return;
    }
    if (res.created) {
      reachable(`following from revision ${revision + 1}`);
      return;
    }
    for (const ev of res.events) {
      const mod = Number(ev.kv.mod_revision);
      observe(ev.kv.key.toString('utf8'), mod, String(ev.type).toUpperCase() === 'DELETE' ? null : ev.kv.value);
      if (mod > revision) revision = mod;
    }
    // An empty response is a progress notification: every change up to its revision was sent.
    if (res.events.length === 0) revision = Math.max(revision, Number(res.header.revision));
    forgetDeletions();
  }

  function watchLost(err: unknown): void {
    stopWatch();
    unreachable(err);
  }

  /** After a compaction: the whole prefix again; whatever changed meanwhile is applied. */
  function reload(why: string): Promise<void> {
    reloading ??= (async () => {
      try {
        const all = await readAll();
        const present = new Set<string>();
        let changed = 0;
        const count = (key: string, mod: number, value: Buffer | null): void => {
          const before = seen.get(key);
          observe(key, mod, value);
          if (seen.get(key) !== before && key.startsWith(INSTANCES)) changed++;
        };
        for (const kv of all.kvs) present.add(kv.key.toString('utf8'));
        // Removals first, so that an address moved between instances is never held twice here.
        for (const [key, s] of [...seen]) if (s.present && !present.has(key)) count(key, all.revision, null);
        for (const kv of all.kvs) count(kv.key.toString('utf8'), Number(kv.mod_revision), kv.value);
        revision = Math.max(revision, all.revision);
        forgetDeletions();
        logger.warn({ why, revision, instancesChanged: changed }, 'registry reloaded from etcd');
        if (phase === 'open') startWatch();
      } catch (err) {
        unreachable(err);
      } finally {
        reloading = null;
      }
    })();
    return reloading;
  }

  async function probe(): Promise<void> {
    if (probing || phase !== 'open') return;
    probing = true;
    try {
      await client.kv.range({ key: Buffer.from(`${prefix}probe`) }, callOptions());
      if (!watching && reloading === null) startWatch(); // reachable once the watch is created
      else if (state === 'unreachable' && watchStream !== null) reachable('the watch kept running');
    } catch (err) {
      if (phase === 'open') {
        stopWatch();
        unreachable(err);
      }
    } finally {
      probing = false;
    }
  }

  function reachable(how: string): void {
    if (state === 'ok') return;
    state = 'ok';
    lastError = null;
    logger.info({ downMs: Date.now() - since, revision }, `etcd reachable again; ${how}`);
    since = Date.now();
    claims.retryReleases();
  }

  function unreachable(err: unknown): void {
    const why = describeError(err);
    if (state === 'unreachable') {
      lastError = why;
      return;
    }
    state = 'unreachable';
    since = Date.now();
    lastError = why;
    logger.warn({ error: why, revision }, 'etcd unreachable: decisions go on from memory, writes fail until it answers again');
  }

  // ---- writes --------------------------------------------------------------------------------

  function compareMod(key: string): ICompare {
    const s = seen.get(key);
    // A key this node has not seen (or saw deleted) must not exist: mod revision 0.
    return { key: Buffer.from(key), target: 'Mod', result: 'Equal', mod_revision: s?.present ? s.mod : 0 };
  }

  function refuseWrite(what: string): InterceptorError | null {
    if (phase !== 'open') return new InterceptorError('ERR_STORE_STATE', `etcd registry store is ${phase === 'new' ? 'not loaded' : 'closed'}`);
    if (state === 'unreachable') {
      return new InterceptorError(
        'ERR_STORE_UNAVAILABLE',
        `${what}: etcd (${config.endpoints.join(', ')}) is unreachable since ${new Date(since).toISOString()} (${lastError}); ` +
          'nothing was written. Connections are still decided from this node\'s copy of the registry; try again once etcd is back.',
      );
    }
    return null;
  }

  /** Builds the transaction now (this node's view as of this tick), then sends it. */
  function put(record: InstanceRecord): Promise<void> {
    const id = record.instanceId;
    const what = `registering ${id}`;
    const refused = refuseWrite(what);
    if (refused) return Promise.reject(refused);
    const key = INSTANCES + id;
    const ipKey = IPS + record.ip;
    const oldIp = ipOf.get(id);
    const compare = [compareMod(key), compareMod(ipKey)];
    const success: IRequestOp[] = [
      { request_put: { key: Buffer.from(key), value: Buffer.from(JSON.stringify(serializeInstance(record))) } },
      { request_put: { key: Buffer.from(ipKey), value: Buffer.from(id) } },
    ];
    const oldIpKey = oldIp !== undefined && oldIp !== record.ip ? IPS + oldIp : null;
    if (oldIpKey !== null) {
      compare.push(compareMod(oldIpKey));
      success.push({ request_delete_range: { key: Buffer.from(oldIpKey) } });
    }
    return commit(id, what, compare, success, (rev) => {
      see(key, rev, true);
      see(ipKey, rev, true);
      if (oldIpKey !== null) see(oldIpKey, rev, false);
      ipOf.set(id, record.ip);
    });
  }

  function remove(id: string): Promise<void> {
    const what = `removing ${id}`;
    const refused = refuseWrite(what);
    if (refused) return Promise.reject(refused);
    const key = INSTANCES + id;
    const ip = ipOf.get(id);
    const compare = [compareMod(key)];
    const success: IRequestOp[] = [{ request_delete_range: { key: Buffer.from(key) } }];
    const ipKey = ip === undefined ? null : IPS + ip;
    if (ipKey !== null) {
      compare.push(compareMod(ipKey));
      success.push({ request_delete_range: { key: Buffer.from(ipKey) } });
    }
    return commit(id, what, compare, success, (rev) => {
      see(key, rev, false);
      if (ipKey !== null) see(ipKey, rev, false);
      ipOf.delete(id);
    });
  }

  async function commit(id: string, what: string, compare: ICompare[], success: IRequestOp[], committed: (rev: number) => void): Promise<void> {
    let res;
    try {
      res = await client.kv.txn({ compare, success, failure: [] }, callOptions());
    } catch (err) {
      unreachable(err);
      throw unavailable(what, err, true);
    }
    if (!res.succeeded) {
      const keys = compare.map((c) => (c.key as Buffer).toString('utf8'));
      throw new StoreConflictError(id, () => catchUp(keys));
    }
    committed(Number(res.header.revision));
  }

  /** Reads `keys` (and the instance an ips/ key names) and takes them in. */
  async function catchUp(keys: string[]): Promise<void> {
    const read = async (ks: string[]): Promise<Array<{ key: string; kv: IKeyValue | undefined; revision: number }>> => {
      const res = await client.kv.txn(
        { compare: [], success: ks.map((k) => ({ request_range: { key: Buffer.from(k) } })), failure: [] },
        callOptions(),
      );
      const rev = Number(res.header.revision);
      return ks.map((key, i) => ({ key, kv: res.responses[i]?.response_range.kvs[0], revision: rev }));
    };
    try {
      const first = await read(keys);
      const owners = first
        .filter((r) => r.key.startsWith(IPS) && r.kv !== undefined)
        .map((r) => INSTANCES + (r.kv as IKeyValue).value.toString('utf8'))
        .filter((k) => !keys.includes(k));
      const all = owners.length > 0 ? [...first, ...(await read(owners))] : first;
      for (const r of all) observe(r.key, r.kv === undefined ? r.revision : Number(r.kv.mod_revision), r.kv === undefined ? null : r.kv.value);
    } catch (err) {
      unreachable(err);
      throw unavailable('reading what another node changed', err, false);
    }
  }

  const claims = createEtcdFetchClaims({
    client,
    logger,
    nodeName,
    claimPrefix: FETCH,
    instancePrefix: INSTANCES,
    callOptions,
    view: {
      compareMod,
      observe,
      goneSince: (key, mod) => revision >= mod && seen.get(key)?.present !== true,
      reachable: () => phase === 'open' && state === 'ok',
    },
  });

  // ---- lifecycle -----------------------------------------------------------------------------

  async function close(): Promise<void> {
    if (phase === 'closed' && !watching) return;
    const wasOpen = phase === 'open';
    phase = 'closed';
    if (probeTimer !== null) clearInterval(probeTimer);
    probeTimer = null;
    stopWatch();
    await claims.close(wasOpen && state === 'ok');
    client.close();
  }

  return {
    load,
    follow,
    put,
    delete: remove,
    coordinator: claims.coordinator,
    status: () => ({ kind: 'etcd', state, since, error: lastError }),
    close,
  };
}

// ---------------------------------------------------------------------------------------------

/** The range end that makes a range request cover every key starting with `prefix`. */
function prefixEnd(prefix: string): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i]! < 0xff) {
      end[i]!++;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]);
}

function credentials(config: EtcdConfig): { credentials?: { rootCertificate: Buffer; privateKey?: Buffer; certChain?: Buffer } } {
  if (config.ca === null && config.cert === null) return {};
  const read = (file: string, key: string): Buffer => {
    try {
      return readFileSync(file);
    } catch (err) {
      throw new InterceptorError(
        'ERR_STORE_UNREADABLE',
        `registry.etcd.${key}: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
        { cause: err },
      );
    }
  };
  return {
    credentials: {
      // undefined: the system's CAs.
      rootCertificate: (config.ca === null ? undefined : read(config.ca, 'ca')) as Buffer,
      ...(config.cert !== null && config.key !== null ? { certChain: read(config.cert, 'cert'), privateKey: read(config.key, 'key') } : {}),
    },
  };
}

function describeError(err: unknown): string {
  if (err instanceof Error) return `${err.constructor.name}: ${err.message}`;
  return String(err);
}

function unavailable(what: string, err: unknown, outcomeUnknown: boolean, tail = ''): InterceptorError {
  const name = err instanceof Error ? err.constructor.name : '';
  if (name === 'EtcdAuthenticationFailedError' || name === 'EtcdPermissionDeniedError' || name === 'GRPCUnauthenticatedError') {
    return new InterceptorError(
      'ERR_STORE_AUTH',
      `${what}: etcd refused this node (${describeError(err)}); check [registry.etcd] username, password and the user's role on the prefix.`,
      { cause: err },
    );
  }
  const sent = outcomeUnknown
    ? ' The request may or may not have been applied: this node follows etcd and shows the outcome once it is reachable.'
    : '';
  return new InterceptorError('ERR_STORE_UNAVAILABLE', `${what}: etcd did not answer (${describeError(err)}).${sent}${tail ? ` ${tail}` : ''}`, {
    cause: err,
  });
}
