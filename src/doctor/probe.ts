// The backend return-path probe: one transparent connection to the backend from a spoofed source,
// exactly as the daemon opens a pp=false upstream. The backend answers the spoofed address; the
// answer reaches this process only if it is routed back through this host, where the daemon's
// `socket transparent` rule and policy route deliver it. So the daemon's rules must be installed
// (probeBlocker), and nothing is installed for the probe.
//
// Safety: one SYN, closed as soon as it is answered. The default source is a documentation
// address (192.0.2.1, 2001:db8::1, RFC 5737/3849) that no real client has: a reply that does not
// come back here goes to the backend's default gateway and dies there, and no client receives an
// unexpected SYN-ACK. The kernel picks the source port, so the probe cannot collide with a
// connection this host relays.
import { isIP } from 'node:net';
import { networkInterfaces } from 'node:os';
import type { Config } from '../config.js';
import { InterceptorError } from '../errors.js';
import type { ExecFileFn } from '../firewall/exec-file.js';
import net from 'node:net';
import { openSpoofedSocket } from '../native/sockets.js';
import { cidrContains } from '../net/cidr.js';
import type { BackendProbe } from './types.js';

const DEFAULT_PROBE_SOURCE = { 4: '192.0.2.1', 6: '2001:db8::1' } as const;
const PROBE_TIMEOUT_MS = 3000;

export interface BackendTarget {
  readonly address: string;
  readonly port: number;
}

function usage(message: string): InterceptorError {
  return new InterceptorError('ERR_USAGE', message);
}

/**
 * `--backend ADDR[:PORT]` ("198.18.2.2:8080", "198.18.2.2", "[fd00::2]:8080", "fd00::2"). Without
 * a port, the first port of the first target containing the address.
 */
export function parseBackendArg(text: string, config: Config): BackendTarget {
  let address = text;
  let port: number | null = null;
  const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(text);
  const v4 = /^([^:]+):(\d+)$/.exec(text);
  if (v6) {
    address = v6[1]!;
    port = v6[2] === undefined ? null : Number(v6[2]);
  } else if (v4) {
    address = v4[1]!;
    port = Number(v4[2]);
  }
  if (isIP(address) === 0) throw usage(`--backend: ${JSON.stringify(text)} is not ADDR[:PORT] (e.g. 198.18.2.2:8080 or [fd00::2]:8080)`);
  if (port !== null && (!Number.isInteger(port) || port < 1 || port > 65535)) throw usage(`--backend: port ${port} is out of range 1..65535`);
  if (port === null) {
    const target = config.intercept.targets.find((t) => cidrContains(t.cidr, address));
    if (target === undefined) throw usage(`--backend: ${address} is in no intercept.targets entry, so there is no port to default to; give one: --backend ${text.includes(':') ? `[${address}]` : address}:PORT`);
    port = target.ports[0]!.from;
  }
  return { address, port };
}

/** The spoofed source: --probe-source, or the documentation address of the backend's family. It must not be ours. */
export function probeSource(given: string | undefined, backend: BackendTarget): string {
  const family = isIP(backend.address) as 4 | 6;
  const source = given ?? DEFAULT_PROBE_SOURCE[family];
  if (isIP(source) !== family) throw usage(`--probe-source: ${JSON.stringify(source)} is not an IPv${family} address like the backend's`);
  const local = Object.values(networkInterfaces()).some((list) => list?.some((a) => a.address === source));
  if (local) throw usage(`--probe-source: ${source} is an address of this host; the probe needs one the backend must route back to us (a client's)`);
  return source;
}

/** This host's source address towards `address` (`ip route get`), for the fix the report prints. */
async function routeSource(exec: ExecFileFn, address: string): Promise<string | null> {
  try {
    const { stdout } = await exec('ip', ['-j', 'route', 'get', address], {});
    const [route] = JSON.parse(stdout) as Array<{ prefsrc?: string }>;
    return route?.prefsrc ?? null;
  } catch {
    return null;
  }
}

const UNREACHABLE = new Set(['EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL']);

export async function probeBackend(opts: { backend: BackendTarget; source: string; exec: ExecFileFn; timeoutMs?: number }): Promise<BackendProbe> {
  const { backend, source } = opts;
  const timeoutMs = opts.timeoutMs ?? PROBE_TIMEOUT_MS;
  const via = await routeSource(opts.exec, backend.address);
  const started = Date.now();
  const done = (result: BackendProbe['result'], code: string | null): BackendProbe => ({
    address: backend.address,
    port: backend.port,
    source,
    result,
    code,
    ms: Date.now() - started,
    via,
    timeoutMs,
  });
  try {
    await connectSpoofed(source, backend, timeoutMs);
    return done('connected', null);
  } catch (err) {
    const code = (err as { code?: string }).code ?? null;
    if (code === 'ERR_CONNECT_TIMEOUT') return done('timeout', code);
    if (code === 'ECONNREFUSED') return done('refused', code);
    if (code !== null && UNREACHABLE.has(code)) return done('unreachable', code);
    return done('error', code ?? (err as Error).message);
  }
}

/** Connects from `source` (not ours) to `destination` within `timeoutMs`, then closes. */
function connectSpoofed(source: string, destination: BackendTarget, timeoutMs: number): Promise<void> {
  // Throws synchronously (EPERM without CAP_NET_ADMIN, EADDRNOTAVAIL...).
  const socket = new net.Socket({ fd: openSpoofedSocket(source), readable: true, writable: true });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.destroy();
      reject(Object.assign(new Error(`connect to ${destination.address}:${destination.port} timed out after ${timeoutMs} ms`), { code: 'ERR_CONNECT_TIMEOUT' }));
    }, timeoutMs);
    socket.once('error', (err) => {
      clearTimeout(timer);
      socket.destroy();
      reject(err);
    });
    socket.connect({ port: destination.port, host: destination.address }, () => {
      clearTimeout(timer);
      socket.destroy();
      resolve();
    });
  });
}
