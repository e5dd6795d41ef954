#!/usr/bin/env node
// argv → the command (src/cli/program.ts) → its exit code. The only module that exits the process.
// First import: its SIGUSR1 listener keeps Node's inspector closed from the earliest moment.
import './signals.js';
import { runCli } from './cli/program.js';

runCli(process.argv.slice(2), { stdout: process.stdout, stderr: process.stderr }).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`tproxy-interceptor: ${String((err as Error)?.stack ?? err)}\n`);
    process.exit(1);
  },
);
