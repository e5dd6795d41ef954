// The iproute2 backend. install() is idempotent (rules are looked up before being added, since
// the kernel refuses an exact duplicate with EEXIST; routes use `replace`); remove() deletes
// exactly what install() adds and tolerates its absence. Main/local tables are never flushed.
// Needs root or CAP_NET_ADMIN.
import type { Logger } from 'pino';
import { createToolRunner, CommandError, type ExecFileFn } from '../firewall/exec-file.js';
import {
  renderRoutingPlan,
  routeDelArgv,
  routeReplaceArgv,
  ruleAddArgv,
  ruleDelArgv,
  ruleMatches,
  type Family,
  type RoutingSpec,
  type RuleSpec,
} from './render.js';

export type { RoutingSpec } from './render.js';

export interface Routing {
  install(spec: RoutingSpec): Promise<void>;
  remove(spec: RoutingSpec): Promise<void>;
}

export interface IpRoutingOptions {
  logger: Logger;
  /** default 'ip' */
  ipPath?: string;
  /** Run inside this network namespace (`ip netns exec <ns> ip …`); for tests and the lab. */
  netns?: string;
  execFile?: ExecFileFn;
}

/**
 * What `ip route del` says when the route (or its whole table) is already gone:
 * ESRCH "No such process", ENOENT, and "FIB table does not exist" for a table never created.
 */
const ROUTE_ABSENT = /No such process|No such file or directory|FIB table does not exist/;

export function createIpRouting(opts: IpRoutingOptions): Routing {
  const { logger } = opts;
  const ipPath = opts.ipPath ?? 'ip';
  const run = createToolRunner({ tool: 'ip', path: ipPath, pkg: 'iproute2', netns: opts.netns, ipPath, execFile: opts.execFile });
  /** render.ts argv start with the program name; the runner supplies the real one. */
  const runArgv = (argv: readonly string[]) => run(argv.slice(1));

  const listRules = async (family: Family): Promise<unknown[]> => {
    // -N: numeric table ids, whatever /etc/iproute2/rt_tables names them
    const { stdout } = await run([`-${family}`, '-N', '-j', 'rule', 'show']);
    const parsed: unknown = JSON.parse(stdout.trim() === '' ? '[]' : stdout);
    return Array.isArray(parsed) ? parsed : [];
  };
  const present = async (rules: readonly RuleSpec[]): Promise<Map<RuleSpec, boolean>> => {
    const out = new Map<RuleSpec, boolean>();
    const cache = new Map<Family, unknown[]>();
    for (const rule of rules) {
      let existing = cache.get(rule.family);
      if (existing === undefined) {
        existing = await listRules(rule.family);
        cache.set(rule.family, existing);
      }
      out.set(rule, existing.some((e) => ruleMatches(e, rule)));
    }
    return out;
  };

  return {
    async install(spec) {
      const plan = renderRoutingPlan(spec);
      const have = await present(plan.rules);
      for (const family of [4, 6] as const) {
        for (const route of plan.routes) if (route.family === family) await runArgv(routeReplaceArgv(route));
        for (const rule of plan.rules) {
          if (rule.family !== family) continue;
          if (have.get(rule)) {
            logger.debug({ argv: ruleAddArgv(rule) }, 'ip rule already present');
            continue;
          }
          await runArgv(ruleAddArgv(rule));
        }
      }
      logger.info({ table: spec.routeTable, ipv6: spec.ipv6, localBackends: spec.localBackends, netns: opts.netns }, 'policy routing installed');
    },

    async remove(spec) {
      const plan = renderRoutingPlan(spec);
      const have = await present(plan.rules);
      for (const rule of plan.rules) if (have.get(rule)) await runArgv(ruleDelArgv(rule));
      for (const route of plan.routes) {
        try {
          await runArgv(routeDelArgv(route));
        } catch (err) {
          if (err instanceof CommandError && err.code === 'ERR_IP_FAILED' && ROUTE_ABSENT.test(err.stderr)) continue;
          throw err;
        }
      }
      logger.info({ table: spec.routeTable, netns: opts.netns }, 'policy routing removed');
    },
  };
}
