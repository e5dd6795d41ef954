// What the bench measures: the paths, the lab addresses and ports, and how long it takes. Pure.

export const LAB = Object.freeze({
  client: '198.18.1.2',
  gatewayClientSide: '198.18.1.1',
  gatewayBackendSide: '198.18.2.1',
  backend: '198.18.2.2',
  backendNet: '198.18.2.0/24',
});

/**
 * Backend services. The plain ones answer whoever connects; the *Pp ones expect a PROXY header
 * first (nginx `listen ... proxy_protocol` for HTTP, an HAProxy `accept-proxy` front relaying to
 * iperf3 on loopback: an extra hop the pp=true path pays).
 */
export const PORTS = Object.freeze({
  iperf: 5201,
  iperfPp: 5202,
  http: 8081,
  httpPp: 8080,
  hold: 9000,
});

/** Every port the transparent paths intercept (and the forward guard refuses to route raw). */
export const INTERCEPTED_PORTS = Object.freeze([PORTS.iperf, PORTS.iperfPp, PORTS.httpPp, PORTS.http, PORTS.hold]);

/**
 * @typedef {{ name: string, label: string, proxy: 'haproxy' | 'nginx' | 'daemon' | null, pp: boolean }} BenchPath
 * @type {readonly BenchPath[]}
 */
export const PATHS = Object.freeze([
  { name: 'direct', label: 'direct routing (no proxy)', proxy: null, pp: false },
  { name: 'haproxy', label: 'HAProxy transparent (usesrc clientip, splice)', proxy: 'haproxy', pp: false },
  { name: 'nginx', label: 'nginx stream transparent (proxy_bind $remote_addr transparent)', proxy: 'nginx', pp: false },
  { name: 'tpi', label: 'tproxy-interceptor pp=false', proxy: 'daemon', pp: false },
  { name: 'tpi-pp', label: 'tproxy-interceptor pp=true (+ PROXY front on the backend)', proxy: 'daemon', pp: true },
]);

export const PATH_NAMES = Object.freeze(PATHS.map((p) => p.name));

/** The figures are compared with this path. */
export const BASELINE = 'haproxy';

/** The ports a path's client targets. */
export function portsFor(path) {
  return path.pp
    ? { iperf: PORTS.iperfPp, http: PORTS.httpPp, hold: PORTS.hold }
    : { iperf: PORTS.iperf, http: PORTS.http, hold: PORTS.hold };
}

/** Fixed costs measured on the 2-vCPU lab machine, in seconds (see estimateSeconds). */
export const OVERHEAD = Object.freeze({
  setup: 3, // lab up, backend services
  perRun: 0.6, // start/stop of one iperf3/wrk run
  proxyStartStop: 1.2,
  verify: 0.3,
  idle: 4, // opening, settling and closing the idle connections (10k)
  teardown: 1,
});

/**
 * Expected wall-clock time of a run: three measured runs per path (iperf3 1 and 8 streams, wrk)
 * plus the idle-connection figure for the proxies.
 */
export function estimateSeconds(pathNames, durationSec, connections = 10_000) {
  let total = OVERHEAD.setup + OVERHEAD.teardown;
  for (const name of pathNames) {
    const path = PATHS.find((p) => p.name === name);
    if (!path) throw new RangeError(`unknown path ${name}`);
    total += 3 * (durationSec + OVERHEAD.perRun) + OVERHEAD.verify;
    if (path.proxy) total += OVERHEAD.proxyStartStop + OVERHEAD.idle * Math.max(0.25, connections / 10_000);
  }
  return Math.round(total);
}
