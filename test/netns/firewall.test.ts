// Real nft against the real kernel, inside a network namespace of our own (never the host's).
import { randomBytes } from 'node:crypto';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Target } from '../../src/config.js';
import { execFileDefault, type ExecFileFn } from '../../src/firewall/exec-file.js';
import { createNftFirewall } from '../../src/firewall/nft.js';
import { renderRulesetText, type FirewallSpec } from '../../src/firewall/render.js';

const isRoot = process.getuid?.() === 0;
const logger = pino({ level: 'silent' });
const ns = `tpi-fw-${process.pid}-${randomBytes(3).toString('hex')}`;

const inNs = (cmd: string, args: string[], input?: string) =>
  execFileDefault('ip', ['netns', 'exec', ns, cmd, ...args], input === undefined ? {} : { input });

const v4: Target = { cidr: '198.18.2.0/24', family: 4, ports: [{ from: 8080, to: 8080 }, { from: 9000, to: 9100 }], interface: 'eth1' };
const v6: Target = { cidr: 'fd00:2::/64', family: 6, ports: [{ from: 443, to: 443 }], interface: null };
const spec = (over: Partial<FirewallSpec> = {}): FirewallSpec => ({
  table: 'tpi_fw_test',
  mark: 0x1,
  mask: 0x1,
  failClosed: true,
  listen: { address: '127.0.0.1', address6: '::1', port: 15001 },
  targets: [v4, v6],
  ...over,
});

type Obj = Record<string, unknown>;
interface Listing {
  tables: Obj[];
  chains: Obj[];
  rules: Obj[][];
}
function parseListing(listing: object | null): Listing {
  expect(listing).not.toBeNull();
  const items = (listing as { nftables: Obj[] }).nftables;
  return {
    tables: items.filter((i) => i['table']).map((i) => i['table'] as Obj),
    chains: items.filter((i) => i['chain']).map((i) => i['chain'] as Obj),
    rules: items.filter((i) => i['rule']).map((i) => (i['rule'] as Obj)['expr'] as Obj[]),
  };
}
const verdicts = (rules: Obj[][]): string[] => rules.map((r) => Object.keys(r[r.length - 1]!)[0]!);
const find = (rule: Obj[], key: string): Obj | undefined => rule.find((e) => key in e)?.[key] as Obj | undefined;

describe.skipIf(!isRoot)('nftables firewall in a network namespace', () => {
  const fw = createNftFirewall({ logger, netns: ns });

  beforeAll(async () => {
    await execFileDefault('ip', ['netns', 'add', ns], {});
  });
  afterAll(async () => {
    await execFileDefault('ip', ['netns', 'del', ns], {}).catch(() => {});
  });

  it('installs idempotently: applied twice, one table, one chain at prerouting -150, tproxy then drop per target', async () => {
    await fw.install(spec());
    await fw.install(spec());
    const { tables, chains, rules } = parseListing(await fw.list('tpi_fw_test'));
    expect(tables).toHaveLength(1);
    expect(chains).toHaveLength(1);
    expect(chains[0]).toMatchObject({ family: 'inet', table: 'tpi_fw_test', name: 'pre', type: 'filter', hook: 'prerouting', prio: -150, policy: 'accept' });
    expect(rules).toHaveLength(5);
    expect(verdicts(rules)).toEqual(['accept', 'accept', 'drop', 'accept', 'drop']);

    const socketKeys = rules[0]!.filter((e) => e['match']).map((e) => ((e['match'] as Obj)['left'] as Obj)['socket']).filter(Boolean);
    expect(socketKeys).toEqual([{ key: 'transparent' }, { key: 'wildcard' }]);

    expect(find(rules[1]!, 'tproxy')).toEqual({ family: 'ip', addr: '127.0.0.1', port: 15001 });
    expect(JSON.stringify(rules[1])).toContain('{"prefix":{"addr":"198.18.2.0","len":24}}');
    expect(JSON.stringify(rules[1])).toContain('{"set":[8080,{"range":[9000,9100]}]}');
    expect(JSON.stringify(rules[1])).toContain('{"meta":{"key":"iifname"}},"right":"eth1"');
    expect(find(rules[2]!, 'tproxy')).toBeUndefined();
    expect(JSON.stringify(rules[2])).toContain('{"prefix":{"addr":"198.18.2.0","len":24}}');

    expect(find(rules[3]!, 'tproxy')).toEqual({ family: 'ip6', addr: '::1', port: 15001 });
    expect(JSON.stringify(rules[3])).toContain('{"prefix":{"addr":"fd00:2::","len":64}}');
    expect(verdicts([rules[4]!])).toEqual(['drop']);
  });

  it('the masked mark set keeps foreign bits (mark 0x10000 / mask 0x30000)', async () => {
    await fw.install(spec({ mark: 0x10000, mask: 0x30000 }));
    const { rules } = parseListing(await fw.list('tpi_fw_test'));
    for (const i of [0, 1, 3]) {
      const value = find(rules[i]!, 'mangle')!['value'] as Obj;
      // nft may shrink the AND constant to an equivalent one (it keeps bits the OR sets anyway)
      const [and, or] = value['|'] as [Obj, number];
      const [, keep] = and['&'] as [Obj, number];
      expect(or).toBe(0x10000);
      expect((keep & ~0x30000) >>> 0).toBe(0xfffcffff);
      expect((keep & 0x20000) >>> 0).toBe(0);
    }
    const { stdout } = await inNs('nft', ['list', 'table', 'inet', 'tpi_fw_test']);
    expect(stdout).toMatch(/meta mark set meta mark & 0xff?f[cd]ffff \| 0x00010000/);
  });

  it('a full mask is accepted too', async () => {
    await fw.install(spec({ mark: 0x4, mask: 0xffffffff }));
    const { rules } = parseListing(await fw.list('tpi_fw_test'));
    expect(find(rules[0]!, 'mangle')).toEqual({ key: { meta: { key: 'mark' } }, value: 4 });
  });

  it('failClosed = false installs no drop rules', async () => {
    await fw.install(spec({ failClosed: false }));
    const { rules } = parseListing(await fw.list('tpi_fw_test'));
    expect(verdicts(rules)).toEqual(['accept', 'accept', 'accept']);
  });

  it('the text rendering installs the same rules as the JSON', async () => {
    await fw.install(spec({ mark: 0x10000, mask: 0x30000 }));
    await inNs('nft', ['-f', '-'], renderRulesetText(spec({ table: 'tpi_fw_text', mark: 0x10000, mask: 0x30000 })));
    await inNs('nft', ['-f', '-'], renderRulesetText(spec({ table: 'tpi_fw_text', mark: 0x10000, mask: 0x30000 })));
    const a = parseListing(await fw.list('tpi_fw_test'));
    const b = parseListing(await fw.list('tpi_fw_text'));
    expect(b.chains.map(({ handle: _h, table: _t, ...c }) => c)).toEqual(a.chains.map(({ handle: _h, table: _t, ...c }) => c));
    expect(b.rules).toEqual(a.rules);
    await fw.remove('tpi_fw_text');
  });

  it('remove deletes only our table, and is a no-op when it is already gone', async () => {
    await inNs('nft', ['add', 'table', 'inet', 'unrelated']);
    await inNs('nft', ['add', 'chain', 'inet', 'unrelated', 'keep', '{ type filter hook prerouting priority -150; }']);
    await fw.install(spec());
    await fw.remove('tpi_fw_test');
    expect(await fw.list('tpi_fw_test')).toBeNull();
    await fw.remove('tpi_fw_test');
    const unrelated = parseListing(await fw.list('unrelated'));
    expect(unrelated.chains).toMatchObject([{ name: 'keep', hook: 'prerouting' }]);
  });

  it('unprivileged nft fails with ERR_NO_CAP_NET_ADMIN', async () => {
    // nft run as nobody inside the namespace
    const asNobody: ExecFileFn = (file, args, options) =>
      execFileDefault('ip', ['netns', 'exec', ns, 'setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', file, ...args], options);
    const unprivileged = createNftFirewall({ logger, execFile: asNobody });
    // (not install: its stdin file belongs to root here, so nobody's nft could not even read it)
    await expect(unprivileged.list('tpi_fw_test')).rejects.toMatchObject({
      code: 'ERR_NO_CAP_NET_ADMIN',
      stderr: expect.stringMatching(/Operation not permitted/),
    });
  });

  it('a kernel-rejected ruleset is ERR_NFT_FAILED with nft stderr, and leaves the installed table intact', async () => {
    await fw.install(spec());
    const broken = spec({ targets: [{ ...v4, interface: 'x'.repeat(40) }] });
    const err = await fw.install(broken).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'ERR_NFT_FAILED' });
    expect((err as { stderr: string }).stderr).toMatch(/Error/);
    expect(parseListing(await fw.list('tpi_fw_test')).rules).toHaveLength(5);
  });

  it('nft missing → ERR_NFT_MISSING', async () => {
    const missing = createNftFirewall({ logger, netns: ns, nftPath: '/nonexistent/nft' });
    await expect(missing.install(spec())).rejects.toMatchObject({ code: 'ERR_NFT_MISSING' });
  });
});
