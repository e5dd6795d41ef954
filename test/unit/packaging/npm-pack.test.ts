// `npm pack` ships what runs and what the install script needs to build the addon: nothing else.
// Needs the TypeScript built (`npm run build`): dist/ is what ships.
import { execFile } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';

const ROOT = path.resolve(import.meta.dirname, '..', '..', '..');
const execFileP = promisify(execFile);

function walk(dir: string): string[] {
  return readdirSync(path.join(ROOT, dir), { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? walk(path.join(dir, e.name)) : [path.join(dir, e.name)],
  );
}

describe('npm pack', () => {
  let files: string[];
  beforeAll(async () => {
    if (!existsSync(path.join(ROOT, 'dist', 'cli.js'))) throw new Error('dist/ is missing: run `npm run build` first');
    // --ignore-scripts: packing must not rebuild dist/ under the other tests' feet.
    const { stdout } = await execFileP('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: ROOT, maxBuffer: 16 << 20 });
    files = (JSON.parse(stdout) as Array<{ files: Array<{ path: string }> }>)[0]!.files.map((f) => f.path).sort();
  }, 60_000);

  it('ships every compiled module, the native sources and build scripts, the unit, README and examples', () => {
    const compiled = walk('dist').filter((f) => f.endsWith('.js'));
    expect(compiled.length).toBeGreaterThan(40);
    expect(files).toEqual(expect.arrayContaining(compiled));
    expect(files).toEqual(expect.arrayContaining(walk('native')));
    expect(files).toEqual(expect.arrayContaining([
      'package.json',
      'README.md',
      'binding.gyp',
      'scripts/build-native.sh',
      'scripts/install-deps.sh',
      'packaging/tproxy-interceptor.service',
      'examples/config.toml',
    ]));
  });

  it('ships no tests, sources, source maps, benchmarks, build output or development files', () => {
    const unwanted = files.filter((f) => /^(test|src|build|bench-results|node_modules|\.ci)\/|\.map$|^scripts\/(?!build-native\.sh$|install-deps\.sh$)|^(Vagrantfile|vitest\.config\.ts|tsconfig\.json)$/.test(f));
    expect(unwanted).toEqual([]);
  });
});
