// Real nft and iptables (both variants) against the real kernel, inside network namespaces of
// our own (never the host's).
import { randomBytes } from 'node:crypto';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Target } from '../../src/config.js';
import { createToolRunner, execFileDefault, type ExecFileFn } from '../../src/firewall/exec-file.js';
import { createNftFirewall } from '../../src/firewall/nft.js';
import { createIptablesFirewall } from '../../src/firewall/iptables.js';
import { renderNftText, renderRuleset, type FirewallSpec } from '../../src/firewall/render.js';

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

/** `nft -j list table inet <table>` in the namespace, or null when the table does not exist. */
async function listTable(table: string): Promise<object | null> {
  const r = await inNs('nft', ['-j', 'list', 'table', 'inet', table]).catch((err: { stderr?: string }) => {
    if (/No such file or directory/.test(err.stderr ?? '')) return null;
    throw err;
  });
  return r === null ? null : (JSON.parse(r.stdout) as object);
}

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
    const { tables, chains, rules } = parseListing(await listTable('tpi_fw_test'));
    expect(tables).toHaveLength(1);
    expect(chains).toHaveLength(1);
    expect(chains[0]).toMatchObject({ family: 'inet', table: 'tpi_fw_test', name: 'pre', type: 'filter', hook: 'prerouting', prio: -150, policy: 'accept' });
    expect(rules).toHaveLength(6);
    expect(verdicts(rules)).toEqual(['accept', 'accept', 'accept', 'drop', 'accept', 'drop']);

    const socketKeys = rules[0]!.filter((e) => e['match']).map((e) => ((e['match'] as Obj)['left'] as Obj)['socket']).filter(Boolean);
    expect(socketKeys).toEqual([{ key: 'transparent' }, { key: 'wildcard' }]);

    // This host's own connections: accepted untouched.
    expect(JSON.stringify(rules[1])).toBe('[{"match":{"op":"==","left":{"meta":{"key":"l4proto"}},"right":"tcp"}},{"match":{"op":"==","left":{"socket":{"key":"wildcard"}},"right":0}},{"accept":null}]');
    expect(find(rules[2]!, 'tproxy')).toEqual({ family: 'ip', addr: '127.0.0.1', port: 15001 });
    expect(JSON.stringify(rules[2])).toContain('{"prefix":{"addr":"198.18.2.0","len":24}}');
    expect(JSON.stringify(rules[2])).toContain('{"set":[8080,{"range":[9000,9100]}]}');
    expect(JSON.stringify(rules[2])).toContain('{"meta":{"key":"iifname"}},"right":"eth1"');
    expect(find(rules[3]!, 'tproxy')).toBeUndefined();
    expect(JSON.stringify(rules[3])).toContain('{"prefix":{"addr":"198.18.2.0","len":24}}');

    expect(find(rules[4]!, 'tproxy')).toEqual({ family: 'ip6', addr: '::1', port: 15001 });
    expect(JSON.stringify(rules[4])).toContain('{"prefix":{"addr":"fd00:2::","len":64}}');
    expect(verdicts([rules[5]!])).toEqual(['drop']);
  });

  it('the masked mark set keeps foreign bits (mark 0x10000 / mask 0x30000)', async () => {
    await fw.install(spec({ mark: 0x10000, mask: 0x30000 }));
    const { rules } = parseListing(await listTable('tpi_fw_test'));
    for (const i of [0, 2, 4]) {
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
    const { rules } = parseListing(await listTable('tpi_fw_test'));
    expect(find(rules[0]!, 'mangle')).toEqual({ key: { meta: { key: 'mark' } }, value: 4 });
  });

  it('failClosed = false installs no drop rules', async () => {
    await fw.install(spec({ failClosed: false }));
    const { rules } = parseListing(await listTable('tpi_fw_test'));
    expect(verdicts(rules)).toEqual(['accept', 'accept', 'accept', 'accept']);
  });

  it('the nft text rendering installs the same rules as the JSON', async () => {
    await fw.install(spec({ mark: 0x10000, mask: 0x30000 }));
    const text = renderNftText(renderRuleset(spec({ table: 'tpi_fw_text', mark: 0x10000, mask: 0x30000 })));
    await inNs('nft', ['-f', '-'], text);
    await inNs('nft', ['-f', '-'], text);
    const a = parseListing(await listTable('tpi_fw_test'));
    const b = parseListing(await listTable('tpi_fw_text'));
    expect(b.chains.map(({ handle: _h, table: _t, ...c }) => c)).toEqual(a.chains.map(({ handle: _h, table: _t, ...c }) => c));
    expect(b.rules).toEqual(a.rules);
    await fw.remove(spec({ table: 'tpi_fw_text' }));
  });

  it('remove deletes only our table, and is a no-op when it is already gone', async () => {
    await inNs('nft', ['add', 'table', 'inet', 'unrelated']);
    await inNs('nft', ['add', 'chain', 'inet', 'unrelated', 'keep', '{ type filter hook prerouting priority -150; }']);
    await fw.install(spec());
    await fw.remove(spec());
    expect(await listTable('tpi_fw_test')).toBeNull();
    await fw.remove(spec());
    const unrelated = parseListing(await listTable('unrelated'));
    expect(unrelated.chains).toMatchObject([{ name: 'keep', hook: 'prerouting' }]);
  });

  it('unprivileged nft fails with ERR_NO_CAP_NET_ADMIN', async () => {
    // nft run as nobody inside the namespace
    const asNobody: ExecFileFn = (file, args, options) =>
      execFileDefault('ip', ['netns', 'exec', ns, 'setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', file, ...args], options);
    // (not install: its stdin file belongs to root here, so nobody's nft could not even read it)
    const unprivileged = createToolRunner({ tool: 'nft', path: 'nft', pkg: 'nftables', execFile: asNobody });
    await expect(unprivileged(['-j', 'list', 'table', 'inet', 'tpi_fw_test'])).rejects.toMatchObject({
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
    expect(parseListing(await listTable('tpi_fw_test')).rules).toHaveLength(6);
  });

  it('nft missing → ERR_NFT_MISSING', async () => {
    const missing = createNftFirewall({ logger, netns: ns, nftPath: '/nonexistent/nft' });
    await expect(missing.install(spec())).rejects.toMatchObject({ code: 'ERR_NFT_MISSING' });
  });
});

// Both iptables variants, each in a namespace of its own. This kernel has both the nf_tables API
// (iptables-nft) and the x_tables one (iptables-legacy); if one is missing, the first test says
// which and why instead of passing.
describe.skipIf(!isRoot).each([{ variant: 'nft' as const }, { variant: 'legacy' as const }])('iptables firewall ($variant) in a network namespace', ({ variant }) => {
  const ipns = `tpi-ipt-${variant}-${process.pid}-${randomBytes(3).toString('hex')}`;
  const fw = createIptablesFirewall({ logger, variant, netns: ipns });
  const ipt = (family: 4 | 6, job: 'save' | 'restore', args: string[], input?: string) =>
    execFileDefault('ip', ['netns', 'exec', ipns, `${family === 4 ? 'iptables' : 'ip6tables'}-${variant}-${job}`, ...args], input === undefined ? {} : { input });
  /** `iptables-save -t mangle` without comments and counters: what an operator would compare. */
  const save = async (family: 4 | 6, table = 'mangle'): Promise<string> =>
    (await ipt(family, 'save', ['-t', table])).stdout
      .split('\n')
      .filter((l) => l !== '' && !l.startsWith('#'))
      .map((l) => l.replace(/ \[\d+:\d+\]$/, ''))
      .join('\n');
  const ours = (text: string, chain = 'tpi_fw_test'): string[] => text.split('\n').filter((l) => l.startsWith(`-A ${chain} `));
  const jumps = (text: string, chain = 'tpi_fw_test'): number => text.split('\n').filter((l) => l === `-A PREROUTING -j ${chain}`).length;

  beforeAll(async () => {
    await execFileDefault('ip', ['netns', 'add', ipns], {});
  });
  afterAll(async () => {
    await execFileDefault('ip', ['netns', 'del', ipns], {}).catch(() => {});
  });

  it(`this kernel runs iptables-${variant} (mangle, socket, TPROXY)`, async () => {
    const probe = '*mangle\n:tpi_probe - [0:0]\n-A tpi_probe -p tcp -m socket --transparent -j ACCEPT\n-A tpi_probe -p tcp -j TPROXY --on-port 1 --tproxy-mark 0x1/0x1\nCOMMIT\n';
    const r = await ipt(4, 'restore', ['--test', '--noflush'], probe).then(
      () => 'ok',
      (err: { stderr?: string }) => `iptables-${variant} cannot run on this kernel: ${err.stderr ?? String(err)} (needs ${variant === 'legacy' ? 'CONFIG_IP_NF_IPTABLES_LEGACY, CONFIG_IP_NF_MANGLE' : 'CONFIG_NF_TABLES, CONFIG_NFT_COMPAT'}, xt_socket, xt_TPROXY)`,
    );
    expect(r).toBe('ok');
  });

  it('installs idempotently: one chain per family, one jump first in PREROUTING, TPROXY then DROP per target', async () => {
    await ipt(4, 'restore', ['--noflush'], '*mangle\n-A PREROUTING -p udp -j ACCEPT\nCOMMIT\n');
    await fw.install(spec());
    await fw.install(spec());
    const v4save = await save(4);
    expect(v4save.split('\n').filter((l) => l.startsWith('-A PREROUTING'))).toEqual(['-A PREROUTING -j tpi_fw_test', '-A PREROUTING -p udp -j ACCEPT']);
    expect(ours(v4save)).toEqual([
      '-A tpi_fw_test -p tcp -m socket --transparent -j MARK --set-xmark 0x1/0x1',
      '-A tpi_fw_test -p tcp -m socket --transparent -j ACCEPT',
      '-A tpi_fw_test -p tcp -m socket -j ACCEPT',
      '-A tpi_fw_test -d 198.18.2.0/24 -i eth1 -p tcp -m multiport --dports 8080,9000:9100 -j TPROXY --on-port 15001 --on-ip 127.0.0.1 --tproxy-mark 0x1/0x1',
      '-A tpi_fw_test -d 198.18.2.0/24 -i eth1 -p tcp -m multiport --dports 8080,9000:9100 -j DROP',
    ]);
    const v6save = await save(6);
    expect(jumps(v6save)).toBe(1);
    expect(ours(v6save).slice(3)).toEqual([
      '-A tpi_fw_test -d fd00:2::/64 -p tcp -m tcp --dport 443 -j TPROXY --on-port 15001 --on-ip ::1 --tproxy-mark 0x1/0x1',
      '-A tpi_fw_test -d fd00:2::/64 -p tcp -m tcp --dport 443 -j DROP',
    ]);
    await ipt(4, 'restore', ['--noflush'], '*mangle\n-D PREROUTING -p udp -j ACCEPT\nCOMMIT\n');
  });

  it('the mark keeps foreign bits (mark 0x10000 / mask 0x30000 → --set-xmark and --tproxy-mark with the mask)', async () => {
    await fw.install(spec({ mark: 0x10000, mask: 0x30000 }));
    const rules = ours(await save(4));
    expect(rules[0]).toContain('-j MARK --set-xmark 0x10000/0x30000');
    expect(rules[3]).toContain('--tproxy-mark 0x10000/0x30000');
  });

  it('after a crash: a duplicate jump and stale rules are reconciled to exactly our rules', async () => {
    await fw.install(spec());
    // What a run killed between two restores, or a hand-made mess, could leave behind.
    await ipt(4, 'restore', ['--noflush'], '*mangle\n-A PREROUTING -j tpi_fw_test\n-A tpi_fw_test -p udp -j ACCEPT\nCOMMIT\n');
    expect(jumps(await save(4))).toBe(2);
    await fw.install(spec());
    const after = await save(4);
    expect(jumps(after)).toBe(1);
    expect(ours(after)).toHaveLength(5);
    expect(after).not.toContain('-p udp');
  });

  it('remove deletes exactly what install added: everything else, in every table, is as it was', async () => {
    await fw.remove(spec());
    const foreign = [
      '*mangle',
      ':keep - [0:0]',
      '-A keep -p tcp --dport 22 -j MARK --set-xmark 0x4000/0x4000',
      '-A PREROUTING -j keep',
      '-A PREROUTING -p tcp --dport 53 -j MARK --set-xmark 0x8000/0x8000',
      'COMMIT',
      '*filter',
      '-A INPUT -p tcp --dport 22 -j ACCEPT',
      'COMMIT',
      '',
    ].join('\n');
    await ipt(4, 'restore', ['--noflush'], foreign);
    const before = { mangle: await save(4), filter: await save(4, 'filter'), mangle6: await save(6) };
    await fw.install(spec());
    expect(jumps(await save(4))).toBe(1);
    await fw.remove(spec());
    expect({ mangle: await save(4), filter: await save(4, 'filter'), mangle6: await save(6) }).toEqual(before);
    await fw.remove(spec()); // nothing left: a no-op
    expect(await save(4)).toBe(before.mangle);
  });

  it('a rejected ruleset is ERR_IPTABLES_FAILED with the tool stderr, and leaves the installed rules intact', async () => {
    await fw.install(spec());
    const installed = await save(4);
    const err = await fw.install(spec({ targets: [{ ...v4, interface: 'x'.repeat(40) }] })).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'ERR_IPTABLES_FAILED' });
    expect((err as { stderr: string }).stderr).toMatch(/interface name/);
    expect(await save(4)).toBe(installed);
    await fw.remove(spec());
  });

  it('unprivileged iptables fails with ERR_NO_CAP_NET_ADMIN; a missing program with ERR_IPTABLES_MISSING', async () => {
    const asNobody: ExecFileFn = (file, args, options) =>
      execFileDefault('ip', ['netns', 'exec', ipns, 'setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', file, ...args], options);
    await expect(createIptablesFirewall({ logger, variant, execFile: asNobody }).remove(spec())).rejects.toMatchObject({ code: 'ERR_NO_CAP_NET_ADMIN' });
    await expect(createIptablesFirewall({ logger, variant, netns: ipns, binDir: '/nonexistent' }).install(spec())).rejects.toMatchObject({
      code: 'ERR_IPTABLES_MISSING',
      message: expect.stringMatching(/install the iptables package/),
    });
  });
});
