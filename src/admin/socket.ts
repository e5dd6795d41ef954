// The admin API's Unix socket: created 0600 (only the daemon's user can connect), never over a
// live socket or a non-socket file, and defended against clients that hold connections: a
// deadline for each request's headers, an idle timeout, a bound on the whole request, and a cap
// on concurrent connections. A client that half-closes after its request still gets its answer.
import * as fsSync from 'node:fs';
import * as fs from 'node:fs/promises';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import type { Logger } from 'pino';
import { InterceptorError } from '../errors.js';
import { closeGracefully } from '../net/http.js';

export interface AdminSocketLimits {
  /** From connecting (or the end of the previous response) to a request's complete headers. */
  readonly headersTimeoutMs: number;
  /** No byte either way for this long: the connection is closed. */
  readonly idleTimeoutMs: number;
  /** From a request's headers to its complete body (Node answers 408). */
  readonly requestTimeoutMs: number;
  /** Connections beyond this many are closed as they arrive. */
  readonly maxConnections: number;
}

const DEFAULT_ADMIN_LIMITS: AdminSocketLimits = Object.freeze({
  headersTimeoutMs: 10_000,
  idleTimeoutMs: 30_000,
  requestTimeoutMs: 30_000,
  maxConnections: 64,
});

export interface AdminSocket {
  readonly socketPath: string;
  /** Connections closed because the cap was reached, and because a deadline passed. */
  readonly counters: { readonly dropped: number; readonly reaped: number };
  close(): Promise<void>;
}

export async function listenAdminSocket(opts: {
  socketPath: string;
  logger: Logger;
  handler: http.RequestListener;
  limits?: Partial<AdminSocketLimits>;
}): Promise<AdminSocket> {
  const socketPath = path.resolve(opts.socketPath);
  const { logger } = opts;
  const limits = { ...DEFAULT_ADMIN_LIMITS, ...opts.limits };
  const counters = { dropped: 0, reaped: 0 };

  await ensureParentDir(path.dirname(socketPath));
  await removeStaleSocket(socketPath);

  const server = http.createServer(
    // Node insists on headersTimeout <= requestTimeout.
    { requestTimeout: limits.requestTimeoutMs, headersTimeout: Math.min(limits.headersTimeoutMs, limits.requestTimeoutMs) },
    opts.handler,
  );
  // Node's own headersTimeout does not reap a connection that sent nothing or only part of its
  // headers (Node 20), so each connection gets a deadline of ours, re-armed after each response.
  const deadlines = new WeakMap<net.Socket, NodeJS.Timeout>();
  const arm = (socket: net.Socket): void => {
    clearTimeout(deadlines.get(socket));
    const timer = setTimeout(() => {
      counters.reaped++;
      logger.debug({ limit: 'headers' }, 'admin connection closed: no complete request in time');
      socket.destroy();
    }, limits.headersTimeoutMs);
    timer.unref();
    deadlines.set(socket, timer);
  };
  server.on('connection', (socket: net.Socket) => {
    arm(socket);
    socket.setTimeout(limits.idleTimeoutMs, () => {
      counters.reaped++;
      logger.debug({ limit: 'idle' }, 'admin connection closed: idle');
      socket.destroy();
    });
    socket.once('close', () => clearTimeout(deadlines.get(socket)));
  });
  server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    const socket = req.socket;
    clearTimeout(deadlines.get(socket));
    res.once('finish', () => {
      if (!socket.destroyed) arm(socket);
    });
  });
  server.maxConnections = limits.maxConnections;
  server.on('drop', () => {
    counters.dropped++;
    if (counters.dropped === 1 || counters.dropped % 1000 === 0) {
      logger.warn({ maxConnections: limits.maxConnections, dropped: counters.dropped }, 'admin connection refused: too many open');
    }
  });
  // Without this a client that half-closes (shutdown(SHUT_WR)) after sending its request gets no
  // answer: Node would end the connection on the FIN while the request is still being handled.
  // httpAllowHalfOpen is http.Server's own switch for that (not in Node's documentation;
  // test/unit/admin/socket.test.ts proves it still works).
  (server as http.Server & { httpAllowHalfOpen: boolean }).httpAllowHalfOpen = true;

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
  logger.info({ limits }, 'admin API listening');

  let closing: Promise<void> | null = null;
  return {
    socketPath,
    counters,
    close() {
      // Requests in flight may finish; after a grace period their connections are cut.
      closing ??= closeGracefully(server);
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
