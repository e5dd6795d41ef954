// doctor on a real (namespaced) gateway: it passes on a good lab, and each check fails on a lab
// broken the way an operator's host breaks. Every breakage is built in this file's namespaces
// and undone; where doctor prints a command that fixes it, the test runs that command and
// doctor passes again.
import { mkdtemp, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Lab, ADDR, CLI } from './helpers/lab.js';

interface Finding {
  check: string;
  severity: 'ok' | 'warn' | 'error' | 'skip';
  summary: string;
  fix?: string[];
}
interface Report {
  ok: boolean;
  errors: number;
  warnings: number;
  findings: Finding[];
}

// The defaults (mark 0x2000/0x2000, port 24511, table 4511) with the lab's targets.
const CONFIG = `
[[intercept.targets]]
cidr = "198.18.2.0/24"
ports = [8080]

[[intercept.targets]]
cidr = "fd00:18:2::/64"
ports = [8080]

[upstream]
connect_timeout = "2s"
`;

describe('doctor', () => {
  let lab: Lab;
  let config: string;
  const undo: Array<() => Promise<unknown>> = [];
  const gw = (...argv: string[]) => lab.exec(lab.ns.gateway, argv);
  /** Runs a breakage now and its reversal after the test, whatever happens. */
  const breakWith = async (argv: string[], reverse: string[], ns?: string): Promise<void> => {
    await lab.exec(ns ?? lab.ns.gateway, argv);
    undo.push(() => lab.exec(ns ?? lab.ns.gateway, reverse, { allowFail: true }));
  };

  async function doctor(args: string[] = [], prefix: string[] = []): Promise<{ code: number; report: Report; stderr: string }> {
    const r = await lab.exec(lab.ns.gateway, [...prefix, 'node', CLI, 'doctor', '--config', config, '--json', ...args], { allowFail: true });
    if (r.stdout.trim() === '') throw new Error(`doctor printed no report (exit ${r.code}): ${r.stderr}`);
    return { code: r.code, report: JSON.parse(r.stdout) as Report, stderr: r.stderr };
  }
  const problems = (report: Report): Finding[] => report.findings.filter((f) => f.severity === 'error' || f.severity === 'warn');
  const of = (report: Report, check: string): Finding[] => report.findings.filter((f) => f.check === check);
  /** The daemon, stopped with SIGTERM after the test so that its rules go with it. */
  const startDaemon = async (): Promise<void> => {
    const daemon = await lab.startDaemon(config);
    undo.push(async () => {
      daemon.child.kill('SIGTERM');
      await daemon.exited;
    });
  };
  /** Runs a fix doctor printed, as argv in the gateway (or another namespace). */
  const runFix = (fix: string, ns?: string) => lab.exec(ns ?? lab.ns.gateway, fix.split(' '));

  beforeAll(async () => {
    lab = await Lab.create();
    config = await lab.writeConfig(CONFIG);
    await lab.startBackend([8080]);
  });
  afterEach(async () => {
    for (const step of undo.splice(0).reverse()) await step();
    await lab.stopDaemons();
  });
  afterAll(async () => lab?.destroy());

  it('passes on a good lab: every check ok, the backend probe skipped without --backend', async () => {
    const r = await doctor();
    expect(problems(r.report)).toEqual([]);
    expect(r.code).toBe(0);
    expect(r.report.findings.map((f) => f.check)).toEqual(['config', 'capabilities', 'kernel', 'ip-rules', 'fwmark', 'rp-filter', 'route-localnet', 'listener', 'ipv6', 'route-table', 'backend']);
    expect(of(r.report, 'backend')[0]!.severity).toBe('skip');
    // The text report says the same for people.
    const text = await lab.cli(['doctor', '--config', config]);
    expect(text.stdout).toMatch(/^ok +kernel +nftables accepts the `socket` and `tproxy` expressions/m);
    expect(text.stdout).toMatch(/\nno errors\n$/);
  });

  it('passes with the daemon running, and the probe sees the backend\'s replies come back through the gateway', async () => {
    await startDaemon();
    const r = await doctor(['--backend', `${ADDR.backend}:8080`]);
    expect(problems(r.report)).toEqual([]);
    expect(r.code).toBe(0);
    expect(of(r.report, 'listener')[0]!.summary).toMatch(/held by the running tproxy-interceptor/);
    expect(of(r.report, 'backend')[0]!.summary).toMatch(/answered a connection from 192\.0\.2\.1 through this host/);
    // Nothing of the probe's stays behind: the daemon's table is the only one.
    expect(await lab.nftTables()).toEqual(['inet tproxy_interceptor']);
  });

  it('config: no targets', async () => {
    const empty = await lab.writeConfig('[log]\nlevel = "info"\n', 'empty.toml');
    const r = await lab.exec(lab.ns.gateway, ['node', CLI, 'doctor', '--config', empty, '--json'], { allowFail: true });
    expect(r.code).toBe(1);
    expect((JSON.parse(r.stdout) as Report).findings.find((f) => f.check === 'config')!.severity).toBe('error');
  });

  it('kernel: nft missing', async () => {
    const bin = await mkdtemp(path.join(tmpdir(), 'tpi-doctor-bin-'));
    undo.push(() => rm(bin, { recursive: true, force: true }));
    const ip = (await lab.exec(lab.ns.gateway, ['sh', '-c', 'command -v ip'])).stdout.trim();
    await symlink(ip, path.join(bin, 'ip'));
    await symlink(process.execPath, path.join(bin, 'node'));
    const r = await doctor([], ['env', `PATH=${bin}`]);
    const kernel = of(r.report, 'kernel');
    expect(kernel).toEqual([expect.objectContaining({ severity: 'error', summary: 'nft not found: install the nftables package', fix: ['apt-get install nftables'] })]);
    expect(r.code).toBe(1);
  });

  it('capabilities: without CAP_NET_ADMIN doctor says so, and skips what it cannot test', async () => {
    const r = await doctor([], ['setpriv', '--bounding-set=-net_admin,-net_raw']);
    expect(of(r.report, 'capabilities')[0]).toMatchObject({ severity: 'error', summary: expect.stringMatching(/lacks CAP_NET_ADMIN/) });
    expect(of(r.report, 'kernel')[0]!.severity).toBe('skip');
    expect(r.code).toBe(1);
  });

  it('ip-rules: a higher-priority `fwmark` rule on our bits (the issue\'s `lookup 200`), and the printed fix', async () => {
    await breakWith(['ip', 'route', 'add', 'default', 'via', ADDR.backend, 'table', '200'], ['ip', 'route', 'del', 'default', 'table', '200']);
    await breakWith(['ip', 'rule', 'add', 'fwmark', '0x2000/0x2000', 'lookup', '200', 'priority', '100'], ['ip', 'rule', 'del', 'priority', '100']);
    const r = await doctor();
    expect(r.code).toBe(1);
    const [f] = of(r.report, 'ip-rules');
    expect(f).toMatchObject({ severity: 'error', summary: expect.stringMatching(/priority 100 fwmark 0x2000\/0x2000 lookup 200 comes before ours \(priority 9000\)/) });
    expect(f!.fix![0]).toBe('ip -4 rule del priority 100 fwmark 0x2000/0x2000 lookup 200');
    await runFix(f!.fix![0]!);
    const again = await doctor();
    expect(problems(again.report)).toEqual([]);
  });

  it('fwmark: iptables and nftables rules that set our bit, named by owner; the suggested bit passes', async () => {
    await breakWith(['iptables', '-t', 'mangle', '-N', 'KUBE-MARK-TEST'], ['iptables', '-t', 'mangle', '-X', 'KUBE-MARK-TEST']);
    await breakWith(['iptables', '-t', 'mangle', '-A', 'KUBE-MARK-TEST', '-j', 'MARK', '--or-mark', '0x2000'], ['iptables', '-t', 'mangle', '-F', 'KUBE-MARK-TEST']);
    await breakWith(['nft', 'add table ip other; add chain ip other pre { type filter hook prerouting priority -100; }; add rule ip other pre meta mark set meta mark | 0x2000'], ['nft', 'delete', 'table', 'ip', 'other']);
    const r = await doctor();
    expect(r.code).toBe(1);
    const errors = of(r.report, 'fwmark').filter((f) => f.severity === 'error').map((f) => f.summary);
    expect(errors).toEqual([
      expect.stringMatching(/^kube-proxy \(iptables-save mangle KUBE-MARK-TEST\) sets 0x2000\/0x2000, sharing bits 0x2000/),
      expect.stringMatching(/^nft ip other pre sets bits 0x2000, sharing bits 0x2000/),
    ]);
    const fix = of(r.report, 'fwmark')[0]!.fix![0]!;
    expect(fix).toBe('use a bit nobody uses: intercept.mark = 0x1000 and intercept.mask = 0x1000');
    config = await lab.writeConfig(CONFIG.replace('[upstream]', '[intercept]\nmark = 0x1000\nmask = 0x1000\n\n[upstream]'), 'mark-0x1000.toml');
    try {
      expect(problems((await doctor()).report)).toEqual([]);
    } finally {
      config = await lab.writeConfig(CONFIG);
    }
  });

  it('rp-filter: src_valid_mark drops intercepted packets; doctor names it and its fix makes connections work', async () => {
    await startDaemon();
    await breakWith(['sysctl', '-qw', 'net.ipv4.conf.all.src_valid_mark=1'], ['sysctl', '-qw', 'net.ipv4.conf.all.src_valid_mark=0']);
    expect((await lab.client(ADDR.backend, 8080, { timeoutMs: 1500 })).error).toBe('timeout');
    const r = await doctor();
    expect(r.code).toBe(1);
    const [f] = of(r.report, 'rp-filter');
    expect(f).toMatchObject({ severity: 'error', summary: expect.stringMatching(/src_valid_mark is on for eth0, eth1/) });
    await runFix(f!.fix![0]!);
    expect((await lab.client(ADDR.backend, 8080)).error).toBeNull();
    expect(problems((await doctor()).report)).toEqual([]);
  });

  it('route-localnet: a warning (CVE-2020-8558), not a failure', async () => {
    await breakWith(['sysctl', '-qw', 'net.ipv4.conf.eth0.route_localnet=1'], ['sysctl', '-qw', 'net.ipv4.conf.eth0.route_localnet=0']);
    const r = await doctor();
    const [f] = of(r.report, 'route-localnet');
    expect(f).toMatchObject({ severity: 'warn', fix: ['sysctl -w net.ipv4.conf.eth0.route_localnet=0'] });
    expect(r.code).toBe(0);
    await runFix(f!.fix![0]!);
    expect(problems((await doctor()).report)).toEqual([]);
  });

  it('listener: the port taken by another process, and the port inside the ephemeral range', async () => {
    const squatter = lab.spawn(lab.ns.gateway, ['node', '-e', "require('net').createServer().listen(24511, '127.0.0.1', () => console.log('listening'))"]);
    await squatter.waitFor('listening');
    const taken = await doctor();
    expect(taken.code).toBe(1);
    expect(of(taken.report, 'listener')[0]).toMatchObject({
      severity: 'error',
      summary: expect.stringMatching(new RegExp(`^127\\.0\\.0\\.1:24511 is taken: .* held by pid ${squatter.child.pid} \\(node -e `)),
    });
    squatter.child.kill('SIGKILL');
    await squatter.exited;

    await breakWith(['sysctl', '-qw', 'net.ipv4.ip_local_port_range=20000 30000'], ['sysctl', '-qw', 'net.ipv4.ip_local_port_range=32768 60999']);
    undo.push(() => gw('sysctl', '-qw', 'net.ipv4.ip_local_reserved_ports='));
    const ephemeral = await doctor();
    const [f] = of(ephemeral.report, 'listener');
    expect(f).toMatchObject({ severity: 'warn', fix: ['sysctl -w net.ipv4.ip_local_reserved_ports=24511', 'or set listen.port outside the range'] });
    await runFix(f!.fix![0]!);
    expect(problems((await doctor()).report)).toEqual([]);
  });

  it('ipv6: disabled on lo while listen.address6 is set', async () => {
    // Disabling IPv6 drops the lab's addresses: re-enable first, then put them back (undo runs last-in first).
    undo.push(() => gw('ip', '-6', 'addr', 'replace', 'fd00:18:2::1/64', 'dev', 'eth1', 'nodad'));
    undo.push(() => gw('ip', '-6', 'addr', 'replace', 'fd00:18:1::1/64', 'dev', 'eth0', 'nodad'));
    await breakWith(['sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.lo.disable_ipv6=1'], ['sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=0', 'net.ipv6.conf.lo.disable_ipv6=0']);
    const r = await doctor();
    expect(r.code).toBe(1);
    const [f] = of(r.report, 'ipv6');
    expect(f).toMatchObject({ severity: 'error', summary: expect.stringMatching(/IPv6 is disabled on lo/) });
    await runFix(f!.fix![0]!);
    expect(of((await doctor()).report, 'ipv6')[0]!.severity).toBe('ok');
  });

  it('route-table: routes of someone else in our table; our local route gone while the rules are installed', async () => {
    await breakWith(['ip', 'route', 'add', '198.18.9.0/24', 'dev', 'eth1', 'table', '4511'], ['ip', 'route', 'del', '198.18.9.0/24', 'dev', 'eth1', 'table', '4511']);
    const foreign = await doctor();
    expect(foreign.code).toBe(1);
    expect(of(foreign.report, 'route-table')[0]!.summary).toMatch(/route table 4511 \(IPv4\) holds routes that are not ours \(`198\.18\.9\.0\/24 dev eth1`\)/);
    await undo.pop()!();

    await startDaemon();
    await gw('ip', '-4', 'route', 'del', 'local', '0.0.0.0/0', 'dev', 'lo', 'table', '4511');
    const missing = await doctor();
    expect(missing.code).toBe(1);
    const [f] = of(missing.report, 'route-table');
    expect(f).toMatchObject({ severity: 'error', fix: ['ip -4 route replace local 0.0.0.0/0 dev lo table 4511', 'or restart the daemon: `run` installs it'] });
    await runFix(f!.fix![0]!);
    expect(problems((await doctor()).report)).toEqual([]);
  });

  it('backend: replies that do not come back through the gateway; the printed route fixes it', async () => {
    await startDaemon();
    // The backend's default route points at a neighbour that does not exist.
    await breakWith(['ip', 'route', 'replace', 'default', 'via', '198.18.2.77'], ['ip', 'route', 'replace', 'default', 'via', ADDR.gatewayBackendSide], lab.ns.backend);
    const r = await doctor(['--backend', ADDR.backend]);
    expect(r.code).toBe(1);
    const [f] = of(r.report, 'backend');
    expect(f).toMatchObject({ severity: 'error', summary: expect.stringMatching(/no answer from 198\.18\.2\.2:8080 within 3000 ms to a SYN from 192\.0\.2\.1/) });
    expect(f!.fix![0]).toBe(`on the backend: ip route replace default via ${ADDR.gatewayBackendSide}`);
    await runFix(f!.fix![0]!.replace('on the backend: ', ''), lab.ns.backend);
    const again = await doctor(['--backend', ADDR.backend]);
    expect(problems(again.report)).toEqual([]);
  });

  it('backend: without the daemon\'s rules the probe is skipped, and bad --backend values are usage errors', async () => {
    const r = await doctor(['--backend', `${ADDR.backend}:8080`]);
    expect(of(r.report, 'backend')[0]).toMatchObject({ severity: 'skip', summary: expect.stringMatching(/rules are not installed/) });
    const bad = await lab.cli(['doctor', '--config', config, '--backend', 'nowhere:80'], { allowFail: true });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--backend: "nowhere:80" is not ADDR\[:PORT\]/);
  });
});
