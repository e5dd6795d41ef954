import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import type { ExecFailure, ExecFileFn } from '../../../src/firewall/exec-file.js';
import { createNftFirewall } from '../../../src/firewall/nft.js';
import { renderRuleset, type FirewallSpec } from '../../../src/firewall/render.js';

const logger = pino({ level: 'silent' });
const spec: FirewallSpec = {
  table: 'tpi_test',
  mark: 1,
  mask: 1,
  failClosed: true,
  listen: { address: '127.0.0.1', address6: null, port: 15001 },
  targets: [{ cidr: '10.0.0.0/8', family: 4, ports: [{ from: 80, to: 80 }], interface: null }],
};

interface Call {
  file: string;
  args: readonly string[];
  input: string | undefined;
}

function fakeExec(outcome: (call: Call) => { stdout?: string } | ExecFailure): { exec: ExecFileFn; calls: Call[] } {
  const calls: Call[] = [];
  const exec: ExecFileFn = async (file, args, options) => {
    const call = { file, args, input: options.input };
    calls.push(call);
    const r = outcome(call);
    if (r instanceof Error) throw r;
    return { stdout: r.stdout ?? '', stderr: '' };
  };
  return { exec, calls };
}

function failure(code: string | number, stderr = ''): ExecFailure {
  return Object.assign(new Error(`failed ${code}`), { code, stderr }) as ExecFailure;
}

describe('createNftFirewall', () => {
  it('install pipes the rendered JSON into `nft -j -f -`', async () => {
    const { exec, calls } = fakeExec(() => ({}));
    await createNftFirewall({ logger, execFile: exec }).install(spec);
    expect(calls).toHaveLength(1);
    expect(calls[0]!.file).toBe('nft');
    expect(calls[0]!.args).toEqual(['-j', '-f', '-']);
    expect(JSON.parse(calls[0]!.input!)).toEqual(renderRuleset(spec));
  });

  it('runs inside a namespace via `ip netns exec` and honours nftPath/ipPath', async () => {
    const { exec, calls } = fakeExec(() => ({}));
    await createNftFirewall({ logger, execFile: exec, netns: 'tpi-x', nftPath: '/usr/sbin/nft', ipPath: '/sbin/ip' }).remove(spec);
    expect(calls[0]!.file).toBe('/sbin/ip');
    expect(calls[0]!.args).toEqual(['netns', 'exec', 'tpi-x', '/usr/sbin/nft', '-j', '-f', '-']);
    expect(JSON.parse(calls[0]!.input!)).toEqual({
      nftables: [{ add: { table: { family: 'inet', name: 'tpi_test' } } }, { delete: { table: { family: 'inet', name: 'tpi_test' } } }],
    });
  });

  it('nft not installed → ERR_NFT_MISSING', async () => {
    const { exec } = fakeExec(() => failure('ENOENT'));
    await expect(createNftFirewall({ logger, execFile: exec }).install(spec)).rejects.toMatchObject({
      code: 'ERR_NFT_MISSING',
      message: expect.stringMatching(/install the nftables package/),
    });
  });

  it('nft missing inside a namespace → ERR_NFT_MISSING', async () => {
    const { exec } = fakeExec(() => failure(255, 'exec of "nft" failed: No such file or directory'));
    await expect(createNftFirewall({ logger, execFile: exec, netns: 'n' }).install(spec)).rejects.toMatchObject({ code: 'ERR_NFT_MISSING' });
  });

  it('"Operation not permitted" → ERR_NO_CAP_NET_ADMIN', async () => {
    const stderr = 'netlink: Error: cache initialization failed: Operation not permitted\nOperation not permitted (you must be root)';
    const { exec } = fakeExec(() => failure(1, stderr));
    await expect(createNftFirewall({ logger, execFile: exec }).install(spec)).rejects.toMatchObject({
      code: 'ERR_NO_CAP_NET_ADMIN',
      message: expect.stringMatching(/root or CAP_NET_ADMIN/),
      stderr,
    });
  });

  it('other failures → ERR_NFT_FAILED carrying nft stderr', async () => {
    const stderr = "internal:0:0-0: Error: Unknown expression type 'foo'.";
    const { exec } = fakeExec(() => failure(1, stderr));
    const err = await createNftFirewall({ logger, execFile: exec }).install(spec).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'ERR_NFT_FAILED', exitCode: 1, stderr, argv: ['nft', '-j', '-f', '-'] });
    expect((err as Error).message).toContain(stderr);
  });

});
