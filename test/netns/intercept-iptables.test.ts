// The transparent path end to end with the iptables backend, once per variant (iptables-nft and
// iptables-legacy): what intercept.test.ts proves for nftables, for what the firewall backend
// decides: the interception itself (IPv4 and IPv6), fail-closed after kill -9, reconciliation on
// the next start, and exact removal on stop.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Lab, ADDR, BASE_CONFIG, CLI, sawAddress } from './helpers/lab.js';

describe.each([{ variant: 'nft' }, { variant: 'legacy' }])('transparent interception with backend = "iptables" ($variant)', ({ variant }) => {
  const CONFIG = BASE_CONFIG.replace('[intercept]', `[intercept]\nbackend = "iptables"\niptables_variant = "${variant}"`);
  let lab: Lab;
  /** `iptables-<variant>-save -t mangle` in the gateway, without comments and counters. */
  const save = async (family: 4 | 6 = 4): Promise<string> =>
    (await lab.exec(lab.ns.gateway, [`${family === 4 ? 'iptables' : 'ip6tables'}-${variant}-save`, '-t', 'mangle'])).stdout
      .split('\n')
      .filter((l) => l !== '' && !l.startsWith('#'))
      .map((l) => l.replace(/ \[\d+:\d+\]$/, ''))
      .join('\n');
  const jumps = (text: string): number => text.split('\n').filter((l) => l === '-A PREROUTING -j tproxy_interceptor').length;

  beforeAll(async () => {
    lab = await Lab.create();
    // Someone else's rules in the same table and hook: they must come through every start and stop.
    const foreign = '*mangle\n:keep - [0:0]\n-A keep -p tcp --dport 22 -j MARK --set-xmark 0x4000/0x4000\n-A PREROUTING -j keep\nCOMMIT\n';
    for (const tool of [`iptables-${variant}-restore`, `ip6tables-${variant}-restore`]) {
      await lab.exec(lab.ns.gateway, [tool, '--noflush'], { input: foreign });
    }
    await lab.startBackend([8080, 8081]);
  });
  afterEach(async () => lab?.stopDaemons());
  afterAll(async () => lab?.destroy());

  it('the backend sees the client address and the original destination, over IPv4 and IPv6', async () => {
    const daemon = await lab.startDaemon(await lab.writeConfig(CONFIG));
    expect(daemon.output()).toMatch(/"msg":"iptables rules installed"/);
    const r = await lab.client(ADDR.backend, 8081);
    expect(r.error).toBeNull();
    expect(sawAddress(r)).toBe(ADDR.client);
    expect((r.saw as { local: string }).local).toBe(`${ADDR.backend}:8081`);
    const r6 = await lab.client(ADDR.backend6, 8080);
    expect(r6.error).toBeNull();
    expect(sawAddress(r6)).toBe(ADDR.client6);
    expect((r6.saw as { local: string }).local).toBe(`${ADDR.backend6}:8080`);
    await daemon.waitFor(`"client":"${ADDR.client}:`);
    // Nothing went to nftables: the iptables-nft variant's rules live in its own `ip mangle` table.
    expect(await lab.nftTables()).not.toContain('inet tproxy_interceptor');
    daemon.child.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
  });

  it('drops target traffic after kill -9, and the next start reconciles and serves again', async () => {
    const daemon = await lab.startDaemon(await lab.writeConfig(CONFIG));
    daemon.child.kill('SIGKILL');
    await daemon.exited;
    expect(jumps(await save(4))).toBe(1);
    for (const address of [ADDR.backend, ADDR.backend6]) {
      const r = await lab.client(address, 8081, { timeoutMs: 1500 });
      expect(r.connected).toBe(false);
      expect(r.error).toBe('timeout');
    }
    const again = await lab.startDaemon(await lab.writeConfig(CONFIG));
    expect(sawAddress(await lab.client(ADDR.backend, 8081))).toBe(ADDR.client);
    expect(sawAddress(await lab.client(ADDR.backend6, 8081))).toBe(ADDR.client6);
    for (const family of [4, 6] as const) {
      const text = await save(family);
      expect(jumps(text)).toBe(1);
      expect(text.split('\n').filter((l) => l.startsWith('-A tproxy_interceptor '))).toHaveLength(5);
    }
    expect((await lab.ipRules(4)).match(/fwmark 0x2000\/0x2000 lookup 4511/g)).toHaveLength(1);
    again.child.kill('SIGTERM');
    expect((await again.exited).code).toBe(0);
  });

  it('after stop, its chain, jump and ip rules are gone and the other rules are exactly as they were', async () => {
    const before = { v4: await save(4), v6: await save(6), nft: await lab.nftTables() };
    expect(before.v4).not.toContain('tproxy_interceptor');
    expect(before.v4).toContain('-A PREROUTING -j keep');
    const daemon = await lab.startDaemon(await lab.writeConfig(CONFIG));
    expect(await save(4)).toMatch(/^-A PREROUTING -j tproxy_interceptor$/m);
    daemon.child.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
    expect({ v4: await save(4), v6: await save(6), nft: await lab.nftTables() }).toEqual(before);
    expect(await lab.ipRules(4)).not.toMatch(/lookup 4511/);
    expect(await lab.ipRules(6)).not.toMatch(/lookup 4511/);
  });

  it('without CAP_NET_ADMIN, says so and installs nothing', async () => {
    const before = await save(4);
    const config = await lab.writeConfig(CONFIG);
    const p = lab.spawn(lab.ns.gateway, ['setpriv', '--bounding-set', '-net_admin,-net_raw', '--inh-caps', '-net_admin,-net_raw', 'node', CLI, 'run', '--config', config]);
    const { code } = await p.exited;
    expect(code).not.toBe(0);
    expect(p.output()).toMatch(/CAP_NET_ADMIN/);
    expect(await save(4)).toBe(before);
  });
});
