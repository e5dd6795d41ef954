// nftables ruleset rendering, pure: the libnftables-json(5) document that `nft -j -f -` applies
// as one kernel transaction, and the same ruleset in nft's own syntax for people to read.
import type { PortRange, Target } from '../config.js';

export interface FirewallSpec {
  /** Our own table (family inet); it is replaced wholesale and nothing else is touched. */
  readonly table: string;
  readonly mark: number;
  readonly mask: number;
  readonly failClosed: boolean;
  readonly listen: { readonly address: string; readonly address6: string | null; readonly port: number };
  readonly targets: readonly Target[];
}

export interface NftDocument {
  readonly nftables: readonly object[];
}

/** The chain every rule lives in. */
export const CHAIN = 'pre';
/** prerouting "mangle" priority. Must be an integer in JSON: the string "mangle" silently yields a chain without a hook. */
export const CHAIN_PRIORITY = -150;

const TABLE_NAME = /^[A-Za-z0-9_]{1,32}$/;

function checkTableName(table: string): void {
  if (typeof table !== 'string' || !TABLE_NAME.test(table)) {
    throw new RangeError(`nftables table name must be 1..32 letters, digits or underscores, got ${JSON.stringify(table)}`);
  }
}

function checkMark(mark: number, mask: number): void {
  const isU32 = (n: number): boolean => Number.isInteger(n) && n >= 1 && n <= 0xffffffff;
  if (!isU32(mark) || !isU32(mask) || (mark & ~mask) >>> 0 !== 0) {
    throw new RangeError(`mark/mask must be integers 1..0xffffffff with mark & ~mask == 0, got mark ${mark} mask ${mask}`);
  }
}

const match = (left: object, right: unknown): object => ({ match: { op: '==', left, right } });
const meta = (key: string): object => ({ meta: { key } });

/**
 * `meta mark set (meta mark & ~mask) | mark`: only our bits change, so marks other software keeps
 * in the same packet (kube-proxy 0x4000/0x8000, Calico 0xffff0000, Cilium 0x800) survive.
 */
function setMark(mark: number, mask: number): object {
  if (mask === 0xffffffff) return { mangle: { key: meta('mark'), value: mark } };
  return { mangle: { key: meta('mark'), value: { '|': [{ '&': [meta('mark'), ~mask >>> 0] }, mark] } } };
}

function portsExpr(ports: readonly PortRange[]): unknown {
  const elem = (p: PortRange): unknown => (p.from === p.to ? p.from : { range: [p.from, p.to] });
  if (ports.length === 0) throw new RangeError('a target needs at least one port');
  if (ports.length === 1 && ports[0]!.from === ports[0]!.to) return ports[0]!.from;
  return { set: ports.map(elem) };
}

/** iifname, daddr prefix, l4proto tcp, dport: what selects a target's connections. */
function targetMatches(target: Target): object[] {
  const slash = target.cidr.indexOf('/');
  const addr = slash === -1 ? target.cidr : target.cidr.slice(0, slash);
  const len = slash === -1 ? (target.family === 4 ? 32 : 128) : Number(target.cidr.slice(slash + 1));
  const exprs: object[] = [];
  if (target.interface !== null) exprs.push(match(meta('iifname'), target.interface));
  exprs.push(match({ payload: { protocol: target.family === 4 ? 'ip' : 'ip6', field: 'daddr' } }, { prefix: { addr, len } }));
  // tproxy in an inet table needs a transport protocol match before it.
  exprs.push(match(meta('l4proto'), 'tcp'));
  exprs.push(match({ payload: { protocol: 'tcp', field: 'dport' } }, portsExpr(target.ports)));
  return exprs;
}

function listenerFor(spec: FirewallSpec, target: Target): { family: 'ip' | 'ip6'; addr: string } {
  if (target.family === 4) return { family: 'ip', addr: spec.listen.address };
  if (spec.listen.address6 === null) {
    throw new RangeError(`target ${target.cidr} is IPv6 but listen.address6 is disabled`);
  }
  return { family: 'ip6', addr: spec.listen.address6 };
}

/**
 * One atomic transaction: `add table` + `delete table` + `add table` replaces our table
 * whether or not it exists (a bare delete of a missing table would abort the batch, and
 * `destroy` needs nftables >= 1.0.7), then the chain and its rules:
 *   1. packets of connections that already have a transparent socket: mark (→ policy route to lo), accept;
 *   2. per target: tproxy to our listener, mark, accept;
 *   3. per target, when failClosed: drop. nft's tproxy fails open — with no listener the rule
 *      does not match and the packet would be forwarded to the real destination unproxied.
 */
export function renderRuleset(spec: FirewallSpec): NftDocument {
  checkTableName(spec.table);
  checkMark(spec.mark, spec.mask);
  const table = { family: 'inet', name: spec.table };
  const rule = (expr: object[]): object => ({ add: { rule: { family: 'inet', table: spec.table, chain: CHAIN, expr } } });
  const commands: object[] = [
    { add: { table } },
    { delete: { table } },
    { add: { table } },
    {
      add: {
        chain: { family: 'inet', table: spec.table, name: CHAIN, type: 'filter', hook: 'prerouting', prio: CHAIN_PRIORITY, policy: 'accept' },
      },
    },
    rule([
      match(meta('l4proto'), 'tcp'),
      match({ socket: { key: 'transparent' } }, 1),
      match({ socket: { key: 'wildcard' } }, 0),
      setMark(spec.mark, spec.mask),
      { accept: null },
    ]),
  ];
  for (const target of spec.targets) {
    const { family, addr } = listenerFor(spec, target);
    commands.push(rule([...targetMatches(target), { tproxy: { family, addr, port: spec.listen.port } }, setMark(spec.mark, spec.mask), { accept: null }]));
    if (spec.failClosed) commands.push(rule([...targetMatches(target), { drop: null }]));
  }
  return { nftables: commands };
}

/** Deletes our table if it exists, and succeeds if it does not (add-then-delete, one transaction). */
export function renderDeleteTable(table: string): NftDocument {
  checkTableName(table);
  const t = { family: 'inet', name: table };
  return { nftables: [{ add: { table: t } }, { delete: { table: t } }] };
}

// ---------------------------------------------------------------------------------------------
// nft syntax, for the `rules` command and for humans. `nft -f` accepts it and it installs the
// same rules as the JSON document (test/netns/firewall.test.ts compares the two).

function markText(mark: number, mask: number): string {
  const hex = (n: number): string => `0x${n.toString(16).padStart(8, '0')}`;
  if (mask === 0xffffffff) return `meta mark set ${hex(mark)}`;
  return `meta mark set meta mark & ${hex(~mask >>> 0)} | ${hex(mark)}`;
}

function targetText(target: Target): string {
  const parts: string[] = [];
  if (target.interface !== null) parts.push(`iifname ${JSON.stringify(target.interface)}`);
  parts.push(`${target.family === 4 ? 'ip' : 'ip6'} daddr ${target.cidr}`);
  parts.push('meta l4proto tcp');
  const elem = (p: PortRange): string => (p.from === p.to ? `${p.from}` : `${p.from}-${p.to}`);
  const single = target.ports.length === 1 && target.ports[0]!.from === target.ports[0]!.to;
  parts.push(`tcp dport ${single ? elem(target.ports[0]!) : `{ ${target.ports.map(elem).join(', ')} }`}`);
  return parts.join(' ');
}

/** The ruleset as an `nft -f` script (same replace-our-table-only semantics as the JSON). */
export function renderRulesetText(spec: FirewallSpec): string {
  renderRuleset(spec); // same validation
  const mark = markText(spec.mark, spec.mask);
  const lines = [
    `table inet ${spec.table}`,
    `delete table inet ${spec.table}`,
    `table inet ${spec.table} {`,
    `\tchain ${CHAIN} {`,
    `\t\ttype filter hook prerouting priority ${CHAIN_PRIORITY}; policy accept;`,
    `\t\tmeta l4proto tcp socket transparent 1 socket wildcard 0 ${mark} accept`,
  ];
  for (const target of spec.targets) {
    const { family, addr } = listenerFor(spec, target);
    const to = family === 'ip' ? `${addr}:${spec.listen.port}` : `[${addr}]:${spec.listen.port}`;
    lines.push(`\t\t${targetText(target)} tproxy ${family} to ${to} ${mark} accept`);
    if (spec.failClosed) lines.push(`\t\t${targetText(target)} drop`);
  }
  lines.push('\t}', '}', '');
  return lines.join('\n');
}
