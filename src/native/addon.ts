// Loads the addon on first use (never at import time) and reports every path it tried.
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { InterceptorError } from '../errors.js';

export interface NativeConstants {
  readonly AF_INET: number;
  readonly AF_INET6: number;
  readonly SOL_SOCKET: number;
  readonly SOL_IP: number;
  readonly SOL_IPV6: number;
  readonly SO_REUSEADDR: number;
  readonly IP_TRANSPARENT: number;
  readonly IPV6_TRANSPARENT: number;
  readonly IPV6_V6ONLY: number;
  readonly IP_BIND_ADDRESS_NO_PORT: number;
}

/** The raw addon: every function returns an fd, 0 or -errno. */
export interface NativeAddon {
  socket(family: number): number;
  setsockopt(fd: number, level: number, name: number, value: number): number;
  bind(fd: number, address: string, port: number): number;
  listen(fd: number, backlog: number): number;
  close(fd: number): number;
  readonly constants: NativeConstants;
}

let cached: NativeAddon | undefined;

export function loadAddon(): NativeAddon {
  if (cached) return cached;
  const require = createRequire(import.meta.url);
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
  const candidates = [
    process.env.TPROXY_INTERCEPTOR_ADDON,
    path.join(root, 'build', 'Release', 'tproxy_native.node'),
    path.join(root, 'build', 'Debug', 'tproxy_native.node'),
  ].filter((p): p is string => typeof p === 'string' && p.length > 0);
  const failures: string[] = [];
  for (const candidate of candidates) {
    try {
      cached = require(candidate) as NativeAddon;
      return cached;
    } catch (err) {
      failures.push(`  ${candidate}: ${(err as Error).message.split('\n')[0]}`);
    }
  }
  throw new InterceptorError(
    'ERR_ADDON_MISSING',
    `the native addon could not be loaded; run \`npm run build\`. Tried:\n${failures.join('\n')}`,
  );
}
