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
      'address', 'address6', 'port', 'threads', 'allow_wildcard', 'max_connections', 'backend', 'iptables_variant', 'table', 'mark', 'mask', 'route_table', 'fail_closed', 'local_backends', 'cidr', 'ports',
      'interface', 'connect_timeout', 'idle_timeout', 'pp_version', 'keep_client_port', 'pipe_size', 'level', 'path', 'admin_socket',
      'agent_port', 'trust_agent_compose_hash', 'timeout', 'max_retries', 'backoff_initial', 'backoff_max', 'max_response_bytes', 'trusted_sources', 'max_v2_length',
      'listen', 'ca_file', 'cert_file', 'key_file', 'allowed_apps', 'app_id_fallback', 'allow_address_change', 'peer', 'instance',
      'store', 'endpoints', 'prefix', 'ca', 'cert', 'key', 'username', 'password',
    ];
    for (const key of keys) expect(text, key).toMatch(new RegExp(`^#? ?${key} = `, 'm'));
    for (const section of ['[listen]', '[intercept]', '[[intercept.targets]]', '[upstream]', '[log]', '[registry]', '[registry.etcd]', '[registry.fetch]', '[registry.attested]', '[[registry.attested.address_map]]', '[inbound_pp]', '[metrics]']) {
      expect(text).toContain(section);
    }
  });

  it('the commented [registry.attested] example parses once uncommented', async () => {
    const text = await readFile(EXAMPLE, 'utf8');
    const block = text.slice(text.indexOf('# [registry.attested]'), text.indexOf('[inbound_pp]'));
    const toml = block.split('\n').filter((l) => /^# (\[|[a-z_]+ = )/.test(l)).map((l) => l.slice(2)).join('\n');
    expect(parseConfig(toml, 'example').registry.attested).toMatchObject({
      listen: { address: '198.18.2.1', port: 8443 },
      allowedApps: ['ea549f02e1a25fabd1cb788380e033ec5461b2ff'],
      appIdFallback: false,
      allowAddressChange: false,
      addressMap: [{ peer: '198.19.0.0/16', instance: '198.18.0.0/16' }],
    });
  });
});
