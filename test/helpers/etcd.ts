// A real single-member etcd (Debian's etcd-server) for one test file: on loopback with free ports,
// or inside a network namespace; its data in a temp dir that stop() keeps (restart() starts it
// again on the same data and ports) and destroy() removes.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import * as path from 'node:path';

export interface EtcdServer {
  /** Client URL to configure nodes with (for a namespace: of the first listen address). */
  readonly endpoint: string;
  readonly dataDir: string;
  /** Output so far (zap JSON lines). */
  output(): string;
  /** SIGTERM and wait: the data stays. */
  stop(): Promise<void>;
  /** Starts again on the same data and ports. */
  restart(): Promise<void>;
  destroy(): Promise<void>;
}

const ETCD = '/usr/bin/etcd';

export function requireEtcd(): void {
  if (spawnSync(ETCD, ['--version']).status !== 0) {
    throw new Error(`${ETCD} is missing: install Debian's etcd-server (bash scripts/install-deps.sh)`);
  }
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

/**
 * `ns` unset: loopback, free ports. `ns` set: inside that namespace, listening on all of its
 * addresses at 2379/2380; `advertise` is the address nodes use. `tls`: https for clients, which
 * must show a certificate signed by `ca`.
 */
export async function startEtcd(opts: { ns?: string; advertise?: string; tls?: { cert: string; key: string; ca: string } } = {}): Promise<EtcdServer> {
  requireEtcd();
  const dataDir = await mkdtemp(path.join(tmpdir(), 'tpi-etcd-'));
  const inNs = opts.ns !== undefined;
  const host = inNs ? (opts.advertise ?? '127.0.0.1') : '127.0.0.1';
  const clientPort = inNs ? 2379 : await freePort();
  const peerPort = inNs ? 2380 : await freePort();
  const listenHost = inNs ? '0.0.0.0' : '127.0.0.1';
  const scheme = opts.tls ? 'https' : 'http';
  const tlsArgs = opts.tls
    ? ['--cert-file', opts.tls.cert, '--key-file', opts.tls.key, '--trusted-ca-file', opts.tls.ca, '--client-cert-auth']
    : [];
  const args = [
    '--name', 'test',
    '--data-dir', dataDir,
    '--listen-client-urls', `${scheme}://${listenHost}:${clientPort}`,
    '--advertise-client-urls', `${scheme}://${host}:${clientPort}`,
    ...tlsArgs,
    '--listen-peer-urls', `http://127.0.0.1:${peerPort}`,
    '--initial-advertise-peer-urls', `http://127.0.0.1:${peerPort}`,
    '--initial-cluster', `test=http://127.0.0.1:${peerPort}`,
    '--logger', 'zap',
    '--log-outputs', 'stderr',
  ];
  let child: ChildProcess | null = null;
  let out = '';

  async function launch(): Promise<void> {
    const argv = inNs ? ['ip', ['netns', 'exec', opts.ns!, ETCD, ...args]] as const : [ETCD, args] as const;
    const c = spawn(argv[0], [...argv[1]], { stdio: ['ignore', 'pipe', 'pipe'] });
    child = c;
    const from = out.length;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`etcd did not start within 20 s:\n${out.slice(-4000)}`)), 20_000);
      const onData = (d: Buffer): void => {
        out += d.toString();
        if (out.indexOf('serving client traffic', from) !== -1) {
          clearTimeout(timer);
          resolve();
        }
      };
      c.stdout!.on('data', onData);
      c.stderr!.on('data', onData);
      c.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`etcd exited (${code ?? signal}) while starting:\n${out.slice(-4000)}`));
      });
    });
  }

  async function stop(): Promise<void> {
    const c = child;
    child = null;
    if (c === null || c.exitCode !== null || c.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => c.once('exit', () => resolve()));
    c.kill('SIGTERM');
    const timer = setTimeout(() => c.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
  }

  await launch();
  return {
    endpoint: `${scheme}://${host}:${clientPort}`,
    dataDir,
    output: () => out,
    stop,
    async restart() {
      await stop();
      out += '\n--- restart ---\n';
      await launch();
    },
    async destroy() {
      await stop();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}
