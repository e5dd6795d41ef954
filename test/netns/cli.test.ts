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
    expect(r.stdout).toMatch(/"tproxy"/);
    expect(r.stdout).toMatch(/ip -4 rule add fwmark 0x2000\/0x2000 lookup 4511/);
    expect(r.stdout).toMatch(/ip -6 route replace local ::\/0 dev lo table 4511/);
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
