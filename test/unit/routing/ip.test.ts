import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import type { ExecFailure, ExecFileFn } from '../../../src/firewall/exec-file.js';
import { createIpRouting } from '../../../src/routing/ip.js';
import type { RoutingSpec } from '../../../src/routing/render.js';

const logger = pino({ level: 'silent' });
const spec: RoutingSpec = { mark: 0x1, mask: 0x1, routeTable: 100, localBackends: true, ipv6: false };

function failure(code: string | number, stderr = ''): ExecFailure {
  return Object.assign(new Error(`failed ${code}`), { code, stderr }) as ExecFailure;
}

/** A fake `ip` holding a rule list; `rule add/del` and `route` commands are recorded. */
function fakeIp(rules: object[], onRoute: (args: readonly string[]) => ExecFailure | null = () => null) {
  const calls: string[][] = [];
  const exec: ExecFileFn = async (file, args) => {
    calls.push([file, ...args]);
    if (args.includes('show')) return { stdout: JSON.stringify(rules), stderr: '' };
    if (args.includes('route')) {
      const err = onRoute(args);
      if (err) throw err;
    }
    return { stdout: '', stderr: '' };
  };
  return { exec, calls, mutating: () => calls.filter((c) => !c.includes('show')).map((c) => c.slice(1).join(' ')) };
}

describe('createIpRouting', () => {
  it('install adds the route and both rules when absent', async () => {
    const ip = fakeIp([{ priority: 0, src: 'all', table: '255' }]);
    await createIpRouting({ logger, execFile: ip.exec }).install(spec);
    expect(ip.calls[0]).toEqual(['ip', '-4', '-N', '-j', 'rule', 'show']);
    expect(ip.mutating()).toEqual([
      '-4 route replace local 0.0.0.0/0 dev lo table 100',
      '-4 rule add fwmark 0x1/0x1 lookup 100 priority 9000',
      '-4 rule add from 127.0.0.0/8 iif lo lookup 100 priority 9000',
    ]);
  });

  it('install skips rules that already exist (idempotent)', async () => {
    const ip = fakeIp([
      { priority: 9000, src: 'all', fwmark: '0x1', fwmask: '0x1', table: '100' },
      { priority: 9000, src: '127.0.0.0', srclen: 8, iif: 'lo', table: '100' },
    ]);
    await createIpRouting({ logger, execFile: ip.exec }).install(spec);
    expect(ip.mutating()).toEqual(['-4 route replace local 0.0.0.0/0 dev lo table 100']);
  });

  it('remove deletes only our present rules and tolerates missing routes', async () => {
    const ip = fakeIp(
      [
        { priority: 9000, src: 'all', fwmark: '0x1', fwmask: '0x1', table: '100' },
        { priority: 9000, src: 'all', fwmark: '0x1', fwmask: '0x1', table: '200' },
      ],
      () => failure(2, 'RTNETLINK answers: No such process'),
    );
    await createIpRouting({ logger, execFile: ip.exec }).remove(spec);
    expect(ip.mutating()).toEqual(['-4 rule del fwmark 0x1/0x1 lookup 100 priority 9000', '-4 route del local 0.0.0.0/0 dev lo table 100']);
  });

  it('remove tolerates a route table that never existed', async () => {
    const ip = fakeIp([], () => failure(2, 'Error: ipv4: FIB table does not exist.'));
    await expect(createIpRouting({ logger, execFile: ip.exec }).remove(spec)).resolves.toBeUndefined();
  });

  it('runs inside a namespace via `ip netns exec`', async () => {
    const ip = fakeIp([]);
    await createIpRouting({ logger, execFile: ip.exec, netns: 'tpi-rt-1', ipPath: '/sbin/ip' }).install({ ...spec, localBackends: false });
    expect(ip.calls[0]).toEqual(['/sbin/ip', 'netns', 'exec', 'tpi-rt-1', '/sbin/ip', '-4', '-N', '-j', 'rule', 'show']);
  });

  it('maps errors: missing ip, EPERM, other failures', async () => {
    const missing: ExecFileFn = async () => {
      throw failure('ENOENT');
    };
    await expect(createIpRouting({ logger, execFile: missing }).install(spec)).rejects.toMatchObject({ code: 'ERR_IP_MISSING' });
    const eperm = fakeIp([], () => failure(2, 'RTNETLINK answers: Operation not permitted'));
    await expect(createIpRouting({ logger, execFile: eperm.exec }).install(spec)).rejects.toMatchObject({
      code: 'ERR_NO_CAP_NET_ADMIN',
      message: expect.stringMatching(/root or CAP_NET_ADMIN/),
    });
    const other = fakeIp([], () => failure(2, 'Error: Nexthop device is not up.'));
    await expect(createIpRouting({ logger, execFile: other.exec }).install(spec)).rejects.toMatchObject({
      code: 'ERR_IP_FAILED',
      stderr: 'Error: Nexthop device is not up.',
    });
    // a route failure that is not "absent" is not swallowed by remove
    await expect(createIpRouting({ logger, execFile: other.exec }).remove(spec)).rejects.toMatchObject({ code: 'ERR_IP_FAILED' });
  });
});
