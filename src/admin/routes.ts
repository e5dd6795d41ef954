// Admin API routes: each (method, path) and what it does with the registry service. Failures
// answer with their code's HTTP status from the error catalogue (src/errors.ts).
import type * as http from 'node:http';
import type { Logger } from 'pino';
import { errorInfo, InterceptorError } from '../errors.js';
import { sendJson } from '../net/http.js';
import { explainStatus } from '../registry/explain.js';
import { trustedReportedPolicy } from '../registry/entry.js';
import { UnknownInstanceError } from '../registry/registration.js';
import type { RegistryService } from '../registry/service.js';
import type { InstanceRecord, PortPolicy } from '../registry/types.js';
import { parseInstanceIdBody, parseOverrideBody, parseRegistrationBody, parseSetPortPolicyBody } from './schema.js';
import {
  detailsToWire,
  instanceToWire,
  PATHS,
  portPolicyViewToWire,
  type EffectiveSource,
  type InstanceDetails,
  type PortPolicyView,
  type WireDaemonStatus,
  type WirePortDecision,
  type WireReload,
} from './wire.js';

export const MAX_BODY_BYTES = 1024 * 1024;

type Handler = (ctx: { req: http.IncomingMessage; id: string }) => Promise<{ status?: number; body: unknown }>;

interface Route {
  readonly pattern: RegExp;
  readonly methods: Readonly<Record<string, Handler>>;
}

const ID = '([^/]+)';

/** What the admin API asks of the daemon itself (absent: those routes answer 404). */
export interface AdminDaemon {
  reload(): Promise<WireReload>;
  /** At most `limitPerThread` live connections per loop thread. */
  status(limitPerThread: number): Promise<WireDaemonStatus>;
}

/** GET /v1/status: live connections listed per loop thread, by default and at most. */
export const STATUS_LIMIT = { default: 1000, max: 100_000 } as const;

export function createAdminRoutes(opts: { service: RegistryService; logger: Logger; daemon?: AdminDaemon }): http.RequestListener {
  const { service, logger, daemon } = opts;

  const record = (id: string): InstanceRecord => {
    const r = service.get(id);
    if (r === undefined) throw new UnknownInstanceError(id);
    return r;
  };

  const routes: Route[] = [
    {
      pattern: new RegExp(`^${PATHS.instances}/?$`),
      methods: {
        GET: async () => ({ body: { instances: service.list().map(instanceToWire), store: service.storeStatus() } }),
        POST: async ({ req }) => {
          const input = parseRegistrationBody(await readJsonBody(req));
          const existed = service.get(input.instanceId) !== undefined;
          const r = await service.add(input);
          return { status: existed ? 200 : 201, body: { instance: instanceToWire(r) } };
        },
      },
    },
    {
      pattern: new RegExp(`^${PATHS.instances}/${ID}/override/?$`),
      methods: {
        PUT: async ({ req, id }) => ({ body: { instance: instanceToWire(await service.setOverride(id, parseOverrideBody(await readJsonBody(req)))) } }),
        DELETE: async ({ id }) => ({ body: { instance: instanceToWire(await service.setOverride(id, null)) } }),
      },
    },
    {
      pattern: new RegExp(`^${PATHS.instances}/${ID}/?$`),
      methods: {
        GET: async ({ id }) => ({ body: detailsToWire(describeInstance(service, record(id))) }),
        DELETE: async ({ id }) => ({ body: { instance: instanceToWire(await service.remove(id)) } }),
      },
    },
    {
      pattern: new RegExp(`^${PATHS.setInstancePortPolicy}$`),
      methods: {
        POST: async ({ req }) => {
          const { instanceId, policy } = parseSetPortPolicyBody(await readJsonBody(req));
          await service.setOverride(instanceId, policy);
          return { body: {} };
        },
      },
    },
    {
      pattern: new RegExp(`^${PATHS.clearInstancePortPolicy}$`),
      methods: {
        POST: async ({ req }) => {
          await service.setOverride(parseInstanceIdBody(await readJsonBody(req)), null);
          return { body: {} };
        },
      },
    },
    {
      pattern: new RegExp(`^${PATHS.getInstancePortPolicy}$`),
      methods: {
        POST: async ({ req }) => ({ body: portPolicyViewToWire(portPolicyView(service, record(parseInstanceIdBody(await readJsonBody(req))))) }),
      },
    },
  ];
  if (daemon !== undefined) {
    routes.push(
      {
        pattern: new RegExp(`^${PATHS.reload}/?$`),
        methods: {
          POST: async ({ req }) => {
            // No body is needed; whatever came is read and ignored.
            req.resume();
            return { body: await daemon.reload() };
          },
        },
      },
      {
        pattern: new RegExp(`^${PATHS.status}/?$`),
        methods: { GET: async ({ req }) => ({ body: await daemon.status(statusLimit(req)) }) },
      },
    );
  }

  return (req, res) => {
    const url = new URL(req.url ?? '/', 'http://admin');
    const method = req.method ?? 'GET';
    const route = url.pathname;
    (async () => {
      const match = routes.map((r) => ({ r, m: r.pattern.exec(route) })).find((x) => x.m !== null);
      if (match === undefined) throw new InterceptorError('ERR_NOT_FOUND', `no route ${method} ${route}`);
      const handler = match.r.methods[method];
      if (handler === undefined) {
        const allow = Object.keys(match.r.methods).join(', ');
        res.setHeader('Allow', allow);
        throw new InterceptorError('ERR_METHOD_NOT_ALLOWED', `method ${method} not allowed on ${route}; use ${allow}`);
      }
      const raw = match.m?.[1];
      const { status, body } = await handler({ req, id: raw === undefined ? '' : decodeId(raw) });
      sendJson(res, status ?? 200, body);
    })().catch((err: unknown) => {
      const code = err instanceof InterceptorError ? err.code : 'ERR_INTERNAL';
      const info = errorInfo(code);
      logger[info.level]({ err, method, route }, info.status >= 500 ? 'admin request failed' : 'admin request rejected');
      if (res.headersSent) {
        res.destroy();
        return;
      }
      if (code === 'ERR_BODY_TOO_LARGE') res.setHeader('Connection', 'close');
      const message = err instanceof InterceptorError ? err.message : 'internal error';
      sendJson(res, info.status, { error: { code, message } });
    });
  };
}

function statusLimit(req: http.IncomingMessage): number {
  const raw = new URL(req.url ?? '/', 'http://admin').searchParams.get('limit');
  if (raw === null) return STATUS_LIMIT.default;
  const n = Number(raw);
  if (!/^\d+$/.test(raw) || n > STATUS_LIMIT.max) {
    throw new InterceptorError('ERR_BAD_REQUEST', `limit must be an integer 0..${STATUS_LIMIT.max}, got ${JSON.stringify(raw)}`);
  }
  return n;
}

function decodeId(raw: string): string {
  try {
    return decodeURIComponent(raw);
  } catch {
    throw new InterceptorError('ERR_BAD_REQUEST', `instance id in the path is not valid percent-encoding: ${raw}`);
  }
}

async function readJsonBody(req: http.IncomingMessage): Promise<unknown> {
  const declared = Number(req.headers['content-length'] ?? NaN);
  if (declared > MAX_BODY_BYTES) {
    drain(req);
    throw new InterceptorError('ERR_BODY_TOO_LARGE', `request body of ${declared} bytes exceeds the limit of ${MAX_BODY_BYTES}`);
  }
  // Events rather than for-await: leaving a for-await loop early destroys the request, and with
  // it the socket the 413 has to go out on.
  const chunks = await new Promise<Buffer[]>((resolve, reject) => {
    const got: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        req.off('data', onData);
        req.off('end', onEnd);
        drain(req);
        reject(new InterceptorError('ERR_BODY_TOO_LARGE', `request body exceeds the limit of ${MAX_BODY_BYTES} bytes`));
        return;
      }
      got.push(chunk);
    };
    const onEnd = (): void => resolve(got);
    req.on('data', onData);
    req.once('end', onEnd);
    req.once('error', reject);
  });
  const text = Buffer.concat(chunks).toString('utf8');
  if (text.trim() === '') throw new InterceptorError('ERR_BAD_REQUEST', 'request body is empty; expected JSON');
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new InterceptorError('ERR_BAD_REQUEST', `request body is not valid JSON: ${(err as Error).message}`);
  }
}

/**
 * Discards the rest of an oversize body so the client reads the 413 instead of a reset, up to a
 * bound; past it the connection is cut.
 */
function drain(req: http.IncomingMessage): void {
  let discarded = 0;
  req.on('data', (chunk: Buffer) => {
    discarded += chunk.length;
    if (discarded > 16 * MAX_BODY_BYTES) req.socket.destroy();
  });
  req.resume();
}

/** The policy that decides and where it comes from (null: none, every port refused). */
function effectivePolicy(service: RegistryService, r: InstanceRecord): { source: EffectiveSource; policy: PortPolicy | null } {
  if (r.override !== null) return { source: 'override', policy: r.override };
  const reported = trustedReportedPolicy(r, service.registry.trustAgentComposeHash);
  if (reported !== null) return { source: r.policySource ?? 'registration', policy: reported };
  return { source: null, policy: null };
}

function describeInstance(service: RegistryService, r: InstanceRecord): InstanceDetails {
  const effective = effectivePolicy(service, r);
  const decisions: WirePortDecision[] = [];
  let unlisted: InstanceDetails['unlistedPorts'] = null;
  const ports = effective.policy ? [...effective.policy.ports.keys()].sort((a, b) => a - b) : [];
  // registry.decide, not service.decide: looking must not queue fetches or move counters.
  for (const port of ports) {
    const { decision } = service.registry.decide(r.ip, port);
    decisions.push({ port, kind: decision.kind, reason: decision.reason });
  }
  const listed = new Set(ports);
  let other = 1;
  while (listed.has(other) && other < 65535) other++;
  if (!listed.has(other)) {
    const { decision } = service.registry.decide(r.ip, other);
    unlisted = { kind: decision.kind, reason: decision.reason };
  }
  const fetch = service.fetchStatus(r.instanceId);
  const entry = service.registry.entry(r.instanceId);
  if (entry === undefined) throw new UnknownInstanceError(r.instanceId);
  return {
    record: r,
    effectivePolicy: effective,
    status: explainStatus(entry, r, fetch),
    decisions,
    unlistedPorts: unlisted,
    fetch: fetch ?? null,
  };
}

/** Admin.GetInstancePortPolicy, as the dstack gateway answers it (plus why every port is refused). */
function portPolicyView(service: RegistryService, r: InstanceRecord): PortPolicyView {
  const effective = effectivePolicy(service, r);
  return {
    effective: effective.policy,
    source: effective.source === 'override' ? 'admin' : effective.source === null ? 'none' : 'instance',
    instanceReported: r.reportedPolicy,
    adminOverride: r.override,
    refuseAll: service.registry.entry(r.instanceId)?.refuseAll ?? null,
  };
}
