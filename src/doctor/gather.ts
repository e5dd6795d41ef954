// doctor's I/O: runs tools (argv arrays, never a shell string) and reads /proc, turning every
// outcome, failures included, into DoctorFacts for the pure checks. Nothing here changes the
// host: nft runs with --check (the kernel sees the rules in a transaction it always aborts),
// everything else only lists or reads.
import { readFile, readdir, readlink } from 'node:fs/promises';
import { endianness } from 'node:os';
import { basename, resolve } from 'node:path';
import type { Config } from '../config.js';
import { firewallSpec } from '../daemon.js';
import { execFileDefault, type ExecFailure, type ExecFileFn } from '../firewall/exec-file.js';
import { iptablesProgram } from '../firewall/iptables.js';
import { renderIptablesInstall } from '../firewall/iptables-render.js';
import { renderRuleset } from '../firewall/render.js';
import { tablesAheadOfOurs } from './checks.js';
import { parseCapEff, parsePortRange, parseProcNetTcp, parseReservedPorts, type ListeningSocket } from './proc.js';
import type { DoctorFacts, Ipv4Conf, KernelProbe, OwnedListener, Outcome } from './types.js';

export interface GatherDeps {
  readonly exec: ExecFileFn;
  /** A file's text, or null when it cannot be read. */
  readText(path: string): Promise<string | null>;
  listDir(path: string): Promise<string[] | null>;
  readLink(path: string): Promise<string | null>;
  /** Scripts whose processes are this interceptor (dist/cli.js), to recognise our own listener. */
  readonly selfScripts: readonly string[];
  readonly littleEndian: boolean;
}

export function defaultGatherDeps(selfScripts: readonly string[]): GatherDeps {
  const orNull = async <T>(p: Promise<T>): Promise<T | null> => p.catch(() => null);
  return {
    exec: execFileDefault,
    readText: (p) => orNull(readFile(p, 'utf8')),
    listDir: (p) => orNull(readdir(p)),
    readLink: (p) => orNull(readlink(p)),
    selfScripts,
    littleEndian: endianness() === 'LE',
  };
}

const PACKAGES: Record<string, string> = { nft: 'nftables', ip: 'iproute2' };
const packageOf = (tool: string): string => PACKAGES[tool] ?? (/^ip6?tables/.test(tool) ? 'iptables' : tool);

/** Runs a tool; its failure is an Outcome, never an exception. */
async function tool_(exec: ExecFileFn, argv: readonly string[], input?: string): Promise<Outcome<string>> {
  try {
    const { stdout } = await exec(argv[0]!, argv.slice(1), input === undefined ? {} : { input });
    return { ok: true, value: stdout };
  } catch (err) {
    const f = err as ExecFailure;
    const stderr = (f.stderr ?? '').trim();
    if (f.code === 'ENOENT') return { ok: false, reason: 'missing', message: `${argv[0]} not found: install the ${packageOf(argv[0]!)} package` };
    if (/Operation not permitted|Permission denied/.test(stderr) || f.code === 'EPERM' || f.code === 'EACCES') {
      return { ok: false, reason: 'permission', message: `\`${argv.join(' ')}\`: ${stderr || 'Operation not permitted'}` };
    }
    return { ok: false, reason: 'failed', message: `\`${argv.join(' ')}\`: ${stderr || f.message}` };
  }
}

function json<T>(o: Outcome<string>, empty: T): Outcome<T> {
  if (!o.ok) return o;
  try {
    return { ok: true, value: o.value.trim() === '' ? empty : (JSON.parse(o.value) as T) };
  } catch (err) {
    return { ok: false, reason: 'failed', message: `unparsable JSON: ${(err as Error).message}` };
  }
}

const PROBE_TABLE = 'tproxy_interceptor_doctor';

/** One rule per expression, in a table that never exists: `nft --check` only. */
function probeRuleset(rule: string): string {
  return `table inet ${PROBE_TABLE} {\n\tchain pre {\n\t\ttype filter hook prerouting priority -150; policy accept;\n\t\t${rule}\n\t}\n}\n`;
}

/** Our chain's name with a suffix: a chain that never exists (`--test` only), within 28 characters. */
const IPTABLES_PROBE_CHAIN = 'tproxy_interceptor_doctor';

async function gatherIptablesKernel(exec: ExecFileFn, config: Config): Promise<KernelProbe[]> {
  const { address, address6, port } = config.listen;
  const { mark, mask, iptablesVariant } = config.intercept;
  const markMask = `0x${mark.toString(16)}/0x${mask.toString(16)}`;
  const probes: KernelProbe[] = [];
  for (const family of address6 === null ? ([4] as const) : ([4, 6] as const)) {
    const tool = iptablesProgram(family, iptablesVariant, 'restore');
    const test = async (input: string): Promise<Outcome<null>> => {
      // --test: parsed and checked extension by extension (each loaded and asked of the kernel), never committed.
      const o = await tool_(exec, [tool, '--test', '--noflush'], input);
      return o.ok ? { ok: true, value: null } : o;
    };
    const probe = (rule: string): string => `*mangle\n:${IPTABLES_PROBE_CHAIN} - [0:0]\n-A ${IPTABLES_PROBE_CHAIN} ${rule}\nCOMMIT\n`;
    const socket = await test(probe(`-p tcp -m socket --transparent -j MARK --set-xmark ${markMask}`));
    const tproxy = await test(probe(`-p tcp -j TPROXY --on-ip ${family === 4 ? address : address6} --on-port ${port} --tproxy-mark ${markMask}`));
    const ruleset = await test(renderIptablesInstall(firewallSpec(config), family));
    probes.push(
      { backend: 'iptables', feature: 'socket', family, tool, outcome: socket },
      { backend: 'iptables', feature: 'tproxy', family, tool, outcome: tproxy },
      { backend: 'iptables', feature: 'ruleset', family, tool, outcome: ruleset },
    );
  }
  return probes;
}

async function gatherKernel(exec: ExecFileFn, config: Config): Promise<KernelProbe[]> {
  if (config.intercept.backend === 'iptables') return gatherIptablesKernel(exec, config);
  const { address, address6, port } = config.listen;
  const tproxy = [`meta l4proto tcp tproxy ip to ${address}:${port} accept`];
  if (address6 !== null) tproxy.push(`meta l4proto tcp tproxy ip6 to [${address6}]:${port} accept`);
  const check = async (text: string): Promise<Outcome<null>> => {
    const o = await tool_(exec, ['nft', '--check', '-f', '-'], text);
    return o.ok ? { ok: true, value: null } : o;
  };
  const socket = await check(probeRuleset('meta l4proto tcp socket transparent 1 socket wildcard 0 accept'));
  const tproxyOutcome = await check(probeRuleset(tproxy.join('\n\t\t')));
  const ruleset = await tool_(exec, ['nft', '--check', '-j', '-f', '-'], JSON.stringify(renderRuleset(firewallSpec(config))));
  return [
    { backend: 'nftables', feature: 'socket', outcome: socket },
    { backend: 'nftables', feature: 'tproxy', outcome: tproxyOutcome },
    { backend: 'nftables', feature: 'ruleset', outcome: ruleset.ok ? { ok: true, value: null } : ruleset },
  ];
}

/** `ip route show table T`: a table that was never created is an empty one. */
async function routeTable(exec: ExecFileFn, family: 4 | 6, table: number): Promise<Outcome<unknown[]>> {
  const o = await tool_(exec, ['ip', `-${family}`, '-j', 'route', 'show', 'table', String(table)]);
  if (!o.ok && /FIB table does not exist/.test(o.message)) return { ok: true, value: [] };
  return json<unknown[]>(o, []);
}

const IPTABLES_DUMPS = ['iptables-save', 'ip6tables-save', 'iptables-legacy-save', 'ip6tables-legacy-save'];

async function gatherIpv4Conf(deps: GatherDeps): Promise<Map<string, Ipv4Conf>> {
  const out = new Map<string, Ipv4Conf>();
  const base = '/proc/sys/net/ipv4/conf';
  for (const name of (await deps.listDir(base)) ?? []) {
    const read = async (key: string): Promise<number> => Number((await deps.readText(`${base}/${name}/${key}`))?.trim() ?? 0);
    out.set(name, {
      rp_filter: await read('rp_filter'),
      src_valid_mark: await read('src_valid_mark'),
      accept_local: await read('accept_local'),
      route_localnet: await read('route_localnet'),
    });
  }
  return out;
}

/** Owners of the given socket inodes, by walking /proc/<pid>/fd (complete only as root). */
async function socketOwners(deps: GatherDeps, inodes: ReadonlySet<number>): Promise<Map<number, { pid: number; args: string[]; cwd: string }>> {
  const owners = new Map<number, { pid: number; args: string[]; cwd: string }>();
  if (inodes.size === 0) return owners;
  for (const entry of (await deps.listDir('/proc')) ?? []) {
    if (!/^\d+$/.test(entry)) continue;
    for (const fd of (await deps.listDir(`/proc/${entry}/fd`)) ?? []) {
      const m = /^socket:\[(\d+)\]$/.exec((await deps.readLink(`/proc/${entry}/fd/${fd}`)) ?? '');
      if (m === null || !inodes.has(Number(m[1])) || owners.has(Number(m[1]))) continue;
      const args = ((await deps.readText(`/proc/${entry}/cmdline`)) ?? '').split('\0').filter((s) => s !== '');
      owners.set(Number(m[1]), { pid: Number(entry), args, cwd: (await deps.readLink(`/proc/${entry}/cwd`)) ?? '/' });
    }
  }
  return owners;
}

async function gatherListeners(deps: GatherDeps, port: number): Promise<OwnedListener[]> {
  const sockets: ListeningSocket[] = [];
  for (const family of [4, 6] as const) {
    const text = await deps.readText(family === 4 ? '/proc/net/tcp' : '/proc/net/tcp6');
    if (text !== null) sockets.push(...parseProcNetTcp(text, family, deps.littleEndian));
  }
  const onPort = sockets.filter((s) => s.port === port);
  const owners = await socketOwners(deps, new Set(onPort.map((s) => s.inode)));
  return onPort.map((s) => {
    const o = owners.get(s.inode);
    if (o === undefined) return { ...s, owner: null };
    // Our own daemon or worker: one of this installation's scripts, or the installed command.
    const isInterceptor = o.args.some((arg) => deps.selfScripts.includes(resolve(o.cwd, arg)) || basename(arg) === 'tproxy-interceptor');
    return { ...s, owner: { pid: o.pid, cmdline: o.args.join(' '), isInterceptor } };
  });
}

/**
 * The tables as the configured variant shows them: where our chain and jump live. Without `-t
 * mangle`, which would make the legacy variant create the table in the kernel.
 */
async function gatherOurIptables(exec: ExecFileFn, config: Config): Promise<NonNullable<DoctorFacts['ourIptables']>> {
  const save = (family: 4 | 6): Promise<Outcome<string>> => tool_(exec, [iptablesProgram(family, config.intercept.iptablesVariant, 'save')]);
  return { 4: await save(4), 6: config.listen.address6 === null ? null : await save(6) };
}

export async function gatherFacts(config: Config, deps: GatherDeps): Promise<DoctorFacts> {
  const { exec } = deps;
  const ipv6On = config.listen.address6 !== null;
  const rules = async (family: 4 | 6): Promise<Outcome<unknown[]>> => json<unknown[]>(await tool_(exec, ['ip', `-${family}`, '-N', '-j', 'rule', 'show']), []);
  const iptablesSave = new Map<string, Outcome<string>>();
  for (const name of IPTABLES_DUMPS) {
    const o = await tool_(exec, [name]);
    if (o.ok || o.reason !== 'missing') iptablesSave.set(name, o);
  }
  const disable6 = await deps.readText('/proc/sys/net/ipv6/conf/lo/disable_ipv6');
  const reserved = await deps.readText('/proc/sys/net/ipv4/ip_local_reserved_ports');
  const range = await deps.readText('/proc/sys/net/ipv4/ip_local_port_range');
  const partial: DoctorFacts = {
    capEff: parseCapEff((await deps.readText('/proc/self/status')) ?? ''),
    kernel: await gatherKernel(exec, config),
    ipRules: { 4: await rules(4), 6: ipv6On ? await rules(6) : null },
    routeTables: new Map(),
    nftRuleset: json<unknown>(await tool_(exec, ['nft', '-j', 'list', 'ruleset']), { nftables: [] }),
    iptablesSave,
    ipv4Conf: await gatherIpv4Conf(deps),
    portRange: range === null ? null : parsePortRange(range),
    reservedPorts: reserved === null ? [] : parseReservedPorts(reserved),
    ipv6: disable6 === null ? 'absent' : disable6.trim() === '0' ? 'enabled' : 'disabled',
    listeners: await gatherListeners(deps, config.listen.port),
    ourIptables: config.intercept.backend === 'iptables' ? await gatherOurIptables(exec, config) : null,
    backend: null,
    backendSkipped: null,
  };
  // Our own table, and the tables of rules that come before ours (they may route our packets).
  const routeTables = new Map<string, Outcome<unknown[]>>();
  const wanted = [{ family: 4 as const, table: config.intercept.routeTable }, ...(ipv6On ? [{ family: 6 as const, table: config.intercept.routeTable }] : [])];
  for (const { family, table } of [...wanted, ...tablesAheadOfOurs(partial, config)]) {
    const key = `${family}:${table}`;
    if (!routeTables.has(key)) routeTables.set(key, await routeTable(exec, family, table));
  }
  return { ...partial, routeTables };
}
