// Client of the admin API (src/admin/server.ts): typed methods over HTTP on the Unix socket. The
// JSON shapes are wire.ts's.
import * as http from 'node:http';
import { InterceptorError } from '../errors.js';
import type { RegistrationInput } from '../registry/registration.js';
import type { InstanceRecord, PortPolicy } from '../registry/types.js';
import {
  detailsFromWire,
  field,
  instanceFromWire,
  PATHS,
  policyToWire,
  portPolicyViewFromWire,
  protocolError,
  registrationToWire,
  type InstanceDetails,
  type PortPolicyView,
  type WireDaemonStatus,
  type WireReload,
} from './wire.js';

export type { InstanceDetails, PortPolicyView };

/** An error the daemon answered with; `code` is the daemon's (e.g. ERR_UNKNOWN_INSTANCE). */
export class AdminApiError extends InterceptorError {
  readonly status: number;
  constructor(status: number, code: string, message: string) {
    super(code, message);
    this.status = status;
  }
}

/** The daemon's registry store: `unreachable` means writes fail and the daemon serves from memory. */
export interface StoreStatusView {
  readonly kind: string;
  readonly state: string;
  readonly since: number;
  readonly error: string | null;
}

export interface AdminClient {
  readonly socketPath: string;
  listInstances(): Promise<InstanceRecord[]>;
  /** The instances and the state of the store they come from (null from daemons that do not say). */
  listWithStore(): Promise<{ instances: InstanceRecord[]; store: StoreStatusView | null }>;
  getInstance(instanceId: string): Promise<InstanceDetails>;
  addInstance(input: RegistrationInput): Promise<InstanceRecord>;
  removeInstance(instanceId: string): Promise<InstanceRecord>;
  setOverride(instanceId: string, policy: PortPolicy): Promise<InstanceRecord>;
  clearOverride(instanceId: string): Promise<InstanceRecord>;
  /** Admin.SetInstancePortPolicy / ClearInstancePortPolicy / GetInstancePortPolicy, as on dstack's gateway. */
  setInstancePortPolicy(instanceId: string, policy: PortPolicy): Promise<void>;
  clearInstancePortPolicy(instanceId: string): Promise<void>;
  getInstancePortPolicy(instanceId: string): Promise<PortPolicyView>;
  /** Makes the daemon reload its config file; rejects with the daemon's reason when nothing was applied. */
  reload(): Promise<WireReload>;
  /** The daemon's state, counters and live connections (at most `limitPerThread` per loop thread). */
  status(limitPerThread?: number): Promise<WireDaemonStatus>;
}

const UNREACHABLE_CODES = new Set(['ENOENT', 'ECONNREFUSED', 'EACCES', 'ENOTDIR', 'ENOTSOCK', 'EPERM']);

export function createAdminClient(socketPath: string, opts: { timeoutMs?: number } = {}): AdminClient {
  const timeoutMs = opts.timeoutMs ?? 30_000;

  function request(method: string, urlPath: string, body?: unknown): Promise<unknown> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body), 'utf8');
    return new Promise((resolve, reject) => {
      const req = http.request(
        {
          socketPath,
          path: urlPath,
          method,
          headers: {
            Accept: 'application/json',
            ...(payload ? { 'Content-Type': 'application/json', 'Content-Length': payload.length } : {}),
          },
          timeout: timeoutMs,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', reject);
          res.on('end', () => {
            const status = res.statusCode ?? 0;
            let json: unknown;
            try {
              json = JSON.parse(Buffer.concat(chunks).toString('utf8'));
            } catch {
              reject(new InterceptorError('ERR_ADMIN_PROTOCOL', `admin API ${method} ${urlPath}: HTTP ${status} with a non-JSON body`));
              return;
            }
            if (status >= 200 && status < 300) {
              resolve(json);
              return;
            }
            const e = (json as { error?: { code?: unknown; message?: unknown } } | null)?.error;
            const code = typeof e?.code === 'string' ? e.code : 'ERR_ADMIN_PROTOCOL';
            const message = typeof e?.message === 'string' ? e.message : `HTTP ${status}`;
            reject(new AdminApiError(status, code, message));
          });
        },
      );
      req.on('timeout', () => {
        req.destroy(new InterceptorError('ERR_ADMIN_TIMEOUT', `admin API ${method} ${urlPath}: no answer within ${timeoutMs} ms from ${socketPath}`));
      });
      req.on('error', (err: NodeJS.ErrnoException) => {
        if (err.code !== undefined && UNREACHABLE_CODES.has(err.code)) {
          const why = err.code === 'EACCES' || err.code === 'EPERM' ? " (permission denied: run as the daemon's user or root)" : '';
          reject(
            new InterceptorError(
              'ERR_ADMIN_UNREACHABLE',
              `cannot reach the daemon's admin socket ${socketPath}: ${err.code}${why}. Either the daemon is not ` +
                `running or the socket path is wrong; check [registry] admin_socket in the config file.`,
              { cause: err },
            ),
          );
          return;
        }
        reject(err);
      });
      req.end(payload);
    });
  }

  const record = (json: unknown): InstanceRecord => instanceFromWire(field(json, 'instance'));

  async function listWithStore(): Promise<{ instances: InstanceRecord[]; store: StoreStatusView | null }> {
    const json = await request('GET', PATHS.instances);
    const list = field(json, 'instances');
    if (!Array.isArray(list)) throw protocolError('"instances" is not an array');
    const store = (json as { store?: StoreStatusView | null }).store ?? null;
    return { instances: list.map((r) => instanceFromWire(r)), store };
  }

  return {
    socketPath,
    async listInstances() {
      return (await listWithStore()).instances;
    },
    listWithStore,
    async getInstance(instanceId) {
      return detailsFromWire(await request('GET', PATHS.instance(instanceId)));
    },
    async addInstance(input) {
      return record(await request('POST', PATHS.instances, registrationToWire(input)));
    },
    async removeInstance(instanceId) {
      return record(await request('DELETE', PATHS.instance(instanceId)));
    },
    async setOverride(instanceId, policy) {
      return record(await request('PUT', PATHS.override(instanceId), { policy: policyToWire(policy) }));
    },
    async clearOverride(instanceId) {
      return record(await request('DELETE', PATHS.override(instanceId)));
    },
    async setInstancePortPolicy(instanceId, policy) {
      await request('POST', PATHS.setInstancePortPolicy, { instance_id: instanceId, policy: policyToWire(policy) });
    },
    async clearInstancePortPolicy(instanceId) {
      await request('POST', PATHS.clearInstancePortPolicy, { instance_id: instanceId });
    },
    async getInstancePortPolicy(instanceId) {
      return portPolicyViewFromWire(await request('POST', PATHS.getInstancePortPolicy, { instance_id: instanceId }));
    },
    async reload() {
      const json = await request('POST', PATHS.reload);
      if (typeof field(json, 'config') !== 'string' || !Array.isArray(field(json, 'changed'))) throw protocolError('not a reload result');
      return json as WireReload;
    },
    async status(limitPerThread) {
      const json = await request('GET', limitPerThread === undefined ? PATHS.status : `${PATHS.status}?limit=${limitPerThread}`);
      if (!Array.isArray(field(json, 'connections')) || typeof field(json, 'engine') !== 'object') throw protocolError('not a daemon status');
      return json as WireDaemonStatus;
    },
  };
}
