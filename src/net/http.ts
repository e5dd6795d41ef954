// What the admin API and the attested registration server both do with node:http: answer in
// JSON, and close letting the requests in flight finish.
import type * as http from 'node:http';

export function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  const data = Buffer.from(`${JSON.stringify(body)}\n`, 'utf8');
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': data.length });
  res.end(data);
}

/** Stops accepting; idle connections close now, busy ones after 2 s. Resolves when the server closed. */
export function closeGracefully(server: Pick<http.Server, 'close' | 'closeAllConnections' | 'closeIdleConnections'>): Promise<void> {
  return new Promise<void>((resolve) => {
    const grace = setTimeout(() => server.closeAllConnections(), 2_000);
    grace.unref();
    server.close(() => {
      clearTimeout(grace);
      resolve();
    });
    server.closeIdleConnections();
  });
}
