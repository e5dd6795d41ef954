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
const CHAIN_PRIORITY = -150;

const TABLE_NAME = /^[A-Za-z0-9_]{1,32}$/;

function checkTableName(table: string): void {
  if (typeof table !== 'string' || !TABLE_NAME.test(table)) {
    throw new RangeError(`nftables table name must be 1..32 letters, digits or underscores, got ${JSON.stringify(table)}`);
  }
}

/** The fwmark and its mask, as both firewall backends and the policy routing take them. */
export function checkMark(mark: number, mask: number): void {
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
 *   2. packets of this host's own other connections (a socket bound to one of its addresses): accept
 *      untouched. Without it, the reply to a pp=true upstream (which leaves from our own address
 *      with a port the kernel picks) would be tproxied to the listener when a target network holds
 *      that address and the port is a target port: the upstream connect would time out;
 *   3. per target: tproxy to our listener, mark, accept;
 *   4. per target, when failClosed: drop. nft's tproxy fails open — with no listener the rule
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
    rule([match(meta('l4proto'), 'tcp'), match({ socket: { key: 'wildcard' } }, 0), { accept: null }]),
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
// nft syntax, for `rules --format nft`: the same document, command by command, written the way
// `nft -f` reads it. It is derived from the JSON that `run` applies rather than rendered a second
// time, so the two cannot drift; shapes the JSON renderer never produces are refused.

type Json = Record<string, unknown>;

const hex8 = (n: number): string => `0x${(n >>> 0).toString(16).padStart(8, '0')}`;

function exprText(e: unknown): string {
  if (typeof e === 'number') return String(e);
  if (typeof e === 'string') return e;
  const o = e as Json;
  if (o['meta']) return `meta ${(o['meta'] as Json)['key']}`;
  if (o['payload']) return `${(o['payload'] as Json)['protocol']} ${(o['payload'] as Json)['field']}`;
  if (o['socket']) return `socket ${(o['socket'] as Json)['key']}`;
  if (o['prefix']) return `${(o['prefix'] as Json)['addr']}/${(o['prefix'] as Json)['len']}`;
  if (o['range']) return (o['range'] as unknown[]).map(exprText).join('-');
  if (o['set']) return `{ ${(o['set'] as unknown[]).map(exprText).join(', ')} }`;
  if (o['|']) return (o['|'] as unknown[]).map((x) => (typeof x === 'number' ? hex8(x) : exprText(x))).join(' | ');
  if (o['&']) return (o['&'] as unknown[]).map((x) => (typeof x === 'number' ? hex8(x) : exprText(x))).join(' & ');
  throw new TypeError(`no nft text for expression ${JSON.stringify(e)}`);
}

function statementText(s: Json): string {
  if (s['match']) {
    const m = s['match'] as Json;
    if (m['op'] !== '==') throw new TypeError(`no nft text for operator ${JSON.stringify(m['op'])}`);
    const left = m['left'] as Json;
    // Interface names are strings to nft; everything else we match on is a number or a symbol.
    const right = left['meta'] && (left['meta'] as Json)['key'] === 'iifname' ? JSON.stringify(m['right']) : exprText(m['right']);
    return `${exprText(left)} ${right}`;
  }
  if (s['mangle']) {
    const m = s['mangle'] as Json;
    const value = typeof m['value'] === 'number' ? hex8(m['value']) : exprText(m['value']);
    return `${exprText(m['key'])} set ${value}`;
  }
  if (s['tproxy']) {
    const t = s['tproxy'] as { family: 'ip' | 'ip6'; addr: string; port: number };
    return `tproxy ${t.family} to ${t.family === 'ip6' ? `[${t.addr}]` : t.addr}:${t.port}`;
  }
  if ('accept' in s) return 'accept';
  if ('drop' in s) return 'drop';
  throw new TypeError(`no nft text for statement ${JSON.stringify(s)}`);
}

function commandText(cmd: Json): string {
  const [verb] = Object.keys(cmd);
  const body = cmd[verb!] as Json;
  if ((verb === 'add' || verb === 'delete') && body['table']) {
    const t = body['table'] as Json;
    return `${verb} table ${t['family']} ${t['name']}`;
  }
  if (verb === 'add' && body['chain']) {
    const c = body['chain'] as Json;
    return `add chain ${c['family']} ${c['table']} ${c['name']} { type ${c['type']} hook ${c['hook']} priority ${c['prio']}; policy ${c['policy']}; }`;
  }
  if (verb === 'add' && body['rule']) {
    const r = body['rule'] as Json;
    return `add rule ${r['family']} ${r['table']} ${r['chain']} ${(r['expr'] as Json[]).map(statementText).join(' ')}`;
  }
  throw new TypeError(`no nft text for command ${JSON.stringify(cmd)}`);
}

/** An nftables JSON document as an `nft -f` script, one command per line, in the same order (one transaction). */
export function renderNftText(doc: NftDocument): string {
  return `${doc.nftables.map((c) => commandText(c as Json)).join('\n')}\n`;
}
