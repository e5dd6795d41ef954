// The daemon as packaging/tproxy-interceptor.service runs it: a non-root user that owns only its
// state and runtime directories, with exactly the unit's ambient capabilities, its bounding set
// and no new privileges. It must start, install its rules, intercept, and remove its rules on
// SIGTERM. (setpriv stands in for systemd, which this machine does not run.)
import { chmod, chown, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { parseUnit, UNIT_FILE } from '../unit/packaging/unit-file.js';
import { Lab, ADDR, CLI, sawAddress } from './helpers/lab.js';

const unit = parseUnit(readFileSync(UNIT_FILE, 'utf8'));
const setting = (key: string): string => unit.get(`Service.${key}`)!.at(-1)!;
/** "CAP_NET_ADMIN CAP_NET_RAW" → "+net_admin,+net_raw" for setpriv. */
const capList = (key: string): string => setting(key).split(' ').map((c) => `+${c.replace(/^CAP_/, '').toLowerCase()}`).join(',');
const capBits = (key: string): bigint => setting(key).split(' ').reduce((acc, c) => acc | (1n << BigInt({ CAP_NET_ADMIN: 12, CAP_NET_RAW: 13 }[c]!)), 0n);

/** A uid no account has: a dedicated user, as far as the kernel can tell. */
const UID = 40000 + (process.pid % 10000);

function status(pid: number): Record<string, string> {
  return Object.fromEntries(readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').map((l) => l.split(':\t')).filter((kv) => kv.length === 2)) as Record<string, string>;
}

describe('the daemon as the systemd unit runs it', () => {
  let lab: Lab;
  let config: string;
  let state: string;
  let runtime: string;

  beforeAll(async () => {
    expect((await readFile('/etc/passwd', 'utf8')).split('\n').some((l) => l.split(':')[2] === String(UID))).toBe(false);
    lab = await Lab.create();
    await lab.startBackend([8080]);
    // StateDirectory= and RuntimeDirectory=: created by root, owned by the service user.
    await chmod(lab.dir, 0o755);
    state = path.join(lab.dir, 'state');
    runtime = path.join(lab.dir, 'run');
    await mkdir(state, { mode: 0o700 });
    await mkdir(runtime, { mode: 0o755 });
    await chown(state, UID, UID);
    await chown(runtime, UID, UID);
    config = path.join(lab.dir, 'service.toml');
    await writeFile(config, `
[[intercept.targets]]
cidr = "198.18.2.0/24"
ports = [8080]

[registry]
path = "${state}"
admin_socket = "${path.join(runtime, 'admin.sock')}"
`);
    await chmod(config, 0o644);
  });
  afterEach(async () => lab?.stopDaemons());
  afterAll(async () => lab?.destroy());

  it('starts, installs its rules, intercepts, and removes its rules on SIGTERM', async () => {
    const hard = Number(/^Max open files\s+\d+\s+(\d+)/m.exec(readFileSync('/proc/self/limits', 'utf8'))![1]);
    const prefix = [
      // LimitNOFILE sets both limits; here the soft one starts low to show the daemon raises it
      // without CAP_SYS_RESOURCE (this machine does not allow a hard limit above ${hard}).
      'prlimit', `--nofile=1024:${hard}`, '--',
      'setpriv', `--reuid=${UID}`, `--regid=${UID}`, '--clear-groups',
      `--inh-caps=-all,${capList('AmbientCapabilities')}`,
      `--ambient-caps=-all,${capList('AmbientCapabilities')}`,
      `--bounding-set=-all,${capList('CapabilityBoundingSet')}`,
      ...(setting('NoNewPrivileges') === 'yes' ? ['--no-new-privs'] : []),
    ];
    const daemon = await lab.startDaemon(config, [], prefix);
    const pid = daemon.child.pid!;
    const s = status(pid);
    expect(s['Uid']!.split('\t')).toEqual([String(UID), String(UID), String(UID), String(UID)]);
    expect(BigInt(`0x${s['CapEff']}`)).toBe(capBits('AmbientCapabilities'));
    expect(BigInt(`0x${s['CapBnd']}`)).toBe(capBits('CapabilityBoundingSet'));
    expect(s['NoNewPrivs']).toBe('1');
    expect(daemon.output()).toMatch(new RegExp(`"soft":${hard},"hard":${hard}`));

    expect(await lab.nftTables()).toContain('inet tproxy_interceptor');
    expect(await lab.ipRules(4)).toMatch(/fwmark 0x2000\/0x2000 lookup 4511/);
    const r = await lab.client(ADDR.backend, 8080);
    expect(r.error).toBeNull();
    expect(sawAddress(r)).toBe(ADDR.client);

    // What it created belongs to the service user; root (the operator) still reaches the admin API.
    const sock = await stat(path.join(runtime, 'admin.sock'));
    expect([sock.uid, sock.mode & 0o777]).toEqual([UID, 0o600]);
    expect((await stat(path.join(state, 'registry.db'))).uid).toBe(UID);
    const list = await lab.cli(['instances', 'list', '--json', '--config', config]);
    expect(JSON.parse(list.stdout)).toMatchObject({ instances: [], store: { kind: 'sqlite', state: 'ok' } });

    // ExecReload=: `reload` as the service user, and the daemon replaces its rules with only those capabilities.
    await writeFile(config, (await readFile(config, 'utf8')).replace('ports = [8080]', 'ports = [8080, 8443]'));
    const reload = await lab.exec(lab.ns.gateway, [...prefix.slice(prefix.indexOf('setpriv')), 'node', CLI, 'reload', '--config', config], { allowFail: true });
    expect(reload.stderr).toBe('');
    expect(reload.stdout).toMatch(/reloaded; changed intercept\.targets \(firewall rules replaced\)/);
    expect((await lab.exec(lab.ns.gateway, ['nft', 'list', 'table', 'inet', 'tproxy_interceptor'])).stdout).toMatch(/8443/);

    daemon.child.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
    expect(daemon.output()).toMatch(/"msg":"stopped; rules removed"/);
    expect(await lab.nftTables()).not.toContain('inet tproxy_interceptor');
    expect(await lab.ipRules(4)).not.toMatch(/lookup 4511/);
    expect((await lab.exec(lab.ns.gateway, ['ip', 'route', 'show', 'table', '4511'], { allowFail: true })).stdout.trim()).toBe('');
  });

  it('doctor, as that user, finds its capabilities sufficient', async () => {
    const r = await lab.exec(lab.ns.gateway, [
      'setpriv', `--reuid=${UID}`, `--regid=${UID}`, '--clear-groups',
      `--inh-caps=-all,${capList('AmbientCapabilities')}`, `--ambient-caps=-all,${capList('AmbientCapabilities')}`,
      `--bounding-set=-all,${capList('CapabilityBoundingSet')}`, '--no-new-privs',
      'node', CLI, 'doctor', '--config', config, '--json',
    ], { allowFail: true });
    const report = JSON.parse(r.stdout) as { findings: Array<{ check: string; severity: string }> };
    expect(report.findings.filter((f) => f.severity !== 'ok' && f.check !== 'backend')).toEqual([]);
    expect(r.code).toBe(0);
  });
});
