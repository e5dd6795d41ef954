// The metrics listener ([metrics] listen): GET /metrics (Prometheus text), /healthz (the process
// answers) and /readyz (rules installed and listeners accepting: 200, else 503 naming what is
// missing). Plain HTTP with node:http; read-only, no request body is ever read.
import * as http from 'node:http';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';

export interface Readiness {
  readonly ready: boolean;
  /** What is not ready, for the 503 body and the log. */
  readonly missing: readonly string[];
}

export interface MetricsServer {
  /** The address and port it listens on (the port the kernel picked when 0 was asked for). */
  readonly address: { readonly address: string; readonly port: number };
  close(): Promise<void>;
}

export async function startMetricsServer(opts: {
  listen: { readonly address: string; readonly port: number };
  registry: Registry;
  readiness: () => Readiness;
  logger: Logger;
}): Promise<MetricsServer> {
  const logger = opts.logger.child({ component: 'metrics' });
  const text = (res: http.ServerResponse, status: number, body: string, type = 'text/plain; charset=utf-8'): void => {
    const data = Buffer.from(body, 'utf8');
    res.writeHead(status, { 'Content-Type': type, 'Content-Length': data.length, 'Cache-Control': 'no-store' });
    res.end(res.req.method === 'HEAD' ? undefined : data);
  };
  const server = http.createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://metrics').pathname;
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('Allow', 'GET, HEAD');
      text(res, 405, `method ${req.method} not allowed; use GET\n`);
      return;
    }
    switch (path) {
      case '/metrics':
        opts.registry.metrics().then(
          (body) => text(res, 200, body, opts.registry.contentType),
          (err: unknown) => {
            logger.error({ err }, 'metrics collection failed');
            text(res, 500, 'metrics collection failed\n');
          },
        );
        return;
      case '/healthz':
        text(res, 200, 'ok\n');
        return;
      case '/readyz': {
        const r = opts.readiness();
        text(res, r.ready ? 200 : 503, r.ready ? 'ready\n' : `not ready: ${r.missing.join('; ')}\n`);
        return;
      }
      default:
        text(res, 404, 'not found: try /metrics, /healthz or /readyz\n');
    }
  });
  // Scrapers and probes send a small request and expect a prompt answer: no slow clients held.
  server.headersTimeout = 10_000;
  server.requestTimeout = 10_000;
  server.keepAliveTimeout = 30_000;
  server.maxConnections = 64;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: opts.listen.address, port: opts.listen.port }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const bound = server.address() as { address: string; port: number };
  logger.info({ address: bound.address, port: bound.port }, 'metrics listener ready');
  return {
    address: { address: bound.address, port: bound.port },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
