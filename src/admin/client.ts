// Client of the admin API (src/admin/server.ts): typed methods over HTTP on the Unix socket.
import * as http from 'node:http';
import { InterceptorError } from '../errors.js';
import { deserializeInstance, deserializePolicy, serializePolicy } from '../registry/policy.js';
import type { RegistrationInput } from '../registry/registry.js';
import type { InstanceRecord, PortPolicy } from '../registry/types.js';

/** An error the daemon answered with; `code` is the daemon's (e.g. ERR_UNKNOWN_INSTANCE). */
export class AdminApiError extends InterceptorError {
  readonly status: number;
  constructor(status: number, code: string, message: string) {
    super(code, message);
    this.status = status;
  }
}

export interface PortDecision {
  readonly port: number;
  readonly kind: string;
  readonly reason: string;
}

export interface FetchStatusView {
  readonly state: string;
  readonly attempts: number;
  readonly lastError: { readonly code: string; readonly message: string; readonly permanent: boolean } | null;
  readonly nextAttemptAt: number | null;
  readonly learnedAt: number | null;
}

export interface InstanceDetails {
  readonly record: InstanceRecord;
  readonly effectivePolicy: { readonly source: string | null; readonly policy: PortPolicy | null };
  /** The decision for each port of the effective policy. */
  readonly decisions: readonly PortDecision[];
  /** The decision for a port the effective policy does not list (null if it cannot be computed). */
  readonly unlistedPorts: { readonly kind: string; readonly reason: string } | null;
  readonly fetch: FetchStatusView | null;
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
          const why = err.code === 'EACCES' || err.code === 'EPERM' ? ' (permission denied: run as the daemon\'s user or root)' : '';
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

  async function listWithStore(): Promise<{ instances: InstanceRecord[]; store: StoreStatusView | null }> {
    const json = await request('GET', '/v1/instances');
    const list = field(json, 'instances');
    if (!Array.isArray(list)) throw protocol('"instances" is not an array');
    const store = (json as { store?: StoreStatusView | null }).store ?? null;
    return { instances: list.map((r) => deserializeInstance(r)), store };
  }

  const instancePath = (id: string): string => `/v1/instances/${encodeURIComponent(id)}`;
  const record = (json: unknown): InstanceRecord => deserializeInstance(field(json, 'instance'));

  return {
    socketPath,
    async listInstances() {
      return (await listWithStore()).instances;
    },
    listWithStore,
    async getInstance(instanceId) {
      return parseDetails(await request('GET', instancePath(instanceId)));
    },
    async addInstance(input) {
      const body: Record<string, unknown> = { instance_id: input.instanceId, app_id: input.appId, ip: input.ip };
      if (input.composeHash !== undefined) body.compose_hash = input.composeHash;
      if (input.policy !== undefined && input.policy !== null) body.policy = serializePolicy(input.policy);
      if (input.restrict !== undefined) body.restrict = input.restrict;
      return record(await request('POST', '/v1/instances', body));
    },
    async removeInstance(instanceId) {
      return record(await request('DELETE', instancePath(instanceId)));
    },
    async setOverride(instanceId, policy) {
      return record(await request('PUT', `${instancePath(instanceId)}/override`, { policy: serializePolicy(policy) }));
    },
    async clearOverride(instanceId) {
      return record(await request('DELETE', `${instancePath(instanceId)}/override`));
    },
  };
}

function protocol(problem: string): InterceptorError {
  return new InterceptorError('ERR_ADMIN_PROTOCOL', `unexpected admin API answer: ${problem}`);
}

function field(json: unknown, key: string): unknown {
  if (typeof json !== 'object' || json === null || !(key in json)) throw protocol(`no "${key}"`);
  return (json as Record<string, unknown>)[key];
}

function parseDetails(json: unknown): InstanceDetails {
  const eff = field(json, 'effective_policy') as { source?: unknown; policy?: unknown } | null;
  const decisions = field(json, 'decisions');
  if (!Array.isArray(decisions)) throw protocol('"decisions" is not an array');
  const unlisted = field(json, 'unlisted_ports') as { kind: string; reason: string } | null;
  const fetch = field(json, 'fetch') as Record<string, unknown> | null;
  return {
    record: deserializeInstance(field(json, 'instance')),
    effectivePolicy: {
      source: typeof eff?.source === 'string' ? eff.source : null,
      policy: eff?.policy ? deserializePolicy(eff.policy) : null,
    },
    decisions: decisions as PortDecision[],
    unlistedPorts: unlisted,
    fetch: fetch
      ? {
          state: String(fetch.state),
          attempts: Number(fetch.attempts),
          lastError: (fetch.last_error as FetchStatusView['lastError']) ?? null,
          nextAttemptAt: (fetch.next_attempt_at as number | null) ?? null,
          learnedAt: (fetch.learned_at as number | null) ?? null,
        }
      : null,
  };
}
