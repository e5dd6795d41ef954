// The iproute2 backend. install() is idempotent (rules are looked up before being added, since
// the kernel refuses an exact duplicate with EEXIST; routes use `replace`); remove() deletes
// exactly what install() adds and tolerates its absence. Main/local tables are never flushed.
// Needs root or CAP_NET_ADMIN.
import type { Logger } from 'pino';
import { createToolRunner, CommandError, type ExecFileFn } from '../firewall/exec-file.js';
import { routingInstallSteps, routingRemoveSteps, ruleMatches, type Family, type RoutingStep, type RoutingSpec, type RuleSpec } from './render.js';

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
  /** Which of the steps' rules exist already (one `ip rule show` per family). */
  const present = async (steps: readonly RoutingStep[]): Promise<Set<RuleSpec>> => {
    const out = new Set<RuleSpec>();
    const cache = new Map<Family, unknown[]>();
    for (const step of steps) {
      if (!('rule' in step)) continue;
      let existing = cache.get(step.rule.family);
      if (existing === undefined) {
        existing = await listRules(step.rule.family);
        cache.set(step.rule.family, existing);
      }
      if (existing.some((e) => ruleMatches(e, step.rule))) out.add(step.rule);
    }
    return out;
  };

  return {
    async install(spec) {
      const steps = routingInstallSteps(spec);
      const have = await present(steps);
      for (const step of steps) {
        if ('rule' in step && have.has(step.rule)) {
          logger.debug({ argv: step.argv }, 'ip rule already present');
          continue;
        }
        await runArgv(step.argv);
      }
      logger.info({ table: spec.routeTable, ipv6: spec.ipv6, localBackends: spec.localBackends, netns: opts.netns }, 'policy routing installed');
    },

    async remove(spec) {
      const steps = routingRemoveSteps(spec);
      const have = await present(steps);
      for (const step of steps) {
        if ('rule' in step) {
          if (have.has(step.rule)) await runArgv(step.argv);
          continue;
        }
        try {
          await runArgv(step.argv);
        } catch (err) {
          if (err instanceof CommandError && err.code === 'ERR_IP_FAILED' && ROUTE_ABSENT.test(err.stderr)) continue;
          throw err;
        }
      }
      logger.info({ table: spec.routeTable, netns: opts.netns }, 'policy routing removed');
    },
  };
}
