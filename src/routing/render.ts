// Policy routing for tproxy, pure: which `ip rule`s and `ip route`s deliver marked packets (and,
// with local backends, replies from loopback) to the local transparent socket.
//
//   ip -4 route replace local 0.0.0.0/0 dev lo table T
//   ip -4 rule add fwmark M/K lookup T priority P
//   ip -4 rule add from 127.0.0.0/8 iif lo lookup T priority P      (localBackends)
//   …and the same with -6, local ::/0 and from ::1/128 when IPv6 is enabled.
//
// Every rule carries an explicit priority so that removal deletes exactly what we added.
import { checkMark } from '../firewall/render.js';

export interface RoutingSpec {
  readonly mark: number;
  readonly mask: number;
  readonly routeTable: number;
  readonly localBackends: boolean;
  readonly ipv6: boolean;
  /** `ip rule` priority of our rules; default DEFAULT_RULE_PRIORITY. */
  readonly priority?: number;
}

/**
 * Before the main (32766) and default (32767) rules, after the local table rule (0), and away
 * from the low numbers other tools tend to pick (Calico, Cilium and VPN clients use < 9000 or
 * > 10000 in practice).
 */
export const DEFAULT_RULE_PRIORITY = 9000;

export type Family = 4 | 6;

/** One `ip rule`, with exactly the selectors we use. */
export interface RuleSpec {
  readonly family: Family;
  readonly priority: number;
  readonly table: number;
  /** fwmark/mask selector, or null. */
  readonly fwmark: { readonly mark: number; readonly mask: number } | null;
  /** from selector, or null (= all). */
  readonly from: { readonly addr: string; readonly len: number } | null;
  /** iif selector, or null. */
  readonly iif: string | null;
}

/** One `ip route … local <dst> dev lo table T`. */
export interface RouteSpec {
  readonly family: Family;
  readonly table: number;
  readonly dst: string;
}

export interface RoutingPlan {
  readonly routes: readonly RouteSpec[];
  readonly rules: readonly RuleSpec[];
}

const hex = (n: number): string => `0x${n.toString(16)}`;

function checkSpec(spec: RoutingSpec): number {
  checkMark(spec.mark, spec.mask);
  if (!Number.isInteger(spec.routeTable) || spec.routeTable < 1 || spec.routeTable > 2 ** 31 - 1 || [253, 254, 255].includes(spec.routeTable)) {
    throw new RangeError(`routeTable must be an integer 1..2147483647 other than 253, 254, 255, got ${spec.routeTable}`);
  }
  const priority = spec.priority ?? DEFAULT_RULE_PRIORITY;
  if (!Number.isInteger(priority) || priority < 1 || priority > 32765) {
    throw new RangeError(`rule priority must be an integer 1..32765, got ${priority}`);
  }
  return priority;
}

export function renderRoutingPlan(spec: RoutingSpec): RoutingPlan {
  const priority = checkSpec(spec);
  const table = spec.routeTable;
  const families: Family[] = spec.ipv6 ? [4, 6] : [4];
  const routes: RouteSpec[] = [];
  const rules: RuleSpec[] = [];
  for (const family of families) {
    routes.push({ family, table, dst: family === 4 ? '0.0.0.0/0' : '::/0' });
    rules.push({ family, priority, table, fwmark: { mark: spec.mark, mask: spec.mask }, from: null, iif: null });
    if (spec.localBackends) {
      // Backends on this host answer the spoofed client from loopback; without this rule
      // those replies would leave by the default route instead of reaching our socket.
      const from = family === 4 ? { addr: '127.0.0.0', len: 8 } : { addr: '::1', len: 128 };
      rules.push({ family, priority, table, fwmark: null, from, iif: 'lo' });
    }
  }
  return { routes, rules };
}

function ruleSelectors(rule: RuleSpec): string[] {
  const args: string[] = [];
  if (rule.from !== null) args.push('from', `${rule.from.addr}/${rule.from.len}`);
  if (rule.iif !== null) args.push('iif', rule.iif);
  if (rule.fwmark !== null) args.push('fwmark', `${hex(rule.fwmark.mark)}/${hex(rule.fwmark.mask)}`);
  args.push('lookup', String(rule.table), 'priority', String(rule.priority));
  return args;
}

/** `ip -4 rule add …` */
function ruleAddArgv(rule: RuleSpec): string[] {
  return ['ip', `-${rule.family}`, 'rule', 'add', ...ruleSelectors(rule)];
}

/** `ip -4 rule del …` with every selector, so only this exact rule goes. */
function ruleDelArgv(rule: RuleSpec): string[] {
  return ['ip', `-${rule.family}`, 'rule', 'del', ...ruleSelectors(rule)];
}

/** `ip -4 route replace local 0.0.0.0/0 dev lo table T` (replace: idempotent). */
export function routeReplaceArgv(route: RouteSpec): string[] {
  return ['ip', `-${route.family}`, 'route', 'replace', 'local', route.dst, 'dev', 'lo', 'table', String(route.table)];
}

function routeDelArgv(route: RouteSpec): string[] {
  return ['ip', `-${route.family}`, 'route', 'del', 'local', route.dst, 'dev', 'lo', 'table', String(route.table)];
}

/** One command of install or remove (program name first), with the rule or route it is about. */
export type RoutingStep = { readonly argv: string[]; readonly rule: RuleSpec } | { readonly argv: string[]; readonly route: RouteSpec };

/**
 * What `install` runs, in order (ip.ts skips a rule that already exists, and `rules --routing`
 * prints the lot). Per family the route goes in before the rule, so marked packets never hit
 * our rule while our table is still empty.
 */
export function routingInstallSteps(spec: RoutingSpec): RoutingStep[] {
  const plan = renderRoutingPlan(spec);
  const out: RoutingStep[] = [];
  for (const family of [4, 6] as const) {
    for (const route of plan.routes) if (route.family === family) out.push({ argv: routeReplaceArgv(route), route });
    for (const rule of plan.rules) if (rule.family === family) out.push({ argv: ruleAddArgv(rule), rule });
  }
  return out;
}

/** What `remove` runs: rules first (so nothing routes into a half-removed table), then routes. */
export function routingRemoveSteps(spec: RoutingSpec): RoutingStep[] {
  const plan = renderRoutingPlan(spec);
  return [...plan.rules.map((rule) => ({ argv: ruleDelArgv(rule), rule })), ...plan.routes.map((route) => ({ argv: routeDelArgv(route), route }))];
}

// ---------------------------------------------------------------------------------------------
// Reading `ip -N -j rule show` back.

function parseHex(v: unknown): number | null {
  if (typeof v === 'number') return v >>> 0;
  if (typeof v !== 'string' || !/^(0x[0-9a-fA-F]+|\d+)$/.test(v)) return null;
  return Number(v) >>> 0;
}

/** Selectors we never add: an existing rule carrying any of them is not ours. */
const FOREIGN_SELECTORS = ['not', 'dst', 'oif', 'tos', 'dsfield', 'ipproto', 'sport', 'dport', 'uidrange', 'l3mdev', 'tun_id', 'realms', 'suppress_prefixlen', 'suppress_ifgroup', 'goto', 'nat'];

/**
 * Is `entry` (one element of `ip -N -j rule show`, iproute2 6.x) the same rule as `rule`? Same
 * priority, table, fwmark/mask, from, iif, and no other selector.
 */
export function ruleMatches(entry: unknown, rule: RuleSpec): boolean {
  if (entry === null || typeof entry !== 'object') return false;
  const e = entry as Record<string, unknown>;
  if (e['priority'] !== rule.priority) return false;
  if (String(e['table']) !== String(rule.table)) return false;
  if (FOREIGN_SELECTORS.some((k) => e[k] !== undefined)) return false;
  // fwmark: "0x1" with "fwmask" omitted when the mask is 0xffffffff
  if (rule.fwmark === null) {
    if (e['fwmark'] !== undefined) return false;
  } else {
    if (parseHex(e['fwmark']) !== rule.fwmark.mark) return false;
    const mask = e['fwmask'] === undefined ? 0xffffffff : parseHex(e['fwmask']);
    if (mask !== rule.fwmark.mask) return false;
  }
  // src: "all", or an address with "srclen" omitted for a full-length prefix
  const src = e['src'];
  if (rule.from === null) {
    if (src !== undefined && src !== 'all') return false;
  } else {
    const full = rule.family === 4 ? 32 : 128;
    const len = e['srclen'] === undefined ? full : e['srclen'];
    if (src !== rule.from.addr || len !== rule.from.len) return false;
  }
  if ((e['iif'] ?? null) !== rule.iif) return false;
  return true;
}
