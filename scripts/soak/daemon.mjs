// The daemon under test, driven only from outside: `tproxy-interceptor run` in the gateway
// namespace with a config the soak writes, `instances ...` for the registry, signals, /proc for
// its descriptors and memory, `nft`/`ip` for the rules it leaves. Its JSON log lines are read for
// figures (close reasons, errors), never for a verdict.
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { runCommand, sampleTree } from '../bench/procs.mjs';
import { renderDaemonConfig, TABLE, ROUTE_TABLE } from './plan.mjs';
import { normalizeRuleset, summarizeLogLine } from './gateway-state.mjs';

/** Warning and error lines kept per daemon. */
const MAX_KEPT_LINES = 20_000;

/**
 * @param {{ lab: ReturnType<import('./lab.mjs').createLab>, tracker: ReturnType<import('../bench/procs.mjs').createProcessTracker>,
 *   dir: string, cli: string, settings: Array<[string, string]> }} o
 */
export function createDaemonControl({ lab, tracker, dir, cli, settings }) {
  const gw = lab.ns.gateway;
  /** Every daemon started, for the log figures. */
  const all = [];

  /**
   * Writes a config (renderDaemonConfig options plus the run's --set keys) to config-FILE.toml.
   * `options.name` names its registry and admin socket: configs with the same name share them.
   * @returns {{ file: string, socketPath: string, text: string }}
   */
  function writeConfig(fileName, options) {
    const file = path.join(dir, `config-${fileName}.toml`);
    const text = renderDaemonConfig({ dir, settings, ...options });
    writeFileSync(file, text);
    return { file, socketPath: path.join(dir, `admin-${options.name ?? 'main'}.sock`), text };
  }

  /**
   * Starts `run` and waits for "running". Resolves { started: true, daemon } or, when it exits
   * first, { started: false, code, output } (a refused config, for instance).
   */
  async function tryStart(name, config, { timeoutMs = 30_000 } = {}) {
    const configFile = config.file;
    const proc = tracker.start(`daemon ${name}`, gw, ['node', cli, 'run', '--config', configFile, '--drain', '2s']);
    const logs = { reasons: {}, levels: {}, messages: {}, errors: {}, warnings: [] };
    proc.onLine((line) => {
      summarizeLogLine(line, logs);
      // Warnings and errors, for reading after the run (a connection that failed, by its peer).
      if (logs.warnings.length < MAX_KEPT_LINES && /^\{"level":[4-6]\d,/.test(line)) logs.warnings.push(line);
    });
    try {
      await proc.waitFor(/"msg":"running"/, timeoutMs);
    } catch (err) {
      if (!proc.alive()) {
        const info = await proc.exited;
        return { started: false, code: info.code, signal: info.signal, output: proc.output() };
      }
      await proc.stop(2000);
      throw err;
    }
    const daemon = { name, proc, pid: proc.pid, configFile, socketPath: config.socketPath, logs };
    all.push(daemon);
    return { started: true, daemon };
  }

  async function start(name, config, opts) {
    const r = await tryStart(name, config, opts);
    if (!r.started) throw new Error(`daemon ${name} did not start (exit ${r.code ?? r.signal}): ${r.output.trim().slice(-1500)}`);
    return r.daemon;
  }

  return {
    all,
    writeConfig,
    tryStart,
    start,
    /** SIGTERM, then its exit code and how long it took. */
    async stop(daemon, graceMs = 15_000) {
      const t0 = Date.now();
      daemon.proc.child.kill('SIGTERM');
      const timer = setTimeout(() => daemon.proc.child.kill('SIGKILL'), graceMs);
      const info = await daemon.proc.exited;
      clearTimeout(timer);
      return { ...info, ms: Date.now() - t0 };
    },
    async kill9(daemon) {
      daemon.proc.child.kill('SIGKILL');
      return daemon.proc.exited;
    },
    alive: (daemon) => daemon.proc.alive(),
    /** Descriptors and resident memory of the daemon (and any worker processes it runs). */
    sample(daemon) {
      const s = sampleTree(daemon.pid);
      return { fds: s.fds, rssKiB: s.rssKiB, at: Date.now() };
    },
    /** `tproxy-interceptor instances ARGS --config FILE`: { code, stdout, stderr, ms }. */
    async instances(daemon, args, { timeoutMs = 20_000 } = {}) {
      const t0 = Date.now();
      const r = await runCommand(gw, ['node', cli, 'instances', ...args, '--config', daemon.configFile], { timeoutMs, allowFail: true }).catch((err) => ({
        code: null,
        stdout: err.stdout ?? '',
        stderr: err.message,
      }));
      return { ...r, ms: Date.now() - t0 };
    },
    /** Our nftables table (normalised, without handles or counters), the tables, ip rules and our route table. */
    async gatewayState(table = TABLE, routeTable = ROUTE_TABLE) {
      const inGw = (argv) => runCommand(gw, argv, { timeoutMs: 10_000, allowFail: true });
      const tables = await inGw(['nft', '-j', 'list', 'tables']);
      const ours = await inGw(['nft', '-j', 'list', 'table', 'inet', table]);
      const rules4 = await inGw(['ip', '-4', 'rule', 'show']);
      const rules6 = await inGw(['ip', '-6', 'rule', 'show']);
      const routes4 = await inGw(['ip', '-4', 'route', 'show', 'table', String(routeTable)]);
      const routes6 = await inGw(['ip', '-6', 'route', 'show', 'table', String(routeTable)]);
      return {
        tables: tableNames(tables.stdout),
        table: ours.code === 0 ? normalizeRuleset(ours.stdout) : null,
        rules4: rules4.stdout.trim().split('\n').filter(Boolean),
        rules6: rules6.stdout.trim().split('\n').filter(Boolean),
        routes4: routes4.stdout.trim().split('\n').filter(Boolean),
        routes6: routes6.stdout.trim().split('\n').filter(Boolean),
      };
    },
  };
}

function tableNames(json) {
  try {
    return JSON.parse(json).nftables.filter((e) => e.table).map((e) => `${e.table.family} ${e.table.name}`);
  } catch {
    return [];
  }
}
