// Admin API: JSON over HTTP on a Unix socket (mode 0600, so only the daemon's user can use it).
// The socket and its defences live in socket.ts, the routes in routes.ts, request bodies in
// schema.ts, and the JSON shapes shared with the client and the CLI in wire.ts.
import type { Logger } from 'pino';
import type { RegistryService } from '../registry/service.js';
import { createAdminRoutes, type AdminDaemon } from './routes.js';
import { listenAdminSocket, type AdminSocket, type AdminSocketLimits } from './socket.js';

export type AdminServer = AdminSocket;

export interface AdminServerOptions {
  logger: Logger;
  socketPath: string;
  service: RegistryService;
  /** The daemon's own routes (reload, status); absent in tests of the registry routes. */
  daemon?: AdminDaemon;
  limits?: Partial<AdminSocketLimits>;
}

export async function createAdminServer(opts: AdminServerOptions): Promise<AdminServer> {
  const logger = opts.logger.child({ component: 'admin', socket: opts.socketPath });
  return listenAdminSocket({
    socketPath: opts.socketPath,
    logger,
    handler: createAdminRoutes({ service: opts.service, logger, ...(opts.daemon ? { daemon: opts.daemon } : {}) }),
    ...(opts.limits ? { limits: opts.limits } : {}),
  });
}
