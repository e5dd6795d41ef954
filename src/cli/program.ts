// The command line: every command and its options, on commander (parsing, --help on every command
// and subcommand, usage errors). Each command lives in its own file; this one puts them together.
// Exit codes (README, CLI): 0 success, 1 runtime failure, 2 bad usage or configuration.
import { readFileSync } from 'node:fs';
import { Command } from 'commander';
import { loadConfig } from '../config-parse.js';
import { checkCommand } from './check.js';
import { runTree, setUp, type CliIo } from './common.js';
import { doctorCommand } from './doctor.js';
import { addInstancesCommands } from './instances.js';
import { reloadCommand } from './reload.js';
import { rulesCommand } from './rules.js';
import { runCommand } from './run.js';
import { statusCommand } from './status.js';

function version(): string {
  return (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
}

function buildProgram(io: CliIo, code: { value: number }): Command {
  const ctx = { io, code };
  const program = new Command('tproxy-interceptor')
    .description('A transparent TCP proxy for Linux hosts that must keep the client\'s address: nftables or iptables tproxy rules, policy routing, and per instance and port a decision from an attested port-policy registry.')
    .usage('<command> [options]')
    .version(version(), '-v, --version', 'print the version')
    .addHelpText('after', '\nexit status: 0 success, 1 runtime failure (the message names its code), 2 bad usage or configuration (nothing applied)\n');
  for (const cmd of [runCommand(ctx), rulesCommand(ctx), checkCommand(ctx), doctorCommand(ctx), reloadCommand(ctx), statusCommand(ctx)]) program.addCommand(cmd);
  const instances = program
    .command('instances')
    .summary('manage the port-policy registry of a running daemon (see `instances --help`)')
    .requiredOption('--config <file>', "the TOML configuration: names the daemon's admin socket");
  addInstancesCommands(instances, {
    io,
    code,
    socketPath: async (cmd) => (await loadConfig(cmd.optsWithGlobals<{ config: string }>().config)).registry.adminSocket,
  }).usage('<command> --config FILE [options]');
  return setUp(program, io);
}

export function runCli(argv: readonly string[], io: CliIo): Promise<number> {
  const code = { value: 0 };
  return runTree(buildProgram(io, code), argv, io, code);
}
