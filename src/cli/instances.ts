// `tproxy-interceptor instances ...`: manage the registry of a running daemon through its admin
// socket. Input is validated here, before anything is sent; exit codes: 0 ok, 1 the daemon (or
// reaching it) failed, 2 bad usage.
import { parseArgs } from 'node:util';
import { createAdminClient } from '../admin/client.js';
import type { InstanceDetails } from '../admin/client.js';
import { InterceptorError } from '../errors.js';
import {
  formatPolicy,
  ID_PATTERN,
  normalizeComposeHash,
  normalizeIp,
  parsePolicyString,
  serializeInstance,
  serializePolicy,
} from '../registry/policy.js';
import type { RegistrationInput } from '../registry/registry.js';
import type { InstanceRecord, PortPolicy } from '../registry/types.js';

export interface InstancesCommandDeps {
  socketPath: string;
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
}

const PROG = 'tproxy-interceptor instances';

const USAGE: Record<string, string> = {
  add: `${PROG} add <instance_id> --app <app_id> --ip <addr> [--compose-hash <hex>] [--policy "8080:pp,8081"] [--restrict]`,
  list: `${PROG} list [--json]`,
  show: `${PROG} show <instance_id> [--json]`,
  remove: `${PROG} remove <instance_id>`,
  override: `${PROG} override <instance_id> --policy "8080:pp,8081" [--restrict] | --clear`,
};

const COMMAND_OPTIONS = {
  add: {
    app: { type: 'string' },
    ip: { type: 'string' },
    'compose-hash': { type: 'string' },
    policy: { type: 'string' },
    restrict: { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  },
  list: { json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
  show: { json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
  remove: { help: { type: 'boolean', short: 'h' } },
  override: {
    policy: { type: 'string' },
    restrict: { type: 'boolean' },
    clear: { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  },
} as const;

type Command = keyof typeof COMMAND_OPTIONS;

/** Bad command-line input: reported with the usage line, exit code 2, nothing sent. */
class UsageError extends Error {
  constructor(
    message: string,
    readonly command: Command | null,
  ) {
    super(message);
  }
}

type Values = Record<string, string | boolean | undefined>;

export async function runInstancesCommand(argv: string[], deps: InstancesCommandDeps): Promise<number> {
  const out = (s: string): void => void deps.stdout.write(`${s}\n`);
  const err = (s: string): void => void deps.stderr.write(`${s}\n`);

  const [name, ...rest] = argv;
  if (name === '--help' || name === '-h' || name === 'help') {
    out(usageText());
    return 0;
  }

  let action: () => Promise<void>;
  try {
    if (name === undefined) throw new UsageError('missing command', null);
    if (!Object.hasOwn(COMMAND_OPTIONS, name)) throw new UsageError(`unknown command "${name}"`, null);
    const command = name as Command;
    const { values, positionals } = parse(command, rest);
    if (values.help) {
      out(`usage: ${USAGE[command]}`);
      return 0;
    }
    action = plan(command, values, positionals, deps.socketPath, out);
  } catch (e) {
    if (e instanceof UsageError) {
      err(`${PROG}: ${e.message}`);
      err(e.command ? `usage: ${USAGE[e.command]}` : usageText());
      return 2;
    }
    throw e;
  }

  try {
    await action();
    return 0;
  } catch (e) {
    if (e instanceof InterceptorError) {
      err(`${PROG} ${name}: ${e.code}: ${e.message}`);
      return 1;
    }
    err(`${PROG} ${name}: ${e instanceof Error ? e.message : String(e)}`);
    return 1;
  }
}

function usageText(): string {
  return ['usage:', ...Object.values(USAGE).map((u) => `  ${u}`)].join('\n');
}

function parse(command: Command, args: string[]): { values: Values; positionals: string[] } {
  try {
    const { values, positionals } = parseArgs({
      args,
      options: COMMAND_OPTIONS[command],
      allowPositionals: true,
      strict: true,
    });
    return { values: values as Values, positionals };
  } catch (e) {
    // parseArgs throws TypeErrors with ERR_PARSE_ARGS_* codes and messages that name the option.
    throw new UsageError((e as Error).message, command);
  }
}

function wantPositionals(command: Command, positionals: string[], names: string[]): string[] {
  if (positionals.length < names.length) {
    throw new UsageError(`missing <${names[positionals.length]}>`, command);
  }
  if (positionals.length > names.length) {
    throw new UsageError(`unexpected argument "${positionals[names.length]}"`, command);
  }
  for (const [i, p] of positionals.entries()) {
    if (p === '') throw new UsageError(`<${names[i]}> must not be empty`, command);
  }
  return positionals;
}

function checkId(command: Command, what: string, value: string): void {
  if (!ID_PATTERN.test(value)) {
    throw new UsageError(`${what} ${JSON.stringify(value)} must be 1..128 characters of [A-Za-z0-9._:-]`, command);
  }
}

function stringOpt(command: Command, values: Values, key: string, required: true): string;
function stringOpt(command: Command, values: Values, key: string, required: false): string | undefined;
function stringOpt(command: Command, values: Values, key: string, required: boolean): string | undefined {
  const v = values[key];
  if (v === undefined) {
    if (required) throw new UsageError(`missing required --${key}`, command);
    return undefined;
  }
  return v as string;
}

function policyOpt(command: Command, text: string, restrict: boolean): PortPolicy {
  try {
    return parsePolicyString(text, restrict);
  } catch (e) {
    // The message names the offending item, e.g. `port policy: "80:foo": flag must be ...`.
    throw new UsageError(`--policy: ${(e as Error).message}`, command);
  }
}

/** Validates everything and returns what to do; throws UsageError before anything is sent. */
function plan(command: Command, values: Values, positionals: string[], socketPath: string, out: (s: string) => void): () => Promise<void> {
  const client = () => createAdminClient(socketPath);
  switch (command) {
    case 'add': {
      const [instanceId] = wantPositionals(command, positionals, ['instance_id']) as [string];
      checkId(command, '<instance_id>', instanceId);
      const appId = stringOpt(command, values, 'app', true);
      checkId(command, '--app', appId);
      const ipText = stringOpt(command, values, 'ip', true);
      const ip = normalizeIp(ipText);
      if (ip === null) throw new UsageError(`--ip ${JSON.stringify(ipText)} is not an IPv4 or IPv6 address`, command);
      const hashText = stringOpt(command, values, 'compose-hash', false);
      const hash = hashText === undefined ? undefined : normalizeComposeHash(hashText);
      if (hash === null) {
        throw new UsageError(`--compose-hash must be 64 hex digits (a SHA-256), got ${JSON.stringify(hashText)}`, command);
      }
      const policyText = stringOpt(command, values, 'policy', false);
      const restrict = values.restrict === true;
      const input: RegistrationInput = { instanceId, appId, ip };
      if (hash !== undefined) input.composeHash = hash;
      if (policyText !== undefined) {
        // --restrict with a policy is the policy's restrict_mode.
        input.policy = policyOpt(command, policyText, restrict);
      } else if (restrict) {
        // Without one it flags the instance: fail closed until its policy is learned.
        input.restrict = true;
      }
      return async () => {
        const record = await client().addInstance(input);
        out(`registered ${record.instanceId} (app ${record.appId}, ip ${record.ip}, policy ${policyText_(record.reportedPolicy)})`);
      };
    }
    case 'list': {
      wantPositionals(command, positionals, []);
      const json = values.json === true;
      return async () => {
        const { instances: records, store } = await client().listWithStore();
        if (json) out(JSON.stringify({ instances: records.map((r) => serializeInstance(r)), store }, null, 2));
        else {
          if (store !== null && store.state !== 'ok') {
            out(`store: ${store.kind} ${store.state} since ${time(store.since)} (${store.error ?? 'no detail'}): writes fail; this node decides from its last copy`);
          }
          out(renderTable(records));
        }
      };
    }
    case 'show': {
      const [instanceId] = wantPositionals(command, positionals, ['instance_id']) as [string];
      const json = values.json === true;
      return async () => {
        const details = await client().getInstance(instanceId);
        out(json ? JSON.stringify(detailsJson(details), null, 2) : renderDetails(details));
      };
    }
    case 'remove': {
      const [instanceId] = wantPositionals(command, positionals, ['instance_id']) as [string];
      return async () => {
        await client().removeInstance(instanceId);
        out(`removed ${instanceId}`);
      };
    }
    case 'override': {
      const [instanceId] = wantPositionals(command, positionals, ['instance_id']) as [string];
      const policyText = stringOpt(command, values, 'policy', false);
      const clear = values.clear === true;
      if (clear && policyText !== undefined) throw new UsageError('--clear and --policy exclude each other', command);
      if (clear && values.restrict) throw new UsageError('--restrict goes with --policy, not --clear', command);
      if (!clear && policyText === undefined) throw new UsageError('missing --policy (or --clear)', command);
      if (clear) {
        return async () => {
          await client().clearOverride(instanceId);
          out(`override of ${instanceId} cleared`);
        };
      }
      const policy = policyOpt(command, policyText!, values.restrict === true);
      return async () => {
        const record = await client().setOverride(instanceId, policy);
        out(`override of ${record.instanceId} set: ${policyText_(record.override)}`);
      };
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Rendering.

function policyText_(p: PortPolicy | null): string {
  if (!p) return 'unknown';
  const text = formatPolicy(p) || '(empty)';
  return p.restrictMode ? `${text} [restrict]` : text;
}

function renderTable(records: InstanceRecord[]): string {
  const header = ['INSTANCE', 'APP', 'IP', 'COMPOSE HASH', 'POLICY', 'OVERRIDE', 'RESTRICTED'];
  const rows = [...records]
    .sort((a, b) => a.instanceId.localeCompare(b.instanceId))
    .map((r) => [
      r.instanceId,
      r.appId,
      r.ip,
      r.composeHash ? r.composeHash.slice(0, 12) : '-',
      policyText_(r.reportedPolicy),
      r.override ? policyText_(r.override) : '-',
      r.restricted ? 'yes' : 'no',
    ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)].join('\n');
}

function describeDecision(d: { kind: string; reason: string }): string {
  const what = d.kind === 'proxy' ? 'PROXY header' : d.kind === 'refuse' ? 'refused' : 'transparent';
  return `${what} (${d.reason})`;
}

function time(ms: number | null): string {
  return ms === null ? '-' : new Date(ms).toISOString();
}

function renderDetails(d: InstanceDetails): string {
  const r = d.record;
  const rows: [string, string][] = [
    ['instance', r.instanceId],
    ['app', r.appId],
    ['ip', r.ip],
    ['compose hash', r.composeHash ?? '-'],
    ['restricted', r.restricted ? 'yes' : 'no'],
    [
      'reported policy',
      r.reportedPolicy
        ? `${policyText_(r.reportedPolicy)} (from ${r.policySource ?? '?'}${r.policyComposeHash ? `, compose hash ${r.policyComposeHash.slice(0, 12)}` : ''})`
        : 'unknown',
    ],
    ['override', r.override ? policyText_(r.override) : '-'],
    ['effective policy', d.effectivePolicy.policy ? `${policyText_(d.effectivePolicy.policy)} (${d.effectivePolicy.source})` : 'unknown'],
    ['registered', time(r.registeredAt)],
    ['updated', time(r.updatedAt)],
  ];
  const lines = rows.map(([k, v]) => `${k.padEnd(18)}${v}`);
  lines.push('decisions');
  for (const p of d.decisions) lines.push(`  ${String(p.port).padEnd(16)}${describeDecision(p)}`);
  if (d.unlistedPorts) lines.push(`  ${'other ports'.padEnd(16)}${describeDecision(d.unlistedPorts)}`);
  const f = d.fetch;
  if (!f) {
    lines.push(`${'fetch'.padEnd(18)}-`);
  } else {
    let text = `${f.state}, ${f.attempts} attempt(s)`;
    if (f.lastError) text += `, last error ${f.lastError.code}${f.lastError.permanent ? ' (permanent)' : ''}: ${f.lastError.message}`;
    if (f.nextAttemptAt !== null) text += `, next attempt ${time(f.nextAttemptAt)}`;
    if (f.learnedAt !== null) text += `, learned ${time(f.learnedAt)}`;
    lines.push(`${'fetch'.padEnd(18)}${text}`);
  }
  return lines.join('\n');
}

function detailsJson(d: InstanceDetails): unknown {
  return {
    instance: serializeInstance(d.record),
    effective_policy: {
      source: d.effectivePolicy.source,
      policy: d.effectivePolicy.policy ? serializePolicy(d.effectivePolicy.policy) : null,
    },
    decisions: d.decisions,
    unlisted_ports: d.unlistedPorts,
    fetch: d.fetch
      ? {
          state: d.fetch.state,
          attempts: d.fetch.attempts,
          last_error: d.fetch.lastError,
          next_attempt_at: d.fetch.nextAttemptAt,
          learned_at: d.fetch.learnedAt,
        }
      : null,
  };
}
