// The CLI as an operator meets it: --help on every command, config errors stop `run` before any
// rule is touched (and are logged as a JSON line with their code), `rules` and `check` need no
// privileges, exit codes 0 / 1 / 2, and an unreadable config names its path.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { chmod, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { Lab, BASE_CONFIG, CLI } from './helpers/lab.js';

const execFileP = promisify(execFile);
const NOBODY = ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'];

async function run(argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await execFileP(argv[0]!, argv.slice(1));
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

describe('cli', () => {
  let lab: Lab;
  beforeAll(async () => {
    lab = await Lab.create();
  });
  afterEach(async () => lab?.stopDaemons());
  afterAll(async () => lab?.destroy());

  it('run with an invalid config exits 2 naming the key, and installs nothing', async () => {
    const config = await lab.writeConfig(BASE_CONFIG.replace('table = "tproxy_interceptor"', 'table = "tproxy_interceptor"\nmark = 0x3\nmask = 0x1'));
    const r = await lab.cli(['run', '--config', config], { allowFail: true });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/intercept\.mark/);
    const tables = await lab.exec(lab.ns.gateway, ['nft', 'list', 'tables']);
    expect(tables.stdout).not.toMatch(/tproxy_interceptor/);
  });

  it('run with a misspelt key suggests the right one', async () => {
    const config = await lab.writeConfig(BASE_CONFIG.replace('[upstream]', '[upstream]\nconect_timeout = "1s"'));
    const r = await lab.cli(['run', '--config', config], { allowFail: true });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/upstream\.conect_timeout/);
    expect(r.stderr).toMatch(/connect_timeout/);
  });

  it('run with a bad --drain exits 2 naming the flag, and installs nothing', async () => {
    const r = await lab.cli(['run', '--config', await lab.writeConfig(BASE_CONFIG), '--drain', 'soon'], { allowFail: true });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--drain: invalid duration "soon"/);
    expect((await lab.exec(lab.ns.gateway, ['nft', 'list', 'tables'])).stdout).not.toMatch(/tproxy_interceptor/);
  });

  it('rules prints the ruleset and routing commands without privileges', async () => {
    const config = path.join(lab.dir, 'readable.toml');
    await writeFile(config, BASE_CONFIG);
    await chmod(lab.dir, 0o755);
    await chmod(config, 0o644);
    const r = await run([...NOBODY, 'node', CLI, 'rules', '--config', config]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^add table inet tproxy_interceptor$/m);
    expect(r.stdout).toMatch(/tproxy ip to 127\.0\.0\.1:15001/);
    const routing = await run([...NOBODY, 'node', CLI, 'rules', '--config', config, '--routing']);
    expect(routing.code).toBe(0);
    expect(routing.stdout).toMatch(/^ip -4 rule add fwmark 0x2000\/0x2000 lookup 4511 priority 9000$/m);
    expect(routing.stdout).toMatch(/^ip -6 route replace local ::\/0 dev lo table 4511$/m);
  });

  it('what rules prints is accepted as printed: nft -f, nft -j -f, iptables-restore (both variants), sh', async () => {
    const nftConfig = await lab.writeConfig(BASE_CONFIG, 'nft.toml');
    const iptConfig = await lab.writeConfig(BASE_CONFIG.replace('[intercept]', '[intercept]\nbackend = "iptables"'), 'ipt.toml');
    const printed = async (config: string, ...args: string[]): Promise<string> => {
      const r = await lab.cli(['rules', '--config', config, ...args]);
      expect(r.stderr).toBe('');
      const file = path.join(lab.dir, `printed-${args.join('') || 'default'}-${path.basename(config)}`);
      await writeFile(file, r.stdout);
      return file;
    };
    const g = lab.ns.gateway;
    // check mode first (the kernel validates, nothing is committed), then for real
    await lab.exec(g, ['nft', '-c', '-f', await printed(nftConfig)]);
    await lab.exec(g, ['nft', '-j', '-c', '-f', await printed(nftConfig, '--format', 'json')]);
    await lab.exec(g, ['nft', '-j', '-f', await printed(nftConfig, '--format', 'json')]);
    await lab.exec(g, ['nft', '-f', await printed(nftConfig, '--format', 'nft')]);
    expect(await lab.nftTables()).toContain('inet tproxy_interceptor');
    await lab.exec(g, ['nft', 'delete', 'table', 'inet', 'tproxy_interceptor']);
    const v4 = await printed(iptConfig);
    const v6 = await printed(iptConfig, '--format', 'ip6tables');
    for (const variant of ['nft', 'legacy']) {
      await lab.exec(g, ['sh', '-c', `iptables-${variant}-restore --test --noflush < "$1"`, 'sh', v4]);
      await lab.exec(g, ['sh', '-c', `ip6tables-${variant}-restore --test --noflush < "$1"`, 'sh', v6]);
    }
    await lab.exec(g, ['sh', '-c', 'iptables-legacy-restore --noflush < "$1"', 'sh', v4]);
    const saved = await lab.exec(g, ['iptables-legacy-save', '-t', 'mangle']);
    expect(saved.stdout).toMatch(/^-A PREROUTING -j tproxy_interceptor$/m);
    await lab.exec(g, ['sh', '-c', 'printf "*mangle\\n-D PREROUTING -j tproxy_interceptor\\n-F tproxy_interceptor\\n-X tproxy_interceptor\\nCOMMIT\\n" | iptables-legacy-restore --noflush']);
    // the routing commands are a shell script that installs the policy routing
    await lab.exec(g, ['sh', '-e', await printed(nftConfig, '--routing')]);
    expect(await lab.ipRules(6)).toMatch(/fwmark 0x2000\/0x2000 lookup 4511/);
    await lab.exec(g, ['sh', '-c', 'ip -4 rule del priority 9000 && ip -6 rule del priority 9000']);
  });

  it('rules refuses a format of the other backend and an unknown one (exit 2)', async () => {
    const iptConfig = await lab.writeConfig(BASE_CONFIG.replace('[intercept]', '[intercept]\nbackend = "iptables"'), 'ipt2.toml');
    const other = await lab.cli(['rules', '--config', iptConfig, '--format', 'json'], { allowFail: true });
    expect(other.code).toBe(2);
    expect(other.stderr).toMatch(/intercept\.backend is "iptables": use --format iptables or ip6tables/);
    const unknown = await lab.cli(['rules', '--config', iptConfig, '--format', 'yaml'], { allowFail: true });
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/--format must be one of nft, json, iptables, ip6tables/);
  });

  it('--help on every command and subcommand: exit 0, its usage on stdout', async () => {
    const commands = [
      [], ['run'], ['rules'], ['check'], ['doctor'], ['reload'], ['status'], ['instances'],
      ...['add', 'list', 'show', 'remove', 'override', 'set-port-policy', 'clear-port-policy', 'get-port-policy'].map((c) => ['instances', c]),
    ];
    for (const argv of commands) {
      const r = await run([...NOBODY, 'node', CLI, ...argv, '--help']);
      expect({ argv, code: r.code, stderr: r.stderr }).toEqual({ argv, code: 0, stderr: '' });
      expect(r.stdout).toMatch(new RegExp(`^usage: tproxy-interceptor${argv.map((a) => ` ${a}`).join('')} `));
    }
    const top = await run(['node', CLI, '--help']);
    for (const c of ['run', 'rules', 'check', 'doctor', 'reload', 'status', 'instances']) expect(top.stdout).toMatch(new RegExp(`^  ${c} `, 'm'));
    expect((await run(['node', CLI, 'run', '--help'])).stdout).toMatch(/--log-level <level>/);
  });

  it('bad usage exits 2 with the command\'s usage; no command at all too', async () => {
    const none = await run(['node', CLI]);
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/^usage: tproxy-interceptor <command> \[options\]/);
    for (const [argv, problem] of [
      [['frobnicate'], /unknown command 'frobnicate'/],
      [['rules'], /rules: required option '--config <file>' not specified/],
      [['run', '--config', 'x.toml', '--log-level', 'loud'], /argument 'loud' is invalid\. Allowed choices are trace, debug/],
      [['status', '--config', 'x.toml', '--limit', 'many'], /--limit must be an integer/],
      [['instances', 'list'], /instances: required option '--config <file>' not specified/],
      [['instances', 'frob', '--config', 'x.toml'], /instances: unknown command "frob"/],
    ] as const) {
      const r = await run(['node', CLI, ...argv]);
      expect({ argv, code: r.code, stdout: r.stdout }).toEqual({ argv, code: 2, stdout: '' });
      expect(r.stderr).toMatch(problem);
      expect(r.stderr).toMatch(/^usage: tproxy-interceptor/m);
    }
  });

  it('check: a valid config and what run would install (exit 0), an invalid one and why (exit 2), without privileges', async () => {
    const good = path.join(lab.dir, 'check-good.toml');
    await writeFile(good, BASE_CONFIG.replace('[upstream]', '[metrics]\nlisten = "127.0.0.1:9464"\n\n[upstream]'));
    await chmod(lab.dir, 0o755);
    await chmod(good, 0o644);
    const r = await run([...NOBODY, 'node', CLI, 'check', '--config', good]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^${good.replace(/[.]/g, '\\.')}: valid; \`run\` would:$`, 'm'));
    expect(r.stdout).toMatch(/^  listen +127\.0\.0\.1:15001, \[::1\]:15001 /m);
    expect(r.stdout).toMatch(/^  firewall +nftables: table inet tproxy_interceptor, chain pre \(prerouting, priority -150\); 6 rules/m);
    expect(r.stdout).toMatch(/^  intercept +198\.18\.2\.0\/24 ports 8080-8081,9000-9010$/m);
    expect(r.stdout).toMatch(/^ +ip -4 rule add fwmark 0x2000\/0x2000 lookup 4511 priority 9000$/m);
    expect(r.stdout).toMatch(/^  metrics +http:\/\/127\.0\.0\.1:9464\/metrics/m);
    const json = JSON.parse((await run([...NOBODY, 'node', CLI, 'check', '--config', good, '--json'])).stdout);
    expect(json).toMatchObject({ valid: true, summary: { firewall: { backend: 'nftables', rules: 6 }, metrics: '127.0.0.1:9464' } });

    const bad = path.join(lab.dir, 'check-bad.toml');
    await writeFile(bad, BASE_CONFIG.replace('table = "tproxy_interceptor"', 'table = "tproxy_interceptor"\nmark = 0x3\nmask = 0x1'));
    await chmod(bad, 0o644);
    const b = await run([...NOBODY, 'node', CLI, 'check', '--config', bad]);
    expect(b.code).toBe(2);
    expect(b.stdout).toBe('');
    expect(b.stderr).toMatch(/config: intercept\.mark: .* \[ERR_CONFIG\]/);
    const bj = await run([...NOBODY, 'node', CLI, 'check', '--config', bad, '--json']);
    expect(bj.code).toBe(2);
    expect(JSON.parse(bj.stdout)).toMatchObject({ valid: false, error: { code: 'ERR_CONFIG', key: 'intercept.mark' } });
    const empty = path.join(lab.dir, 'check-empty.toml');
    await writeFile(empty, '[log]\nlevel = "info"\n');
    await chmod(empty, 0o644);
    const e = await run([...NOBODY, 'node', CLI, 'check', '--config', empty]);
    expect(e.code).toBe(2);
    expect(e.stderr).toMatch(/intercept\.targets: at least one \[\[intercept\.targets\]\] entry is required to run \[ERR_NO_TARGETS\]/);
  });

  it('a fatal start-up error is also a JSON line with its code; a runtime failure exits 1', async () => {
    const config = await lab.writeConfig(BASE_CONFIG.replace('table = "tproxy_interceptor"', 'table = "tproxy_interceptor"\nmark = 0x3\nmask = 0x1'), 'fatal.toml');
    const r = await lab.cli(['run', '--config', config], { allowFail: true });
    expect(r.code).toBe(2);
    const line = JSON.parse(r.stdout.trim().split('\n').pop()!) as { level: number; msg: string; code: string; err: { message: string } };
    expect(line).toMatchObject({ level: 60, msg: 'start failed', code: 'ERR_CONFIG' });
    expect(line.err.message).toMatch(/intercept\.mark/);
    // The listener's port taken: a runtime failure (exit 1), logged the same way with its code, nothing installed.
    const squatter = lab.spawn(lab.ns.gateway, ['node', '-e', "require('net').createServer().listen(15001, '127.0.0.1', () => console.log('listening'))"]);
    await squatter.waitFor('listening');
    const taken = await lab.cli(['run', '--config', await lab.writeConfig(BASE_CONFIG, 'taken.toml')], { allowFail: true });
    squatter.child.kill('SIGKILL');
    expect(taken.code).toBe(1);
    expect(taken.stderr).toMatch(/EADDRINUSE/);
    expect(JSON.parse(taken.stdout.trim().split('\n').pop()!)).toMatchObject({ level: 60, msg: 'start failed', code: 'EADDRINUSE' });
    expect((await lab.exec(lab.ns.gateway, ['nft', 'list', 'tables'])).stdout).not.toMatch(/tproxy_interceptor/);
  });

  it('run --log-level debug logs at debug, whatever log.level says', async () => {
    const daemon = await lab.startDaemon(await lab.writeConfig(`${BASE_CONFIG}\n[log]\nlevel = "warn"\n`, 'level.toml'), ['--log-level', 'debug']);
    expect(daemon.output()).toMatch(/"level":30,.*"msg":"running"/);
    daemon.child.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
  });

  it('an unreadable config names the path', async () => {
    const config = path.join(lab.dir, 'secret.toml');
    await writeFile(config, BASE_CONFIG);
    await chmod(lab.dir, 0o755);
    await chmod(config, 0o600);
    const r = await run([...NOBODY, 'node', CLI, 'rules', '--config', config]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(config);
    expect(r.stderr).toMatch(/permission denied/);
  });
});
