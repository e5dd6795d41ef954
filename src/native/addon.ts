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
  readonly IPPROTO_TCP: number;
  readonly TCP_NODELAY: number;
  readonly RLIMIT_NOFILE: number;
}

/** An endpoint as the addon's test exports take and give it: the 16-byte key (IPv4 mapped). */
export interface NativeEndpoint {
  readonly ip: Buffer;
  readonly family: 4 | 6;
  readonly port: number;
}

/** The raw addon (native/binding.cc): every function returns an fd, 0 or -errno unless noted. */
export interface NativeAddon {
  socket(family: number): number;
  setsockopt(fd: number, level: number, name: number, value: number): number;
  bind(fd: number, address: string, port: number): number;
  listen(fd: number, backlog: number): number;
  close(fd: number): number;
  /** [soft, hard], RLIM_INFINITY as Infinity; or -errno. */
  getrlimit(resource: number): [soft: number, hard: number] | number;
  /** Infinity means RLIM_INFINITY; -EINVAL for a negative or fractional limit. */
  setrlimit(resource: number, soft: number, hard: number): number;
  /** The size a new pipe gets when `bytes` is asked for, or -errno (EPERM beyond fs.pipe-max-size). */
  pipeSizeProbe(bytes: number): number;
  engineStart(options: Record<string, number | boolean>, listenFds: number[][], onEvents: (batch: Buffer) => void): number;
  engineSetTable(table: Buffer): number;
  engineStopAccepting(): number;
  engineSetSettings(settings: Record<string, number | boolean>): number;
  /** The request's number (> 0), or -errno. */
  engineRequestSnapshot(limitPerThread: number): number;
  engineAbortAll(): number;
  /** Events the threads hold that were not delivered yet. */
  engineTakeEvents(): Buffer;
  engineStats(): {
    live: number;
    accepted: number;
    overCapacity: number;
    threads: number;
    pipesInUse: number;
    pipesPooled: number;
    pipePoolMax: number;
    pipeSizeRefused: number;
    tablesRetired: number;
    generation: number;
  } | null;
  engineShutdown(): number;
  /** Test exports (test/native): the native PROXY parser and encoder, and a table lookup. */
  ppParse(data: Buffer, maxV2Length: number): {
    status: 'more' | 'failed' | 'done';
    error: number;
    want: number;
    header?: {
      version: 1 | 2;
      local: boolean;
      family: number;
      length: number;
      source: NativeEndpoint | null;
      destination: NativeEndpoint | null;
      crc32c: boolean;
      tlvCount: number;
      forwarded: Buffer;
    };
  } | null;
  ppEncode(version: 1 | 2, source: NativeEndpoint, destination: NativeEndpoint, tlvs: Buffer): Buffer | null;
  /** [kind, reason, instanceId, trusted] or null for a malformed table. */
  tableDecide(table: Buffer, ip: Buffer, family: number, port: number): [number, number, string, boolean] | null;
  /** ns per decision over `endpoints` (20-byte records: ip[16], port u16 LE, family u8, pad), each decided `rounds` times. */
  tableBench(table: Buffer, endpoints: Buffer, rounds: number): number | null;
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
