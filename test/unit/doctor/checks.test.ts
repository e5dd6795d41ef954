import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../../src/config-parse.js';
import {
  checkBackend,
  checkCapabilities,
  checkConfig,
  checkFwmark,
  checkIpRules,
  checkIpv6,
  checkKernel,
  checkListener,
  checkRouteLocalnet,
  checkRouteTable,
  checkRpFilter,
  ourRulesInstalled,
  probeBlocker,
  runChecks,
  tablesAheadOfOurs,
} from '../../../src/doctor/checks.js';
import type { BackendProbe, DoctorFacts, Finding, Ipv4Conf, KernelProbe, Outcome } from '../../../src/doctor/types.js';

const CONFIG = parseConfig(`
[[intercept.targets]]
cidr = "198.18.2.0/24"
ports = [8080, "9000-9010"]

[[intercept.targets]]
cidr = "fd00:18:2::/64"
ports = [8080]
`);

const ok = <T>(value: T): Outcome<T> => ({ ok: true, value });
const conf = (c: Partial<Ipv4Conf> = {}): Ipv4Conf => ({ rp_filter: 0, src_valid_mark: 0, accept_local: 0, route_localnet: 0, ...c });
const STANDARD_RULES = [
  { priority: 0, src: 'all', table: '255' },
  { priority: 32766, src: 'all', table: '254' },
  { priority: 32767, src: 'all', table: '253' },
];
const OUR_RULE = { priority: 9000, src: 'all', fwmark: '0x2000', fwmask: '0x2000', table: '4511' };
const LOCAL_DEFAULT = { type: 'local', dst: 'default', dev: 'lo', scope: 'host', flags: [] };
const OUR_TABLE = { nftables: [{ table: { family: 'inet', name: 'tproxy_interceptor', handle: 3 } }] };
const KERNEL_OK: KernelProbe[] = (['socket', 'tproxy', 'ruleset'] as const).map((feature) => ({ backend: 'nftables', feature, outcome: ok(null) }));

/** A clean gateway (the lab's), daemon not running. */
function facts(over: Partial<DoctorFacts> = {}): DoctorFacts {
  return {
    capEff: 0x3000n,
    kernel: KERNEL_OK,
    ipRules: { 4: ok([...STANDARD_RULES]), 6: ok([...STANDARD_RULES]) },
    routeTables: new Map([['4:4511', ok([])], ['6:4511', ok([])]]),
    nftRuleset: ok({ nftables: [] }),
    iptablesSave: new Map(),
    ourIptables: null,
    ipv4Conf: new Map([['all', conf()], ['default', conf()], ['lo', conf()], ['eth0', conf()], ['eth1', conf()]]),
    portRange: { from: 32768, to: 60999 },
    reservedPorts: [],
    ipv6: 'enabled',
    listeners: [],
    backend: null,
    backendSkipped: null,
    ...over,
  };
}

/** The same gateway with the daemon's rules installed. */
function running(over: Partial<DoctorFacts> = {}): DoctorFacts {
  const rules = ok([...STANDARD_RULES.slice(0, 1), OUR_RULE, ...STANDARD_RULES.slice(1)]);
  return facts({
    ipRules: { 4: rules, 6: rules },
    routeTables: new Map([['4:4511', ok([LOCAL_DEFAULT])], ['6:4511', ok([LOCAL_DEFAULT])]]),
    nftRuleset: ok(OUR_TABLE),
    ...over,
  });
}

const severities = (fs: Finding[]): string[] => fs.map((f) => f.severity);
const only = (fs: Finding[], severity: string): Finding => {
  const hits = fs.filter((f) => f.severity === severity);
  expect(hits, JSON.stringify(fs, null, 2)).toHaveLength(1);
  return hits[0]!;
};
const withRules = (...extra: object[]): DoctorFacts['ipRules'] => ({ 4: ok([...STANDARD_RULES, ...extra]), 6: ok([...STANDARD_RULES]) });

describe('a clean host', () => {
  it('passes every check; the backend probe is skipped without --backend', () => {
    const findings = runChecks(facts(), CONFIG);
    expect(findings.map((f) => f.check)).toEqual(['config', 'capabilities', 'kernel', 'ip-rules', 'fwmark', 'rp-filter', 'route-localnet', 'listener', 'ipv6', 'route-table', 'backend']);
    expect(findings.filter((f) => f.severity !== 'ok').map((f) => f.check)).toEqual(['backend']);
  });

  it('passes with the daemon running too (our own rule, table, route and listener are not problems)', () => {
    const listeners = [{ family: 4 as const, address: '127.0.0.1', port: 24511, inode: 7, owner: { pid: 42, cmdline: 'node /opt/tpi/dist/cli.js run', isInterceptor: true } }];
    const findings = runChecks(running({ listeners }), CONFIG);
    expect(findings.filter((f) => f.severity !== 'ok').map((f) => f.check)).toEqual(['backend']);
    expect(findings.find((f) => f.check === 'listener')!.summary).toMatch(/held by the running tproxy-interceptor \(pid 42\)/);
  });
});

describe('config', () => {
  it('no targets is an error', () => {
    expect(only(checkConfig(parseConfig('')), 'error').summary).toMatch(/intercept.targets is empty/);
  });
});

describe('capabilities', () => {
  it('CAP_NET_ADMIN is required, CAP_NET_RAW is not', () => {
    expect(only(checkCapabilities(0n), 'error').fix).toEqual(expect.arrayContaining([expect.stringMatching(/AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW/)]));
    expect(only(checkCapabilities(0x1000n), 'ok').summary).toMatch(/CAP_NET_RAW is not, and is not needed/);
    expect(severities(checkCapabilities(null))).toEqual(['skip']);
  });
});

describe('kernel', () => {
  const failing = (feature: KernelProbe['feature'], outcome: Outcome<null>): KernelProbe[] => KERNEL_OK.map((p) => (p.feature === feature ? { ...p, outcome } : p));

  it('a missing nft binary names the package', () => {
    const missing: Outcome<null> = { ok: false, reason: 'missing', message: 'nft not found: install the nftables package' };
    const f = only(checkKernel(KERNEL_OK.map((p) => ({ ...p, outcome: missing }))), 'error');
    expect(f.fix).toEqual(['apt-get install nftables']);
  });

  it('a rejected expression names the module', () => {
    const f = only(checkKernel(failing('tproxy', { ok: false, reason: 'failed', message: 'Error: Could not process rule: No such file or directory' })), 'error');
    expect(f.summary).toMatch(/`tproxy` expression/);
    expect(f.fix).toEqual([expect.stringMatching(/modprobe nft_tproxy/)]);
  });

  it('without CAP_NET_ADMIN the kernel cannot be asked', () => {
    expect(severities(checkKernel(failing('socket', { ok: false, reason: 'permission', message: 'Operation not permitted' })))).toEqual(['skip']);
  });
});

describe('backend = "iptables"', () => {
  const IPT = parseConfig(`
[intercept]
backend = "iptables"
iptables_variant = "legacy"

[[intercept.targets]]
cidr = "198.18.2.0/24"
ports = [8080]
`);
  const probes = (outcome: (tool: string, feature: string) => Outcome<null>): KernelProbe[] =>
    ([4, 6] as const).flatMap((family) =>
      (['socket', 'tproxy', 'ruleset'] as const).map((feature) => {
        const tool = `ip${family === 4 ? '' : '6'}tables-legacy-restore`;
        return { backend: 'iptables' as const, feature, family, tool, outcome: outcome(tool, feature) };
      }),
    );
  const MANGLE_OURS = '*mangle\n:PREROUTING ACCEPT [0:0]\n:tproxy_interceptor - [0:0]\n-A PREROUTING -j tproxy_interceptor\n-A tproxy_interceptor -p tcp -m socket --transparent -j MARK --set-xmark 0x2000/0x2000\nCOMMIT\n';
  const MANGLE_EMPTY = '*mangle\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n';

  it('kernel: the variant\'s restore program accepts the socket match, the TPROXY target and the rules', () => {
    const f = only(checkKernel(probes(() => ok(null)), IPT), 'ok');
    expect(f.summary).toMatch(/^iptables-legacy-restore and ip6tables-legacy-restore \(intercept\.iptables_variant = "legacy"\) accept the `socket` match, the `TPROXY` target/);
  });

  it('kernel: the variant missing names the package and the other variant', () => {
    const f = only(checkKernel(probes((tool) => ({ ok: false, reason: 'missing', message: `${tool} not found: install the iptables package` })), IPT), 'error');
    expect(f.summary).toMatch(/iptables-legacy-restore not found: install the iptables package \(intercept\.iptables_variant = "legacy" runs iptables-legacy-restore\)/);
    expect(f.fix).toEqual(['apt-get install iptables', 'or set intercept.iptables_variant = "nft" if that variant is installed']);
  });

  it('kernel: an extension the kernel lacks names its module; no legacy mangle table names that', () => {
    const fs = checkKernel(probes((tool, feature) => (feature === 'tproxy' && tool.startsWith('iptables') ? { ok: false, reason: 'failed', message: "Couldn't load target `TPROXY'" } : ok(null))), IPT);
    const f = only(fs, 'error');
    expect(f.summary).toMatch(/iptables-legacy-restore \(IPv4\) cannot use the `TPROXY` target: Couldn't load target/);
    expect(f.fix).toEqual([expect.stringMatching(/^modprobe xt_TPROXY/)]);
    const legacy = only(checkKernel(probes(() => ({ ok: false, reason: 'failed', message: "iptables-restore: can't initialize iptables table `mangle': Table does not exist (do you need to insmod?)" })), IPT), 'error');
    expect(legacy.fix).toEqual([expect.stringMatching(/^modprobe iptable_mangle/), 'or set intercept.iptables_variant = "nft"']);
    expect(severities(checkKernel(probes(() => ({ ok: false, reason: 'permission', message: 'Permission denied' })), IPT))).toEqual(['skip']);
  });

  it('recognises our chain and jump as installed rules (every family), and not our table in nftables', () => {
    const installed = (v4: string, v6: string | null): boolean | null => ourRulesInstalled(facts({ ourIptables: { 4: ok(v4), 6: v6 === null ? null : ok(v6) } }), IPT);
    expect(installed(MANGLE_OURS, MANGLE_OURS)).toBe(true);
    expect(installed(MANGLE_OURS, MANGLE_EMPTY)).toBe(false);
    expect(installed(MANGLE_EMPTY, null)).toBe(false);
    expect(ourRulesInstalled(facts({ ourIptables: { 4: { ok: false, reason: 'failed', message: 'x' }, 6: null } }), IPT)).toBeNull();
    // Our nft table does not count for this backend.
    expect(ourRulesInstalled(facts({ nftRuleset: ok(OUR_TABLE), ourIptables: { 4: ok(MANGLE_EMPTY), 6: ok(MANGLE_EMPTY) } }), IPT)).toBe(false);
    // With the chain installed, the backend probe may run; without it, it is skipped.
    const routes = running().ipRules;
    expect(probeBlocker(running({ ourIptables: { 4: ok(MANGLE_OURS), 6: ok(MANGLE_OURS) }, ipRules: routes }), IPT)).toBeNull();
    expect(probeBlocker(running({ ourIptables: { 4: ok(MANGLE_EMPTY), 6: ok(MANGLE_EMPTY) } }), IPT)).toMatch(/rules are not installed/);
  });

  it('fwmark: our own chain setting our bit is not a conflict; someone else\'s is', () => {
    const save = new Map([['iptables-legacy-save', ok(MANGLE_OURS)]]);
    expect(checkFwmark(facts({ iptablesSave: save }), IPT).filter((f) => f.severity === 'error')).toEqual([]);
    // With the nftables backend the same chain is someone else's.
    expect(checkFwmark(facts({ iptablesSave: save }), CONFIG).filter((f) => f.severity === 'error')).toHaveLength(1);
  });
});

describe('ip rules', () => {
  it('an fwmark rule ahead of ours that matches our mark takes our packets (the issue\'s `fwmark 0x1/0x1 lookup 200`)', () => {
    const f = only(checkIpRules(facts({ ipRules: withRules({ priority: 100, src: 'all', fwmark: '0x2000', fwmask: '0x2000', table: '200' }) }), CONFIG), 'error');
    expect(f.summary).toMatch(/priority 100 fwmark 0x2000\/0x2000 lookup 200 comes before ours \(priority 9000\)/);
    expect(f.fix![0]).toBe('ip -4 rule del priority 100 fwmark 0x2000/0x2000 lookup 200');
    expect(f.fix![1]).toMatch(/intercept.mark = 0x1000 and intercept.mask = 0x1000/);
  });

  it('the same with a mark of ours that a wider selector covers; not when our bit differs', () => {
    const wide = { priority: 100, src: 'all', fwmark: '0x2001', fwmask: '0x3001', table: '200' };
    const differs = { priority: 100, src: 'all', fwmark: '0x0', fwmask: '0x2000', table: '200' };
    expect(severities(checkIpRules(facts({ ipRules: withRules(wide) }), CONFIG))).toEqual(['error']);
    expect(severities(checkIpRules(facts({ ipRules: withRules(differs) }), CONFIG))).toEqual(['ok']);
  });

  it('kube-proxy-like bits that do not overlap ours are fine', () => {
    expect(severities(checkIpRules(facts({ ipRules: withRules({ priority: 100, src: 'all', fwmark: '0x4000', fwmask: '0x4000', table: '200' }) }), CONFIG))).toEqual(['ok']);
  });

  it('a rule after ours whose mark carries our bit loses its packets to us (Istio\'s 0x539 vs a mark of 0x1)', () => {
    const config = parseConfig('[intercept]\nmark = 0x1\nmask = 0x1\n[[intercept.targets]]\ncidr = "198.18.2.0/24"\nports = [8080]\n');
    const f = only(checkIpRules(facts({ ipRules: withRules({ priority: 32000, src: 'all', fwmark: '0x539', table: '133' }) }), config), 'error');
    expect(f.summary).toMatch(/comes after ours .* packets marked for it match our rule first/);
  });

  it('a `not fwmark` rule ahead of ours (wg-quick) takes every packet of ours: move it, a new mark would not help', () => {
    const f = only(checkIpRules(facts({ ipRules: withRules({ priority: 8999, not: null, src: 'all', fwmark: '0xca6c', table: '51820' }) }), CONFIG), 'error');
    expect(f.fix).toEqual(['ip -4 rule del priority 8999 not fwmark 0xca6c lookup 51820', 'or move it after ours: a priority above 9000']);
  });

  it('a leftover rule whose table delivers locally too is only a warning', () => {
    const f = facts({ ipRules: withRules({ priority: 9000, src: 'all', fwmark: '0x2000', fwmask: '0x2000', table: '100' }), routeTables: new Map([['4:4511', ok([])], ['4:100', ok([LOCAL_DEFAULT])]]) });
    expect(severities(checkIpRules(f, CONFIG))).toEqual(['warn']);
  });

  it('a rule without fwmark ahead of ours catches our packets when its table routes a target (suppress_prefixlength honoured)', () => {
    const rule = { priority: 150, src: 'all', table: '254', suppress_prefixlen: 0 };
    const base = facts({ ipRules: withRules(rule) });
    expect(tablesAheadOfOurs(base, CONFIG)).toEqual([{ family: 4, table: 254 }]);
    const connected = { dst: '198.18.2.0/24', dev: 'eth1', protocol: 'kernel', scope: 'link' };
    const catching = facts({ ipRules: withRules(rule), routeTables: new Map([['4:4511', ok([])], ['4:254', ok([{ dst: 'default', gateway: '198.18.1.254', dev: 'eth0' }, connected])]]) });
    const f = only(checkIpRules(catching, CONFIG), 'error');
    expect(f.summary).toMatch(/table 254 routes `198.18.2.0\/24 dev eth1`/);
    const defaultOnly = facts({ ipRules: withRules(rule), routeTables: new Map([['4:4511', ok([])], ['4:254', ok([{ dst: 'default', gateway: '198.18.1.254', dev: 'eth0' }])]]) });
    expect(severities(checkIpRules(defaultOnly, CONFIG))).toEqual(['ok']);
  });

  it('a missing ip binary is an error', () => {
    const missing: Outcome<unknown[]> = { ok: false, reason: 'missing', message: 'ip not found: install the iproute2 package' };
    expect(severities(checkIpRules(facts({ ipRules: { 4: missing, 6: missing } }), CONFIG))).toEqual(['error', 'error']);
  });
});

describe('fwmark', () => {
  const dump = (text: string): DoctorFacts['iptablesSave'] => new Map([['iptables-save', ok(`# Generated by iptables-save v1.8.9 (nf_tables)\n${text}`)]]);

  it('a rule that sets our bit is an error naming its owner and a free bit', () => {
    const f = only(checkFwmark(facts({ iptablesSave: dump('*mangle\n-A cali-PREROUTING -j MARK --set-xmark 0x2000/0x2000\nCOMMIT\n') }), CONFIG), 'error');
    expect(f.summary).toMatch(/^Calico \(iptables-save mangle cali-PREROUTING\) sets 0x2000\/0x2000, sharing bits 0x2000/);
    expect(f.fix).toEqual(['use a bit nobody uses: intercept.mark = 0x1000 and intercept.mask = 0x1000']);
  });

  it('a rule that rewrites the whole mark without our bit is a warning', () => {
    const f = only(checkFwmark(facts({ iptablesSave: dump('*mangle\n-A ISTIO_DIVERT -j MARK --set-xmark 0x539/0xffffffff\nCOMMIT\n') }), CONFIG), 'warn');
    expect(f.summary).toMatch(/^Istio .* sets 0x539\/0xffffffff: packets it handles lose our bits/);
  });

  it('nft rules count, our own table does not', () => {
    const meta = { meta: { key: 'mark' } };
    const ours = { rule: { family: 'inet', table: 'tproxy_interceptor', chain: 'pre', expr: [{ mangle: { key: meta, value: { '|': [{ '&': [meta, 0xffffdfff] }, 0x2000] } } }] } };
    expect(severities(checkFwmark(facts({ nftRuleset: ok({ nftables: [ours] }) }), CONFIG))).toEqual(['ok']);
    const theirs = { rule: { ...ours.rule, table: 'other' } };
    expect(severities(checkFwmark(facts({ nftRuleset: ok({ nftables: [ours, theirs] }) }), CONFIG))).toEqual(['error']);
  });

  it('a mask overlapping known users\' defaults is a warning even when they are absent', () => {
    const config = parseConfig('[intercept]\nmark = 0x4000\nmask = 0x4000\n[[intercept.targets]]\ncidr = "198.18.2.0/24"\nports = [8080]\n');
    expect(only(checkFwmark(facts(), config), 'warn').summary).toMatch(/overlaps the default marks of kube-proxy/);
  });

  it('without CAP_NET_ADMIN the ruleset is a skip', () => {
    const f = facts({ nftRuleset: { ok: false, reason: 'permission', message: 'Operation not permitted' } });
    expect(severities(checkFwmark(f, CONFIG))).toEqual(['skip', 'ok']);
  });
});

describe('rp-filter / src_valid_mark', () => {
  const confs = (all: Partial<Ipv4Conf>, eth0: Partial<Ipv4Conf> = {}): Map<string, Ipv4Conf> =>
    new Map([['all', conf(all)], ['default', conf()], ['lo', conf()], ['eth0', conf(eth0)], ['eth1', conf()]]);

  it('src_valid_mark makes intercepted packets martians', () => {
    const f = only(checkRpFilter(confs({ src_valid_mark: 1 }), CONFIG), 'error');
    expect(f.summary).toMatch(/src_valid_mark is on for eth0, eth1/);
    expect(f.fix![0]).toBe('sysctl -w net.ipv4.conf.all.src_valid_mark=0 net.ipv4.conf.eth0.src_valid_mark=0 net.ipv4.conf.eth1.src_valid_mark=0');
  });

  it('accept_local rescues it unless rp_filter is strict', () => {
    expect(severities(checkRpFilter(confs({ src_valid_mark: 1, accept_local: 1, rp_filter: 2 }), CONFIG))).toEqual(['ok']);
    expect(severities(checkRpFilter(confs({ src_valid_mark: 1, accept_local: 1, rp_filter: 1 }), CONFIG))).toEqual(['error']);
  });

  it('strict rp_filter alone is fine; targets with an interface narrow the scope', () => {
    expect(only(checkRpFilter(confs({ rp_filter: 1 }), CONFIG), 'ok').summary).toMatch(/strict rp_filter on eth0, eth1/);
    const onEth1 = parseConfig('[[intercept.targets]]\ncidr = "198.18.2.0/24"\nports = [8080]\ninterface = "eth1"\n');
    expect(severities(checkRpFilter(confs({}, { src_valid_mark: 1 }), onEth1))).toEqual(['ok']);
    expect(severities(checkRpFilter(confs({}, { src_valid_mark: 1 }), CONFIG))).toEqual(['error']);
  });
});

describe('route_localnet', () => {
  it('is a warning with the sysctl that turns it off', () => {
    const f = only(checkRouteLocalnet(new Map([['all', conf()], ['eth0', conf({ route_localnet: 1 })]]), CONFIG), 'warn');
    expect(f.summary).toMatch(/CVE-2020-8558.*listener at 127.0.0.1:24511 reachable/);
    expect(f.fix).toEqual(['sysctl -w net.ipv4.conf.eth0.route_localnet=0']);
    expect(severities(checkRouteLocalnet(new Map([['all', conf()]]), CONFIG))).toEqual(['ok']);
  });
});

describe('listener', () => {
  const listener = (family: 4 | 6, address: string, owner: { pid: number; cmdline: string; isInterceptor: boolean } | null = { pid: 7, cmdline: 'nc -l 24511', isInterceptor: false }) => ({ family, address, port: 24511, inode: Math.floor(Math.random() * 1e9), owner });

  it('a port held by another process is an error naming it', () => {
    const f = only(checkListener(facts({ listeners: [listener(4, '127.0.0.1')] }), CONFIG), 'error');
    expect(f.summary).toBe('127.0.0.1:24511 is taken: 127.0.0.1:24511 is listening, held by pid 7 (nc -l 24511); `run` would fail with EADDRINUSE');
  });

  it('wildcard listeners count, [::] for IPv4 too; other addresses do not', () => {
    expect(severities(checkListener(facts({ listeners: [listener(6, '::')] }), CONFIG))).toEqual(['error']);
    expect(severities(checkListener(facts({ listeners: [listener(4, '0.0.0.0', null)] }), CONFIG))).toEqual(['error']);
    expect(severities(checkListener(facts({ listeners: [listener(4, '198.18.1.1')] }), CONFIG))).toEqual(['ok']);
  });

  it('a port inside the ephemeral range is a warning with the reservation that fixes it', () => {
    const f = only(checkListener(facts({ portRange: { from: 20000, to: 30000 }, reservedPorts: [{ from: 8080, to: 8080 }] }), CONFIG), 'warn');
    expect(f.fix![0]).toBe('sysctl -w net.ipv4.ip_local_reserved_ports=8080,24511');
    expect(severities(checkListener(facts({ portRange: { from: 20000, to: 30000 }, reservedPorts: [{ from: 24000, to: 25000 }] }), CONFIG))).toEqual(['ok']);
  });
});

describe('ipv6', () => {
  it('an IPv6 listener needs IPv6 on lo', () => {
    expect(only(checkIpv6('disabled', CONFIG), 'error').fix![0]).toBe('sysctl -w net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.lo.disable_ipv6=0');
    expect(severities(checkIpv6('absent', CONFIG))).toEqual(['error']);
    expect(severities(checkIpv6('disabled', parseConfig('[listen]\naddress6 = false\n')))).toEqual(['ok']);
  });
});

describe('route table', () => {
  it('routes that are not ours mean someone else uses the table', () => {
    const f = facts({ routeTables: new Map([['4:4511', ok([{ dst: '198.18.9.0/24', dev: 'eth1' }])], ['6:4511', ok([])]]) });
    expect(only(checkRouteTable(f, CONFIG), 'error').summary).toMatch(/route table 4511 \(IPv4\) holds routes that are not ours \(`198.18.9.0\/24 dev eth1`\)/);
  });

  it('installed rules without our local route cannot deliver', () => {
    const f = running({ routeTables: new Map([['4:4511', ok([])], ['6:4511', ok([LOCAL_DEFAULT])]]) });
    expect(only(checkRouteTable(f, CONFIG), 'error').fix![0]).toBe('ip -4 route replace local 0.0.0.0/0 dev lo table 4511');
  });
});

describe('backend', () => {
  const probe = (over: Partial<BackendProbe>): BackendProbe => ({ address: '198.18.2.2', port: 8080, source: '192.0.2.1', result: 'connected', code: null, ms: 3, via: '198.18.2.1', timeoutMs: 3000, ...over });

  it('needs the daemon\'s rules to receive the reply', () => {
    expect(probeBlocker(facts(), CONFIG)).toMatch(/rules are not installed/);
    expect(probeBlocker(running(), CONFIG)).toBeNull();
    expect(probeBlocker(running({ ipRules: { 4: ok([...STANDARD_RULES]), 6: ok([...STANDARD_RULES]) } }), CONFIG)).toMatch(/our ip rule \(IPv4\) is missing/);
  });

  it('reports each outcome', () => {
    expect(severities(checkBackend(probe({}), null, CONFIG))).toEqual(['ok']);
    const timeout = only(checkBackend(probe({ result: 'timeout', code: 'ERR_CONNECT_TIMEOUT' }), null, CONFIG), 'error');
    expect(timeout.fix![0]).toBe('on the backend: ip route replace default via 198.18.2.1');
    expect(only(checkBackend(probe({ result: 'refused', code: 'ECONNREFUSED' }), null, CONFIG), 'warn').summary).toMatch(/the return path works, but nothing listens on port 8080/);
    expect(only(checkBackend(probe({ port: 22 }), null, CONFIG), 'warn').summary).toMatch(/not in intercept.targets/);
    expect(severities(checkBackend(null, 'because', CONFIG))).toEqual(['skip']);
  });
});
