// doctor with intercept.backend = "iptables", once per variant: the kernel check runs the
// variant's own restore program (`--test`: the socket match, the TPROXY target, this config's
// rules), a missing variant is an error naming the package, and our installed chain is recognised
// (the backend probe runs, our own mark rule is no conflict) or its absence noticed.
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

describe.each([{ variant: 'nft' }, { variant: 'legacy' }])('doctor with backend = "iptables" ($variant)', ({ variant }) => {
  const CONFIG = `
[intercept]
backend = "iptables"
iptables_variant = "${variant}"

[[intercept.targets]]
cidr = "198.18.2.0/24"
ports = [8080]

[[intercept.targets]]
cidr = "fd00:18:2::/64"
ports = [8080]

[upstream]
connect_timeout = "2s"
`;
  let lab: Lab;
  let config: string;
  const undo: Array<() => Promise<unknown>> = [];
  const doctor = async (args: string[] = [], prefix: string[] = []): Promise<{ code: number; findings: Finding[] }> => {
    const r = await lab.exec(lab.ns.gateway, [...prefix, 'node', CLI, 'doctor', '--config', config, '--json', ...args], { allowFail: true });
    if (r.stdout.trim() === '') throw new Error(`doctor printed no report (exit ${r.code}): ${r.stderr}`);
    return { code: r.code, findings: (JSON.parse(r.stdout) as { findings: Finding[] }).findings };
  };
  const problems = (fs: Finding[]): Finding[] => fs.filter((f) => f.severity === 'error' || f.severity === 'warn');
  const of = (fs: Finding[], check: string): Finding[] => fs.filter((f) => f.check === check);
  const restore = (family: 4 | 6): string => `ip${family === 4 ? '' : '6'}tables-${variant}-restore`;

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

  it('passes on a good lab: the kernel check ran the variant\'s restore program, and changed nothing', async () => {
    const before = await lab.exec(lab.ns.gateway, ['nft', 'list', 'ruleset']);
    const r = await doctor();
    expect(problems(r.findings)).toEqual([]);
    expect(r.code).toBe(0);
    expect(of(r.findings, 'kernel')[0]!.summary).toMatch(new RegExp(`^${restore(4)} and ${restore(6)} \\(intercept\\.iptables_variant = "${variant}"\\) accept the \`socket\` match, the \`TPROXY\` target`));
    expect(of(r.findings, 'config')[0]!.summary).toMatch(new RegExp(`iptables \\(${variant}\\), chain tproxy_interceptor`));
    expect((await lab.exec(lab.ns.gateway, ['nft', 'list', 'ruleset'])).stdout).toBe(before.stdout);
    // No rule anywhere. (The legacy variant's --test makes the kernel instantiate its empty
    // x_tables mangle table, as any iptables-legacy command naming the table does.)
    for (const save of ['iptables-legacy-save', 'ip6tables-legacy-save', 'iptables-nft-save', 'ip6tables-nft-save']) {
      expect((await lab.exec(lab.ns.gateway, [save])).stdout).not.toMatch(/^-A /m);
    }
    expect((await lab.exec(lab.ns.gateway, ['cat', '/proc/net/ip_tables_names'])).stdout).toBe(variant === 'legacy' ? 'mangle\n' : '');
  });

  it('recognises our installed chain: the backend probe runs, our own mark rule is no conflict; without our jump the probe is skipped', async () => {
    const daemon = await lab.startDaemon(config);
    undo.push(async () => {
      daemon.child.kill('SIGTERM');
      await daemon.exited;
    });
    const r = await doctor(['--backend', `${ADDR.backend}:8080`]);
    expect(problems(r.findings)).toEqual([]);
    expect(r.code).toBe(0);
    expect(of(r.findings, 'backend')[0]!.summary).toMatch(/answered a connection from 192\.0\.2\.1 through this host/);
    expect(of(r.findings, 'fwmark')[0]!.severity).toBe('ok');
    // Someone deletes our jump: doctor no longer counts our rules as installed.
    await lab.exec(lab.ns.gateway, [`iptables-${variant}`, '-t', 'mangle', '-D', 'PREROUTING', '-j', 'tproxy_interceptor']);
    const gone = await doctor(['--backend', `${ADDR.backend}:8080`]);
    expect(of(gone.findings, 'backend')[0]).toMatchObject({ severity: 'skip', summary: expect.stringMatching(/the daemon's rules are not installed/) });
  });

  it('kernel: the variant\'s programs missing is an error naming the package', async () => {
    const bin = await mkdtemp(path.join(tmpdir(), 'tpi-doctor-ipt-'));
    undo.push(() => rm(bin, { recursive: true, force: true }));
    for (const tool of ['ip', 'nft', 'iptables-save', 'ip6tables-save']) {
      const where = (await lab.exec(lab.ns.gateway, ['sh', '-c', `command -v ${tool}`])).stdout.trim();
      await symlink(where, path.join(bin, tool));
    }
    await symlink(process.execPath, path.join(bin, 'node'));
    const r = await doctor([], ['env', `PATH=${bin}`]);
    expect(r.code).toBe(1);
    expect(of(r.findings, 'kernel')).toEqual([
      expect.objectContaining({
        severity: 'error',
        summary: `${restore(4)} not found: install the iptables package (intercept.iptables_variant = "${variant}" runs ${restore(4)})`,
        fix: ['apt-get install iptables', `or set intercept.iptables_variant = "${variant === 'legacy' ? 'nft' : 'legacy'}" if that variant is installed`],
      }),
    ]);
  });
});
