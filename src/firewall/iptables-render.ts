// iptables ruleset rendering, pure: the `iptables-restore --noflush` / `ip6tables-restore
// --noflush` input that installs (or removes) our chain in the mangle table, and the reading of
// `iptables-save -t mangle` that tells which of our pieces are already there.
//
// The interception is the nftables one (render.ts) in xtables terms, in a chain of our own named
// after `intercept.table`, entered by one `-j` from mangle PREROUTING:
//   -p tcp -m socket --transparent                       -j MARK --set-xmark M/K   replies to our spoofed connections
//   -p tcp -m socket --transparent                       -j ACCEPT
//   -p tcp -m socket                                     -j ACCEPT                  this host's own connections
//   [-i IF] -d CIDR -p tcp --dport P | -m multiport ...  -j TPROXY --on-ip A --on-port L --tproxy-mark M/K
//   [-i IF] -d CIDR -p tcp --dport P | -m multiport ...  -j DROP                     (failClosed)
// Without --nowildcard, xt_socket ignores sockets bound to the wildcard address: nft's
// `socket wildcard 0`. `--set-xmark M/K` and `--tproxy-mark M/K` both compute
// (mark & ~K) ^ M, which is (mark & ~K) | M since M fits in K: bits outside the mask survive.
// TPROXY is terminal and drops what no socket takes (xt_TPROXY returns NF_DROP), so iptables
// fails closed by itself; the DROP rule states it where an operator reads the ruleset.
import type { PortRange, Target } from '../config.js';
import { checkMark, type FirewallSpec } from './render.js';

export type IpFamily = 4 | 6;

/** What `iptables-save -t mangle` shows of ours: is the chain there, and how many plain jumps to it from PREROUTING. */
export interface ChainState {
  readonly chain: boolean;
  readonly jumps: number;
}

/** Nothing of ours installed: what `rules --format iptables` assumes. */
export const NOTHING_INSTALLED: ChainState = { chain: false, jumps: 0 };

/** Built-in chains of the mangle table: never ours to create or delete. */
export const BUILTIN_CHAINS: readonly string[] = ['PREROUTING', 'INPUT', 'FORWARD', 'OUTPUT', 'POSTROUTING'];
/** xtables chain names are at most 28 characters (XT_EXTENSION_MAXNAMELEN - 1). */
const MAX_CHAIN_NAME = 28;
/** xt_multiport takes at most 15 ports, a range counting as two. */
const MULTIPORT_SLOTS = 15;

function checkChainName(chain: string): void {
  if (typeof chain !== 'string' || !/^[A-Za-z0-9_]{1,28}$/.test(chain) || BUILTIN_CHAINS.includes(chain)) {
    throw new RangeError(`iptables chain name must be 1..${MAX_CHAIN_NAME} letters, digits or underscores and not a built-in chain, got ${JSON.stringify(chain)}`);
  }
}

/**
 * iptables reads a trailing "+" in `-i` as a wildcard and rejects a leading "!"; nft matches
 * such names literally. Refused rather than rendered with another meaning.
 */
export function checkIptablesInterface(name: string): void {
  if (name.endsWith('+') || name.startsWith('!')) {
    throw new RangeError(`interface ${JSON.stringify(name)} cannot be matched literally by iptables (a trailing "+" is a wildcard, a leading "!" a negation)`);
  }
}

const hex = (n: number): string => `0x${(n >>> 0).toString(16)}`;
const portText = (p: PortRange): string => (p.from === p.to ? `${p.from}` : `${p.from}:${p.to}`);

/** Port matches, each fitting one rule: `--dport P` alone, or multiport lists of at most 15 slots. */
function portMatches(ports: readonly PortRange[]): string[][] {
  if (ports.length === 0) throw new RangeError('a target needs at least one port');
  if (ports.length === 1) return [['--dport', portText(ports[0]!)]];
  const chunks: PortRange[][] = [];
  let slots = MULTIPORT_SLOTS;
  for (const p of ports) {
    const need = p.from === p.to ? 1 : 2;
    if (slots + need > MULTIPORT_SLOTS) {
      chunks.push([]);
      slots = 0;
    }
    chunks[chunks.length - 1]!.push(p);
    slots += need;
  }
  return chunks.map((c) => (c.length === 1 ? ['--dport', portText(c[0]!)] : ['-m', 'multiport', '--dports', c.map(portText).join(',')]));
}

function listenAddress(spec: FirewallSpec, family: IpFamily, target: Target): string {
  if (family === 4) return spec.listen.address;
  if (spec.listen.address6 === null) throw new RangeError(`target ${target.cidr} is IPv6 but listen.address6 is disabled`);
  return spec.listen.address6;
}

/** The rules of our chain for one family, as argument lists (after `-A <chain>`). */
export function renderChainRules(spec: FirewallSpec, family: IpFamily): string[][] {
  checkChainName(spec.table);
  checkMark(spec.mark, spec.mask);
  const markMask = `${hex(spec.mark)}/${hex(spec.mask)}`;
  const rules: string[][] = [
    ['-p', 'tcp', '-m', 'socket', '--transparent', '-j', 'MARK', '--set-xmark', markMask],
    ['-p', 'tcp', '-m', 'socket', '--transparent', '-j', 'ACCEPT'],
    // This host's own other connections (render.ts, rule 2): never tproxied.
    ['-p', 'tcp', '-m', 'socket', '-j', 'ACCEPT'],
  ];
  for (const target of spec.targets) {
    if (target.family !== family) continue;
    const on = listenAddress(spec, family, target);
    const head: string[] = [];
    if (target.interface !== null) {
      checkIptablesInterface(target.interface);
      head.push('-i', target.interface);
    }
    head.push('-d', target.cidr, '-p', 'tcp');
    for (const ports of portMatches(target.ports)) {
      rules.push([...head, ...ports, '-j', 'TPROXY', '--on-ip', on, '--on-port', String(spec.listen.port), '--tproxy-mark', markMask]);
      if (spec.failClosed) rules.push([...head, ...ports, '-j', 'DROP']);
    }
  }
  return rules;
}

/**
 * The `iptables-restore --noflush` input (ip6tables for family 6) that makes our chain hold
 * exactly our rules and PREROUTING jump to it once, whatever `state` a crashed run left: one
 * transaction, nothing else in the table touched. Declaring the chain creates it or, when it
 * exists, flushes it; the jump goes first in PREROUTING, so rules other software appends there
 * cannot take target traffic before we see it.
 */
export function renderIptablesInstall(spec: FirewallSpec, family: IpFamily, state: ChainState = NOTHING_INSTALLED): string {
  const chain = spec.table;
  const lines = ['*mangle', `:${chain} - [0:0]`, `-F ${chain}`];
  for (const rule of renderChainRules(spec, family)) lines.push(`-A ${chain} ${rule.join(' ')}`);
  if (state.jumps === 0) lines.push(`-I PREROUTING 1 -j ${chain}`);
  for (let i = 1; i < state.jumps; i++) lines.push(`-D PREROUTING -j ${chain}`);
  lines.push('COMMIT', '');
  return lines.join('\n');
}

/**
 * The input that removes our jumps and our chain, or null when nothing of ours is there (a
 * `-D`/`-X` of something absent would fail the whole transaction).
 */
export function renderIptablesRemove(chain: string, state: ChainState): string | null {
  checkChainName(chain);
  if (!state.chain && state.jumps === 0) return null;
  const lines = ['*mangle'];
  for (let i = 0; i < state.jumps; i++) lines.push(`-D PREROUTING -j ${chain}`);
  if (state.chain) lines.push(`-F ${chain}`, `-X ${chain}`);
  lines.push('COMMIT', '');
  return lines.join('\n');
}

/** Our chain's state in `iptables-save -t mangle` output (either variant; counters not requested). */
export function parseChainState(save: string, chain: string): ChainState {
  let inMangle = false;
  let present = false;
  let jumps = 0;
  for (const raw of save.split('\n')) {
    const line = raw.trim();
    if (line.startsWith('*')) inMangle = line === '*mangle';
    if (!inMangle) continue;
    if (line.startsWith(`:${chain} `)) present = true;
    else if (line === `-A PREROUTING -j ${chain}`) jumps++;
  }
  return { chain: present, jumps };
}
