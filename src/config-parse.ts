// TOML text → frozen Config (src/config.ts). Pure except `loadConfig`, which only reads the file.
// Every error is a ConfigError naming the dotted key, the problem and the accepted form. Unknown
// keys are errors: a typo such as `fail_closd = false` must not silently leave the default on.
import { availableParallelism } from 'node:os';
import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { isAbsolute } from 'node:path';
import { parse as parseToml, TomlDate, TomlError } from 'smol-toml';
import type {
  AddressMapping,
  AttestedConfig,
  Config,
  EtcdConfig,
  FetchConfig,
  InboundPpConfig,
  InterceptConfig,
  ListenConfig,
  LogConfig,
  LogLevel,
  MetricsConfig,
  PortRange,
  RegistryConfig,
  StoreKind,
  FirewallBackend,
  IptablesVariant,
  Target,
  UpstreamConfig,
} from './config.js';
import { parseDuration } from './duration.js';
import { ConfigError, InterceptorError } from './errors.js';
import { cidrsOverlap, parseCidr, type Cidr } from './net/cidr.js';
import { BUILTIN_CHAINS, checkIptablesInterface } from './firewall/iptables-render.js';

type Table = Record<string, unknown>;

const LOG_LEVELS: readonly LogLevel[] = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];
const STORE_KINDS: readonly StoreKind[] = ['sqlite', 'etcd'];
const FIREWALL_BACKENDS: readonly FirewallBackend[] = ['nftables', 'iptables'];
const IPTABLES_VARIANTS: readonly IptablesVariant[] = ['auto', 'nft', 'legacy'];
/**
 * Keys that lost their meaning when the data path became one set of native loop threads: an
 * error naming the replacement, so that an old config is not silently half-applied.
 */
const RETIRED_KEYS: ReadonlyMap<string, string> = new Map([
  ['listen.accept', 'connections are always accepted by the native loop threads now; remove listen.accept'],
  ['listen.workers', 'one process runs listen.threads loop threads (default: one per CPU); remove listen.workers and set listen.threads if needed'],
  ['upstream.relay', 'bytes always move with splice(2) on the loop threads now; remove upstream.relay (upstream.pipe_size still applies)'],
]);
/** Node timers overflow above 2^31-1 ms (they then fire immediately). */
const MAX_TIMER_MS = 2 ** 31 - 1;
/** Route tables the kernel reserves: 253 default, 254 main, 255 local. */
const RESERVED_ROUTE_TABLES: ReadonlyMap<number, string> = new Map([
  [253, 'default'],
  [254, 'main'],
  [255, 'local'],
]);

// ---------------------------------------------------------------------------------------------
// Value helpers

function describe(value: unknown): string {
  if (value instanceof TomlDate || value instanceof Date) return 'a date';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'bigint') return `the integer ${value}`;
  if (typeof value === 'number') return Number.isInteger(value) ? `the integer ${value}` : `the float ${value}`;
  if (typeof value === 'string') return `the string ${JSON.stringify(value)}`;
  if (typeof value === 'boolean') return `the boolean ${value}`;
  if (value !== null && typeof value === 'object') return 'a table';
  return String(value);
}

function isTable(value: unknown): value is Table {
  return value !== null && typeof value === 'object' && !Array.isArray(value) && !(value instanceof Date) && !(value instanceof TomlDate);
}

function hex(n: number): string {
  return `0x${n.toString(16)}`;
}

function child(path: string, key: string): string {
  return path === '' ? key : `${path}.${key}`;
}

/** Optimal-string-alignment distance: like Levenshtein, with a transposition costing 1 ("mrak" → "mark"). */
function editDistance(a: string, b: string): number {
  const d: number[][] = [];
  for (let i = 0; i <= a.length; i++) d.push([i, ...new Array<number>(b.length).fill(0)]);
  for (let j = 0; j <= b.length; j++) d[0]![j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, d[i - 2]![j - 2]! + 1);
      d[i]![j] = v;
    }
  }
  return d[a.length]![b.length]!;
}

/** The known key the user most likely meant: a close spelling, or one containing what was typed ("retries"). */
function closest(key: string, known: readonly string[]): string | null {
  const typed = key.toLowerCase();
  let best: string | null = null;
  let bestDistance = Infinity;
  for (const k of known) {
    const dist = editDistance(typed, k);
    if (dist < bestDistance) {
      best = k;
      bestDistance = dist;
    }
  }
  if (best !== null && bestDistance <= Math.max(1, Math.floor(Math.max(typed.length, best.length) / 2))) return best;
  return typed.length >= 3 ? (known.find((k) => k.includes(typed)) ?? null) : null;
}

function checkKeys(table: Table, path: string, known: readonly string[]): void {
  for (const key of Object.keys(table)) {
    if (known.includes(key)) continue;
    const full = child(path, key);
    const retired = RETIRED_KEYS.get(full);
    if (retired !== undefined) throw new ConfigError(full, `is no longer supported: ${retired}`);
    const guess = closest(key, known);
    const hint = guess !== null
      ? `did you mean \`${child(path, guess)}\`?`
      : `known keys${path === '' ? '' : ` in [${path}]`}: ${known.join(', ')}`;
    throw new ConfigError(full, `unknown key \`${full}\` (${hint})`);
  }
}

/** A sub-table; absent = empty (all defaults). */
function subTable(parent: Table, path: string, key: string, known: readonly string[]): Table {
  const full = child(path, key);
  const value = parent[key];
  if (value === undefined) return {};
  if (!isTable(value)) throw new ConfigError(full, `expected a table ([${full}]), got ${describe(value)}`);
  checkKeys(value, full, known);
  return value;
}

function integer(table: Table, path: string, key: string, def: number, min: number, max: number, form?: string): number {
  const full = child(path, key);
  const value = table[key];
  if (value === undefined) return def;
  const accepted = form ?? `an integer ${min}..${max}`;
  if (typeof value === 'bigint' || (typeof value === 'number' && Number.isInteger(value))) {
    if (value < min || value > max) throw new ConfigError(full, `${describe(value)} is out of range; expected ${accepted}`);
    return Number(value);
  }
  throw new ConfigError(full, `expected ${accepted}, got ${describe(value)}`);
}

function boolean(table: Table, path: string, key: string, def: boolean): boolean {
  const value = table[key];
  if (value === undefined) return def;
  if (typeof value !== 'boolean') throw new ConfigError(child(path, key), `expected true or false, got ${describe(value)}`);
  return value;
}

function string(table: Table, path: string, key: string, def: string, form: string): string {
  const value = table[key];
  if (value === undefined) return def;
  if (typeof value !== 'string') throw new ConfigError(child(path, key), `expected ${form}, got ${describe(value)}`);
  return value;
}

function oneOf<T extends string>(table: Table, path: string, key: string, def: T, allowed: readonly T[]): T {
  const form = `one of ${allowed.map((a) => JSON.stringify(a)).join(', ')}`;
  const value = string(table, path, key, def, form);
  if (!(allowed as readonly string[]).includes(value)) throw new ConfigError(child(path, key), `${describe(value)} is not allowed; expected ${form}`);
  return value as T;
}

function duration(table: Table, path: string, key: string, defMs: number): number {
  const full = child(path, key);
  const value = table[key];
  if (value === undefined) return defMs;
  if (typeof value !== 'string' && typeof value !== 'number') {
    throw new ConfigError(full, `expected a duration like "5s", "250ms", "1m30s" or a number of seconds, got ${describe(value)}`);
  }
  let ms: number;
  try {
    ms = parseDuration(value);
  } catch (err) {
    if (err instanceof InterceptorError) throw new ConfigError(full, err.message);
    throw err;
  }
  if (ms <= 0) throw new ConfigError(full, `must be greater than zero; expected a duration like "5s" or "250ms"`);
  if (ms > MAX_TIMER_MS) throw new ConfigError(full, `${value} is too long; at most ${MAX_TIMER_MS}ms (about 24 days)`);
  return ms;
}

function absolutePath(table: Table, path: string, key: string, def: string): string {
  const form = 'an absolute path like "/var/lib/tproxy-interceptor"';
  const value = string(table, path, key, def, form);
  if (!isAbsolute(value) || value.includes('\0')) throw new ConfigError(child(path, key), `${describe(value)} is not an absolute path; expected ${form}`);
  return value;
}

function address(table: Table, path: string, key: string, def: string, family: 4 | 6): string {
  const example = family === 4 ? '"127.0.0.1"' : '"::1"';
  const value = string(table, path, key, def, `an IPv${family} address like ${example}`);
  if (isIP(value) !== family || value.includes('%')) {
    throw new ConfigError(child(path, key), `${describe(value)} is not an IPv${family} address; expected an IPv${family} address like ${example}`);
  }
  return value;
}

// ---------------------------------------------------------------------------------------------
// Sections

function parseListen(root: Table): ListenConfig {
  const path = 'listen';
  const t = subTable(root, '', path, ['address', 'address6', 'port', 'threads', 'allow_wildcard', 'max_connections']);
  let address6: string | null;
  const raw6 = t['address6'];
  if (raw6 === '' || raw6 === false) address6 = null;
  else if (raw6 === undefined || typeof raw6 === 'string') address6 = address(t, path, 'address6', '::1', 6);
  else throw new ConfigError(`${path}.address6`, `expected an IPv6 address like "::1", or "" / false to disable IPv6, got ${describe(raw6)}`);
  const listen: ListenConfig = {
    address: address(t, path, 'address', '127.0.0.1', 4),
    address6,
    // Away from Istio/Kuma (15000-15100), Consul (19000, 21000-21755), Linkerd (4140-4191),
    // Cilium's proxy ports (10000-20000), NodePorts (30000-32767), the ephemeral range (32768-60999).
    port: integer(t, path, 'port', 24511, 1, 65535, 'a TCP port 1..65535'),
    threads: integer(t, path, 'threads', availableParallelism(), 1, 256, 'an integer 1..256 (omit it for one per CPU)'),
    allowWildcard: boolean(t, path, 'allow_wildcard', false),
    maxConnections: t['max_connections'] === undefined ? null : integer(t, path, 'max_connections', 0, 1, 10_000_000, 'an integer 1..10000000 (omit it to derive it from the open-files limit)'),
  };
  // A wildcard listener also takes connections made straight to any address of this host, from
  // any network that can reach it: refused unless asked for (the README says what it exposes).
  for (const [key, value] of [['address', listen.address], ['address6', listen.address6]] as const) {
    if (value !== null && isWildcard(value) && !listen.allowWildcard) {
      throw new ConfigError(
        child(path, key),
        `${describe(value)} listens on every address of this host, where any client that can reach the host may connect straight to the listener; use a loopback address like ${key === 'address' ? '"127.0.0.1"' : '"::1"'} (nftables tproxy delivers to it), or set listen.allow_wildcard = true to accept that exposure`,
      );
    }
  }
  return listen;
}

function isWildcard(address: string): boolean {
  return address === '0.0.0.0' || (isIP(address) === 6 && /^[0:]+$/.test(address));
}

const PORT_FORM = 'an array of ports (integers 1..65535) and "a-b" range strings with a <= b, e.g. [8080, "9000-9100"]';

function parsePortEntry(value: unknown, key: string): PortRange {
  if (typeof value === 'number' && Number.isInteger(value)) {
    if (value < 1 || value > 65535) throw new ConfigError(key, `port ${value} is out of range; expected ${PORT_FORM}`);
    return { from: value, to: value };
  }
  if (typeof value === 'string') {
    const m = /^\s*(\d{1,5})\s*(?:-\s*(\d{1,5})\s*)?$/.exec(value);
    if (m !== null) {
      const from = Number(m[1]);
      const to = m[2] === undefined ? from : Number(m[2]);
      if (from < 1 || to > 65535 || from > 65535 || to < 1) throw new ConfigError(key, `${describe(value)}: ports must be 1..65535; expected ${PORT_FORM}`);
      if (from > to) throw new ConfigError(key, `${describe(value)}: range start is above its end; write "${to}-${from}"`);
      return { from, to };
    }
  }
  throw new ConfigError(key, `expected a port (integer 1..65535) or a "a-b" range string, got ${describe(value)}`);
}

function describeRange(r: PortRange): string {
  return r.from === r.to ? String(r.from) : `"${r.from}-${r.to}"`;
}

/**
 * Sorted, with adjacent ranges merged (nft rejects overlapping set intervals). A port listed
 * twice, or ranges that overlap, are an error naming both entries: a duplicate is most often a
 * typo for another port.
 */
function mergePortRanges(ranges: readonly PortRange[], key: string): PortRange[] {
  const sorted = ranges.map((r, i) => ({ r, i })).sort((a, b) => a.r.from - b.r.from || a.r.to - b.r.to);
  const out: PortRange[] = [];
  let lastIndex = -1;
  for (const { r, i } of sorted) {
    const last = out[out.length - 1];
    if (last !== undefined && r.from <= last.to) {
      throw new ConfigError(`${key}[${i}]`, `${describeRange(r)} overlaps ${key}[${lastIndex}] (${describeRange(ranges[lastIndex]!)}); list each port once`);
    }
    if (last !== undefined && r.from === last.to + 1) out[out.length - 1] = { from: last.from, to: r.to };
    else out.push({ from: r.from, to: r.to });
    if (last === undefined || r.to >= last.to) lastIndex = i;
  }
  return out;
}

function portsIntersect(a: readonly PortRange[], b: readonly PortRange[]): PortRange | null {
  for (const x of a) {
    for (const y of b) {
      const from = Math.max(x.from, y.from);
      const to = Math.min(x.to, y.to);
      if (from <= to) return { from, to };
    }
  }
  return null;
}

/**
 * Two targets that would intercept the same (address, port) on the same interface are an
 * error: one of them is redundant or a typo. Overlapping networks with disjoint ports (or on
 * different interfaces) are fine.
 */
function checkTargetOverlaps(targets: readonly Target[], path: string): void {
  for (let i = 0; i < targets.length; i++) {
    for (let j = 0; j < i; j++) {
      const a = targets[j]!;
      const b = targets[i]!;
      if (a.family !== b.family) continue;
      if (a.interface !== null && b.interface !== null && a.interface !== b.interface) continue;
      if (!cidrsOverlap(a.cidr, b.cidr)) continue;
      const common = portsIntersect(a.ports, b.ports);
      if (common === null) continue;
      throw new ConfigError(
        `${path}[${i}]`,
        `${b.cidr} overlaps ${path}[${j}] (${a.cidr}) on port ${describeRange(common)}; each address and port may be intercepted by one target only (split the networks or the ports)`,
      );
    }
  }
}

function parseInterfaceName(value: unknown, key: string): string | null {
  if (value === undefined) return null;
  const form = 'an interface name (1..15 characters, no "/", ":", "*" or whitespace); omit the key to match any interface';
  if (typeof value !== 'string') throw new ConfigError(key, `expected ${form}, got ${describe(value)}`);
  // The kernel's dev_valid_name(), plus "*" (an nft wildcard we do not render).
  if (value.length === 0 || value.length > 15 || value === '.' || value === '..' || /[/:*\s]/.test(value)) {
    throw new ConfigError(key, `${describe(value)} is not a valid interface name; expected ${form}`);
  }
  return value;
}

/** parseCidr, its error named by `key`. */
function cidrAt(text: string, key: string): Cidr {
  try {
    return parseCidr(text);
  } catch (err) {
    if (err instanceof InterceptorError) throw new ConfigError(key, err.message);
    throw err;
  }
}

function parseTarget(value: unknown, path: string, listen: ListenConfig): Target {
  if (!isTable(value)) throw new ConfigError(path, `expected a table with cidr and ports, got ${describe(value)}`);
  checkKeys(value, path, ['cidr', 'ports', 'interface']);
  const cidrKey = `${path}.cidr`;
  const rawCidr = value['cidr'];
  if (rawCidr === undefined) throw new ConfigError(cidrKey, 'missing; expected a network like "198.18.2.0/24" or "fd00:2::/64"');
  if (typeof rawCidr !== 'string') throw new ConfigError(cidrKey, `expected a network like "198.18.2.0/24", got ${describe(rawCidr)}`);
  const cidr = cidrAt(rawCidr, cidrKey);
  if (cidr.family === 6 && listen.address6 === null) {
    throw new ConfigError(cidrKey, `${cidr.text} is an IPv6 network but listen.address6 is disabled; set listen.address6 (e.g. "::1") or remove this target`);
  }
  const portsKey = `${path}.ports`;
  const rawPorts = value['ports'];
  if (rawPorts === undefined) throw new ConfigError(portsKey, `missing; expected ${PORT_FORM}`);
  if (!Array.isArray(rawPorts)) throw new ConfigError(portsKey, `expected ${PORT_FORM}, got ${describe(rawPorts)}`);
  if (rawPorts.length === 0) throw new ConfigError(portsKey, `is empty; expected ${PORT_FORM}`);
  const ports = mergePortRanges(rawPorts.map((p: unknown, i) => parsePortEntry(p, `${portsKey}[${i}]`)), portsKey);
  return { cidr: cidr.text, family: cidr.family, ports, interface: parseInterfaceName(value['interface'], `${path}.interface`) };
}

function parseIntercept(root: Table, listen: ListenConfig): InterceptConfig {
  const path = 'intercept';
  const t = subTable(root, '', path, ['backend', 'iptables_variant', 'table', 'mark', 'mask', 'route_table', 'fail_closed', 'local_backends', 'targets']);
  const backend = oneOf(t, path, 'backend', 'nftables', FIREWALL_BACKENDS);
  const iptablesVariant = oneOf(t, path, 'iptables_variant', 'auto', IPTABLES_VARIANTS);
  const iptables = backend === 'iptables';
  const tableForm = iptables
    ? 'a name of 1..28 letters, digits and underscores other than a built-in chain (iptables chain names are at most 28 characters)'
    : 'a name of 1..32 letters, digits and underscores';
  const table = string(t, path, 'table', 'tproxy_interceptor', tableForm);
  if (!(iptables ? /^[A-Za-z0-9_]{1,28}$/ : /^[A-Za-z0-9_]{1,32}$/).test(table) || (iptables && BUILTIN_CHAINS.includes(table))) {
    throw new ConfigError(`${path}.table`, `${describe(table)} is not allowed; expected ${tableForm}`);
  }
  const markForm = 'an integer 0x1..0xffffffff (TOML hex like 0x2000 works)';
  // 0x2000: no known user's default bit (see KNOWN_MARK_USERS in src/doctor/marks.ts).
  const mark = integer(t, path, 'mark', 0x2000, 1, 0xffffffff, markForm);
  const mask = integer(t, path, 'mask', 0x2000, 1, 0xffffffff, markForm);
  if ((mark & ~mask) >>> 0 !== 0) {
    throw new ConfigError(`${path}.mark`, `${hex(mark)} has bits outside ${path}.mask ${hex(mask)}; the mark must fit in the mask (mark & ~mask == 0)`);
  }
  // Not 100 (the kernel's tproxy example), Calico's 1-250, Istio's 133, Cilium's 200/202/2004/2005.
  const routeTable = integer(t, path, 'route_table', 4511, 1, 2 ** 31 - 1, 'an integer 1..2147483647 other than 253, 254, 255');
  const reserved = RESERVED_ROUTE_TABLES.get(routeTable);
  if (reserved !== undefined) {
    throw new ConfigError(`${path}.route_table`, `${routeTable} is the kernel's "${reserved}" table; expected an integer 1..2147483647 other than 253, 254, 255`);
  }
  const rawTargets = t['targets'];
  let targets: Target[] = [];
  if (rawTargets !== undefined) {
    if (!Array.isArray(rawTargets)) throw new ConfigError(`${path}.targets`, `expected an array of tables ([[intercept.targets]]), got ${describe(rawTargets)}`);
    targets = rawTargets.map((v: unknown, i) => parseTarget(v, `${path}.targets[${i}]`, listen));
    checkTargetOverlaps(targets, `${path}.targets`);
  }
  const failClosed = boolean(t, path, 'fail_closed', true);
  if (iptables) {
    // xt_TPROXY drops what no socket takes: with iptables there is no way to fail open.
    if (!failClosed) {
      throw new ConfigError(`${path}.fail_closed`, 'false is not possible with backend = "iptables" (its TPROXY target drops packets while no listener takes them); remove the key or use backend = "nftables"');
    }
    targets.forEach((target, i) => {
      if (target.interface === null) return;
      try {
        checkIptablesInterface(target.interface);
      } catch (err) {
        throw new ConfigError(`${path}.targets[${i}].interface`, `${(err as Error).message}; rename the interface or use backend = "nftables"`);
      }
    });
  }
  return {
    backend,
    iptablesVariant,
    table,
    mark,
    mask,
    routeTable,
    failClosed,
    localBackends: boolean(t, path, 'local_backends', false),
    targets,
  };
}

function parseUpstream(root: Table): UpstreamConfig {
  const path = 'upstream';
  const t = subTable(root, '', path, ['connect_timeout', 'idle_timeout', 'pp_version', 'keep_client_port', 'pipe_size']);
  return {
    connectTimeoutMs: duration(t, path, 'connect_timeout', 5_000),
    idleTimeoutMs: duration(t, path, 'idle_timeout', 300_000),
    ppVersion: integer(t, path, 'pp_version', 2, 1, 2, '1 or 2') as 1 | 2,
    keepClientPort: boolean(t, path, 'keep_client_port', false),
    pipeSize: pipeSize(t, path),
  };
}

/** 0 (the kernel's default) or 4 KiB..1 MiB: the kernel's fs.pipe-max-size default is the ceiling. */
function pipeSize(t: Table, path: string): number {
  const form = 'a number of bytes: 0 (the kernel default) or 4096..1048576';
  const n = integer(t, path, 'pipe_size', 256 * 1024, 0, 1024 * 1024, form);
  if (n !== 0 && n < 4096) throw new ConfigError(child(path, 'pipe_size'), `${n} is out of range; expected ${form}`);
  return n;
}

function parseLog(root: Table): LogConfig {
  const t = subTable(root, '', 'log', ['level']);
  return { level: oneOf(t, 'log', 'level', 'info', LOG_LEVELS) };
}

/**
 * Upstream accepts app-compose documents up to 50 MiB. In the Info response that text is escaped
 * twice (a JSON string inside tcb_info, itself a JSON string), which at worst (every byte a quote
 * or a backslash) makes each byte four; plus room for the rest of the response.
 */
const DEFAULT_MAX_RESPONSE_BYTES = 4 * 50 * 1024 * 1024 + 4 * 1024 * 1024;

function parseRegistry(root: Table): RegistryConfig {
  const path = 'registry';
  const t = subTable(root, '', path, ['path', 'admin_socket', 'agent_port', 'trust_agent_compose_hash', 'fetch', 'store', 'etcd', 'attested']);
  const fpath = `${path}.fetch`;
  const f = subTable(t, path, 'fetch', ['timeout', 'max_retries', 'backoff_initial', 'backoff_max', 'max_response_bytes']);
  const fetch: FetchConfig = {
    timeoutMs: duration(f, fpath, 'timeout', 10_000),
    maxRetries: integer(f, fpath, 'max_retries', 5, 0, 1000),
    backoffInitialMs: duration(f, fpath, 'backoff_initial', 1_000),
    backoffMaxMs: duration(f, fpath, 'backoff_max', 30_000),
    maxResponseBytes: integer(f, fpath, 'max_response_bytes', DEFAULT_MAX_RESPONSE_BYTES, 1024, 2 ** 30, 'an integer number of bytes 1024..1073741824'),
  };
  if (fetch.backoffMaxMs < fetch.backoffInitialMs) {
    throw new ConfigError(`${fpath}.backoff_max`, `${fetch.backoffMaxMs}ms is below ${fpath}.backoff_initial (${fetch.backoffInitialMs}ms); expected a duration >= backoff_initial`);
  }
  const store = oneOf(t, path, 'store', 'sqlite', STORE_KINDS);
  if (store !== 'etcd' && t['etcd'] !== undefined) {
    throw new ConfigError(`${path}.etcd`, `is set but ${path}.store is "${store}"; set ${path}.store = "etcd", or remove [${path}.etcd]`);
  }
  return {
    path: absolutePath(t, path, 'path', '/var/lib/tproxy-interceptor'),
    // In a directory of its own: a service user can own /run/tproxy-interceptor (RuntimeDirectory=).
    adminSocket: absolutePath(t, path, 'admin_socket', '/run/tproxy-interceptor/admin.sock'),
    agentPort: integer(t, path, 'agent_port', 8090, 1, 65535, 'a TCP port 1..65535'),
    trustAgentComposeHash: boolean(t, path, 'trust_agent_compose_hash', false),
    fetch,
    store,
    etcd: store === 'etcd' ? parseEtcd(t, path) : null,
    attested: parseAttested(t, path),
  };
}

const ATTESTED_KEYS = ['listen', 'ca_file', 'cert_file', 'key_file', 'allowed_apps', 'app_id_fallback', 'allow_address_change', 'address_map'];

/** [registry.attested]; absent = the listener is off. listen and the three files are required. */
function parseAttested(registry: Table, parent: string): AttestedConfig | null {
  if (registry['attested'] === undefined) return null;
  const path = child(parent, 'attested');
  const t = subTable(registry, parent, 'attested', ATTESTED_KEYS);
  const required = (key: string, form: string): void => {
    if (t[key] === undefined) throw new ConfigError(child(path, key), `missing; expected ${form} ([${path}] needs listen, ca_file, cert_file and key_file)`);
  };
  const listenForm = 'an address and port like "198.18.2.1:8443" or "[fd00::1]:8443"';
  required('listen', listenForm);
  for (const key of ['ca_file', 'cert_file', 'key_file']) required(key, 'an absolute path to a PEM file');
  return {
    listen: hostPort(string(t, path, 'listen', '', listenForm), child(path, 'listen'), listenForm),
    caFile: absolutePath(t, path, 'ca_file', ''),
    certFile: absolutePath(t, path, 'cert_file', ''),
    keyFile: absolutePath(t, path, 'key_file', ''),
    allowedApps: allowedApps(t['allowed_apps'], child(path, 'allowed_apps')),
    appIdFallback: boolean(t, path, 'app_id_fallback', false),
    allowAddressChange: boolean(t, path, 'allow_address_change', false),
    addressMap: addressMap(t['address_map'], child(path, 'address_map')),
  };
}

function hostPort(value: string, key: string, form: string): { address: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:\[\]]+)):(\d{1,5})$/.exec(value);
  const address = m?.[1] ?? m?.[2];
  const port = Number(m?.[3]);
  const family = m?.[1] !== undefined ? 6 : 4;
  if (m === null || address === undefined || isIP(address) !== family || address.includes('%')) {
    throw new ConfigError(key, `${describe(value)} is not an IP address and port; expected ${form}`);
  }
  if (port < 1 || port > 65535) throw new ConfigError(key, `port ${port} is out of range; expected ${form} with a port 1..65535`);
  return { address, port };
}

function allowedApps(value: unknown, key: string): string[] | null {
  if (value === undefined) return null;
  const form = 'an array of app ids in hex like ["ea549f02e1a25fabd1cb788380e033ec5461b2ff"] (omit the key to allow every app)';
  if (!Array.isArray(value)) throw new ConfigError(key, `expected ${form}, got ${describe(value)}`);
  return value.map((v: unknown, i) => {
    if (typeof v !== 'string' || !/^(?:0x)?(?:[0-9a-fA-F]{2}){1,64}$/.test(v)) {
      throw new ConfigError(`${key}[${i}]`, `${describe(v)} is not an app id; expected 2..128 hex digits (an even number), e.g. "ea549f02e1a25fabd1cb788380e033ec5461b2ff"`);
    }
    return v.toLowerCase().replace(/^0x/, '');
  });
}

function addressMap(value: unknown, key: string): AddressMapping[] {
  if (value === undefined) return [];
  const form = 'an array of tables ([[registry.attested.address_map]]) with peer and instance networks of the same family and prefix length';
  if (!Array.isArray(value)) throw new ConfigError(key, `expected ${form}, got ${describe(value)}`);
  const seen = new Set<string>();
  return value.map((entry: unknown, i) => {
    const at = `${key}[${i}]`;
    if (!isTable(entry)) throw new ConfigError(at, `expected a table with peer and instance, got ${describe(entry)}`);
    checkKeys(entry, at, ['peer', 'instance']);
    const net = (side: 'peer' | 'instance') => {
      const raw = entry[side];
      const k = `${at}.${side}`;
      if (raw === undefined) throw new ConfigError(k, 'missing; expected a network like "198.19.0.0/16" or a single address');
      if (typeof raw !== 'string') throw new ConfigError(k, `expected a network like "198.19.0.0/16", got ${describe(raw)}`);
      const cidr = cidrAt(raw, k);
      if (cidr.address.includes('.') && cidr.family === 6) {
        throw new ConfigError(k, `${cidr.text} is an IPv4-mapped IPv6 network; write the IPv4 network (peers are matched as IPv4)`);
      }
      return cidr;
    };
    const peer = net('peer');
    const instance = net('instance');
    if (peer.family !== instance.family || peer.prefix !== instance.prefix) {
      throw new ConfigError(`${at}.instance`, `${instance.text} does not match peer ${peer.text}; expected a network of the same family and prefix length (host bits are carried over)`);
    }
    if (seen.has(peer.text)) throw new ConfigError(`${at}.peer`, `${peer.text} is mapped twice; keep one entry`);
    seen.add(peer.text);
    return { peer: peer.text, instance: instance.text };
  });
}

const ENDPOINT_FORM = 'an array of etcd client URLs like ["https://10.0.0.5:2379", "https://etcd-2.example:2379"]';

function parseEtcd(registry: Table, parent: string): EtcdConfig {
  const path = `${parent}.etcd`;
  const t = subTable(registry, parent, 'etcd', ['endpoints', 'prefix', 'timeout', 'ca', 'cert', 'key', 'username', 'password']);
  const raw = t['endpoints'] ?? ['http://127.0.0.1:2379'];
  if (!Array.isArray(raw) || raw.length === 0) throw new ConfigError(`${path}.endpoints`, `expected ${ENDPOINT_FORM}, got ${describe(raw)}`);
  const endpoints = raw.map((v: unknown, i) => etcdEndpoint(v, `${path}.endpoints[${i}]`));
  const prefixForm = 'a key prefix ending with "/", like "/tproxy-interceptor/"';
  const prefix = string(t, path, 'prefix', '/tproxy-interceptor/', prefixForm);
  if (!prefix.endsWith('/') || prefix.includes('\0')) {
    throw new ConfigError(`${path}.prefix`, `${describe(prefix)} is not allowed; expected ${prefixForm} (without the final "/", "/a" would also match "/ab")`);
  }
  const file = (key: string): string | null => (t[key] === undefined ? null : absolutePath(t, path, key, ''));
  const [ca, cert, key] = [file('ca'), file('cert'), file('key')];
  if ((cert === null) !== (key === null)) {
    throw new ConfigError(`${path}.${cert === null ? 'cert' : 'key'}`, 'missing; a client certificate needs both cert and key (PEM files)');
  }
  const tls = ca !== null || cert !== null;
  const plain = endpoints.find((e) => e.startsWith('http://'));
  if (plain !== undefined && endpoints.some((e) => e.startsWith('https://'))) {
    throw new ConfigError(`${path}.endpoints`, `mixes http:// (${plain}) and https:// endpoints; use one scheme for all`);
  }
  if (tls && plain !== undefined) {
    throw new ConfigError(`${path}.endpoints`, `${plain} is plain http, but TLS files are set; use https:// endpoints, or remove ca/cert/key`);
  }
  const text = (k: string): string | null => (t[k] === undefined ? null : string(t, path, k, '', 'a non-empty string'));
  const [username, password] = [text('username'), text('password')];
  if ((username === null) !== (password === null) || username === '' || password === '') {
    throw new ConfigError(`${path}.${username === null || username === '' ? 'username' : 'password'}`, 'missing or empty; etcd authentication needs both username and password');
  }
  return { endpoints, prefix, timeoutMs: duration(t, path, 'timeout', 3_000), ca, cert, key, username, password };
}

function etcdEndpoint(value: unknown, key: string): string {
  if (typeof value === 'string') {
    let url: URL | null = null;
    try {
      url = new URL(value);
    } catch {
      // reported below
    }
    if (
      url !== null &&
      (url.protocol === 'http:' || url.protocol === 'https:') &&
      url.port !== '' &&
      (url.pathname === '/' || url.pathname === '') &&
      url.search === '' &&
      url.hash === '' &&
      url.username === '' &&
      url.password === ''
    ) {
      return `${url.protocol}//${url.host}`;
    }
  }
  throw new ConfigError(key, `${describe(value)} is not an etcd client URL; expected ${ENDPOINT_FORM} (scheme, host and port, nothing else)`);
}

function parseInboundPp(root: Table): InboundPpConfig {
  const path = 'inbound_pp';
  const t = subTable(root, '', path, ['trusted_sources', 'timeout', 'max_v2_length']);
  const key = `${path}.trusted_sources`;
  const form = 'an array of networks like ["10.0.0.0/8", "fd00::/8"] (a single address means /32 or /128)';
  const raw = t['trusted_sources'];
  let trustedSources: string[] = [];
  if (raw !== undefined) {
    if (!Array.isArray(raw)) throw new ConfigError(key, `expected ${form}, got ${describe(raw)}`);
    trustedSources = raw.map((v: unknown, i) => {
      if (typeof v !== 'string') throw new ConfigError(`${key}[${i}]`, `expected a network like "10.0.0.0/8", got ${describe(v)}`);
      return cidrAt(v, `${key}[${i}]`).text;
    });
  }
  return {
    trustedSources,
    timeoutMs: duration(t, path, 'timeout', 3_000),
    maxV2Length: integer(t, path, 'max_v2_length', 4096, 16, 65535),
  };
}

function parseMetrics(root: Table): MetricsConfig {
  const path = 'metrics';
  const t = subTable(root, '', path, ['listen']);
  if (t['listen'] === undefined) return { listen: null };
  const form = 'an address and port like "127.0.0.1:9464" or "[::1]:9464"';
  return { listen: hostPort(string(t, path, 'listen', '', form), child(path, 'listen'), form) };
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

// ---------------------------------------------------------------------------------------------

/**
 * Parses and validates config TOML. `source` (the file name) is used as the key of TOML syntax
 * errors. Targets may be empty here: only `run` needs them, and the daemon checks.
 */
export function parseConfig(tomlText: string, source = '<config>'): Config {
  let root: Table;
  try {
    root = parseToml(tomlText, { integersAsBigInt: 'asNeeded' }) as Table;
  } catch (err) {
    if (err instanceof TomlError) {
      const reason = err.message.replace(/^Invalid TOML document: /, '').split('\n\n')[0];
      throw new ConfigError(source, `TOML syntax error at line ${err.line}, column ${err.column}: ${reason}\n\n${err.codeblock}`);
    }
    throw err;
  }
  checkKeys(root, '', ['listen', 'intercept', 'upstream', 'log', 'registry', 'inbound_pp', 'metrics']);
  const listen = parseListen(root);
  const config: Config = {
    listen,
    intercept: parseIntercept(root, listen),
    upstream: parseUpstream(root),
    log: parseLog(root),
    registry: parseRegistry(root),
    inboundPp: parseInboundPp(root),
    metrics: parseMetrics(root),
  };
  return deepFreeze(config);
}

/** Reads and parses a config file; an unreadable file is a ConfigError keyed by its path. */
export async function loadConfig(path: string): Promise<Config> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const problem =
      code === 'ENOENT' ? 'file not found; pass an existing TOML file with --config (see examples/config.toml)'
      : code === 'EACCES' || code === 'EPERM' ? 'permission denied reading the file'
      : code === 'EISDIR' ? 'is a directory; expected a TOML file'
      : `cannot read the file (${code ?? String(err)})`;
    throw new ConfigError(path, problem);
  }
  return parseConfig(text, path);
}

/** All defaults (no targets). */
export const DEFAULT_CONFIG: Config = parseConfig('');
