// Reading packaging/tproxy-interceptor.service, for the tests that check it and the one that runs
// the daemon the way it says.
import path from 'node:path';

export const UNIT_FILE = path.resolve(import.meta.dirname, '..', '..', '..', 'packaging', 'tproxy-interceptor.service');

/** [Section] key=value lines, comments dropped; a key may repeat. */
export function parseUnit(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  let section = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const s = /^\[(.+)\]$/.exec(line);
    if (s) {
      section = s[1]!;
      continue;
    }
    const eq = line.indexOf('=');
    const key = `${section}.${line.slice(0, eq)}`;
    out.set(key, [...(out.get(key) ?? []), line.slice(eq + 1)]);
  }
  return out;
}
