import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG, parseConfig } from '../../../src/config-parse.js';

const EXAMPLE = new URL('../../../examples/config.toml', import.meta.url);

describe('examples/config.toml', () => {
  it('parses, and every value it shows is the default', async () => {
    const config = parseConfig(await readFile(EXAMPLE, 'utf8'), 'examples/config.toml');
    const { targets, ...intercept } = config.intercept;
    const { targets: _none, ...defaultIntercept } = DEFAULT_CONFIG.intercept;
    expect({ ...config, intercept }).toEqual({ ...DEFAULT_CONFIG, intercept: defaultIntercept });
    expect(targets).toEqual([{ cidr: '198.18.2.0/24', family: 4, ports: [{ from: 8080, to: 8080 }, { from: 9000, to: 9100 }], interface: null }]);
  });

  it('shows every key the parser knows', async () => {
    const text = await readFile(EXAMPLE, 'utf8');
    const keys = [
      'address', 'address6', 'port', 'threads', 'allow_wildcard', 'max_connections', 'table', 'mark', 'mask', 'route_table', 'fail_closed', 'local_backends', 'cidr', 'ports',
      'interface', 'connect_timeout', 'idle_timeout', 'pp_version', 'keep_client_port', 'pipe_size', 'level', 'path', 'admin_socket',
      'agent_port', 'timeout', 'max_retries', 'backoff_initial', 'backoff_max', 'max_response_bytes', 'trusted_sources', 'max_v2_length',
    ];
    for (const key of keys) expect(text, key).toMatch(new RegExp(`^#? ?${key} = `, 'm'));
    for (const section of ['[listen]', '[intercept]', '[[intercept.targets]]', '[upstream]', '[log]', '[registry]', '[registry.fetch]', '[inbound_pp]']) {
      expect(text).toContain(section);
    }
  });
});
