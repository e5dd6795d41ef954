// What the soak runs: the lab's addresses and ports, the scenarios in order, the daemon's config
// (rendered from a few knobs; only keys asked for are written, so a daemon without a feature sees
// no key it does not know unless a scenario probes for that feature), and how long it all takes. Pure.

export const LAB = Object.freeze({
  client: '198.18.1.2',
  client6: 'fd00:18:1::2',
  gatewayClientSide: '198.18.1.1',
  gatewayBackendSide: '198.18.2.1',
  gatewayBackendSide6: 'fd00:18:2::1',
  backend: '198.18.2.2',
  backend6: 'fd00:18:2::2',
});

/**
 * Backend ports, all intercepted. `verify` and `verifyPp` run the byte-checking protocol (the
 * registered instance makes `verifyPp` a pp=true port); the others are faults or odd peers.
 */
export const PORTS = Object.freeze({
  verify: 9001,
  verifyPp: 9002,
  sink: 9003, // accepts, never reads
  reset: 9004, // RST right after accept
  refused: 9005, // nothing listens
  blackhole: 9006, // SYNs dropped in the backend namespace
  flap: 9007, // listener toggled up and down
});
export const TARGET_PORTS = '9001-9007';
export const LISTEN_PORT = 15001;
/** The second daemon of the wildcard check listens here. */
export const WILDCARD_PORT = 15002;
export const AGENT_PORT = 8090;
export const TABLE = 'tpi_soak';
export const ROUTE_TABLE = 100;
export const CONNECT_TIMEOUT_MS = 2000;

/** The registered instances the load goes to: 9002 pp=true, every other port transparent. */
export const MAIN_POLICY = `${PORTS.verifyPp}:pp`;
export const MAIN_INSTANCES = Object.freeze([
  { id: 'soak-main', app: 'soak-app', ip: LAB.backend },
  { id: 'soak-main6', app: 'soak-app', ip: LAB.backend6 },
]);

export const SCENARIO_NAMES = Object.freeze([
  'load', 'slow-peers', 'backend-faults', 'hostile-admin', 'hostile-agent', 'crash', 'self-connect', 'capacity',
]);
/** These run beside the load, for its duration; the rest run one after the other afterwards. */
export const BESIDE_LOAD = Object.freeze(['slow-peers', 'backend-faults', 'hostile-admin', 'hostile-agent']);

/** Hostile guest agents, one behaviour per backend address (the fetcher reaches instance_ip:8090). */
export const HOSTILE_AGENTS = Object.freeze([
  { behaviour: 'drip', ip: '198.18.2.11' }, // the body one byte at a time, forever
  { behaviour: 'huge', ip: '198.18.2.12' }, // a 64 MiB body
  { behaviour: 'malformed', ip: '198.18.2.13' }, // 200 with a body that is not JSON
  { behaviour: 'garbage', ip: '198.18.2.14' }, // bytes that are not HTTP
  { behaviour: 'silent', ip: '198.18.2.15' }, // accepts and never answers
  { behaviour: 'slow-headers', ip: '198.18.2.16' }, // the status line and headers dripped
]);

/** The n-th (0-based) address for throwaway registrations: 198.18.128.1 onwards, never .0 or .255. */
export function registrationAddress(n) {
  if (!Number.isInteger(n) || n < 0 || n >= 254 * 127) throw new RangeError(`registration index out of range: ${n}`);
  return `198.18.${128 + Math.floor(n / 254)}.${1 + (n % 254)}`;
}

/** A TOML string literal. */
const str = (v) => JSON.stringify(v);

/**
 * The daemon's config. Only the keys the soak relies on are written, plus `settings` (the run's
 * --set section.key=value pairs, raw TOML values) which add or replace keys last.
 * @param {{ dir: string, name?: string, table?: string, listenAddress?: string, listenAddress6?: string | null,
 *   port?: number, maxConnections?: number | null, allowWildcard?: boolean | null, mark?: number,
 *   routeTable?: number, targets?: Array<{ cidr: string, ports: string }>, connectTimeoutMs?: number,
 *   settings?: Array<[string, string]> }} o
 * @returns {string} TOML
 */
export function renderDaemonConfig(o) {
  const name = o.name ?? 'main';
  const mark = `0x${(o.mark ?? 0x1).toString(16)}`;
  /** section → Map(key → raw TOML value), in output order */
  const sections = new Map([
    ['listen', new Map([
      ['address', str(o.listenAddress ?? '127.0.0.1')],
      ['address6', o.listenAddress6 === null ? 'false' : str(o.listenAddress6 ?? '::1')],
      ['port', String(o.port ?? LISTEN_PORT)],
    ])],
    ['intercept', new Map([
      ['table', str(o.table ?? TABLE)],
      ['mark', mark],
      ['mask', mark],
      ['route_table', String(o.routeTable ?? ROUTE_TABLE)],
      ['fail_closed', 'true'],
    ])],
    ['upstream', new Map([
      ['connect_timeout', str(`${o.connectTimeoutMs ?? CONNECT_TIMEOUT_MS}ms`)],
      ['idle_timeout', str('2m')],
    ])],
    ['log', new Map([['level', str('info')]])],
    ['registry', new Map([
      ['path', str(`${o.dir}/registry-${name}`)],
      ['admin_socket', str(`${o.dir}/admin-${name}.sock`)],
      ['agent_port', String(AGENT_PORT)],
    ])],
    ['registry.fetch', new Map([
      ['timeout', str('2s')],
      ['max_retries', '2'],
      ['backoff_initial', str('200ms')],
      ['backoff_max', str('400ms')],
      ['max_response_bytes', '1048576'],
    ])],
  ]);
  const listen = sections.get('listen');
  if (o.maxConnections != null) listen.set('max_connections', String(o.maxConnections));
  if (o.allowWildcard != null) listen.set('allow_wildcard', String(o.allowWildcard));
  for (const [dotted, value] of o.settings ?? []) {
    const at = dotted.lastIndexOf('.');
    const section = dotted.slice(0, at);
    if (!sections.has(section)) sections.set(section, new Map());
    sections.get(section).set(dotted.slice(at + 1), value);
  }
  const targets = o.targets ?? [
    { cidr: '198.18.2.0/24', ports: TARGET_PORTS },
    { cidr: 'fd00:18:2::/64', ports: TARGET_PORTS },
  ];
  const lines = [];
  for (const [section, keys] of sections) {
    lines.push(`[${section}]`, ...[...keys].map(([k, v]) => `${k} = ${v}`), '');
    if (section === 'intercept') {
      for (const t of targets) lines.push('[[intercept.targets]]', `cidr = ${str(t.cidr)}`, `ports = [${str(t.ports)}]`, '');
    }
  }
  return lines.join('\n');
}

/**
 * Descriptors each process needs for `connections` held connections: the daemon two per
 * connection (client and upstream socket) plus headroom for pipes, the admin flood and its own
 * files; the client and backend agents one each.
 * @returns {{ daemon: number, agent: number }}
 */
export function descriptorNeeds(connections, adminFlood) {
  return { daemon: 2 * connections + adminFlood + 512, agent: connections + adminFlood + 256 };
}

/** How many stuck admin clients the hostile-admin scenario opens: more than any sane cap on them. */
export function adminFloodSize(connections) {
  return Math.max(200, Math.min(2000, Math.floor(connections / 2)));
}

/** Seconds of one ramp step: longer runs measure each rate longer. */
export function rampStepMs(durationMs) {
  return Math.round(Math.min(5000, Math.max(1000, durationMs / 60)));
}

/** Rates the ramp tries: 25/s, ×1.5 each step, up to rampMax (inclusive, as its last step). */
export function rampRates(rampMax) {
  const rates = [];
  for (let r = 25; r < rampMax; r = Math.round(r * 1.5)) rates.push(r);
  rates.push(rampMax);
  return rates;
}

/** How long each ramp connection is held (200 ms..2 s), so that the cap is reached halfway up the ramp. */
export function rampHoldMs(cap, rampMax) {
  return Math.round(Math.min(2000, Math.max(200, (1000 * cap) / (rampMax / 2))));
}

/** A rough estimate of a whole run, in seconds (for the deadline and the first line). */
export function estimateSeconds(opts) {
  const s = new Set(opts.scenarios);
  let total = 8; // lab, agents, daemon
  const beside = BESIDE_LOAD.some((n) => s.has(n));
  if (s.has('load') || beside) total += opts.durationMs / 1000 + opts.connections / 150 + 10;
  if (beside) total += 25; // the hostile-admin reaping wait can outlast a short load
  if (s.has('crash')) total += 20;
  if (s.has('self-connect')) total += 25;
  if (s.has('capacity')) total += 20 + (rampRates(opts.rampMax).length * rampStepMs(opts.durationMs)) / 1000;
  return Math.round(total);
}
