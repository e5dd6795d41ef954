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
 * Each path's figures are compared with its `baseline` path (null: it is a baseline): the
 * pp=false paths with HAProxy relaying transparently, the pp=true path with HAProxy doing the same
 * job as it does, a PROXY v2 header to the same PROXY-aware backend fronts (through the same
 * extra hop on the backend host for iperf3).
 * @typedef {{ name: string, label: string, proxy: 'haproxy' | 'nginx' | 'daemon' | null, pp: boolean, baseline: string | null }} BenchPath
 * @type {readonly BenchPath[]}
 */
export const PATHS = Object.freeze([
  { name: 'direct', label: 'direct routing (no proxy)', proxy: null, pp: false, baseline: 'haproxy' },
  { name: 'haproxy', label: 'HAProxy transparent (usesrc clientip, splice)', proxy: 'haproxy', pp: false, baseline: null },
  { name: 'haproxy-pp', label: 'HAProxy send-proxy-v2 (splice; + PROXY front on the backend)', proxy: 'haproxy', pp: true, baseline: null },
  { name: 'nginx', label: 'nginx stream transparent (proxy_bind $remote_addr transparent)', proxy: 'nginx', pp: false, baseline: 'haproxy' },
  { name: 'tpi', label: 'tproxy-interceptor pp=false', proxy: 'daemon', pp: false, baseline: 'haproxy' },
  { name: 'tpi-pp', label: 'tproxy-interceptor pp=true (+ PROXY front on the backend)', proxy: 'daemon', pp: true, baseline: 'haproxy-pp' },
]);

export const PATH_NAMES = Object.freeze(PATHS.map((p) => p.name));

/**
 * Bytes of each splice pipe, the same for both splice relays measured: HAProxy's `tune.pipesize`
 * and the daemon's `upstream.pipe_size`. The kernel default (16 pages, 64 KiB) caps every
 * splice() at 64 KiB; a larger pipe moves more per call.
 */
export const PIPE_SIZE = 256 * 1024;

/** The path a path's figures are compared with (null for a baseline itself, or an unknown name). */
export function baselineOf(name) {
  return PATHS.find((p) => p.name === name)?.baseline ?? null;
}

/** The ports a path's client targets. */
export function portsFor(path) {
  return path.pp
    ? { iperf: PORTS.iperfPp, http: PORTS.httpPp, hold: PORTS.hold }
    : { iperf: PORTS.iperf, http: PORTS.http, hold: PORTS.hold };
}

/**
 * What each path measures (`--measure`): iperf3 1 and 8 streams; wrk's new connections; the
 * idle connections held for the memory figure (proxies only).
 */
export const MEASURES = Object.freeze(['throughput', 'connections', 'idle']);

/** Fixed costs measured on the 2-vCPU lab machine, in seconds (see estimateSeconds). */
export const OVERHEAD = Object.freeze({
  setup: 1.5, // npm and node, lab up, backend services and client agent, the removal of it all
  perPath: 0.4, // the idle-machine sample (0.3 s), the client-IP check, the state check
  perRun: 0.05, // start/stop of one iperf3/wrk run
  proxyStartStop: { haproxy: 0.3, nginx: 0.3, daemon: 0.9 },
  // Opening, settling and closing 10k idle connections: bound by how fast the proxy accepts
  // (and, for HAProxy and nginx, by the client's and the backend's CPU on the same 2 vCPUs).
  idle: { haproxy: 2.4, nginx: 2.1, daemon: 4.8 },
});

/**
 * Expected wall-clock time of a run: the measured runs per path (iperf3 1 and 8 streams, wrk)
 * plus, for the proxies, their start and stop and the idle-connection figure.
 */
export function estimateSeconds(pathNames, durationSec, connections = 10_000, measure = MEASURES) {
  let total = OVERHEAD.setup;
  const runs = (measure.includes('throughput') ? 2 : 0) + (measure.includes('connections') ? 1 : 0);
  for (const name of pathNames) {
    const path = PATHS.find((p) => p.name === name);
    if (!path) throw new RangeError(`unknown path ${name}`);
    total += OVERHEAD.perPath + runs * (durationSec + OVERHEAD.perRun);
    if (path.proxy) total += OVERHEAD.proxyStartStop[path.proxy];
    if (path.proxy && measure.includes('idle')) total += OVERHEAD.idle[path.proxy] * (connections / 10_000);
  }
  return Math.round(total);
}

/** Descriptors a proxy needs besides two per relayed connection (listeners, pipes, runtime). */
export const FD_RESERVE = 1000;

/**
 * How many idle connections can be held through a proxy that gets `hardNofile` descriptors: two
 * per connection (client side and upstream side), in whole hundreds.
 */
export function idleConnectionBudget(requested, hardNofile) {
  if (!Number.isFinite(hardNofile)) return requested;
  const fit = Math.floor((hardNofile - FD_RESERVE) / 2 / 100) * 100;
  return Math.max(0, Math.min(requested, fit));
}
