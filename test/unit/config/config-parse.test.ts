import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG, loadConfig, parseConfig } from '../../../src/config-parse.js';
import { ConfigError } from '../../../src/errors.js';

/** The ConfigError parseConfig throws for `toml` (fails the test when it does not throw). */
function configError(toml: string): ConfigError {
  try {
    parseConfig(toml, 'test.toml');
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

const TARGET = '[[intercept.targets]]\ncidr = "198.18.2.0/24"\nports = [8080]\n';

describe('parseConfig defaults', () => {
  it('an empty file gives every documented default and no targets', () => {
    expect(parseConfig('')).toEqual({
      listen: { address: '127.0.0.1', address6: '::1', port: 24511, threads: availableParallelism(), allowWildcard: false, maxConnections: null },
      intercept: { backend: 'nftables', iptablesVariant: 'auto', table: 'tproxy_interceptor', mark: 0x2000, mask: 0x2000, routeTable: 4511, failClosed: true, localBackends: false, targets: [] },
      upstream: { connectTimeoutMs: 5000, idleTimeoutMs: 300_000, ppVersion: 2, keepClientPort: false, pipeSize: 262144 },
      log: { level: 'info' },
      registry: {
        path: '/var/lib/tproxy-interceptor',
        adminSocket: '/run/tproxy-interceptor/admin.sock',
        agentPort: 8090,
        trustAgentComposeHash: false,
        // A 50 MiB app-compose escaped twice (4x at worst) plus 4 MiB for the rest of the response.
        fetch: { timeoutMs: 10_000, maxRetries: 5, backoffInitialMs: 1000, backoffMaxMs: 30_000, maxResponseBytes: 204 * 1024 * 1024 },
        store: 'sqlite',
        etcd: null,
        attested: null,
      },
      inboundPp: { trustedSources: [], timeoutMs: 3000, maxV2Length: 4096 },
      metrics: { listen: null },
    });
    expect(DEFAULT_CONFIG).toEqual(parseConfig(''));
  });

  it('returns a deeply frozen object', () => {
    const c = parseConfig(TARGET);
    expect(Object.isFrozen(c)).toBe(true);
    expect(Object.isFrozen(c.intercept.targets)).toBe(true);
    expect(Object.isFrozen(c.intercept.targets[0]!.ports[0])).toBe(true);
    expect(Object.isFrozen(c.registry.fetch)).toBe(true);
    expect(Object.isFrozen(c.inboundPp.trustedSources)).toBe(true);
  });
});

describe('parseConfig values', () => {
  it('[metrics] listen: an IPv4 or bracketed IPv6 address and a port; absent: off', () => {
    expect(parseConfig('[metrics]\nlisten = "127.0.0.1:9464"\n').metrics).toEqual({ listen: { address: '127.0.0.1', port: 9464 } });
    expect(parseConfig('[metrics]\nlisten = "[::1]:9464"\n').metrics).toEqual({ listen: { address: '::1', port: 9464 } });
    expect(parseConfig('[metrics]\n').metrics).toEqual({ listen: null });
  });

  it('parses targets: CIDR normalised, adjacent ports merged and sorted, interface', () => {
    const c = parseConfig(`
[[intercept.targets]]
cidr = "198.18.2.7"
ports = ["9000-9100", 8080, "9101-9200", 22, "443"]
interface = "eth1"
[[intercept.targets]]
cidr = "FD00:2:0::/64"
ports = [443]
`);
    expect(c.intercept.targets).toEqual([
      {
        cidr: '198.18.2.7/32',
        family: 4,
        ports: [
          { from: 22, to: 22 },
          { from: 443, to: 443 },
          { from: 8080, to: 8080 },
          { from: 9000, to: 9200 },
        ],
        interface: 'eth1',
      },
      { cidr: 'fd00:2::/64', family: 6, ports: [{ from: 443, to: 443 }], interface: null },
    ]);
  });

  it('takes the iptables backend and its variant', () => {
    const c = parseConfig('[intercept]\nbackend = "iptables"\niptables_variant = "legacy"\ntable = "TPI"\n');
    expect(c.intercept).toMatchObject({ backend: 'iptables', iptablesVariant: 'legacy', table: 'TPI', failClosed: true });
    // the 28-character limit is iptables' alone
    expect(parseConfig(`[intercept]\ntable = "${'t'.repeat(32)}"\n`).intercept.table).toHaveLength(32);
  });

  it('accepts hex marks', () => {
    const c = parseConfig('[intercept]\nmark = 0x10000\nmask = 0x30000\n');
    expect(c.intercept.mark).toBe(0x10000);
    expect(c.intercept.mask).toBe(0x30000);
    expect(parseConfig('[intercept]\nmark = 0xffffffff\nmask = 0xffffffff\n').intercept.mark).toBe(0xffffffff);
  });

  it('address6 = "" or false disables IPv6', () => {
    expect(parseConfig('[listen]\naddress6 = ""\n').listen.address6).toBeNull();
    expect(parseConfig('[listen]\naddress6 = false\n').listen.address6).toBeNull();
    expect(parseConfig('[listen]\naddress6 = "fd00::5"\n').listen.address6).toBe('fd00::5');
  });

  it('parses durations as strings or bare seconds', () => {
    const c = parseConfig('[upstream]\nconnect_timeout = "250ms"\nidle_timeout = 90\n[inbound_pp]\ntimeout = "1m30s"\n');
    expect(c.upstream.connectTimeoutMs).toBe(250);
    expect(c.upstream.idleTimeoutMs).toBe(90_000);
    expect(c.inboundPp.timeoutMs).toBe(90_000);
  });

  it('normalises trusted sources', () => {
    expect(parseConfig('[inbound_pp]\ntrusted_sources = ["10.0.0.0/8", "192.168.1.1", "FD00::/8"]\n').inboundPp.trustedSources).toEqual([
      '10.0.0.0/8',
      '192.168.1.1/32',
      'fd00::/8',
    ]);
  });

  it('accepts the other enumerations', () => {
    const c = parseConfig('[upstream]\npp_version = 1\nkeep_client_port = true\npipe_size = 0\n[log]\nlevel = "silent"\n');
    expect(c.upstream).toMatchObject({ ppVersion: 1, keepClientPort: true, pipeSize: 0 });
    expect(parseConfig('[upstream]\npipe_size = 1048576\n').upstream.pipeSize).toBe(1048576);
    expect(c.log.level).toBe('silent');
  });
});

describe('parseConfig: [registry] store', () => {
  it('store = "etcd" takes the endpoints, prefix, timeout, TLS files and user of [registry.etcd], with defaults', () => {
    expect(parseConfig('[registry]\nstore = "etcd"\n').registry.etcd).toEqual({
      endpoints: ['http://127.0.0.1:2379'],
      prefix: '/tproxy-interceptor/',
      timeoutMs: 3000,
      ca: null,
      cert: null,
      key: null,
      username: null,
      password: null,
    });
    const full = parseConfig(`
[registry]
store = "etcd"
[registry.etcd]
endpoints = ["https://10.0.0.5:2379/", "https://[fd00::5]:2379"]
prefix = "/prod/tpi/"
timeout = "500ms"
ca = "/etc/tpi/ca.pem"
cert = "/etc/tpi/node.pem"
key = "/etc/tpi/node-key.pem"
username = "tpi"
password = "secret"
`).registry;
    expect(full.store).toBe('etcd');
    expect(full.etcd).toEqual({
      endpoints: ['https://10.0.0.5:2379', 'https://[fd00::5]:2379'],
      prefix: '/prod/tpi/',
      timeoutMs: 500,
      ca: '/etc/tpi/ca.pem',
      cert: '/etc/tpi/node.pem',
      key: '/etc/tpi/node-key.pem',
      username: 'tpi',
      password: 'secret',
    });
  });
});

describe('listen: wildcard addresses and the connection cap', () => {
  it('refuses a wildcard listen address unless allow_wildcard says so', () => {
    for (const [key, value] of [['address', '0.0.0.0'], ['address6', '::'], ['address6', '0:0:0:0:0:0:0:0']]) {
      const err = configError(`[listen]\n${key} = "${value}"\n`);
      expect(err.key).toBe(`listen.${key}`);
      expect(err.message).toMatch(/listens on every address of this host.*set listen.allow_wildcard = true/);
    }
    const c = parseConfig('[listen]\naddress = "0.0.0.0"\naddress6 = "::"\nallow_wildcard = true\n');
    expect(c.listen).toMatchObject({ address: '0.0.0.0', address6: '::', allowWildcard: true });
  });

  it('max_connections is a positive integer, absent = derived at start', () => {
    expect(parseConfig('[listen]\nmax_connections = 100\n').listen.maxConnections).toBe(100);
    expect(configError('[listen]\nmax_connections = 0\n').key).toBe('listen.max_connections');
    expect(configError('[listen]\nmax_connections = "auto"\n').message).toMatch(/omit it to derive it from the open-files limit/);
  });
});

describe('targets: one target per address and port', () => {
  it('a port listed twice, or overlapping ranges, name both entries', () => {
    let err = configError(`[[intercept.targets]]\ncidr = "198.18.2.0/24"\nports = [8080, 443, 8080]\n`);
    expect(err.key).toBe('intercept.targets[0].ports[2]');
    expect(err.message).toMatch(/8080 overlaps intercept.targets\[0\].ports\[0\] \(8080\); list each port once/);
    err = configError(`[[intercept.targets]]\ncidr = "198.18.2.0/24"\nports = ["9000-9100", 9050]\n`);
    expect(err.key).toBe('intercept.targets[0].ports[1]');
    expect(err.message).toMatch(/9050 overlaps intercept.targets\[0\].ports\[0\] \("9000-9100"\)/);
  });

  it('overlapping networks sharing a port are an error; disjoint ports, other interfaces or families are fine', () => {
    const err = configError(`
[[intercept.targets]]
cidr = "198.18.0.0/16"
ports = ["8000-8100"]
[[intercept.targets]]
cidr = "198.18.2.0/24"
ports = [443, 8080]
`);
    expect(err.key).toBe('intercept.targets[1]');
    expect(err.message).toMatch(/198.18.2.0\/24 overlaps intercept.targets\[0\] \(198.18.0.0\/16\) on port 8080; each address and port may be intercepted by one target only/);
    const ok = parseConfig(`
[[intercept.targets]]
cidr = "198.18.0.0/16"
ports = [81]
[[intercept.targets]]
cidr = "198.18.2.0/24"
ports = [443]
[[intercept.targets]]
cidr = "198.18.2.0/24"
ports = [80]
interface = "eth1"
[[intercept.targets]]
cidr = "198.18.2.0/24"
ports = [80]
interface = "eth2"
[[intercept.targets]]
cidr = "fd00::/8"
ports = [80]
`);
    expect(ok.intercept.targets).toHaveLength(5);
    // One interface-bound target overlaps an any-interface one.
    expect(configError(`
[[intercept.targets]]
cidr = "198.18.2.0/24"
ports = [80]
interface = "eth1"
[[intercept.targets]]
cidr = "198.18.2.9"
ports = [80]
`).key).toBe('intercept.targets[1]');
  });
});

describe('parseConfig errors name the key, the problem and the accepted form', () => {
  it.each<[string, string, RegExp]>([
    ['[intercept]\nmrak = 1\n', 'intercept.mrak', /unknown key `intercept.mrak` \(did you mean `intercept.mark`\?\)/],
    ['[intercept]\nfail_closd = false\n', 'intercept.fail_closd', /did you mean `intercept.fail_closed`/],
    ['[lisen]\nport = 1\n', 'lisen', /did you mean `listen`/],
    ['[foo]\n', 'foo', /unknown key `foo` \(known keys: listen, intercept, upstream, log, registry, inbound_pp, metrics\)/],
    ['[listen]\nzzzzzzzz = 1\n', 'listen.zzzzzzzz', /known keys in \[listen\]: address, address6, port/],
    ['[registry.fetch]\nretries = 3\n', 'registry.fetch.retries', /did you mean `registry.fetch.max_retries`/],
    [`${TARGET}iface = "eth0"\n`, 'intercept.targets[0].iface', /did you mean `intercept.targets\[0\].interface`/],
    ['listen = 5\n', 'listen', /expected a table \(\[listen\]\), got the integer 5/],
    ['[listen]\nport = "15001"\n', 'listen.port', /expected a TCP port 1..65535, got the string "15001"/],
    ['[listen]\nport = 70000\n', 'listen.port', /out of range; expected a TCP port 1..65535/],
    ['[listen]\nport = 1.5\n', 'listen.port', /got the float 1.5/],
    ['[listen]\naddress = "localhost"\n', 'listen.address', /not an IPv4 address; expected an IPv4 address like "127.0.0.1"/],
    ['[listen]\naddress = "::1"\n', 'listen.address', /not an IPv4 address/],
    ['[listen]\naddress6 = "127.0.0.1"\n', 'listen.address6', /not an IPv6 address/],
    ['[listen]\naddress6 = true\n', 'listen.address6', /or "" \/ false to disable IPv6, got the boolean true/],
    ['[intercept]\nmark = 0\n', 'intercept.mark', /out of range; expected an integer 0x1..0xffffffff/],
    ['[intercept]\nmark = 0x100000000\nmask = 0x100000000\n', 'intercept.mark', /out of range/],
    ['[intercept]\nmark = 99999999999999999999\n', 'intercept.mark', /out of range/],
    ['[intercept]\nmark = 0x3\nmask = 0x1\n', 'intercept.mark', /0x3 has bits outside intercept.mask 0x1/],
    ['[intercept]\nmask = -1\n', 'intercept.mask', /out of range/],
    ['[intercept]\nroute_table = 254\n', 'intercept.route_table', /"main" table; expected an integer 1..2147483647 other than 253, 254, 255/],
    ['[intercept]\nroute_table = 255\n', 'intercept.route_table', /"local"/],
    ['[intercept]\nroute_table = 253\n', 'intercept.route_table', /"default"/],
    ['[intercept]\nroute_table = 0\n', 'intercept.route_table', /out of range/],
    ['[intercept]\nroute_table = 2147483648\n', 'intercept.route_table', /out of range/],
    ['[intercept]\ntable = "my-table"\n', 'intercept.table', /expected a name of 1..32 letters, digits and underscores/],
    ['[intercept]\ntable = ""\n', 'intercept.table', /letters, digits and underscores/],
    ['[intercept]\nbackend = "ipfw"\n', 'intercept.backend', /"ipfw" is not allowed; expected one of "nftables", "iptables"/],
    ['[intercept]\nbackend = "iptables"\niptables_variant = "xtables"\n', 'intercept.iptables_variant', /expected one of "auto", "nft", "legacy"/],
    ['[intercept]\nbackend = "iptables"\ntable = "a_name_of_twenty_nine_chars__"\n', 'intercept.table', /1..28 letters.*iptables chain names are at most 28 characters/],
    ['[intercept]\nbackend = "iptables"\ntable = "PREROUTING"\n', 'intercept.table', /other than a built-in chain/],
    ['[intercept]\nbackend = "iptables"\nfail_closed = false\n', 'intercept.fail_closed', /not possible with backend = "iptables".*TPROXY target drops/],
    [`[intercept]\nbackend = "iptables"\n${TARGET}interface = "veth+"\n`, 'intercept.targets[0].interface', /trailing "\+" is a wildcard/],
    [`[intercept]\ntable = "${'a'.repeat(33)}"\n`, 'intercept.table', /letters, digits and underscores/],
    ['[intercept]\nfail_closed = "yes"\n', 'intercept.fail_closed', /expected true or false, got the string "yes"/],
    ['[intercept]\ntargets = 5\n', 'intercept.targets', /expected an array of tables/],
    ['[[intercept.targets]]\nports = [1]\n', 'intercept.targets[0].cidr', /missing; expected a network/],
    ['[[intercept.targets]]\ncidr = "198.18.2.7/24"\nports = [1]\n', 'intercept.targets[0].cidr', /did you mean 198.18.2.0\/24/],
    ['[[intercept.targets]]\ncidr = "198.18.2.0/24"\n', 'intercept.targets[0].ports', /missing; expected an array of ports/],
    ['[[intercept.targets]]\ncidr = "198.18.2.0/24"\nports = []\n', 'intercept.targets[0].ports', /is empty/],
    ['[[intercept.targets]]\ncidr = "198.18.2.0/24"\nports = 80\n', 'intercept.targets[0].ports', /expected an array of ports .* "a-b" range strings/],
    [`${TARGET}[[intercept.targets]]\ncidr = "10.0.0.0/8"\nports = [1, 2, 0]\n`, 'intercept.targets[1].ports[2]', /port 0 is out of range/],
    [`${TARGET}[[intercept.targets]]\ncidr = "10.0.0.0/8"\nports = [1, "200-100"]\n`, 'intercept.targets[1].ports[1]', /range start is above its end; write "100-200"/],
    ['[[intercept.targets]]\ncidr = "10.0.0.0/8"\nports = ["80-70000"]\n', 'intercept.targets[0].ports[0]', /ports must be 1..65535/],
    ['[[intercept.targets]]\ncidr = "10.0.0.0/8"\nports = ["http"]\n', 'intercept.targets[0].ports[0]', /"a-b" range string, got the string "http"/],
    ['[[intercept.targets]]\ncidr = "10.0.0.0/8"\nports = [1]\ninterface = "a/b"\n', 'intercept.targets[0].interface', /not a valid interface name/],
    ['[[intercept.targets]]\ncidr = "10.0.0.0/8"\nports = [1]\ninterface = "averyveryverylongname"\n', 'intercept.targets[0].interface', /1..15 characters/],
    [
      `[listen]\naddress6 = false\n${TARGET}[[intercept.targets]]\ncidr = "fd00:2::/64"\nports = [443]\n`,
      'intercept.targets[1].cidr',
      /IPv6 network but listen.address6 is disabled/,
    ],
    ['[upstream]\npp_version = 3\n', 'upstream.pp_version', /expected 1 or 2/],
    ['[upstream]\nkeep_client_port = 1\n', 'upstream.keep_client_port', /expected true or false/],
    ['[upstream]\npipe_size = 1000\n', 'upstream.pipe_size', /1000 is out of range; expected a number of bytes: 0 \(the kernel default\) or 4096..1048576/],
    ['[upstream]\npipe_size = 2097152\n', 'upstream.pipe_size', /out of range/],
    ['[upstream]\npipe_size = "256KiB"\n', 'upstream.pipe_size', /expected a number of bytes/],
    ['[upstream]\nconnect_timeout = "5 seconds"\n', 'upstream.connect_timeout', /"250ms", "5s", "1m", "1h" or "1m30s"/],
    ['[upstream]\nconnect_timeout = "-5s"\n', 'upstream.connect_timeout', /negative/],
    ['[upstream]\nconnect_timeout = "0s"\n', 'upstream.connect_timeout', /greater than zero/],
    ['[upstream]\nidle_timeout = "30d"\n', 'upstream.idle_timeout', /expected a duration/],
    ['[upstream]\nidle_timeout = "1000h"\n', 'upstream.idle_timeout', /too long/],
    ['[upstream]\nidle_timeout = true\n', 'upstream.idle_timeout', /expected a duration .* got the boolean true/],
    ['[log]\nlevel = "verbose"\n', 'log.level', /expected one of "trace", "debug", "info", "warn", "error", "fatal", "silent"/],
    ['[registry]\npath = "var/lib/x"\n', 'registry.path', /not an absolute path/],
    ['[registry]\nadmin_socket = "x.sock"\n', 'registry.admin_socket', /not an absolute path/],
    ['[registry]\nagent_port = 0\n', 'registry.agent_port', /out of range/],
    ['[registry.fetch]\nmax_retries = -1\n', 'registry.fetch.max_retries', /out of range/],
    ['[registry.fetch]\nmax_response_bytes = "4MiB"\n', 'registry.fetch.max_response_bytes', /expected an integer number of bytes/],
    ['[registry]\ntrust_agent_compose_hash = "yes"\n', 'registry.trust_agent_compose_hash', /true or false|boolean/],
    ['[registry.fetch]\nbackoff_initial = "10s"\nbackoff_max = "5s"\n', 'registry.fetch.backoff_max', /below registry.fetch.backoff_initial/],
    ['[registry]\nfetch = 1\n', 'registry.fetch', /expected a table \(\[registry.fetch\]\)/],
    ['[registry]\nstore = "redis"\n', 'registry.store', /expected one of "sqlite", "etcd"/],
    ['[registry.etcd]\nendpoints = ["http://10.0.0.1:2379"]\n', 'registry.etcd', /registry.store is "sqlite"; set registry.store = "etcd"/],
    ['[registry]\nstore = "etcd"\n[registry.etcd]\nendpoint = "x"\n', 'registry.etcd.endpoint', /did you mean `registry.etcd.endpoints`/],
    ['[registry]\nstore = "etcd"\n[registry.etcd]\nendpoints = []\n', 'registry.etcd.endpoints', /expected an array of etcd client URLs/],
    ['[registry]\nstore = "etcd"\n[registry.etcd]\nendpoints = ["10.0.0.1:2379"]\n', 'registry.etcd.endpoints[0]', /not an etcd client URL; .*scheme, host and port/],
    ['[registry]\nstore = "etcd"\n[registry.etcd]\nendpoints = ["http://10.0.0.1:2379/v3"]\n', 'registry.etcd.endpoints[0]', /not an etcd client URL/],
    ['[registry]\nstore = "etcd"\n[registry.etcd]\nendpoints = ["http://a:2379", "https://b:2379"]\n', 'registry.etcd.endpoints', /mixes http:\/\/ .* and https:\/\//],
    ['[registry]\nstore = "etcd"\n[registry.etcd]\nca = "/etc/ca.pem"\n', 'registry.etcd.endpoints', /plain http, but TLS files are set/],
    ['[registry]\nstore = "etcd"\n[registry.etcd]\nendpoints = ["https://a:2379"]\ncert = "/c.pem"\n', 'registry.etcd.key', /needs both cert and key/],
    ['[registry]\nstore = "etcd"\n[registry.etcd]\nendpoints = ["https://a:2379"]\nca = "ca.pem"\n', 'registry.etcd.ca', /not an absolute path/],
    ['[registry]\nstore = "etcd"\n[registry.etcd]\nusername = "root"\n', 'registry.etcd.password', /needs both username and password/],
    ['[registry]\nstore = "etcd"\n[registry.etcd]\nprefix = "/tpi"\n', 'registry.etcd.prefix', /ending with "\/"/],
    ['[registry]\nstore = "etcd"\n[registry.etcd]\ntimeout = "0s"\n', 'registry.etcd.timeout', /greater than zero/],
    ['[inbound_pp]\ntrusted_sources = "10.0.0.0/8"\n', 'inbound_pp.trusted_sources', /expected an array of networks/],
    ['[inbound_pp]\ntrusted_sources = ["10.0.0.0/8", "10.0.0.1/8"]\n', 'inbound_pp.trusted_sources[1]', /host bits .* 10.0.0.0\/8/],
    ['[inbound_pp]\ntrusted_sources = [10]\n', 'inbound_pp.trusted_sources[0]', /expected a network like/],
    ['[inbound_pp]\nmax_v2_length = 15\n', 'inbound_pp.max_v2_length', /out of range; expected an integer 16..65535/],
    ['[inbound_pp]\nmax_v2_length = 65536\n', 'inbound_pp.max_v2_length', /out of range/],
    ['[inbound_pp]\ntimeout = 1979-05-27\n', 'inbound_pp.timeout', /got a date/],
    ['[metrics]\nlisten = "9464"\n', 'metrics.listen', /not an IP address and port; expected an address and port like "127.0.0.1:9464"/],
    ['[metrics]\nlisten = "localhost:9464"\n', 'metrics.listen', /not an IP address and port/],
    ['[metrics]\nlisten = "127.0.0.1:0"\n', 'metrics.listen', /out of range/],
    ['[metrics]\nlisten = 9464\n', 'metrics.listen', /expected an address and port/],
    ['[metrics]\nlisen = "127.0.0.1:9464"\n', 'metrics.lisen', /did you mean `metrics.listen`/],
  ])('%j → %s', (toml, key, problem) => {
    const err = configError(toml);
    expect(err.code).toBe('ERR_CONFIG');
    expect(err.key).toBe(key);
    expect(err.message.startsWith(`config: ${key}: `)).toBe(true);
    expect(err.message).toMatch(problem);
  });

  it('reports TOML syntax errors with the file and smol-toml line/column', () => {
    const err = configError('[listen]\nport = 15001\naddress = "127.0.0.1\n');
    expect(err.key).toBe('test.toml');
    expect(err.message).toMatch(/^config: test.toml: TOML syntax error at line 3, column \d+: /);
  });

  it('rejects a __proto__ key as unknown instead of polluting anything', () => {
    const err = configError('[listen]\n__proto__ = 1\n');
    expect(err.key).toBe('listen.__proto__');
  });
});

describe('loadConfig', () => {
  let dir: string | undefined;
  afterEach(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
    dir = undefined;
  });

  it('reads and parses a file, using its path for syntax errors', async () => {
    dir = await mkdtemp(join(tmpdir(), 'tpi-config-'));
    const good = join(dir, 'good.toml');
    await writeFile(good, TARGET);
    expect((await loadConfig(good)).intercept.targets).toHaveLength(1);
    const bad = join(dir, 'bad.toml');
    await writeFile(bad, '[listen\n');
    await expect(loadConfig(bad)).rejects.toMatchObject({ code: 'ERR_CONFIG', key: bad });
  });

  it('ENOENT names the path', async () => {
    const missing = '/nonexistent/tproxy-interceptor.toml';
    await expect(loadConfig(missing)).rejects.toMatchObject({ code: 'ERR_CONFIG', key: missing, message: expect.stringMatching(/file not found/) });
  });

  it('listen.threads takes 1..256, one per CPU by default', () => {
    expect(parseConfig('[listen]\nthreads = 3\n').listen.threads).toBe(3);
    expect(() => parseConfig('[listen]\nthreads = 0\n')).toThrow(/listen\.threads.*1\.\.256/);
    expect(() => parseConfig('[listen]\nthreads = "auto"\n')).toThrow(/listen\.threads.*omit it for one per CPU/);
  });

  it.each([
    ['[listen]\naccept = "native"\n', 'listen.accept', /no longer supported: connections are always accepted by the native loop threads/],
    ['[listen]\nworkers = 2\n', 'listen.workers', /no longer supported: .*set listen\.threads/],
    ['[upstream]\nrelay = "splice"\n', 'upstream.relay', /no longer supported: bytes always move with splice/],
  ])('a retired key is an error naming its replacement: %j', (toml, key, message) => {
    const err = configError(toml);
    expect(err.key).toBe(key);
    expect(err.message).toMatch(message);
  });

  it('a directory names the path', async () => {
    dir = await mkdtemp(join(tmpdir(), 'tpi-config-'));
    await expect(loadConfig(dir)).rejects.toMatchObject({ code: 'ERR_CONFIG', key: dir, message: expect.stringMatching(/is a directory/) });
  });
});
