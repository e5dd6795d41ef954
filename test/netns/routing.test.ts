// Real `ip rule` / `ip route` against the real kernel, inside a network namespace of our own.
import { randomBytes } from 'node:crypto';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileDefault } from '../../src/firewall/exec-file.js';
import { createIpRouting } from '../../src/routing/ip.js';
import type { RoutingSpec } from '../../src/routing/render.js';

const isRoot = process.getuid?.() === 0;
const logger = pino({ level: 'silent' });
const ns = `tpi-rt-${process.pid}-${randomBytes(3).toString('hex')}`;

const ip = async (...args: string[]): Promise<string> => (await execFileDefault('ip', ['-n', ns, ...args], {})).stdout;
const rules = async (family: 4 | 6): Promise<Array<Record<string, unknown>>> => JSON.parse(await ip(`-${family}`, '-N', '-j', 'rule', 'show'));
const routes = async (family: 4 | 6, table: string): Promise<Array<Record<string, unknown>>> => {
  const out = await ip(`-${family}`, '-j', 'route', 'show', 'table', table).catch(() => '[]');
  return JSON.parse(out.trim() === '' ? '[]' : out);
};
const ruleTables = (list: Array<Record<string, unknown>>, table: string) => list.filter((r) => r['table'] === table);

const spec: RoutingSpec = { mark: 0x10000, mask: 0x30000, routeTable: 4242, localBackends: true, ipv6: true };

describe.skipIf(!isRoot)('policy routing in a network namespace', () => {
  const routing = createIpRouting({ logger, netns: ns });

  beforeAll(async () => {
    await execFileDefault('ip', ['netns', 'add', ns], {});
    // local routes need their device up (IPv6 refuses with "Nexthop device is not up")
    await ip('link', 'set', 'lo', 'up');
  });
  afterAll(async () => {
    await execFileDefault('ip', ['netns', 'del', ns], {}).catch(() => {});
  });

  it('install twice: exactly one fwmark rule and one loopback rule per family, one local route', async () => {
    await routing.install(spec);
    await routing.install(spec);
    for (const family of [4, 6] as const) {
      const ours = ruleTables(await rules(family), '4242');
      expect(ours.filter((r) => r['fwmark'] !== undefined)).toEqual([{ priority: 9000, src: 'all', fwmark: '0x10000', fwmask: '0x30000', table: '4242' }]);
      const lo = ours.filter((r) => r['iif'] === 'lo');
      expect(lo).toHaveLength(1);
      expect(lo[0]).toMatchObject(family === 4 ? { src: '127.0.0.0', srclen: 8 } : { src: '::1' });
      expect(ours).toHaveLength(2);
      const local = (await routes(family, '4242')).filter((r) => r['type'] === 'local');
      expect(local).toHaveLength(1);
      expect(local[0]).toMatchObject({ dst: 'default', dev: 'lo' });
    }
  });

  it('remove deletes exactly what install added and leaves everything else', async () => {
    await routing.install(spec);
    // Foreign state: a rule at our priority pointing elsewhere, a rule with our mark and another
    // priority, another route in our table, and the main table.
    await ip('-4', 'rule', 'add', 'fwmark', '0x2/0x2', 'lookup', '200', 'priority', '9000');
    await ip('-4', 'rule', 'add', 'fwmark', '0x10000/0x30000', 'lookup', '4242', 'priority', '9100');
    await ip('-4', 'route', 'add', 'local', '198.51.100.0/24', 'dev', 'lo', 'table', '4242');
    const main4 = await routes(4, 'main');
    const local4 = await routes(4, 'local');

    await routing.remove(spec);

    const after4 = await rules(4);
    expect(after4.filter((r) => r['table'] === '4242')).toEqual([{ priority: 9100, src: 'all', fwmark: '0x10000', fwmask: '0x30000', table: '4242' }]);
    expect(after4.filter((r) => r['table'] === '200')).toHaveLength(1);
    expect(ruleTables(await rules(6), '4242')).toEqual([]);
    expect(await routes(4, '4242')).toMatchObject([{ type: 'local', dst: '198.51.100.0/24', dev: 'lo' }]);
    expect(await routes(6, '4242')).toEqual([]);
    expect(await routes(4, 'main')).toEqual(main4);
    expect(await routes(4, 'local')).toEqual(local4);
    // the kernel's own rules are still there
    expect(after4.map((r) => r['priority'])).toEqual(expect.arrayContaining([0, 32766, 32767]));

    // cleanup of the foreign state
    await ip('-4', 'rule', 'del', 'fwmark', '0x2/0x2', 'lookup', '200', 'priority', '9000');
    await ip('-4', 'rule', 'del', 'fwmark', '0x10000/0x30000', 'lookup', '4242', 'priority', '9100');
    await ip('-4', 'route', 'del', 'local', '198.51.100.0/24', 'dev', 'lo', 'table', '4242');
  });

  it('remove is a no-op when nothing is installed (even a table that never existed)', async () => {
    await routing.remove(spec);
    await routing.remove({ ...spec, routeTable: 777 });
    expect(ruleTables(await rules(4), '4242')).toEqual([]);
  });

  it('IPv4 only without local backends installs a single rule', async () => {
    const v4only: RoutingSpec = { mark: 0x1, mask: 0x1, routeTable: 100, localBackends: false, ipv6: false };
    await routing.install(v4only);
    expect(ruleTables(await rules(4), '100')).toEqual([{ priority: 9000, src: 'all', fwmark: '0x1', fwmask: '0x1', table: '100' }]);
    expect(ruleTables(await rules(6), '100')).toEqual([]);
    await routing.remove(v4only);
    expect(ruleTables(await rules(4), '100')).toEqual([]);
  });

  it('unprivileged ip fails with ERR_NO_CAP_NET_ADMIN', async () => {
    const asNobody = createIpRouting({
      logger,
      execFile: (file, args, options) =>
        execFileDefault('ip', ['netns', 'exec', ns, 'setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', file, ...args], options),
    });
    await expect(asNobody.install(spec)).rejects.toMatchObject({ code: 'ERR_NO_CAP_NET_ADMIN' });
  });
});
