// Typed, throwing wrappers over the addon's engine: the loop threads that accept, decide from the
// table, connect and relay (native/engine.h). Arguments are checked here, before native code sees
// them; OS failures come back as Node-shaped errors.
import { readFileSync } from 'node:fs';
import { InterceptorError, systemError } from '../errors.js';
import { loadAddon } from './addon.js';
import { invalidArg, isFd } from './args.js';

/** What a reload may change (setEngineSettings): connections accepted from then on use it. */
export interface EngineSettings {
  readonly connectTimeoutMs: number;
  /** 0: no idle timeout. */
  readonly idleTimeoutMs: number;
  /** Time for a trusted source's PROXY header. */
  readonly headerTimeoutMs: number;
  readonly ppVersion: 1 | 2;
  readonly keepClientPort: boolean;
  /** An `open` event per connection (for debug logs). */
  readonly reportOpen: boolean;
}

export interface EngineOptions extends EngineSettings {
  /** Bytes per splice pipe; 0 for the kernel's default (64 KiB). */
  readonly pipeSize: number;
  readonly maxV2Length: number;
  readonly maxConnections: number;
}

export interface EngineStats {
  /** Connections held now (both sockets open). */
  readonly live: number;
  readonly accepted: number;
  /** Accepted and reset at once: the cap was reached, or the process was out of descriptors. */
  readonly overCapacity: number;
  readonly threads: number;
  /** Pipes held by connections with bytes in flight, and empty ones the threads keep (2 descriptors each). */
  readonly pipesInUse: number;
  readonly pipesPooled: number;
  readonly pipePoolMax: number;
  /** New pipes the kernel refused upstream.pipe_size (they kept its default). */
  readonly pipeSizeRefused: number;
  /** Replaced tables not yet freed (a thread may still read them). */
  readonly tablesRetired: number;
  readonly generation: number;
}

const MAX_MS = 0xffffffff;

function checkInt(name: string, value: unknown, min: number, max: number): void {
  if (!Number.isInteger(value) || (value as number) < min || (value as number) > max) throw invalidArg(name, value, `an integer in ${min}..${max}`);
}

/**
 * Starts one loop thread per entry of `listenFds` (each thread's listening sockets, taken over:
 * closed by the engine, also when this throws). A socket may be listed for several threads: it
 * is then shared, each of them waiting on it with EPOLLEXCLUSIVE (one is woken per connection).
 * `onEvents` receives event batches on the JavaScript thread (src/datapath/events.ts). Until the
 * first table is set every connection is refused. EBUSY when an engine is already running (one
 * per process).
 */
export function startEngine(opts: EngineOptions, listenFds: readonly (readonly number[])[], onEvents: (batch: Buffer) => void): void {
  const addon = loadAddon();
  const closeAll = (): void => {
    const all: unknown[] = Array.isArray(listenFds) ? listenFds.flat() : [];
    for (const fd of new Set(all)) if (isFd(fd)) addon.close(fd as number);
  };
  try {
    if (!Array.isArray(listenFds) || listenFds.length < 1 || listenFds.length > 256) throw invalidArg('listenFds', listenFds, 'one array of listening sockets per thread (1..256 threads)');
    for (const list of listenFds) {
      if (!Array.isArray(list) || list.length === 0 || !list.every(isFd)) throw invalidArg('listenFds', list, 'an array of file descriptors');
    }
    if (typeof onEvents !== 'function') throw invalidArg('onEvents', onEvents, 'a function');
    checkInt('pipeSize', opts.pipeSize, 0, 0x7fffffff);
    checkInt('maxV2Length', opts.maxV2Length, 0, 65535);
    checkInt('maxConnections', opts.maxConnections, 1, MAX_MS);
    checkSettings(opts);
  } catch (err) {
    closeAll();
    throw err;
  }
  const rc = addon.engineStart({ ...opts }, listenFds.map((l) => [...l]), onEvents);
  if (rc < 0) throw systemError(rc, 'engineStart');
}

function checkSettings(s: EngineSettings): void {
  checkInt('connectTimeoutMs', s.connectTimeoutMs, 0, MAX_MS);
  checkInt('idleTimeoutMs', s.idleTimeoutMs, 0, MAX_MS);
  checkInt('headerTimeoutMs', s.headerTimeoutMs, 0, MAX_MS);
  if (s.ppVersion !== 1 && s.ppVersion !== 2) throw invalidArg('ppVersion', s.ppVersion, '1 or 2');
}

/**
 * New settings for the connections each thread accepts from its next wake-up on (a reload);
 * established connections keep the ones they started with.
 */
export function setEngineSettings(settings: EngineSettings): void {
  checkSettings(settings);
  const { connectTimeoutMs, idleTimeoutMs, headerTimeoutMs, ppVersion, keepClientPort, reportOpen } = settings;
  const rc = loadAddon().engineSetSettings({ connectTimeoutMs, idleTimeoutMs, headerTimeoutMs, ppVersion, keepClientPort, reportOpen });
  if (rc < 0) throw systemError(rc, 'engineSetSettings');
}

/**
 * Asks every thread for its live connections, at most `limitPerThread` each; the answers come
 * with the event batches (`live` and `snapshot-done` records carrying the returned number).
 */
export function requestEngineSnapshot(limitPerThread: number): number {
  checkInt('limitPerThread', limitPerThread, 0, 0x7fffffff);
  const rc = loadAddon().engineRequestSnapshot(limitPerThread);
  if (rc < 0) throw systemError(rc, 'engineRequestSnapshot');
  return rc;
}

/** Publishes a compiled table (src/datapath/table.ts) for every connection accepted from now on. */
export function setEngineTable(table: Buffer): void {
  if (!Buffer.isBuffer(table)) throw invalidArg('table', table, 'a Buffer');
  const rc = loadAddon().engineSetTable(table);
  if (rc < 0) throw systemError(rc, 'engineSetTable');
}

/** Every thread closes its listeners; live connections go on. */
export function stopEngineAccepting(): void {
  const rc = loadAddon().engineStopAccepting();
  if (rc < 0) throw systemError(rc, 'engineStopAccepting');
}

/** Every live connection ends now; each reports `aborted`. */
export function abortEngineConnections(): void {
  const rc = loadAddon().engineAbortAll();
  if (rc < 0) throw systemError(rc, 'engineAbortAll');
}

/** null when no engine runs. */
export function engineStats(): EngineStats | null {
  return loadAddon().engineStats();
}

/** The events the threads hold that were not delivered yet (take them before a shutdown). */
export function takeEngineEvents(): Buffer {
  return loadAddon().engineTakeEvents();
}

/** Stops and joins the threads; returns how many connections were still open (closed, unreported). */
export function shutdownEngine(): number {
  return loadAddon().engineShutdown();
}

/**
 * Checks that pipes of `pipeSize` bytes can be had here, before anything starts: the kernel
 * refuses beyond fs.pipe-max-size (EPERM). Throws ERR_PIPE_SIZE naming the limits.
 */
export function checkPipeSize(pipeSize: number): void {
  checkInt('pipeSize', pipeSize, 0, 0x7fffffff);
  if (pipeSize === 0) return;
  const rc = loadAddon().pipeSizeProbe(pipeSize);
  if (rc >= 0) return;
  const cause = systemError(rc, 'fcntl');
  throw new InterceptorError(
    'ERR_PIPE_SIZE',
    `upstream.pipe_size ${pipeSize} was refused by the kernel (${cause.code}): it may not exceed fs.pipe-max-size ` +
      `(${readSysctl('fs/pipe-max-size')} here) nor, without CAP_SYS_RESOURCE, push the user's pipes past ` +
      `fs.pipe-user-pages-soft (${readSysctl('fs/pipe-user-pages-soft')} pages); lower upstream.pipe_size or set it to 0 for the kernel's default`,
    { cause },
  );
}

function readSysctl(name: string): string {
  try {
    return readFileSync(`/proc/sys/${name}`, 'utf8').trim();
  } catch {
    return 'unknown';
  }
}
