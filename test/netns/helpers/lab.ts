// A lab per test file: three uniquely named namespaces (client, gateway, backend) built by the
// same scripts/lab.sh as the demo, and every process started in them tracked for cleanup.
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { randomBytes } from 'node:crypto';

const execFileP = promisify(execFile);
export const ROOT = path.resolve(import.meta.dirname, '..', '..', '..');
export const CLI = path.join(ROOT, 'dist', 'cli.js');

export const ADDR = {
  client: '198.18.1.2',
  backend: '198.18.2.2',
  gatewayClientSide: '198.18.1.1',
  gatewayBackendSide: '198.18.2.1',
  client6: 'fd00:18:1::2',
  backend6: 'fd00:18:2::2',
} as const;

export interface Proc {
  readonly child: ChildProcess;
  readonly output: () => string;
  waitFor(text: string | RegExp, timeoutMs?: number): Promise<string>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export interface ClientResult {
  connected: boolean;
  /** The client's own port. */
  localPort: number | null;
  saw: { remote: string; local: string } | string | null;
  echoIntact: boolean | null;
  echoBytes?: number;
  bytesReceived: number;
  ended: boolean;
  error: string | null;
  ms: number;
}

export class Lab {
  readonly ns: { client: string; gateway: string; backend: string };
  readonly dir: string;
  private readonly procs = new Set<Proc>();
  private readonly daemons = new Set<Proc>();

  private constructor(readonly prefix: string, dir: string) {
    this.ns = { client: `${prefix}-c`, gateway: `${prefix}-g`, backend: `${prefix}-b` };
    this.dir = dir;
  }

  static async create(): Promise<Lab> {
    if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run \`npm run build\` before the netns tests`);
    // pid + random: parallel test files and leftovers from a crashed run never collide.
    const prefix = `tpi${process.pid.toString(36)}${randomBytes(2).toString('hex')}`;
    const dir = await mkdtemp(path.join(tmpdir(), `${prefix}-`));
    const lab = new Lab(prefix, dir);
    await execFileP('bash', [path.join(ROOT, 'scripts', 'lab.sh'), 'up', prefix]);
    return lab;
  }

  async exec(ns: string, argv: string[], opts: { allowFail?: boolean; input?: string } = {}): Promise<{ stdout: string; stderr: string; code: number }> {
    return new Promise((resolve, reject) => {
      const child = execFile('ip', ['netns', 'exec', ns, ...argv], { maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
        const code = err ? ((err as { code?: unknown }).code as number) ?? 1 : 0;
        if (err && !opts.allowFail) reject(new Error(`${argv.join(' ')} in ${ns} failed (${code}): ${stderr}`));
        else resolve({ stdout, stderr, code: typeof code === 'number' ? code : 1 });
      });
      if (opts.input !== undefined) child.stdin?.end(opts.input);
    });
  }

  spawn(ns: string, argv: string[], env: NodeJS.ProcessEnv = {}): Proc {
    const child = spawn('ip', ['netns', 'exec', ns, ...argv], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const waiters: Array<() => void> = [];
    const onData = (d: Buffer): void => {
      out += d.toString();
      for (const w of waiters.splice(0)) w();
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
      child.on('exit', (code, signal) => {
        for (const w of waiters.splice(0)) w();
        resolve({ code, signal });
      }),
    );
    const proc: Proc = {
      child,
      output: () => out,
      exited,
      waitFor: (text, timeoutMs = 15_000) =>
        new Promise((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error(`timed out waiting for ${String(text)}; output so far:\n${out}`)), timeoutMs);
          const check = (): void => {
            const hit = typeof text === 'string' ? out.includes(text) : text.test(out);
            if (hit) {
              clearTimeout(timer);
              resolve(out);
            } else if (child.exitCode !== null || child.signalCode !== null) {
              clearTimeout(timer);
              reject(new Error(`process exited (${child.exitCode ?? child.signalCode}) before ${String(text)}; output:\n${out}`));
            } else waiters.push(check);
          };
          check();
        }),
    };
    this.procs.add(proc);
    void exited.then(() => this.procs.delete(proc));
    return proc;
  }

  /** The whoami/echo backend on the backend host. */
  async startBackend(ports: number[], extraArgs: string[] = []): Promise<Proc> {
    const p = this.spawn(this.ns.backend, ['node', path.join(ROOT, 'scripts', 'peers', 'whoami-server.mjs'), ...ports.map(String), ...extraArgs]);
    await p.waitFor('ready');
    return p;
  }

  async client(host: string, port: number, opts: { bytes?: number; timeoutMs?: number; sendFirst?: string } = {}): Promise<ClientResult> {
    const argv = ['node', path.join(ROOT, 'scripts', 'peers', 'client.mjs'), host, String(port)];
    if (opts.bytes) argv.push('--bytes', String(opts.bytes));
    if (opts.timeoutMs) argv.push('--timeout', String(opts.timeoutMs));
    if (opts.sendFirst) argv.push('--send-first', opts.sendFirst);
    const { stdout } = await this.exec(this.ns.client, argv);
    return JSON.parse(stdout.trim().split('\n').pop()!) as ClientResult;
  }

  /**
   * Writes a config for the gateway (registry and admin socket inside the lab's temp dir).
   * `registryKeys`: more lines for the [registry] table (e.g. `store = "etcd"`).
   */
  async writeConfig(body: string, name = 'config.toml', registryKeys = ''): Promise<string> {
    const file = path.join(this.dir, name);
    const text = `${body}
[registry]
path = "${path.join(this.dir, 'registry')}"
admin_socket = "${path.join(this.dir, 'admin.sock')}"
${registryKeys}
`;
    await writeFile(file, text);
    return file;
  }

  /** Starts the daemon in the gateway namespace and waits until its rules are installed. */
  async startDaemon(configFile: string, extraArgs: string[] = [], spawnPrefix: string[] = []): Promise<Proc> {
    const p = this.spawn(this.ns.gateway, [...spawnPrefix, 'node', CLI, 'run', '--config', configFile, ...extraArgs]);
    this.daemons.add(p);
    void p.exited.then(() => this.daemons.delete(p));
    await p.waitFor('"msg":"running"');
    return p;
  }

  /** Kills daemons a test left running (a failed assertion skipped its SIGTERM). */
  async stopDaemons(): Promise<void> {
    for (const p of this.daemons) p.child.kill('SIGKILL');
    await Promise.all([...this.daemons].map((p) => p.exited));
  }

  async cli(args: string[], opts: { allowFail?: boolean } = {}): Promise<{ stdout: string; stderr: string; code: number }> {
    return this.exec(this.ns.gateway, ['node', CLI, ...args], opts);
  }

  async nftTables(): Promise<string[]> {
    const { stdout } = await this.exec(this.ns.gateway, ['nft', '-j', 'list', 'tables']);
    const json = JSON.parse(stdout) as { nftables: Array<{ table?: { family: string; name: string } }> };
    return json.nftables.filter((e) => e.table).map((e) => `${e.table!.family} ${e.table!.name}`);
  }

  async ipRules(family: 4 | 6 = 4): Promise<string> {
    return (await this.exec(this.ns.gateway, ['ip', `-${family}`, 'rule', 'show'])).stdout;
  }

  async destroy(): Promise<void> {
    for (const p of this.procs) p.child.kill('SIGKILL');
    await Promise.all([...this.procs].map((p) => p.exited));
    await execFileP('bash', [path.join(ROOT, 'scripts', 'lab.sh'), 'down', this.prefix]);
    await rm(this.dir, { recursive: true, force: true });
  }
}

export function sawAddress(r: ClientResult): string {
  if (!r.saw || typeof r.saw === 'string') throw new Error(`backend reported nothing usable: ${JSON.stringify(r)}`);
  return r.saw.remote.replace(/:\d+$/, '');
}

export const BASE_CONFIG = `
[listen]
address = "127.0.0.1"
port = 15001
address6 = "::1"

[intercept]
table = "tproxy_interceptor"

[[intercept.targets]]
cidr = "198.18.2.0/24"
ports = [8080, 8081, "9000-9010"]

[[intercept.targets]]
cidr = "fd00:18:2::/64"
ports = [8080, 8081]

[upstream]
connect_timeout = "2s"
`;
