// doctor's checks, pure: facts (gather.ts) and config in, findings out. Each check says what is
// wrong, why it matters for interception, and the command that fixes it.
import type { Config } from '../config.js';
import { routingSpec } from '../daemon.js';
import { cidrContains, parseCidr, type Cidr } from '../net/cidr.js';
import { renderRoutingPlan, routeReplaceArgv, ruleMatches, type RuleSpec } from '../routing/render.js';
import { hex, knownUsersOverlapping, ownerOf, parseIptablesSave, parseNftRuleset, iptablesTables, suggestMarkBit, type MarkUse } from './marks.js';
import { CAP_NET_ADMIN, CAP_NET_RAW, hasCap } from './proc.js';
import { iptablesProgram } from '../firewall/iptables.js';
import { parseChainState } from '../firewall/iptables-render.js';
import type { BackendProbe, CheckId, DoctorFacts, Failure, Finding, Ipv4Conf, KernelProbe, Outcome, Severity } from './types.js';

type Json = Record<string, unknown>;

const finding = (check: CheckId, severity: Severity, summary: string, fix?: readonly string[]): Finding =>
  fix === undefined ? { check, severity, summary } : { check, severity, summary, fix };

function families(config: Config): Array<4 | 6> {
  return config.listen.address6 === null ? [4] : [4, 6];
}

/** A tool that failed for lack of privilege or presence: a skip or an error naming the package. */
function toolProblem(check: CheckId, what: string, outcome: Failure): Finding {
  if (outcome.reason === 'permission') return finding(check, 'skip', `${what}: not permitted (${outcome.message}); run doctor as root`);
  if (outcome.reason === 'missing') return finding(check, 'error', `${what}: ${outcome.message}`);
  return finding(check, 'error', `${what} failed: ${outcome.message}`);
}

// ---------------------------------------------------------------------------------------------

export function checkConfig(config: Config): Finding[] {
  const n = config.intercept.targets.length;
  if (n === 0) {
    return [finding('config', 'error', 'intercept.targets is empty: `run` needs at least one [[intercept.targets]] entry', ['add a [[intercept.targets]] section with cidr and ports (see examples/config.toml)'])];
  }
  const backend = config.intercept.backend === 'iptables' ? `iptables (${config.intercept.iptablesVariant}), chain ${config.intercept.table}` : `nftables, table inet ${config.intercept.table}`;
  return [finding('config', 'ok', `${n} target${n === 1 ? '' : 's'}; ${backend}; mark ${hex(config.intercept.mark)}/${hex(config.intercept.mask)}, route table ${config.intercept.routeTable}, listener port ${config.listen.port}`)];
}

export function checkCapabilities(capEff: bigint | null): Finding[] {
  if (capEff === null) return [finding('capabilities', 'skip', 'could not read CapEff from /proc/self/status')];
  if (!hasCap(capEff, CAP_NET_ADMIN)) {
    return [
      finding('capabilities', 'error', 'this process lacks CAP_NET_ADMIN: `run` needs it (nft, ip rule/route, IP_TRANSPARENT), and doctor needs it to test the kernel and read the rulesets', [
        'run as root (sudo tproxy-interceptor ...)',
        'as a service: AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW (packaging/tproxy-interceptor.service)',
      ]),
    ];
  }
  const raw = hasCap(capEff, CAP_NET_RAW) ? 'and CAP_NET_RAW are' : 'is (CAP_NET_RAW is not, and is not needed: IP_TRANSPARENT accepts either)';
  return [finding('capabilities', 'ok', `CAP_NET_ADMIN ${raw} effective`)];
}

const KERNEL_FIX: Record<'socket' | 'tproxy', string> = {
  socket: 'modprobe nft_socket (a kernel built with CONFIG_NFT_SOCKET)',
  tproxy: 'modprobe nft_tproxy (a kernel built with CONFIG_NFT_TPROXY)',
};

const XT_FIX: Record<'socket' | 'tproxy', string> = {
  socket: 'modprobe xt_socket (a kernel built with CONFIG_NETFILTER_XT_MATCH_SOCKET)',
  tproxy: 'modprobe xt_TPROXY (a kernel built with CONFIG_NETFILTER_XT_TARGET_TPROXY)',
};

const XT_WHAT: Record<'socket' | 'tproxy', string> = { socket: 'the `socket` match', tproxy: 'the `TPROXY` target' };

export function checkKernel(probes: readonly KernelProbe[], config?: Config): Finding[] {
  if (probes.some((p) => p.backend === 'iptables')) return checkIptablesKernel(probes, config);
  const failed = probes.flatMap((p) => (p.outcome.ok ? [] : [{ feature: p.feature, ...p.outcome }]));
  if (failed.length === 0) {
    return [finding('kernel', 'ok', 'nftables accepts the `socket` and `tproxy` expressions and this config\'s ruleset (nft --check: the kernel saw the rules in a transaction that was aborted; nothing was applied)')];
  }
  const first = failed[0]!;
  if (first.reason === 'missing') return [finding('kernel', 'error', first.message, ['apt-get install nftables'])];
  if (first.reason === 'permission') return [finding('kernel', 'skip', 'cannot test the kernel without CAP_NET_ADMIN (nft --check talks to the kernel); run doctor as root')];
  return failed.map((f) => {
    if (f.feature === 'ruleset') return finding('kernel', 'error', `nftables rejects this config's ruleset: ${f.message}`, ['tproxy-interceptor rules --config FILE shows the ruleset; fix the config or the kernel']);
    return finding('kernel', 'error', `the kernel rejects an nftables \`${f.feature}\` expression: ${f.message}`, [KERNEL_FIX[f.feature]]);
  });
}

/** backend = "iptables": the variant's restore program, per family, with each extension and the ruleset. */
function checkIptablesKernel(probes: readonly KernelProbe[], config: Config | undefined): Finding[] {
  const variant = config?.intercept.iptablesVariant ?? 'auto';
  const other = variant === 'legacy' ? 'nft' : 'legacy';
  const failed = probes.flatMap((p) => (p.outcome.ok || p.backend !== 'iptables' ? [] : [{ feature: p.feature, family: p.family, tool: p.tool, ...p.outcome }]));
  const tools = [...new Set(probes.map((p) => (p.backend === 'iptables' ? p.tool : '')))].join(' and ');
  if (failed.length === 0) {
    return [finding('kernel', 'ok', `${tools} (intercept.iptables_variant = "${variant}") accept the \`socket\` match, the \`TPROXY\` target and this config's rules (--test: each extension loaded and checked, nothing applied)`)];
  }
  const missing = failed.find((f) => f.reason === 'missing');
  if (missing !== undefined) {
    return [
      finding('kernel', 'error', `${missing.message} (intercept.iptables_variant = "${variant}" runs ${missing.tool})`, [
        'apt-get install iptables',
        `or set intercept.iptables_variant = "${other}" if that variant is installed`,
      ]),
    ];
  }
  if (failed.some((f) => f.reason === 'permission')) {
    return [finding('kernel', 'skip', 'cannot test the kernel without CAP_NET_ADMIN (iptables-restore --test asks the kernel for each extension); run doctor as root')];
  }
  // The legacy variant needs the x_tables mangle table itself.
  const noTable = failed.find((f) => /Table does not exist|can't initialize ip6?tables table/i.test(f.message));
  if (noTable !== undefined) {
    return [
      finding('kernel', 'error', `${noTable.tool}: the kernel has no legacy (x_tables) mangle table: ${noTable.message}`, [
        `modprobe ${noTable.family === 4 ? 'iptable_mangle' : 'ip6table_mangle'} (a kernel built with CONFIG_IP${noTable.family === 4 ? '' : '6'}_NF_IPTABLES_LEGACY and CONFIG_IP${noTable.family === 4 ? '' : '6'}_NF_MANGLE)`,
        'or set intercept.iptables_variant = "nft"',
      ]),
    ];
  }
  return failed.map((f) => {
    const at = `${f.tool} (IPv${f.family})`;
    if (f.feature === 'ruleset') return finding('kernel', 'error', `${at} rejects this config's rules: ${f.message}`, ['tproxy-interceptor rules --config FILE shows them; fix the config or the kernel']);
    return finding('kernel', 'error', `${at} cannot use ${XT_WHAT[f.feature]}: ${f.message}`, [XT_FIX[f.feature]]);
  });
}

// ---------------------------------------------------------------------------------------------
// ip rules

interface ForeignRule {
  readonly family: 4 | 6;
  readonly priority: number;
  readonly fwmark: { readonly value: number; readonly mask: number } | null;
  readonly not: boolean;
  /** lookup table, or null for goto/nop/blackhole... */
  readonly table: number | null;
  readonly action: string;
  readonly suppressPrefix: number | null;
  readonly iif: string | null;
  readonly text: string;
  readonly delArgv: string;
}

const RULE_ACTIONS: Record<string, string> = { '2': 'goto', '3': 'nop', '6': 'blackhole', '7': 'unreachable', '8': 'prohibit' };

function parseRule(e: Json, family: 4 | 6): ForeignRule | null {
  const priority = typeof e['priority'] === 'number' ? e['priority'] : null;
  if (priority === null) return null;
  const num = (v: unknown): number | null => (typeof v === 'number' ? v : typeof v === 'string' && /^(0x[0-9a-f]+|\d+)$/i.test(v) ? Number(v) >>> 0 : null);
  const markValue = num(e['fwmark']);
  const fwmark = markValue === null ? null : { value: markValue, mask: e['fwmask'] === undefined ? 0xffffffff : (num(e['fwmask']) ?? 0xffffffff) };
  const table = e['table'] !== undefined ? num(e['table']) : null;
  const action = table !== null ? `lookup ${table}` : e['goto'] !== undefined ? `goto ${String(e['goto'])}` : e['nop'] !== undefined ? 'nop' : RULE_ACTIONS[String(e['action'])] ?? String(e['action'] ?? '?');
  const sel: string[] = [];
  if (e['not'] !== undefined) sel.push('not');
  if (e['src'] !== undefined && e['src'] !== 'all') sel.push('from', `${String(e['src'])}${e['srclen'] !== undefined ? `/${String(e['srclen'])}` : ''}`);
  if (e['dst'] !== undefined) sel.push('to', `${String(e['dst'])}${e['dstlen'] !== undefined ? `/${String(e['dstlen'])}` : ''}`);
  if (e['iif'] !== undefined) sel.push('iif', String(e['iif']));
  if (e['oif'] !== undefined) sel.push('oif', String(e['oif']));
  if (fwmark !== null) sel.push('fwmark', fwmark.mask === 0xffffffff ? hex(fwmark.value) : `${hex(fwmark.value)}/${hex(fwmark.mask)}`);
  const suppress = num(e['suppress_prefixlen']);
  const tail = [...sel, ...action.split(' '), ...(suppress !== null ? ['suppress_prefixlength', String(suppress)] : [])];
  return {
    family,
    priority,
    fwmark,
    not: e['not'] !== undefined,
    table,
    action,
    suppressPrefix: suppress,
    iif: typeof e['iif'] === 'string' ? e['iif'] : null,
    text: `priority ${priority} ${tail.join(' ')}`,
    delArgv: `ip -${family} rule del priority ${priority} ${tail.join(' ')}`,
  };
}

interface Route {
  readonly cidr: Cidr | null;
  readonly type: string;
  readonly dev: string | null;
  readonly text: string;
}

function parseRoute(e: unknown, family: 4 | 6): Route | null {
  if (e === null || typeof e !== 'object') return null;
  const r = e as Json;
  const dst = String(r['dst'] ?? '');
  let cidr: Cidr | null = null;
  try {
    cidr = dst === 'default' ? parseCidr(family === 4 ? '0.0.0.0/0' : '::/0') : parseCidr(dst);
  } catch {
    cidr = null;
  }
  const type = typeof r['type'] === 'string' ? r['type'] : 'unicast';
  const dev = typeof r['dev'] === 'string' ? r['dev'] : null;
  return { cidr, type, dev, text: `${type === 'unicast' ? '' : `${type} `}${dst}${dev ? ` dev ${dev}` : ''}` };
}

function overlaps(a: Cidr, b: Cidr): boolean {
  return a.family === b.family && (cidrContains(a, b.address) || cidrContains(b, a.address));
}

function routesOf(facts: DoctorFacts, family: 4 | 6, table: number): Outcome<Route[]> | undefined {
  const o = facts.routeTables.get(`${family}:${table}`);
  if (o === undefined || !o.ok) return o;
  return { ok: true, value: o.value.map((e) => parseRoute(e, family)).filter((r): r is Route => r !== null) };
}

const isLocalDefault = (r: Route): boolean => r.type === 'local' && r.cidr !== null && r.cidr.prefix === 0 && r.dev === 'lo';

/** Foreign rules (not ours, not the kernel's `lookup local`), per family, from the facts. */
function foreignRules(facts: DoctorFacts, config: Config): ForeignRule[] {
  const plan = renderRoutingPlan(routingSpec(config));
  const out: ForeignRule[] = [];
  for (const family of families(config)) {
    const o = facts.ipRules[family];
    if (o === null || !o.ok) continue;
    const ours = plan.rules.filter((r: RuleSpec) => r.family === family);
    for (const e of o.value) {
      if (e === null || typeof e !== 'object' || ours.some((r) => ruleMatches(e, r))) continue;
      const rule = parseRule(e as Json, family);
      if (rule !== null && rule.table !== 255) out.push(rule);
    }
  }
  return out;
}

/** Tables of the foreign rules ahead of ours: the gatherer reads their routes. */
export function tablesAheadOfOurs(facts: DoctorFacts, config: Config): Array<{ family: 4 | 6; table: number }> {
  const priority = renderRoutingPlan(routingSpec(config)).rules[0]!.priority;
  const seen = new Set<string>();
  const out: Array<{ family: 4 | 6; table: number }> = [];
  for (const r of foreignRules(facts, config)) {
    if (r.priority > priority || r.table === null || seen.has(`${r.family}:${r.table}`)) continue;
    seen.add(`${r.family}:${r.table}`);
    out.push({ family: r.family, table: r.table });
  }
  return out;
}

/** A suggested free bit; `extra` = bits to avoid besides those in use (a rule's own selector). */
function markSuggestion(facts: DoctorFacts, config: Config, extra: number): string {
  const used = (usedMarkBits(facts, config) | extra) >>> 0;
  const bit = suggestMarkBit(used);
  return bit === null ? 'every mark bit is in use on this host: free one' : `use a bit nobody uses: intercept.mark = ${hex(bit)} and intercept.mask = ${hex(bit)}`;
}

export function checkIpRules(facts: DoctorFacts, config: Config): Finding[] {
  const out: Finding[] = [];
  for (const family of families(config)) {
    const o = facts.ipRules[family];
    if (o !== null && !o.ok) out.push(toolProblem('ip-rules', `ip -${family} rule show`, o));
  }
  if (out.length > 0) return out;
  const { mark, mask, routeTable, targets, localBackends } = config.intercept;
  const ourPriority = renderRoutingPlan(routingSpec(config)).rules[0]!.priority;
  for (const r of foreignRules(facts, config)) {
    const ahead = r.priority <= ourPriority; // equal priority: the older rule wins, and ours is added last
    if (r.fwmark !== null) {
      const overlap = (r.fwmark.mask & mask) >>> 0 !== 0;
      const agrees = ((r.fwmark.value ^ mark) & r.fwmark.mask & mask) >>> 0 === 0;
      if (!overlap || r.action === 'nop') continue;
      if (ahead && (r.not ? !agrees : agrees)) {
        const routes = r.table !== null ? routesOf(facts, r.family, r.table) : undefined;
        if (routes?.ok && routes.value.some(isLocalDefault)) {
          out.push(finding('ip-rules', 'warn', `\`ip -${r.family} rule\` ${r.text} comes before ours (priority ${ourPriority}) and takes our marked packets; its table delivers them locally too, so it works, but it looks like a leftover of another run`, [r.delArgv]));
          continue;
        }
        out.push(
          finding('ip-rules', 'error', `\`ip -${r.family} rule\` ${r.text} comes before ours (priority ${ourPriority}) and matches our marked packets: they go to \`${r.action}\` instead of the listener, and intercepted connections time out`, [
            r.delArgv,
            // A `not fwmark` rule takes every packet without its mark, whatever bits we pick.
            r.not ? `or move it after ours: a priority above ${ourPriority}` : `or ${markSuggestion(facts, config, r.fwmark.mask)}`,
          ]),
        );
      } else if (!ahead && !r.not && agrees) {
        out.push(
          finding('ip-rules', 'error', `\`ip -${r.family} rule\` ${r.text} comes after ours (priority ${ourPriority}) and its mark ${hex(r.fwmark.value)} shares bits with ours: packets marked for it match our rule first and are delivered to the interceptor`, [
            markSuggestion(facts, config, r.fwmark.mask),
          ]),
        );
      }
      continue;
    }
    // No fwmark: a rule ahead of ours catches our packets when its table routes them.
    if (!ahead || r.action === 'nop' || r.action.startsWith('goto') || (r.iif === 'lo' && !localBackends)) continue;
    if (r.table === null) {
      out.push(finding('ip-rules', 'error', `\`ip -${r.family} rule\` ${r.text} comes before ours (priority ${ourPriority}) and ends every lookup it matches with \`${r.action}\``, [r.delArgv]));
      continue;
    }
    const routes = routesOf(facts, r.family, r.table);
    if (routes === undefined || !routes.ok) {
      out.push(finding('ip-rules', 'warn', `\`ip -${r.family} rule\` ${r.text} comes before ours; could not read table ${r.table}${routes && !routes.ok ? ` (${routes.message})` : ''}`));
      continue;
    }
    const familyTargets = targets.filter((t) => t.family === r.family).map((t) => parseCidr(t.cidr));
    const catching = routes.value.filter((rt) => {
      if (rt.cidr === null || rt.type === 'throw' || rt.type === 'local') return false;
      if (r.suppressPrefix !== null && rt.cidr.prefix <= r.suppressPrefix) return false;
      return rt.cidr.prefix === 0 || familyTargets.some((t) => overlaps(t, rt.cidr!));
    });
    if (catching.length > 0 && r.table !== routeTable) {
      out.push(
        finding('ip-rules', 'error', `\`ip -${r.family} rule\` ${r.text} comes before ours (priority ${ourPriority}) and table ${r.table} routes ${catching.map((c) => `\`${c.text}\``).join(', ')}: intercepted packets follow it and never reach our rule`, [
          r.delArgv,
          `or move it after ours: a priority above ${ourPriority}`,
        ]),
      );
    }
  }
  if (out.length === 0) out.push(finding('ip-rules', 'ok', `no ip rule ahead of ours (priority ${ourPriority}) takes our packets, and none after it shares our mark bits`));
  return out;
}

// ---------------------------------------------------------------------------------------------
// fwmark bits in netfilter rulesets

/** Mark uses in the rulesets, ours (the config's table) excluded. */
function markUses(facts: DoctorFacts, config: Config): MarkUse[] {
  const uses: MarkUse[] = [];
  const skip = new Set<string>([`inet ${config.intercept.table}`]);
  // With backend = "iptables", our own chain in mangle sets our mark: not someone else's use
  // (iptables-nft's rules show in nftables too, as table ip/ip6 mangle).
  const chain = config.intercept.backend === 'iptables' ? config.intercept.table : null;
  const notOurs = (u: MarkUse, tool: string): boolean => chain === null || (u.where !== `${tool} mangle ${chain}` && u.where !== `nft ip mangle ${chain}` && u.where !== `nft ip6 mangle ${chain}`);
  for (const [tool, o] of facts.iptablesSave) {
    if (!o.ok) continue;
    uses.push(...parseIptablesSave(o.value, tool).filter((u) => notOurs(u, tool)));
    // iptables-nft tables show up in `nft list ruleset` too, with their targets opaque.
    if (/\(nf_tables\)/.test(o.value)) for (const t of iptablesTables(o.value, tool.startsWith('ip6') ? 'ip6' : 'ip')) skip.add(t);
  }
  if (facts.nftRuleset.ok) uses.push(...parseNftRuleset(facts.nftRuleset.value, skip).filter((u) => notOurs(u, 'nft')));
  return uses;
}

function usedMarkBits(facts: DoctorFacts, config: Config): number {
  let bits = markUses(facts, config).reduce((acc, u) => (acc | u.bits) >>> 0, 0);
  for (const r of foreignRules(facts, config)) if (r.fwmark !== null) bits = (bits | (r.fwmark.mask === 0xffffffff ? r.fwmark.value : r.fwmark.mask)) >>> 0;
  return bits;
}

export function checkFwmark(facts: DoctorFacts, config: Config): Finding[] {
  const { mark, mask } = config.intercept;
  const out: Finding[] = [];
  if (!facts.nftRuleset.ok && facts.nftRuleset.reason === 'permission') out.push(toolProblem('fwmark', 'nft list ruleset', facts.nftRuleset));
  const uses = markUses(facts, config);
  const seen = new Set<string>();
  const owners = new Set<string>();
  for (const u of uses) {
    const key = `${u.where}|${u.what}`;
    if (seen.has(key)) continue;
    seen.add(key);
    const owner = ownerOf(u.where);
    const who = owner ? `${owner} (${u.where})` : u.where;
    const shared = (u.bits & mask) >>> 0;
    if (shared !== 0) {
      if (owner) owners.add(owner);
      const effect = u.kind === 'set'
        ? 'packets it marks can match our ip rule and be delivered to the interceptor, and it can change our bits on ours'
        : 'our bits change what it matches';
      out.push(finding('fwmark', 'error', `${who} ${u.what}, sharing bits ${hex(shared)} with intercept.mask ${hex(mask)}: ${effect}`, [markSuggestion(facts, config, 0)]));
    } else if (u.whole && u.kind === 'set') {
      out.push(finding('fwmark', 'warn', `${who} ${u.what}: packets it handles lose our bits if its rule runs after our chain (prerouting, priority -150)`));
    }
  }
  const known = knownUsersOverlapping(mask).filter((u) => !owners.has(u.name));
  if (known.length > 0) {
    out.push(
      finding('fwmark', 'warn', `intercept.mask ${hex(mask)} overlaps the default marks of ${known.map((u) => u.name).join(', ')}, a conflict wherever they run (${known.map((u) => `${u.name}: ${u.detail}`).join('; ')})`, [
        markSuggestion(facts, config, known.reduce((acc, u) => acc | u.bits, 0)),
      ]),
    );
  }
  if (!out.some((f) => f.severity === 'error' || f.severity === 'warn')) {
    out.push(finding('fwmark', 'ok', `no other rule uses mark bits ${hex(mask)} (${uses.length} mark use${uses.length === 1 ? '' : 's'} found in the nftables and iptables rulesets); mark ${hex(mark)}`));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// sysctls

function interfacesInScope(conf: ReadonlyMap<string, Ipv4Conf>, config: Config): string[] {
  const named = config.intercept.targets.map((t) => t.interface);
  if (named.length > 0 && named.every((n) => n !== null)) return [...new Set(named as string[])].filter((n) => conf.has(n));
  return [...conf.keys()].filter((n) => n !== 'all' && n !== 'default' && n !== 'lo');
}

export function checkRpFilter(conf: ReadonlyMap<string, Ipv4Conf>, config: Config): Finding[] {
  const all = conf.get('all');
  if (all === undefined) return [finding('rp-filter', 'skip', 'could not read /proc/sys/net/ipv4/conf')];
  const broken: string[] = [];
  const strict: string[] = [];
  for (const name of interfacesInScope(conf, config)) {
    const c = conf.get(name)!;
    const svm = all.src_valid_mark !== 0 || c.src_valid_mark !== 0;
    const acceptLocal = all.accept_local !== 0 || c.accept_local !== 0;
    const rp = Math.max(all.rp_filter, c.rp_filter);
    if (rp === 1) strict.push(name);
    // With src_valid_mark the kernel checks a packet's source with its mark: our rule sends that
    // lookup to the `local` route, which makes every intercepted packet a martian.
    if (svm && !(acceptLocal && rp !== 1)) broken.push(name);
  }
  if (broken.length > 0) {
    const keys = ['all', ...broken].map((n) => `net.ipv4.conf.${n}.src_valid_mark=0`);
    return [
      finding('rp-filter', 'error', `src_valid_mark is on for ${broken.join(', ')}: the kernel validates each intercepted packet's source with its mark, our ip rule answers with the \`local\` route, and the packet is dropped as a martian`, [
        `sysctl -w ${keys.join(' ')}`,
        `if something needs src_valid_mark (wg-quick sets it): sysctl -w ${broken.map((n) => `net.ipv4.conf.${n}.accept_local=1`).join(' ')}, with rp_filter 0 or 2 there`,
      ]),
    ];
  }
  const note = strict.length > 0 ? `; strict rp_filter on ${strict.join(', ')} is fine while routes are symmetric` : '';
  return [finding('rp-filter', 'ok', `src_valid_mark is off: intercepted packets pass source validation${note}`)];
}

export function checkRouteLocalnet(conf: ReadonlyMap<string, Ipv4Conf>, config: Config): Finding[] {
  if (conf.get('all') === undefined) return [finding('route-localnet', 'skip', 'could not read /proc/sys/net/ipv4/conf')];
  const on = [...conf.entries()].filter(([, c]) => c.route_localnet !== 0).map(([n]) => n);
  if (on.length === 0) return [finding('route-localnet', 'ok', 'route_localnet is 0 everywhere')];
  const loopbackListener = cidrContains('127.0.0.0/8', config.listen.address);
  return [
    finding('route-localnet', 'warn', `route_localnet = 1 on ${on.join(', ')}: packets from the network to 127.0.0.0/8 are routed (CVE-2020-8558)${loopbackListener ? `, which makes the listener at ${config.listen.address}:${config.listen.port} reachable by neighbours` : ''}; nothing here needs it (kube-proxy sets it for NodePorts on localhost unless --iptables-localhost-nodeports=false)`, [
      `sysctl -w ${on.map((n) => `net.ipv4.conf.${n}.route_localnet=0`).join(' ')}`,
    ]),
  ];
}

// ---------------------------------------------------------------------------------------------
// listener

export function checkListener(facts: DoctorFacts, config: Config): Finding[] {
  const out: Finding[] = [];
  const { port } = config.listen;
  const ours: Array<{ family: 4 | 6; address: string }> = [{ family: 4, address: config.listen.address }];
  if (config.listen.address6 !== null) ours.push({ family: 6, address: config.listen.address6 });
  const shown = (a: { family: number; address: string }): string => (a.family === 6 ? `[${a.address}]:${port}` : `${a.address}:${port}`);
  const reported = new Set<number>();
  for (const want of ours) {
    const wildcard = want.family === 4 ? '0.0.0.0' : '::';
    for (const l of facts.listeners) {
      if (l.port !== port || reported.has(l.inode)) continue;
      // A dual-stack [::] listener holds the port for IPv4 too.
      const clash = (l.family === want.family && (l.address === want.address || l.address === wildcard)) || (want.family === 4 && l.family === 6 && l.address === '::');
      if (!clash) continue;
      reported.add(l.inode);
      if (l.owner?.isInterceptor) {
        out.push(finding('listener', 'ok', `${shown(want)} is held by the running tproxy-interceptor (pid ${l.owner.pid})`));
        continue;
      }
      const who = l.owner ? `pid ${l.owner.pid} (${l.owner.cmdline})` : 'a process doctor cannot see (run doctor as root)';
      out.push(finding('listener', 'error', `${shown(want)} is taken: ${shown(l)} is listening, held by ${who}; \`run\` would fail with EADDRINUSE`, [
        'stop that process, or set listen.port to a free port',
      ]));
    }
  }
  const range = facts.portRange;
  if (range !== null && port >= range.from && port <= range.to && !facts.reservedPorts.some((r) => port >= r.from && port <= r.to)) {
    const reserved = [...facts.reservedPorts.map((r) => (r.from === r.to ? `${r.from}` : `${r.from}-${r.to}`)), String(port)].join(',');
    out.push(finding('listener', 'warn', `listen.port ${port} is inside the ephemeral port range ${range.from}-${range.to}: an outgoing connection can hold it when the daemon starts`, [
      `sysctl -w net.ipv4.ip_local_reserved_ports=${reserved}`,
      'or set listen.port outside the range',
    ]));
  }
  if (out.length === 0) out.push(finding('listener', 'ok', `${ours.map(shown).join(' and ')} free, outside the ephemeral port range`));
  return out;
}

export function checkIpv6(ipv6: DoctorFacts['ipv6'], config: Config): Finding[] {
  if (config.listen.address6 === null) return [finding('ipv6', 'ok', 'IPv6 is off in the config (listen.address6 = false)')];
  if (ipv6 === 'absent') {
    return [finding('ipv6', 'error', 'this kernel has no IPv6 (booted with ipv6.disable=1?) but listen.address6 is set: `run` cannot open the IPv6 listener', ['set listen.address6 = false'])];
  }
  if (ipv6 === 'disabled') {
    return [
      finding('ipv6', 'error', 'IPv6 is disabled on lo (net.ipv6.conf.lo.disable_ipv6 = 1) but listen.address6 is set: `run` fails at `ip -6 route replace local ::/0 dev lo`', [
        'sysctl -w net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.lo.disable_ipv6=0',
        'or set listen.address6 = false (IPv4 only)',
      ]),
    ];
  }
  return [finding('ipv6', 'ok', `IPv6 is available for the listener at ${config.listen.address6}`)];
}

// ---------------------------------------------------------------------------------------------
// our route table

/**
 * Are our firewall rules installed: our nftables table, or with backend = "iptables" our chain
 * and its PREROUTING jump (for every family), as the configured variant shows them? null when
 * that could not be read.
 */
export function ourRulesInstalled(facts: DoctorFacts, config: Config): boolean | null {
  if (config.intercept.backend === 'iptables') {
    const saves = facts.ourIptables;
    if (saves === null) return null;
    let installed = true;
    for (const o of [saves[4], saves[6]]) {
      if (o === null) continue;
      if (!o.ok) return null;
      const state = parseChainState(o.value, config.intercept.table);
      installed &&= state.chain && state.jumps > 0;
    }
    return installed;
  }
  if (!facts.nftRuleset.ok) return null;
  const doc = facts.nftRuleset.value as { nftables?: unknown[] };
  return (doc.nftables ?? []).some((e) => {
    const t = (e as { table?: { family?: string; name?: string } }).table;
    return t?.family === 'inet' && t.name === config.intercept.table;
  });
}

export function checkRouteTable(facts: DoctorFacts, config: Config): Finding[] {
  const table = config.intercept.routeTable;
  const installed = ourRulesInstalled(facts, config);
  const out: Finding[] = [];
  const replace = renderRoutingPlan(routingSpec(config)).routes.map(routeReplaceArgv);
  for (const family of families(config)) {
    const routes = routesOf(facts, family, table);
    if (routes === undefined) continue;
    if (!routes.ok) {
      out.push(toolProblem('route-table', `ip -${family} route show table ${table}`, routes));
      continue;
    }
    const foreign = routes.value.filter((r) => !isLocalDefault(r));
    if (foreign.length > 0) {
      out.push(finding('route-table', 'error', `route table ${table} (IPv${family}) holds routes that are not ours (${foreign.map((r) => `\`${r.text}\``).join(', ')}): something else uses this table; \`run\` would add a local default route to it and \`stop\` would remove that`, [
        'set intercept.route_table to a table nothing uses (empty in `ip route show table N` and `ip -6 route show table N`)',
      ]));
    }
    if (installed === true && !routes.value.some(isLocalDefault)) {
      out.push(finding('route-table', 'error', `our rules are installed but table ${table} has no \`local default dev lo\` route (IPv${family}): marked packets are not delivered to the listener`, [
        replace.find((c) => c[1] === `-${family}`)!.join(' '),
        'or restart the daemon: `run` installs it',
      ]));
    }
  }
  if (out.length === 0) out.push(finding('route-table', 'ok', `route table ${table} holds ${installed ? 'our local default route' : 'nothing else'}`));
  return out;
}

// ---------------------------------------------------------------------------------------------
// backend return path

/** Why the active probe cannot run now, or null. Its reply reaches us only through our rules. */
export function probeBlocker(facts: DoctorFacts, config: Config): string | null {
  const installed = ourRulesInstalled(facts, config);
  const why = 'the probe\'s reply reaches it only through the daemon\'s `socket transparent` rule and policy route: start `tproxy-interceptor run` and run doctor again';
  if (installed === null) return `cannot tell whether the daemon's rules are installed (${config.intercept.backend === 'iptables' ? `${iptablesProgram(4, config.intercept.iptablesVariant, 'save')} failed` : 'nft list ruleset failed'}); ${why}`;
  if (!installed) return `the daemon's rules are not installed; ${why}`;
  const plan = renderRoutingPlan(routingSpec(config));
  for (const family of families(config)) {
    const rules = facts.ipRules[family];
    const rule = plan.rules.find((r) => r.family === family && r.fwmark !== null)!;
    if (rules?.ok && !rules.value.some((e) => ruleMatches(e, rule))) return `our ip rule (IPv${family}) is missing; ${why}`;
  }
  return null;
}

export function checkBackend(probe: BackendProbe | null, skipped: string | null, config: Config): Finding[] {
  if (probe === null) {
    return [finding('backend', 'skip', skipped ?? 'no --backend ADDR[:PORT] given: the return path of backend replies was not probed')];
  }
  const at = probe.address.includes(':') ? `[${probe.address}]:${probe.port}` : `${probe.address}:${probe.port}`;
  const intercepted = config.intercept.targets.some((t) => cidrContains(t.cidr, probe.address) && t.ports.some((p) => probe.port >= p.from && probe.port <= p.to));
  const note = intercepted ? '' : ` (${at} is not in intercept.targets: this config does not intercept it)`;
  switch (probe.result) {
    case 'connected':
      return [finding('backend', intercepted ? 'ok' : 'warn', `${at} answered a connection from ${probe.source} through this host in ${probe.ms} ms: its replies to clients come back here${note}`)];
    case 'refused':
      return [finding('backend', 'warn', `${at} reset a connection from ${probe.source}: the reset came back through this host, so the return path works, but nothing listens on port ${probe.port}${note}`)];
    case 'timeout': {
      const via = probe.via ?? '<this host\'s address on the backend\'s network>';
      return [
        finding('backend', 'error', `no answer from ${at} within ${probe.timeoutMs} ms to a SYN from ${probe.source}: the backend's replies to clients do not come back through this host (transparent connections would end in ERR_CONNECT_TIMEOUT)`, [
          `on the backend: ip route replace default via ${via}`,
          `or only for the client networks: ip route replace <client network> via ${via} (and probe with --probe-source <a client address>)`,
        ]),
      ];
    }
    case 'unreachable':
      return [finding('backend', 'error', `${at} is unreachable from this host (${probe.code ?? 'no route'})`, [`ip route get ${probe.address}`])];
    default:
      return [finding('backend', 'error', `probing ${at} from ${probe.source} failed: ${probe.code ?? 'unknown error'}`)];
  }
}

// ---------------------------------------------------------------------------------------------

/** Every check, in report order. */
export function runChecks(facts: DoctorFacts, config: Config): Finding[] {
  return [
    ...checkConfig(config),
    ...checkCapabilities(facts.capEff),
    ...checkKernel(facts.kernel, config),
    ...checkIpRules(facts, config),
    ...checkFwmark(facts, config),
    ...checkRpFilter(facts.ipv4Conf, config),
    ...checkRouteLocalnet(facts.ipv4Conf, config),
    ...checkListener(facts, config),
    ...checkIpv6(facts.ipv6, config),
    ...checkRouteTable(facts, config),
    ...checkBackend(facts.backend, facts.backendSkipped, config),
  ];
}
