// More than one accepting process: N workers, each with its own transparent listener on the same
// address (SO_REUSEPORT) and a replica of the registry that follows the primary's changes. The
// primary keeps the registry, the fetcher, the admin API and the rules; workers ask it to fetch a
// policy their decision found missing. Same `Interceptor` face as the in-process listener.
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import { InterceptorError } from '../errors.js';
import type { Registry } from '../registry/registry.js';
import { serializeInstance } from '../registry/policy.js';
import { createStats } from './connection.js';
import type { Interceptor } from './listener.js';

/** Primary → worker. */
export type ToWorker =
  | { type: 'init'; index: number; config: Config; records: unknown[] }
  | { type: 'change'; id: string; record: unknown | null }
  | { type: 'stop'; drainMs: number };

/** Worker → primary. */
export type FromWorker =
  | { type: 'ready' }
  | { type: 'failed'; error: { code: string; message: string } }
  | { type: 'fetch'; id: string }
  | { type: 'stopped'; drained: number; aborted: number };

const WORKER_ENTRY = fileURLToPath(new URL('../worker.js', import.meta.url));
const RESPAWN_DELAY_MS = 1000;

export function createWorkerPool(opts: {
  logger: Logger;
  config: Config;
  registry: Registry;
  requestFetch: (instanceId: string) => void;
}): Interceptor {
  const { logger, config, registry } = opts;
  const count = config.listen.workers;
  const workers = new Map<number, ChildProcess>();
  let stopping = false;
  let unsubscribe: (() => void) | undefined;

  const send = (child: ChildProcess, msg: ToWorker): void => {
    if (child.connected) child.send(msg);
  };

  function spawnWorker(index: number): Promise<void> {
    const child = fork(WORKER_ENTRY, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    workers.set(index, child);
    return new Promise<void>((resolve, reject) => {
      let ready = false;
      child.on('message', (msg: FromWorker) => {
        if (msg.type === 'ready') {
          ready = true;
          resolve();
        } else if (msg.type === 'failed') {
          reject(Object.assign(new InterceptorError(msg.error.code, msg.error.message), { worker: index }));
        } else if (msg.type === 'fetch') {
          opts.requestFetch(msg.id);
        }
      });
      child.on('exit', (code, signal) => {
        if (workers.get(index) === child) workers.delete(index);
        if (!ready) {
          reject(new InterceptorError('ERR_WORKER_EXITED', `worker ${index} exited (${code ?? signal}) before it was ready`));
          return;
        }
        if (stopping) return;
        logger.error({ worker: index, code, signal }, 'worker exited; starting a new one');
        setTimeout(() => {
          if (!stopping) spawnWorker(index).catch((err: unknown) => logger.error({ err, worker: index }, 'worker restart failed'));
        }, RESPAWN_DELAY_MS).unref();
      });
      // The records are sent at init and every change after it, in order, over the same channel.
      send(child, { type: 'init', index, config, records: registry.list().map(serializeInstance) });
    });
  }

  return {
    stats: createStats(),
    async start() {
      unsubscribe = registry.subscribe((id, record) => {
        const msg: ToWorker = { type: 'change', id, record: record ? serializeInstance(record) : null };
        for (const child of workers.values()) send(child, msg);
      });
      try {
        await Promise.all(Array.from({ length: count }, (_, i) => spawnWorker(i)));
      } catch (err) {
        stopping = true;
        for (const child of workers.values()) child.kill('SIGKILL');
        unsubscribe();
        throw err;
      }
      logger.info({ workers: count }, 'workers ready');
    },
    async stop(drainMs) {
      stopping = true;
      unsubscribe?.();
      const results = await Promise.all(
        [...workers.values()].map(
          (child) =>
            new Promise<{ drained: number; aborted: number }>((resolve) => {
              let result = { drained: 0, aborted: 0 };
              child.on('message', (msg: FromWorker) => {
                if (msg.type === 'stopped') result = { drained: msg.drained, aborted: msg.aborted };
              });
              child.once('exit', () => resolve(result));
              send(child, { type: 'stop', drainMs });
            }),
        ),
      );
      return results.reduce((a, r) => ({ drained: a.drained + r.drained, aborted: a.aborted + r.aborted }), { drained: 0, aborted: 0 });
    },
  };
}
