// Admin API: JSON over HTTP on a Unix socket (mode 0600, so only the daemon's user can use it).
import * as fsSync from 'node:fs';
import * as fs from 'node:fs/promises';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import type { Logger } from 'pino';
import { InterceptorError } from '../errors.js';
import { deserializePolicy, serializeInstance, serializePolicy } from '../registry/policy.js';
import type { RegistrationInput } from '../registry/registry.js';
import type { RegistryService } from '../registry/service.js';
import type { InstanceRecord, PortPolicy } from '../registry/types.js';

export const MAX_BODY_BYTES = 1024 * 1024;

export interface AdminServer {
  readonly socketPath: string;
  close(): Promise<void>;
}

export interface AdminServerOptions {
  logger: Logger;
  socketPath: string;
  service: RegistryService;
}

/** Where the effective policy of an instance comes from. */
export type EffectivePolicySource = 'override' | 'registration' | 'agent' | null;

export function effectivePolicy(record: InstanceRecord): { source: EffectivePolicySource; policy: PortPolicy | null } {
  if (record.override) return { source: 'override', policy: record.override };
  if (record.reportedPolicy) return { source: record.policySource ?? 'registration', policy: record.reportedPolicy };
  return { source: null, policy: null };
}

export async function createAdminServer(opts: AdminServerOptions): Promise<AdminServer> {
  const socketPath = path.resolve(opts.socketPath);
  const logger = opts.logger.child({ component: 'admin', socket: socketPath });
  const { service } = opts;

  await ensureParentDir(path.dirname(socketPath));
  await removeStaleSocket(socketPath);

  const server = http.createServer((req, res) => {
    handle(service, logger, req, res).catch((err: unknown) => {
      logger.error({ err }, 'admin request handler failed');
      if (!res.headersSent) sendError(res, 500, 'ERR_INTERNAL', 'internal error');
      else res.destroy();
    });
  });
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;

  // The socket is created by bind(), which net.Server#listen performs synchronously for a path.
  // A umask of 0177 around that call makes the socket 0600 from birth: there is no window in
  // which another user could connect (connecting needs write permission on the socket file).
  // Where umask cannot be set (worker threads), chmod follows listen() synchronously instead,
  // before any connection can reach a handler.
  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error): void => reject(listenError(socketPath, err));
    server.once('error', onError);
    server.once('listening', () => {
      server.off('error', onError);
      resolve();
    });
    let oldMask: number | null = null;
    try {
      oldMask = process.umask(0o177);
    } catch {
      // ERR_WORKER_UNSUPPORTED_OPERATION
    }
    try {
      server.listen(socketPath);
    } finally {
      if (oldMask !== null) process.umask(oldMask);
    }
    if (oldMask === null) {
      try {
        fsSync.chmodSync(socketPath, 0o600);
      } catch {
        // listen failed: the 'error' event reports it
      }
    }
  });
  // Verify rather than trust: never serve on a socket others could use.
  const st = await fs.stat(socketPath);
  if ((st.mode & 0o777) !== 0o600) await fs.chmod(socketPath, 0o600);
  server.on('error', (err) => logger.error({ err }, 'admin server error'));
  logger.info('admin API listening');

  let closing: Promise<void> | null = null;
  return {
    socketPath,
    close() {
      closing ??= new Promise<void>((resolve) => {
        // Requests in flight may finish; after a grace period their connections are cut.
        const grace = setTimeout(() => server.closeAllConnections(), 2_000);
        grace.unref();
        server.close(() => {
          clearTimeout(grace);
          resolve();
        });
        server.closeIdleConnections();
      });
      return closing;
    },
  };
}

/** Creates the socket's directory (and missing ancestors) 0755 whatever the umask; leaves existing ones alone. */
async function ensureParentDir(dir: string): Promise<void> {
  const created = await fs.mkdir(dir, { recursive: true, mode: 0o755 });
  if (created === undefined) return;
  for (let d = dir; ; d = path.dirname(d)) {
    await fs.chmod(d, 0o755);
    if (d === path.resolve(created) || d === path.dirname(d)) break;
  }
}

async function removeStaleSocket(socketPath: string): Promise<void> {
  let st;
  try {
    st = await fs.lstat(socketPath);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  if (!st.isSocket()) {
    throw new InterceptorError(
      'ERR_ADMIN_SOCKET_IN_USE',
      `admin socket path ${socketPath} exists and is not a socket; refusing to replace it (check [registry] admin_socket)`,
    );
  }
  const answered = await new Promise<boolean>((resolve) => {
    const sock = net.connect(socketPath);
    sock.once('connect', () => {
      sock.destroy();
      resolve(true);
    });
    sock.once('error', () => resolve(false));
  });
  if (answered) {
    throw new InterceptorError(
      'ERR_ADMIN_SOCKET_IN_USE',
      `admin socket ${socketPath} is in use: something (another daemon?) accepts connections on it`,
    );
  }
  await fs.unlink(socketPath).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOENT') throw err;
  });
}

function listenError(socketPath: string, err: Error): Error {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'EADDRINUSE') {
    return new InterceptorError('ERR_ADMIN_SOCKET_IN_USE', `admin socket ${socketPath} was created by someone else meanwhile`, {
      cause: err,
    });
  }
  return err;
}

// ---------------------------------------------------------------------------------------------
// Routing.

const INSTANCES = /^\/v1\/instances\/?$/;
const INSTANCE = /^\/v1\/instances\/([^/]+)\/?$/;
const OVERRIDE = /^\/v1\/instances\/([^/]+)\/override\/?$/;

async function handle(service: RegistryService, logger: Logger, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://admin');
  const method = req.method ?? 'GET';
  const route = url.pathname;
  try {
    let m: RegExpExecArray | null;
    if (INSTANCES.test(route)) {
      if (method === 'GET') {
        return sendJson(res, 200, { instances: service.list().map((r) => serializeInstance(r)), store: service.storeStatus() });
      }
      if (method === 'POST') {
        const input = parseRegistration(await readJsonBody(req));
        const existed = service.get(input.instanceId) !== undefined;
        const record = await service.add(input);
        return sendJson(res, existed ? 200 : 201, { instance: serializeInstance(record) });
      }
      return methodNotAllowed(res, 'GET, POST');
    }
    if ((m = OVERRIDE.exec(route))) {
      const id = decodeId(m[1]!);
      if (method === 'PUT') {
        const body = await readJsonBody(req);
        if (!isObject(body) || !isObject(body.policy)) {
          throw badRequest('ERR_INVALID_REGISTRATION', 'body must be {"policy": {"ports": [...], "restrict_mode": bool}}');
        }
        const record = await service.setOverride(id, parsePolicy(body.policy, 'policy'));
        return sendJson(res, 200, { instance: serializeInstance(record) });
      }
      if (method === 'DELETE') {
        const record = await service.setOverride(id, null);
        return sendJson(res, 200, { instance: serializeInstance(record) });
      }
      return methodNotAllowed(res, 'PUT, DELETE');
    }
    if ((m = INSTANCE.exec(route))) {
      const id = decodeId(m[1]!);
      if (method === 'GET') {
        const record = service.get(id);
        if (!record) throw unknownInstance(id);
        return sendJson(res, 200, describeInstance(service, record));
      }
      if (method === 'DELETE') {
        const record = await service.remove(id);
        return sendJson(res, 200, { instance: serializeInstance(record) });
      }
      return methodNotAllowed(res, 'GET, DELETE');
    }
    return sendError(res, 404, 'ERR_NOT_FOUND', `no route ${method} ${route}`);
  } catch (err) {
    const status = statusFor(err);
    if (status >= 500) logger.error({ err, method, route }, 'admin request failed');
    else logger.debug({ err, method, route }, 'admin request rejected');
    const code = err instanceof InterceptorError ? err.code : 'ERR_INTERNAL';
    const message = err instanceof Error ? err.message : String(err);
    if (status === 413) res.setHeader('Connection', 'close');
    return sendError(res, status, code, message);
  }
}

function statusFor(err: unknown): number {
  if (!(err instanceof InterceptorError)) return 500;
  if (err instanceof AdminHttpError) return err.status;
  switch (err.code) {
    case 'ERR_INVALID_REGISTRATION':
    case 'ERR_POLICY_SYNTAX':
    case 'ERR_POLICY_INVALID':
    case 'ERR_BAD_REQUEST':
      return 400;
    case 'ERR_IP_IN_USE':
    case 'ERR_STORE_CONFLICT':
      return 409;
    case 'ERR_STORE_UNAVAILABLE':
      return 503;
    case 'ERR_UNKNOWN_INSTANCE':
      return 404;
    case 'ERR_REGISTRY_CLOSED':
      return 503;
    default:
      return 500;
  }
}

class AdminHttpError extends InterceptorError {
  constructor(
    readonly status: number,
    code: string,
    message: string,
  ) {
    super(code, message);
  }
}

function badRequest(code: string, message: string): InterceptorError {
  return new AdminHttpError(400, code, message);
}

function unknownInstance(id: string): InterceptorError {
  return new InterceptorError('ERR_UNKNOWN_INSTANCE', `no instance registered with id ${JSON.stringify(id)}`);
}

function decodeId(raw: string): string {
  try {
    return decodeURIComponent(raw);
  } catch {
    throw badRequest('ERR_BAD_REQUEST', `instance id in the path is not valid percent-encoding: ${raw}`);
  }
}

function methodNotAllowed(res: http.ServerResponse, allow: string): void {
  res.setHeader('Allow', allow);
  sendError(res, 405, 'ERR_METHOD_NOT_ALLOWED', `method not allowed; use ${allow}`);
}

function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  const data = Buffer.from(`${JSON.stringify(body)}\n`, 'utf8');
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': data.length });
  res.end(data);
}

function sendError(res: http.ServerResponse, status: number, code: string, message: string): void {
  sendJson(res, status, { error: { code, message } });
}

// ---------------------------------------------------------------------------------------------
// Bodies.

async function readJsonBody(req: http.IncomingMessage): Promise<unknown> {
  const declared = Number(req.headers['content-length'] ?? NaN);
  if (declared > MAX_BODY_BYTES) {
    drain(req);
    throw new AdminHttpError(413, 'ERR_BODY_TOO_LARGE', `request body of ${declared} bytes exceeds the limit of ${MAX_BODY_BYTES}`);
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
        reject(new AdminHttpError(413, 'ERR_BODY_TOO_LARGE', `request body exceeds the limit of ${MAX_BODY_BYTES} bytes`));
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
  if (text.trim() === '') throw badRequest('ERR_BAD_REQUEST', 'request body is empty; expected JSON');
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw badRequest('ERR_BAD_REQUEST', `request body is not valid JSON: ${(err as Error).message}`);
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

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Our JSON policy form; malformed = ERR_POLICY_INVALID naming the field (400). */
function parsePolicy(json: unknown, key: string): PortPolicy {
  return deserializePolicy(json, key);
}

function parseRegistration(body: unknown): RegistrationInput {
  if (!isObject(body)) throw badRequest('ERR_INVALID_REGISTRATION', 'registration body must be a JSON object');
  const str = (key: string): string => {
    const v = body[key];
    if (typeof v !== 'string' || v === '') throw badRequest('ERR_INVALID_REGISTRATION', `${key}: required, a non-empty string`);
    return v;
  };
  const input: RegistrationInput = { instanceId: str('instance_id'), appId: str('app_id'), ip: str('ip') };
  const hash = body.compose_hash;
  if (hash !== undefined && hash !== null && typeof hash !== 'string') {
    throw badRequest('ERR_INVALID_REGISTRATION', 'compose_hash: must be a string or null');
  }
  if (hash !== undefined) input.composeHash = hash;
  // Absent (or null) = not reported; an object with no ports = reported empty.
  if (body.policy !== undefined && body.policy !== null) {
    if (!isObject(body.policy)) throw badRequest('ERR_INVALID_REGISTRATION', 'policy: must be an object');
    input.policy = parsePolicy(body.policy, 'policy');
  }
  if (body.restrict !== undefined) {
    if (typeof body.restrict !== 'boolean') throw badRequest('ERR_INVALID_REGISTRATION', 'restrict: must be a boolean');
    input.restrict = body.restrict;
  }
  return input;
}

// ---------------------------------------------------------------------------------------------

function describeInstance(service: RegistryService, record: InstanceRecord): Record<string, unknown> {
  const effective = effectivePolicy(record);
  const decisions: { port: number; kind: string; reason: string }[] = [];
  let unlisted: { kind: string; reason: string } | null = null;
  const ports = effective.policy ? [...effective.policy.ports.keys()].sort((a, b) => a - b) : [];
  // registry.decide, not service.decide: looking must not queue fetches or move counters.
  const owner = service.registry.byIp(record.ip);
  if (owner?.instanceId === record.instanceId) {
    for (const port of ports) {
      const { decision } = service.registry.decide(record.ip, port);
      decisions.push({ port, kind: decision.kind, reason: decision.reason });
    }
    const listed = new Set(ports);
    let other = 1;
    while (listed.has(other) && other < 65535) other++;
    if (!listed.has(other)) {
      const { decision } = service.registry.decide(record.ip, other);
      unlisted = { kind: decision.kind, reason: decision.reason };
    }
  }
  const status = service.fetchStatus(record.instanceId);
  return {
    instance: serializeInstance(record),
    effective_policy: { source: effective.source, policy: effective.policy ? serializePolicy(effective.policy) : null },
    decisions,
    unlisted_ports: unlisted,
    fetch: status
      ? {
          state: status.state,
          attempts: status.attempts,
          last_error: status.lastError,
          next_attempt_at: status.nextAttemptAt,
          learned_at: status.learnedAt,
        }
      : null,
  };
}
