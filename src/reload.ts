// Live reload (SIGHUP, `tproxy-interceptor reload`): the config file `run` was started with is read
// and validated again; what it changes is applied, or nothing is.
//
// Order: parse and validate (ERR_CONFIG), refuse keys only a restart applies
// (ERR_RELOAD_RESTART_REQUIRED, naming them), then the log level, a new decision table and the
// loop threads' settings (interceptor.reconfigure), then one firewall transaction when the rules
// change. The table goes first: a new target is accepted by the threads before any packet for it
// is handed over, and a removed one is refused (reset) for the moment until the firewall stops
// handing it over, never relayed. If the firewall transaction fails, the table, settings and level
// go back to the running config's and the running rules stay (nftables: one transaction, nothing
// applied; iptables: one transaction per family, so the running rules are installed again).
// Established connections are never touched: the loop threads keep them, and replacing our table
// or chain in one transaction leaves their reply packets matched at every moment.
import type { Logger } from 'pino';
import type { Config } from './config.js';
import { diffConfig } from './config-diff.js';
import { loadConfig } from './config-parse.js';
import { InterceptorError } from './errors.js';
import type { Firewall, FirewallSpec } from './firewall/firewall.js';
import { hostAddresses, listenAddresses, warnTargetsContainingLocal } from './proxy/guard.js';

export interface ReloadResult {
  /** The file that was read. */
  readonly config: string;
  /** The keys whose new values are in force now (TOML names); empty: nothing changed. */
  readonly changed: readonly string[];
  /** Whether the firewall rules were replaced. */
  readonly firewall: boolean;
}

export interface Reloader {
  /** Reloads; one at a time (a reload asked for during another runs after it). Rejects with the reason when nothing was applied. */
  reload(): Promise<ReloadResult>;
  /** The config in force. */
  current(): Config;
  counts(): { readonly ok: number; readonly failed: number };
  /** From now on reloads are refused (ERR_STOPPING); resolves once the one in progress, if any, is done. */
  close(): Promise<void>;
}

export function createReloader(opts: {
  configPath: string;
  initial: Config;
  logger: Logger;
  interceptor: { reconfigure(config: Config): void };
  firewall: Firewall;
  firewallSpec: (config: Config) => FirewallSpec;
  /** Addresses of this host (the listeners' included), for the warning about targets containing them. */
  localAddresses?: () => string[];
}): Reloader {
  const { logger, configPath } = opts;
  let current = opts.initial;
  const counts = { ok: 0, failed: 0 };
  let tail: Promise<unknown> = Promise.resolve();
  let closed = false;

  const apply = async (): Promise<ReloadResult> => {
    const next = await loadConfig(configPath);
    if (next.intercept.targets.length === 0) {
      throw new InterceptorError('ERR_NO_TARGETS', `config: intercept.targets: ${configPath} has no [[intercept.targets]] entry; a running daemon needs at least one`);
    }
    const diff = diffConfig(current, next);
    if (diff.restart.length > 0) {
      throw new InterceptorError(
        'ERR_RELOAD_RESTART_REQUIRED',
        `${diff.restart.join(', ')} changed, which only a restart applies (systemctl restart tproxy-interceptor); nothing was reloaded` +
          (diff.live.length > 0 ? ` (also changed: ${diff.live.join(', ')})` : ''),
      );
    }
    if (diff.live.length === 0) return { config: configPath, changed: [], firewall: false };

    warnTargetsContainingLocal(logger, next.intercept.targets, opts.localAddresses?.() ?? [...hostAddresses(), ...listenAddresses(next.listen)]);
    const running = current;
    const level = logger.level;
    // The threads' reportOpen follows the level: set it first. Only when log.level changed in the
    // file: a level given with `run --log-level` stays until then.
    if (diff.live.includes('log.level')) logger.level = next.log.level;
    try {
      opts.interceptor.reconfigure(next);
    } catch (err) {
      logger.level = level;
      throw err;
    }
    if (diff.firewall) {
      try {
        await opts.firewall.install(opts.firewallSpec(next));
      } catch (err) {
        logger.level = level;
        opts.interceptor.reconfigure(running);
        await opts.firewall.install(opts.firewallSpec(running)).catch((again: unknown) => {
          logger.error({ err: again }, 'reload: reinstalling the running rules failed too; check the firewall (`tproxy-interceptor doctor`)');
        });
        throw err;
      }
    }
    current = next;
    return { config: configPath, changed: diff.live, firewall: diff.firewall };
  };

  return {
    reload() {
      if (closed) {
        logger.info({ config: configPath }, 'reload not done: the daemon is stopping');
        return Promise.reject(new InterceptorError('ERR_STOPPING', 'the daemon is stopping: nothing was reloaded'));
      }
      const run = tail.then(apply, apply).then(
        (r) => {
          counts.ok++;
          logger.info({ config: r.config, changed: r.changed, firewall: r.firewall }, r.changed.length === 0 ? 'config reloaded: nothing changed' : 'config reloaded');
          return r;
        },
        (err: unknown) => {
          counts.failed++;
          logger.error({ err, config: configPath }, 'reload failed; still running with the previous config');
          throw err;
        },
      );
      tail = run.catch(() => {});
      return run;
    },
    current: () => current,
    counts: () => ({ ...counts }),
    async close() {
      closed = true;
      await tail;
    },
  };
}
