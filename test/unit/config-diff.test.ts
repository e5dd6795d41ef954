// What a reload may apply: every config key is classified (a new key cannot slip through a reload
// unapplied), and the diff names changed keys by their TOML names.
import { describe, expect, it } from 'vitest';
import { configLeaves, diffConfig, KEYS } from '../../src/config-diff.js';
import { parseConfig } from '../../src/config-parse.js';

const BASE = `
[[intercept.targets]]
cidr = "198.18.2.0/24"
ports = [8080]
`;
const FULL = `${BASE}
[registry]
store = "etcd"
[registry.etcd]
endpoints = ["http://127.0.0.1:2379"]
[registry.attested]
listen = "198.18.2.1:8443"
ca_file = "/ca.pem"
cert_file = "/c.pem"
key_file = "/k.pem"
[metrics]
listen = "127.0.0.1:9464"
`;

describe('KEYS', () => {
  it('classifies every leaf of a config with every optional section, and nothing else', () => {
    const leaves = configLeaves(parseConfig(FULL)).map(([path]) => path).sort();
    expect(leaves).toEqual(Object.keys(KEYS).sort());
    // and the same leaves when the optional sections are absent
    expect(configLeaves(parseConfig(BASE)).map(([path]) => path).sort()).toEqual(leaves);
  });
});

describe('diffConfig', () => {
  const base = parseConfig(BASE);
  it('nothing changed', () => {
    expect(diffConfig(base, parseConfig(BASE))).toEqual({ live: [], restart: [], firewall: false });
  });

  it('targets and fail_closed are live and change the firewall', () => {
    const next = parseConfig(`${BASE}\n[[intercept.targets]]\ncidr = "198.18.3.0/24"\nports = [80]\n`);
    expect(diffConfig(base, next)).toEqual({ live: ['intercept.targets'], restart: [], firewall: true });
    const open = parseConfig(BASE.replace('[[intercept.targets]]', '[intercept]\nfail_closed = false\n[[intercept.targets]]'));
    expect(diffConfig(base, open)).toEqual({ live: ['intercept.fail_closed'], restart: [], firewall: true });
  });

  it('timeouts, PROXY version, source port, trusted sources and the log level are live without a firewall change', () => {
    const next = parseConfig(`${BASE}
[upstream]
connect_timeout = "1s"
idle_timeout = "30s"
pp_version = 1
keep_client_port = true
[inbound_pp]
trusted_sources = ["10.0.0.0/8"]
timeout = "1s"
[log]
level = "debug"
`);
    expect(diffConfig(base, next)).toEqual({
      live: ['inbound_pp.timeout', 'inbound_pp.trusted_sources', 'log.level', 'upstream.connect_timeout', 'upstream.idle_timeout', 'upstream.keep_client_port', 'upstream.pp_version'],
      restart: [],
      firewall: false,
    });
  });

  it('listeners, firewall identity, store, admin socket, metrics: restart, named by their TOML keys', () => {
    const next = parseConfig(`${BASE.replace('[[intercept.targets]]', '[intercept]\nmark = 0x1000\nmask = 0x1000\n[[intercept.targets]]')}
[listen]
port = 24600
max_connections = 100
[upstream]
pipe_size = 0
idle_timeout = "1m"
[registry]
admin_socket = "/run/x.sock"
[registry.fetch]
backoff_max = "1m"
[metrics]
listen = "127.0.0.1:9464"
`);
    expect(diffConfig(base, next)).toEqual({
      live: ['upstream.idle_timeout'],
      restart: ['intercept.mark', 'intercept.mask', 'listen.max_connections', 'listen.port', 'metrics.listen', 'registry.admin_socket', 'registry.fetch.backoff_max', 'upstream.pipe_size'],
      firewall: false,
    });
    expect(diffConfig(base, parseConfig(FULL)).restart).toEqual(['metrics.listen', 'registry.attested', 'registry.etcd', 'registry.store']);
  });
});
