// `tproxy-interceptor instances ...`: manage the registry of a running daemon through its admin
// socket. Input is validated here, before anything is sent; exit codes: 0 ok, 1 the daemon (or
// reaching it) failed, 2 bad usage. The commands are commander's (parsing, --help); what each
// one checks and sends is plan()'s.
import { Command } from 'commander';
import { createAdminClient } from '../admin/client.js';
import { detailsToWire, instanceToWire, portPolicyViewToWire, type InstanceDetails, type PortPolicyView } from '../admin/wire.js';
import { InterceptorError } from '../errors.js';
import { formatPolicy, parsePolicyString } from '../registry/policy.js';
import { RegistrationError, validateRegistration, type RegistrationInput } from '../registry/registration.js';
import type { InstanceRecord, PortPolicy } from '../registry/types.js';
import { commandPath, runTree, setUp, UsageError, type CliIo } from './common.js';

export interface InstancesCommandDeps {
  socketPath: string;
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
}

const PROG = 'tproxy-interceptor instances';

const POLICY_HELP = 'ports, comma-separated, ":pp" for a PROXY header: "8080:pp,8081" ("" reports an empty policy)';

/** Each command: its arguments after the name, and its options as commander declares them. */
const COMMANDS = {
  add: {
    summary: 'register an instance (its policy reported, or learned from its guest agent)',
    usage: '<instance_id> --app <app_id> --ip <addr> [--compose-hash <hex>] [--policy "8080:pp,8081" [--restrict]]',
    positionals: ['instance_id'],
    options: [
      ['--app <app_id>', 'the app the instance belongs to (required)'],
      ['--ip <addr>', 'the address the interceptor reaches it at (required)'],
      ['--compose-hash <hex>', "the instance's attested compose hash (SHA-256 of its app-compose.json)"],
      ['--policy <ports>', `its reported port policy: ${POLICY_HELP}; absent: learned from its guest agent`],
      ['--restrict', "the policy's restrict_mode: only listed ports are admitted"],
    ],
  },
  list: { summary: 'list the registered instances', usage: '[--json]', positionals: [], options: [['--json', 'machine-readable output']] },
  show: {
    summary: "one instance: record, each port's decision, why, what to do, fetch status",
    usage: '<instance_id> [--json]',
    positionals: ['instance_id'],
    options: [['--json', 'machine-readable output']],
  },
  remove: { summary: 'remove an instance', usage: '<instance_id>', positionals: ['instance_id'], options: [] },
  override: {
    summary: 'set or clear the operator override (the older name of set-/clear-port-policy)',
    usage: '<instance_id> --policy "8080:pp,8081" [--restrict] | --clear',
    positionals: ['instance_id'],
    options: [
      ['--policy <ports>', POLICY_HELP],
      ['--restrict', "the policy's restrict_mode"],
      ['--clear', 'remove the override'],
    ],
  },
  'set-port-policy': {
    summary: "set the operator override (dstack gateway's SetInstancePortPolicy)",
    usage: '<instance_id> --policy "8080:pp,8081" [--restrict]',
    positionals: ['instance_id'],
    options: [
      ['--policy <ports>', `${POLICY_HELP} (required)`],
      ['--restrict', "the policy's restrict_mode"],
    ],
  },
  'clear-port-policy': { summary: 'clear the operator override (ClearInstancePortPolicy)', usage: '<instance_id>', positionals: ['instance_id'], options: [] },
  'get-port-policy': {
    summary: 'the effective policy and where it comes from (GetInstancePortPolicy)',
    usage: '<instance_id> [--json]',
    positionals: ['instance_id'],
    options: [['--json', 'machine-readable output']],
  },
} as const satisfies Record<string, { summary: string; usage: string; positionals: readonly string[]; options: ReadonlyArray<readonly [string, string]> }>;

type CommandName = keyof typeof COMMANDS;

type Values = Record<string, string | boolean | undefined>;

/**
 * Adds the instances commands under `parent` (the CLI's `instances`, or a root of their own).
 * `socketPath` names the admin socket once the command line is valid; `code` receives each
 * command's exit code.
 */
export function addInstancesCommands(parent: Command, opts: { io: CliIo; socketPath: (cmd: Command) => Promise<string>; code: { value: number } }): Command {
  const { io } = opts;
  const out = (s: string): void => void io.stdout.write(`${s}\n`);
  parent
    .description('manage the port-policy registry of a running daemon, through its admin socket')
    .usage('<command> [options]')
    .argument('[command]')
    .addHelpText('after', `\n${usageText()}`)
    // Reached only without a known command.
    .action((name: string | undefined, _o: unknown, cmd: Command) => {
      throw new UsageError(name === undefined ? 'missing command' : `unknown command "${name}"`, cmd);
    });
  for (const [name, spec] of Object.entries(COMMANDS) as Array<[CommandName, (typeof COMMANDS)[CommandName]]>) {
    const sub = parent.command(name).summary(spec.summary).description(spec.summary).usage(spec.usage);
    for (const p of spec.positionals) sub.argument(`[${p}]`);
    for (const [flags, description] of spec.options) sub.option(flags, description);
    // plan() checks the positionals itself: "missing <instance_id>", `unexpected argument "x"`.
    sub.allowExcessArguments(true);
    sub.action(async (...args: unknown[]) => {
      const cmd = args[args.length - 1] as Command;
      const values: Values = {};
      for (const o of cmd.options) values[o.long!.slice(2)] = cmd.getOptionValue(o.attributeName()) as string | boolean | undefined;
      let action: () => Promise<void>;
      try {
        action = plan(name, values, cmd.args, () => opts.socketPath(cmd), out);
      } catch (e) {
        if (e instanceof UsageError) throw new UsageError(e.message, cmd);
        throw e;
      }
      try {
        await action();
        opts.code.value = 0;
      } catch (e) {
        if (e instanceof InterceptorError && !(e instanceof UsageError)) {
          io.stderr.write(`${commandPath(cmd)}: ${e.code}: ${e.message}\n`);
          opts.code.value = 1;
          return;
        }
        throw e;
      }
    });
  }
  return parent;
}

/** The instances commands on their own (the socket given): what `tproxy-interceptor instances` runs. */
export async function runInstancesCommand(argv: string[], deps: InstancesCommandDeps): Promise<number> {
  const io = { stdout: deps.stdout, stderr: deps.stderr };
  const code = { value: 0 };
  const root = addInstancesCommands(new Command(PROG), { io, socketPath: async () => deps.socketPath, code });
  return runTree(setUp(root, io), argv, io, code);
}

function usageText(): string {
  return ['commands in full:', ...Object.entries(COMMANDS).map(([name, spec]) => `  ${PROG} ${name} ${spec.usage}`)].join('\n');
}

function wantPositionals(positionals: readonly string[], names: readonly string[]): readonly string[] {
  if (positionals.length < names.length) {
    throw new UsageError(`missing <${names[positionals.length]}>`);
  }
  if (positionals.length > names.length) {
    throw new UsageError(`unexpected argument "${positionals[names.length]}"`);
  }
  for (const [i, p] of positionals.entries()) {
    if (p === '') throw new UsageError(`<${names[i]}> must not be empty`);
  }
  return positionals;
}

function stringOpt(values: Values, key: string, required: true): string;
function stringOpt(values: Values, key: string, required: false): string | undefined;
function stringOpt(values: Values, key: string, required: boolean): string | undefined {
  const v = values[key];
  if (v === undefined) {
    if (required) throw new UsageError(`missing required --${key}`);
    return undefined;
  }
  return v as string;
}

function policyOpt(text: string, restrict: boolean): PortPolicy {
  try {
    return parsePolicyString(text, restrict);
  } catch (e) {
    // The message names the offending item, e.g. `port policy: "80:foo": flag must be ...`.
    throw new UsageError(`--policy: ${(e as Error).message}`);
  }
}

/** Validates everything and returns what to do; throws UsageError before anything is sent. */
function plan(command: CommandName, values: Values, positionals: readonly string[], socketPath: () => Promise<string>, out: (s: string) => void): () => Promise<void> {
  const client = async () => createAdminClient(await socketPath());
  switch (command) {
    case 'add': {
      const [instanceId] = wantPositionals(positionals, ['instance_id']) as [string];
      const input: RegistrationInput = { instanceId, appId: stringOpt(values, 'app', true), ip: stringOpt(values, 'ip', true) };
      const hashText = stringOpt(values, 'compose-hash', false);
      if (hashText !== undefined) input.composeHash = hashText;
      const policyText = stringOpt(values, 'policy', false);
      if (policyText !== undefined) {
        // --restrict is the reported policy's restrict_mode.
        input.policy = policyOpt(policyText, values.restrict === true);
      } else if (values.restrict === true) {
        throw new UsageError(
          '--restrict goes with --policy (it is the policy\'s restrict_mode); without --policy every port is refused until the policy is learned anyway',
        );
      }
      // The daemon validates again (and checks the address against this host's): this catches
      // mistakes before anything is sent.
      try {
        validateRegistration(input);
      } catch (e) {
        if (e instanceof RegistrationError) throw new UsageError(`${FLAG_OF[e.field] ?? e.field}: ${e.problem}`);
        throw e;
      }
      return async () => {
        const record = await (await client()).addInstance(input);
        out(`registered ${record.instanceId} (app ${record.appId}, ip ${record.ip}, policy ${policyText_(record.reportedPolicy)})`);
        if (record.composeHash === null && record.reportedPolicy === null) {
          out(`note: no --compose-hash: every port of ${record.instanceId} is refused until its policy is set (see \`instances show ${record.instanceId}\`)`);
        }
      };
    }
    case 'list': {
      wantPositionals(positionals, []);
      const json = values.json === true;
      return async () => {
        const { instances: records, store } = await (await client()).listWithStore();
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
      const [instanceId] = wantPositionals(positionals, ['instance_id']) as [string];
      const json = values.json === true;
      return async () => {
        const details = await (await client()).getInstance(instanceId);
        out(json ? JSON.stringify(detailsToWire(details), null, 2) : renderDetails(details));
      };
    }
    case 'remove': {
      const [instanceId] = wantPositionals(positionals, ['instance_id']) as [string];
      return async () => {
        await (await client()).removeInstance(instanceId);
        out(`removed ${instanceId}`);
      };
    }
    case 'override': {
      const [instanceId] = wantPositionals(positionals, ['instance_id']) as [string];
      const policyText = stringOpt(values, 'policy', false);
      const clear = values.clear === true;
      if (clear && policyText !== undefined) throw new UsageError('--clear and --policy exclude each other');
      if (clear && values.restrict) throw new UsageError('--restrict goes with --policy, not --clear');
      if (!clear && policyText === undefined) throw new UsageError('missing --policy (or --clear)');
      if (clear) {
        return async () => {
          await (await client()).clearOverride(instanceId);
          out(`override of ${instanceId} cleared`);
        };
      }
      const policy = policyOpt(policyText!, values.restrict === true);
      return async () => {
        const record = await (await client()).setOverride(instanceId, policy);
        out(`override of ${record.instanceId} set: ${policyText_(record.override)}`);
      };
    }
    case 'set-port-policy': {
      const [instanceId] = wantPositionals(positionals, ['instance_id']) as [string];
      const policy = policyOpt(stringOpt(values, 'policy', true), values.restrict === true);
      return async () => {
        await (await client()).setInstancePortPolicy(instanceId, policy);
        out(`port policy of ${instanceId} set: ${policyText_(policy)}`);
      };
    }
    case 'clear-port-policy': {
      const [instanceId] = wantPositionals(positionals, ['instance_id']) as [string];
      return async () => {
        await (await client()).clearInstancePortPolicy(instanceId);
        out(`port policy of ${instanceId} cleared: the reported or learned policy decides again`);
      };
    }
    case 'get-port-policy': {
      const [instanceId] = wantPositionals(positionals, ['instance_id']) as [string];
      const json = values.json === true;
      return async () => {
        const view = await (await client()).getInstancePortPolicy(instanceId);
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
