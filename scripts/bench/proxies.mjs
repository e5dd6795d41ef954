// Bringing up and tearing down each proxy in the gateway namespace, with its nftables table and
// policy routing. Every setup returns { pid, notes, teardown }, and teardown undoes exactly what
// setup did, in reverse order, even when setup failed halfway.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { INTERCEPTED_PORTS, LAB, PIPE_SIZE } from './plan.mjs';
import { fillTemplate, haproxyUpstream, renderDaemonConfig, renderGuardTable, renderMarkTable, renderTproxyTable } from './render.mjs';
import { runCommand, waitUntil } from './procs.mjs';
import { summarizeFailure } from './parse.mjs';

export const GUARD_TABLE = 'tpibench_guard';
const PROXY_TABLE = 'tpibench_proxy';
const DAEMON_TABLE = 'tpibench_tpi';
// Our mark and routing table for the HAProxy/nginx paths (the daemon uses its defaults 0x2000/4511).
const MARK = 0x2;
const ROUTE_TABLE = 102;
const HAPROXY_PORT = 15002;
const DAEMON_PORT = 15001;
// Splice pipes HAProxy may keep (2 descriptors each): enough for the measured streams, and small
// enough that maxconn fits the descriptor limit (by default it reserves maxconn/4 pipes).
const HAPROXY_MAXPIPES = 256;

/** A service died during setup: the message is the line that says why, the detail all of its output. */
export class ServiceExitError extends Error {
  constructor(proc) {
    super(`${proc.name} exited: ${summarizeFailure(proc.output())}`);
    this.code = 'ERR_BENCH_SERVICE_EXIT';
    this.detail = proc.output().trim().slice(-2000);
  }
}

/** Whether a Unix socket accepts a connection (closed again at once). */
function accepting(socketPath) {
  return new Promise((resolve) => {
    const c = net.connect({ path: socketPath }, () => {
      c.destroy();
      resolve(true);
    });
    c.on('error', () => resolve(false));
  });
}

const TEMPLATES = path.join(path.dirname(fileURLToPath(import.meta.url)), 'templates');
const template = (name) => readFileSync(path.join(TEMPLATES, name), 'utf8');

/**
 * @param {{ ns: { gateway: string }, dir: string, tracker: ReturnType<import('./procs.mjs').createProcessTracker>,
 *   cli: string, threads: number | null, log: (s: string) => void, nofile: number, maxConnections: number }} ctx
 *   nofile: the descriptor limit the proxies get; maxConnections: connections they must hold at once
 */
export function createProxies(ctx) {
  const gw = ctx.ns.gateway;
  const inGw = (argv, opts) => runCommand(gw, argv, { timeoutMs: 15_000, ...opts });

  /** Applies nft text (one transaction) from a file. */
  async function nftApply(name, text) {
    const file = path.join(ctx.dir, `${name}.nft`);
    writeFileSync(file, text);
    await inGw(['nft', '-f', file]);
  }

  async function listening(port) {
    const { stdout } = await inGw(['ss', '-Hltn', `sport = :${port}`]);
    return stdout.trim() !== '';
  }

  /** Runs undo steps in reverse; failures are collected, never thrown, so cleanup goes on. */
  function undoStack() {
    const steps = [];
    return {
      push: (what, fn) => steps.push({ what, fn }),
      async run() {
        const failed = [];
        for (const { what, fn } of steps.reverse()) {
          try {
            await fn();
          } catch (err) {
            failed.push(`${what}: ${err.message}`);
          }
        }
        steps.length = 0;
        if (failed.length > 0) ctx.log(`  teardown problems: ${failed.join('; ')}`);
        return failed;
      },
    };
  }

  async function withUndo(setup) {
    const undo = undoStack();
    try {
      const r = await setup(undo);
      return { ...r, teardown: () => undo.run() };
    } catch (err) {
      await undo.run();
      throw err;
    }
  }

  async function installGuard(undo) {
    await nftApply('guard', renderGuardTable({ table: GUARD_TABLE, cidr: LAB.backendNet, ports: INTERCEPTED_PORTS }));
    undo.push('guard table', () => inGw(['nft', 'delete', 'table', 'inet', GUARD_TABLE]));
  }

  async function installLocalRoute(undo) {
    await inGw(['ip', 'rule', 'add', 'pref', '100', 'fwmark', `0x${MARK.toString(16)}/0x${MARK.toString(16)}`, 'lookup', String(ROUTE_TABLE)]);
    undo.push('fwmark rule', () => inGw(['ip', 'rule', 'del', 'pref', '100']));
    await inGw(['ip', 'route', 'add', 'local', '0.0.0.0/0', 'dev', 'lo', 'table', String(ROUTE_TABLE)]);
    undo.push('local route', () => inGw(['ip', 'route', 'flush', 'table', String(ROUTE_TABLE)]));
  }

  function startService(undo, name, argv) {
    const proc = ctx.tracker.start(name, gw, argv);
    undo.push(`stop ${name}`, () => proc.stop(5000));
    return proc;
  }

  async function waitListening(proc, port) {
    await waitUntil(`${proc.name} listening on ${port}`, async () => {
      if (!proc.alive()) throw new ServiceExitError(proc);
      return listening(port);
    }, 10_000);
  }

  return {
    /** pp: send a PROXY v2 header from the gateway's address instead of spoofing the client's. */
    haproxy: (pp = false) =>
      withUndo(async (undo) => {
        const cfg = path.join(ctx.dir, pp ? 'haproxy-gateway-pp.cfg' : 'haproxy-gateway.cfg');
        const maxconn = ctx.maxConnections + 50;
        writeFileSync(cfg, fillTemplate(template('haproxy-gateway.cfg'), {
          MAXCONN: maxconn, MAXPIPES: HAPROXY_MAXPIPES, PIPE_SIZE, LISTEN_ADDRESS: '127.0.0.1', LISTEN_PORT: HAPROXY_PORT, ...haproxyUpstream(pp),
        }));
        await installGuard(undo);
        await installLocalRoute(undo);
        const proc = startService(undo, 'haproxy', ['haproxy', '-db', '-f', cfg]);
        await waitListening(proc, HAPROXY_PORT);
        await nftApply('proxy', renderTproxyTable({
          table: PROXY_TABLE, cidr: LAB.backendNet, ports: INTERCEPTED_PORTS, listenAddress: '127.0.0.1', listenPort: HAPROXY_PORT, mark: MARK,
        }));
        undo.push('proxy table', () => inGw(['nft', 'delete', 'table', 'inet', PROXY_TABLE]));
        const version = (await runCommand(null, ['haproxy', '-v'])).stdout.split('\n')[0];
        return { pid: proc.pid, output: proc.output, notes: [
          `${version}; nbthread 2, maxconn ${maxconn}, option splice-request + splice-response, tune.pipesize ${PIPE_SIZE}, tproxy → 127.0.0.1:${HAPROXY_PORT} transparent, ` +
            (pp ? 'send-proxy-v2 from the gateway\'s address to an HAProxy accept-proxy front on the backend for iperf3 (extra hop on the backend host), nginx `listen proxy_protocol` for wrk' : 'usesrc clientip'),
        ] };
      }),

    nginx: () =>
      withUndo(async (undo) => {
        const cfg = path.join(ctx.dir, 'nginx-gateway.conf');
        const listens = INTERCEPTED_PORTS.map((p) => `        listen ${p} reuseport backlog=8192;`).join('\n');
        writeFileSync(cfg, fillTemplate(template('nginx-gateway.conf'), { NOFILE: ctx.nofile, DIR: ctx.dir, WORKER_CONNECTIONS: Math.max(1024, ctx.nofile - 100), LISTENS: listens }));
        await installGuard(undo);
        const proc = startService(undo, 'nginx', ['nginx', '-c', cfg, '-e', path.join(ctx.dir, 'nginx-gateway.log')]);
        await waitListening(proc, INTERCEPTED_PORTS[0]);
        await installLocalRoute(undo);
        // The SYN-ACK and every later segment nginx sends from the backend's address must pass
        // the kernel's source-address check, which for a socket without IP_TRANSPARENT means the
        // address must be local: declare the backend's address local in the `local` table (the
        // table that check consults), and keep the gateway's own routing to it (forwarding,
        // nginx's upstream connections) by looking up `main` first for that destination.
        await inGw(['ip', 'rule', 'add', 'pref', '150', 'to', LAB.backend, 'lookup', 'main']);
        undo.push('rule to backend → main', () => inGw(['ip', 'rule', 'del', 'pref', '150']));
        await inGw(['ip', 'rule', 'add', 'pref', '200', 'lookup', 'local']);
        undo.push('local rule at 200', () => inGw(['ip', 'rule', 'del', 'pref', '200']));
        await inGw(['ip', 'rule', 'del', 'pref', '0', 'lookup', 'local']);
        undo.push('local rule back at 0', () => inGw(['ip', 'rule', 'add', 'pref', '0', 'lookup', 'local']));
        await inGw(['ip', 'route', 'add', 'local', LAB.backend, 'dev', 'lo', 'table', 'local']);
        undo.push('backend address local', () => inGw(['ip', 'route', 'del', 'local', LAB.backend, 'dev', 'lo', 'table', 'local']));
        await nftApply('proxy', renderMarkTable({ table: PROXY_TABLE, cidr: LAB.backendNet, ports: INTERCEPTED_PORTS, mark: MARK }));
        undo.push('proxy table', () => inGw(['nft', 'delete', 'table', 'inet', PROXY_TABLE]));
        const version = (await runCommand(null, ['nginx', '-v'])).stderr.trim();
        return {
          pid: proc.pid,
          output: proc.output,
          notes: [
            `${version}; 2 workers, reuseport, proxy_half_close; delivered by fwmark → \`local 0.0.0.0/0 dev lo\` to 0.0.0.0 listeners, plus \`local ${LAB.backend}\` in table local (behind an ip rule sending that destination to main) so that nginx's non-transparent accepted sockets may answer from it`,
          ],
        };
      }),

    daemon: (pp) =>
      withUndo(async (undo) => {
        if (!existsSync(ctx.cli)) throw new Error(`${ctx.cli} is missing: \`npm run build\` did not produce it`);
        const dir = path.join(ctx.dir, pp ? 'daemon-pp' : 'daemon');
        const cfg = `${dir}.toml`;
        writeFileSync(cfg, renderDaemonConfig({ table: DAEMON_TABLE, cidr: LAB.backendNet, ports: INTERCEPTED_PORTS, listenPort: DAEMON_PORT, dir, threads: ctx.threads, pipeSize: PIPE_SIZE }));
        await installGuard(undo);
        const proc = startService(undo, 'tproxy-interceptor', ['node', ctx.cli, 'run', '--config', cfg, '--drain', '0ms']);
        // Whatever stop left behind (a crash, a kill after the grace time): its table, rule, routes.
        undo.push('daemon leftovers', async () => {
          await inGw(['nft', 'delete', 'table', 'inet', DAEMON_TABLE], { allowFail: true });
          for (let i = 0; i < 4; i++) {
            const r = await inGw(['ip', 'rule', 'del', 'fwmark', '0x2000/0x2000', 'lookup', '4511'], { allowFail: true });
            if (r.code !== 0) break;
          }
          await inGw(['ip', 'route', 'flush', 'table', '4511'], { allowFail: true });
        });
        // The admin socket is the last thing `run` opens: rules and routes are in place once it
        // accepts (the file exists from bind(), a moment before listen()).
        const sock = path.join(dir, 'admin.sock');
        await waitUntil('the daemon to start (admin socket)', () => {
          if (!proc.alive()) throw new ServiceExitError(proc);
          return existsSync(sock) && accepting(sock);
        }, 20_000, 20);
        const policy = pp ? '5202:pp,8080:pp,9000:pp' : '5201,8081,9000';
        await inGw(['node', ctx.cli, 'instances', 'add', 'bench', '--app', 'bench', '--ip', LAB.backend, '--policy', policy, '--config', cfg], { timeoutMs: 20_000 });
        return {
          pid: proc.pid,
          output: proc.output,
          notes: [`loop threads ${ctx.threads ?? 'one per CPU'} (run to completion, splice), pipe_size ${PIPE_SIZE}, log level warn, instance policy "${policy}"${pp ? '; PROXY v2 to an HAProxy accept-proxy front on the backend for iperf3 (extra hop on the backend host), nginx `listen proxy_protocol` for wrk' : ''}`],
        };
      }),
  };
}
