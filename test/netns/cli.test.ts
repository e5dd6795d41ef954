// The CLI as an operator meets it: config errors stop `run` before any rule is touched, `rules`
// needs no privileges, and an unreadable config names its path.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
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
