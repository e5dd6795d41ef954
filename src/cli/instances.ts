// `tproxy-interceptor instances ...`: manage the registry of a running daemon through its admin
// socket. Input is validated here, before anything is sent; exit codes: 0 ok, 1 the daemon (or
// reaching it) failed, 2 bad usage.
import { parseArgs } from 'node:util';
import { createAdminClient } from '../admin/client.js';
import { detailsToWire, instanceToWire, portPolicyViewToWire, type InstanceDetails, type PortPolicyView } from '../admin/wire.js';
import { InterceptorError } from '../errors.js';
import { formatPolicy, parsePolicyString } from '../registry/policy.js';
import { RegistrationError, validateRegistration, type RegistrationInput } from '../registry/registration.js';
import type { InstanceRecord, PortPolicy } from '../registry/types.js';

export interface InstancesCommandDeps {
  socketPath: string;
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
}

const PROG = 'tproxy-interceptor instances';

const USAGE: Record<string, string> = {
  add: `${PROG} add <instance_id> --app <app_id> --ip <addr> [--compose-hash <hex>] [--policy "8080:pp,8081" [--restrict]]`,
  list: `${PROG} list [--json]`,
  show: `${PROG} show <instance_id> [--json]`,
  remove: `${PROG} remove <instance_id>`,
  override: `${PROG} override <instance_id> --policy "8080:pp,8081" [--restrict] | --clear`,
  'set-port-policy': `${PROG} set-port-policy <instance_id> --policy "8080:pp,8081" [--restrict]`,
  'clear-port-policy': `${PROG} clear-port-policy <instance_id>`,
  'get-port-policy': `${PROG} get-port-policy <instance_id> [--json]`,
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
  'set-port-policy': { policy: { type: 'string' }, restrict: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
  'clear-port-policy': { help: { type: 'boolean', short: 'h' } },
  'get-port-policy': { json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
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
      const input: RegistrationInput = { instanceId, appId: stringOpt(command, values, 'app', true), ip: stringOpt(command, values, 'ip', true) };
      const hashText = stringOpt(command, values, 'compose-hash', false);
      if (hashText !== undefined) input.composeHash = hashText;
      const policyText = stringOpt(command, values, 'policy', false);
      if (policyText !== undefined) {
        // --restrict is the reported policy's restrict_mode.
        input.policy = policyOpt(command, policyText, values.restrict === true);
      } else if (values.restrict === true) {
        throw new UsageError(
          '--restrict goes with --policy (it is the policy\'s restrict_mode); without --policy every port is refused until the policy is learned anyway',
          command,
        );
      }
      // The daemon validates again (and checks the address against this host's): this catches
      // mistakes before anything is sent.
      try {
        validateRegistration(input);
      } catch (e) {
        if (e instanceof RegistrationError) throw new UsageError(`${FLAG_OF[e.field] ?? e.field}: ${e.problem}`, command);
        throw e;
      }
      return async () => {
        const record = await client().addInstance(input);
        out(`registered ${record.instanceId} (app ${record.appId}, ip ${record.ip}, policy ${policyText_(record.reportedPolicy)})`);
        if (record.composeHash === null && record.reportedPolicy === null) {
          out(`note: no --compose-hash: every port of ${record.instanceId} is refused until its policy is set (see \`instances show ${record.instanceId}\`)`);
        }
      };
    }
    case 'list': {
      wantPositionals(command, positionals, []);
      const json = values.json === true;
      return async () => {
        const { instances: records, store } = await client().listWithStore();
        if (json) out(JSON.stringify({ instances: records.map(instanceToWire), store }, null, 2));
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
        out(json ? JSON.stringify(detailsToWire(details), null, 2) : renderDetails(details));
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
    case 'set-port-policy': {
      const [instanceId] = wantPositionals(command, positionals, ['instance_id']) as [string];
      const policy = policyOpt(command, stringOpt(command, values, 'policy', true), values.restrict === true);
      return async () => {
        await client().setInstancePortPolicy(instanceId, policy);
        out(`port policy of ${instanceId} set: ${policyText_(policy)}`);
      };
    }
    case 'clear-port-policy': {
      const [instanceId] = wantPositionals(command, positionals, ['instance_id']) as [string];
      return async () => {
        await client().clearInstancePortPolicy(instanceId);
        out(`port policy of ${instanceId} cleared: the reported or learned policy decides again`);
      };
    }
    case 'get-port-policy': {
      const [instanceId] = wantPositionals(command, positionals, ['instance_id']) as [string];
      const json = values.json === true;
      return async () => {
        const view = await client().getInstancePortPolicy(instanceId);
        out(json ? JSON.stringify(portPolicyViewToWire(view), null, 2) : renderPortPolicyView(view));
      };
    }
  }
}

/** The CLI flag each registration field comes from. */
const FLAG_OF: Partial<Record<string, string>> = {
  instanceId: '<instance_id>',
  appId: '--app',
  ip: '--ip',
  composeHash: '--compose-hash',
  policy: '--policy',
};

// ---------------------------------------------------------------------------------------------
// Rendering.

function policyText_(p: PortPolicy | null): string {
  if (!p) return 'unknown';
  const text = formatPolicy(p) || '(empty)';
  return p.restrictMode ? `${text} [restrict]` : text;
}

function renderTable(records: InstanceRecord[]): string {
  const header = ['INSTANCE', 'APP', 'IP', 'COMPOSE HASH', 'POLICY', 'OVERRIDE'];
  const rows = [...records]
    .sort((a, b) => a.instanceId.localeCompare(b.instanceId))
    .map((r) => [
      r.instanceId,
      r.appId,
      r.ip,
      r.composeHash ? r.composeHash.slice(0, 12) : '-',
      policyText_(r.reportedPolicy),
      r.override ? policyText_(r.override) : '-',
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
    ['compose hash', r.composeHash ?? '- (none attested)'],
    [
      'reported policy',
      r.reportedPolicy
        ? `${policyText_(r.reportedPolicy)} (from ${r.policySource ?? '?'}${r.policyComposeHash ? `, compose hash ${r.policyComposeHash.slice(0, 12)}` : ''})`
        : 'unknown',
    ],
    ['override', r.override ? policyText_(r.override) : '-'],
    ['effective policy', d.effectivePolicy.policy ? `${policyText_(d.effectivePolicy.policy)} (${d.effectivePolicy.source})` : 'none'],
    ['status', d.status.refuseAll === null ? d.status.why : `${d.status.refuseAll}: ${d.status.why}`],
  ];
  if (d.status.action !== null) rows.push(['to change it', d.status.action]);
  rows.push(['registered', time(r.registeredAt)], ['updated', time(r.updatedAt)]);
  const lines = rows.map(([k, v]) => `${k.padEnd(18)}${v}`);
  lines.push('decisions');
  for (const p of d.decisions) lines.push(`  ${String(p.port).padEnd(16)}${describeDecision(p)}`);
  if (d.unlistedPorts) lines.push(`  ${(d.decisions.length === 0 ? 'every port' : 'other ports').padEnd(16)}${describeDecision(d.unlistedPorts)}`);
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

function renderPortPolicyView(v: PortPolicyView): string {
  const p = (x: PortPolicy | null): string => (x === null ? '-' : policyText_(x));
  const rows: [string, string][] = [
    ['effective', v.effective === null ? `none: every port refused (${v.refuseAll ?? 'policy_unknown'})` : p(v.effective)],
    ['source', v.source],
    ['instance reported', p(v.instanceReported)],
    ['admin override', p(v.adminOverride)],
  ];
  return rows.map(([k, val]) => `${k.padEnd(18)}${val}`).join('\n');
}
