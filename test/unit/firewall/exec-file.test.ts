import { describe, expect, it } from 'vitest';
import { createToolRunner, execFileDefault, toolArgv } from '../../../src/firewall/exec-file.js';

describe('execFileDefault', () => {
  it('passes argv verbatim (no shell) and feeds stdin', async () => {
    expect(await execFileDefault('cat', [], { input: 'hello; $(rm -rf /)' })).toEqual({ stdout: 'hello; $(rm -rf /)', stderr: '' });
    expect((await execFileDefault('printf', ['%s|', 'a b', '$HOME', ';'], {})).stdout).toBe('a b|$HOME|;|');
  });

  it('rejects with the exit status and stderr', async () => {
    await expect(execFileDefault('sh', ['-c', 'echo oops >&2; exit 3'], {})).rejects.toMatchObject({ code: 3, stderr: 'oops\n' });
  });

  it('rejects with ENOENT for a missing program', async () => {
    await expect(execFileDefault('/nonexistent/tpi-tool', [], {})).rejects.toMatchObject({ code: 'ENOENT' });
  });
});

describe('createToolRunner', () => {
  it('maps a missing binary to ERR_<TOOL>_MISSING', async () => {
    const run = createToolRunner({ tool: 'ip', path: '/nonexistent/ip', pkg: 'iproute2' });
    await expect(run(['rule', 'show'])).rejects.toMatchObject({ code: 'ERR_IP_MISSING', message: expect.stringMatching(/install the iproute2 package/) });
  });

  it('toolArgv prefixes `ip netns exec <ns>` when a namespace is given', () => {
    expect(toolArgv('nft', ['-j', 'list', 'ruleset'])).toEqual(['nft', '-j', 'list', 'ruleset']);
    expect(toolArgv('nft', ['-j', 'list', 'ruleset'], 'tpi-1')).toEqual(['ip', 'netns', 'exec', 'tpi-1', 'nft', '-j', 'list', 'ruleset']);
  });
});
