// scripts/bench-attested.mjs on a handful of registrations: the script still registers every
// instance it sends (a rule of the registry once made it refuse them all, and its figures with it).
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { expect, it } from 'vitest';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const execFileP = promisify(execFile);

it('bench-attested registers every instance it sends over mutual TLS', async () => {
  if (!existsSync(path.join(repoRoot, 'dist/attested/server.js'))) {
    throw new Error('dist/ is missing: the script runs the compiled server; build it first with `npx tsc -p tsconfig.json` (or `npm run build`)');
  }
  const { stdout } = await execFileP(process.execPath, ['scripts/bench-attested.mjs', '--registrations', '12', '--concurrency', '3'], { cwd: repoRoot, timeout: 60_000 });
  const result = JSON.parse(stdout.trim().split('\n').at(-1)!);
  expect(result).toMatchObject({ registrations: 12, ok: 12, failed: 0, registered: 12 });
}, 60_000);
