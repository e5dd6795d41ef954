// app-compose.json against dstack-types' AppCompose, as serde reads it upstream: every row of
// the schema, and every way a document fails as a whole.
import { describe, expect, it } from 'vitest';
import { AppComposeReader, ComposeSchemaError, parseMemorySize } from '../../../src/registry/app-compose.js';
import { JsonTokenizer } from '../../../src/registry/json-stream.js';
import type { PortPolicy } from '../../../src/registry/types.js';

const BASE = '"manifest_version": 2, "name": "web", "runner": "docker-compose"';

function read(text: string): PortPolicy {
  const reader = new AppComposeReader();
  const t = new JsonTokenizer(reader);
  t.write(text);
  t.end();
  return reader.policy();
}

function entries(p: PortPolicy): [number, boolean][] {
  return [...p.ports].map(([port, r]) => [port, r.pp] as [number, boolean]).sort((a, b) => a[0] - b[0]);
}

function failure(text: string): { field: string; message: string } | null {
  try {
    read(text);
    return null;
  } catch (err) {
    if (!(err instanceof ComposeSchemaError)) throw err;
    return { field: err.field, message: err.message };
  }
}

describe('AppComposeReader: the policy', () => {
  it('reads port_policy: listed ports with their pp, restrict_mode', () => {
    const p = read(`{${BASE}, "port_policy": {"ports": [{"port": 8080, "pp": true}, {"port": 443}], "restrict_mode": true}}`);
    expect(entries(p)).toEqual([
      [443, false],
      [8080, true],
    ]);
    expect(p.restrictMode).toBe(true);
  });

  it('no port_policy: an open policy with no headers', () => {
    const p = read(`{${BASE}}`);
    expect(p.ports.size).toBe(0);
    expect(p.restrictMode).toBe(false);
  });

  it('a top-level "ports" (never shipped upstream) is not read: open policy, no headers on any port', () => {
    const p = read(`{${BASE}, "ports": [{"port": 8080, "pp": true}], "restrict_mode": true}`);
    expect(p.ports.size).toBe(0);
    expect(p.restrictMode).toBe(false);
  });

  it('defaults: ports [], restrict_mode false, pp false', () => {
    expect(read(`{${BASE}, "port_policy": {}}`)).toMatchObject({ restrictMode: false });
    expect(entries(read(`{${BASE}, "port_policy": {"ports": [{"port": 22}]}}`))).toEqual([[22, false]]);
  });

  it('a port listed twice: the last entry wins (the gateway collects them into a map)', () => {
    expect(entries(read(`{${BASE}, "port_policy": {"ports": [{"port": 80, "pp": true}, {"port": 81}, {"port": 80}]}}`))).toEqual([
      [80, false],
      [81, false],
    ]);
  });

  it('port 0 is a valid u16 upstream and changes nothing: accepted, not kept', () => {
    expect(entries(read(`{${BASE}, "port_policy": {"ports": [{"port": 0, "pp": true}, {"port": 65535, "pp": true}]}}`))).toEqual([[65535, true]]);
  });

  it('unknown keys are ignored at every level', () => {
    const p = read(`{${BASE}, "extra": {"deep": [1, {"x": null}]}, "port_policy": {"future": 1, "ports": [{"port": 1, "note": "x"}]}}`);
    expect(entries(p)).toEqual([[1, false]]);
  });

  it('every other AppCompose field in its declared type is accepted', () => {
    const doc = {
      manifest_version: 4294967295,
      name: 'web',
      runner: 'docker-compose',
      features: ['kms', 'tproxy-net'],
      docker_compose_file: null,
      public_logs: true,
      public_sysinfo: false,
      public_tcbinfo: true,
      kms_enabled: true,
      gateway_enabled: true,
      tproxy_enabled: false,
      local_key_provider_enabled: false,
      key_provider: 'kms',
      key_provider_id: 'ABcd01',
      allowed_envs: ['A', 'B'],
      no_instance_id: false,
      secure_time: true,
      storage_fs: 'ext4',
      swap_size: '2G',
    };
    expect(read(JSON.stringify(doc)).ports.size).toBe(0);
    for (const [key, value] of [
      ['key_provider', null],
      ['key_provider', { tpm: null }],
      ['swap_size', 0],
      ['swap_size', 18446744073709551615n],
      ['swap_size', ' 0x10 '],
      ['key_provider_id', ''],
      ['storage_fs', null],
      ['docker_compose_file', 'services: {}'],
    ] as const) {
      const text = JSON.stringify({ ...doc, [key]: typeof value === 'bigint' ? 0 : value }).replace('"swap_size":0', `"swap_size":${String(value)}`);
      expect(failure(text), `${key}: ${JSON.stringify(String(value))}`).toBeNull();
    }
  });
});

describe('AppComposeReader: any schema error fails the whole document, naming the field', () => {
  it.each([
    // The cases.
    ['"pp": "yes"', `{${BASE}, "port_policy": {"ports": [{"port": 8080, "pp": "yes"}]}}`, 'port_policy.ports[0].pp', /invalid type: string, expected a boolean/],
    ['port 70000', `{${BASE}, "port_policy": {"ports": [{"port": 70000}]}}`, 'port_policy.ports[0].port', /invalid value: integer `70000`, expected u16/],
    ['port_policy: null', `{${BASE}, "port_policy": null}`, 'port_policy', /invalid type: null, expected struct PortPolicy/],
    // u16 as serde_json reads numbers.
    ['a float port', `{${BASE}, "port_policy": {"ports": [{"port": 8080.0}]}}`, 'port_policy.ports[0].port', /floating point `8080.0`/],
    ['an exponent port', `{${BASE}, "port_policy": {"ports": [{"port": 8e3}]}}`, 'port_policy.ports[0].port', /floating point/],
    ['port -0', `{${BASE}, "port_policy": {"ports": [{"port": -0}]}}`, 'port_policy.ports[0].port', /floating point `-0`/],
    ['a negative port', `{${BASE}, "port_policy": {"ports": [{"port": -1}]}}`, 'port_policy.ports[0].port', /integer `-1`, expected u16/],
    ['a string port', `{${BASE}, "port_policy": {"ports": [{"port": "8080"}]}}`, 'port_policy.ports[0].port', /invalid type: string, expected u16/],
    ['a huge port', `{${BASE}, "port_policy": {"ports": [{"port": ${'9'.repeat(60)}}]}}`, 'port_policy.ports[0].port', /expected u16/],
    ['a port entry without port', `{${BASE}, "port_policy": {"ports": [{"pp": true}]}}`, 'port_policy.ports[0].port', /missing field `port`/],
    ['a port entry that is not an object', `{${BASE}, "port_policy": {"ports": [8080]}}`, 'port_policy.ports[0]', /expected struct PortAttrs/],
    ['pp: null', `{${BASE}, "port_policy": {"ports": [{"port": 1, "pp": null}]}}`, 'port_policy.ports[0].pp', /invalid type: null, expected a boolean/],
    ['ports: null', `{${BASE}, "port_policy": {"ports": null}}`, 'port_policy.ports', /null, expected a sequence/],
    ['ports: "x"', `{${BASE}, "port_policy": {"ports": "x"}}`, 'port_policy.ports', /string, expected a sequence/],
    ['restrict_mode: "true"', `{${BASE}, "port_policy": {"restrict_mode": "true"}}`, 'port_policy.restrict_mode', /expected a boolean/],
    ['restrict_mode: 1', `{${BASE}, "port_policy": {"restrict_mode": 1}}`, 'port_policy.restrict_mode', /integer `1`, expected a boolean/],
    ['port_policy: []', `{${BASE}, "port_policy": []}`, 'port_policy', /sequence, expected struct PortPolicy/],
    ['a duplicate key', `{${BASE}, "port_policy": {"ports": [{"port": 1, "port": 2}]}}`, 'port_policy.ports[0].port', /duplicate field `port`/],
    ['port_policy twice', `{${BASE}, "port_policy": {}, "port_policy": {}}`, 'port_policy', /duplicate field `port_policy`/],
    // Required fields.
    ['no manifest_version', '{"name": "web", "runner": "x"}', 'manifest_version', /missing field `manifest_version`/],
    ['no name', '{"manifest_version": 2, "runner": "x"}', 'name', /missing field `name`/],
    ['no runner', '{"manifest_version": 2, "name": "web"}', 'runner', /missing field `runner`/],
    ['name: null', '{"manifest_version": 2, "name": null, "runner": "x"}', 'name', /null, expected a string/],
    ['manifest_version -1', '{"manifest_version": -1, "name": "w", "runner": "x"}', 'manifest_version', /expected u32/],
    ['manifest_version 2^32', '{"manifest_version": 4294967296, "name": "w", "runner": "x"}', 'manifest_version', /expected u32/],
    // The other fields' types.
    ['features: null', `{${BASE}, "features": null}`, 'features', /null, expected a sequence/],
    ['features: [1]', `{${BASE}, "features": [1]}`, 'features[0]', /integer `1`, expected a string/],
    ['public_logs: "yes"', `{${BASE}, "public_logs": "yes"}`, 'public_logs', /expected a boolean/],
    ['tproxy_enabled: 1', `{${BASE}, "tproxy_enabled": 1}`, 'tproxy_enabled', /expected a boolean/],
    ['docker_compose_file: 5', `{${BASE}, "docker_compose_file": 5}`, 'docker_compose_file', /expected a string/],
    ['key_provider: "KMS"', `{${BASE}, "key_provider": "KMS"}`, 'key_provider', /unknown variant "KMS"/],
    ['key_provider: {"kms": 1}', `{${BASE}, "key_provider": {"kms": 1}}`, 'key_provider', /expected unit/],
    ['key_provider: {}', `{${BASE}, "key_provider": {}}`, 'key_provider', /empty map/],
    ['key_provider_id: odd', `{${BASE}, "key_provider_id": "abc"}`, 'key_provider_id', /odd number of digits/],
    ['key_provider_id: 0x', `{${BASE}, "key_provider_id": "0xab"}`, 'key_provider_id', /not a hex digit/],
    ['swap_size: "2X"', `{${BASE}, "swap_size": "2X"}`, 'swap_size', /unknown memory size suffix "X"/],
    ['swap_size: -1', `{${BASE}, "swap_size": -1}`, 'swap_size', /cannot be negative/],
    ['swap_size: 1.5', `{${BASE}, "swap_size": 1.5}`, 'swap_size', /floating point/],
    ['swap_size: ""', `{${BASE}, "swap_size": ""}`, 'swap_size', /empty memory size/],
    ['swap_size: overflow', `{${BASE}, "swap_size": "17179869184G"}`, 'swap_size', /overflow/],
    // The document itself.
    ['an array', '[]', '', /sequence, expected struct AppCompose/],
    ['a string', '"x"', '', /string, expected struct AppCompose/],
    ['null', 'null', '', /null, expected struct AppCompose/],
  ])('%s', (_what, text, field, message) => {
    const f = failure(text);
    expect(f?.field).toBe(field);
    expect(f?.message).toMatch(message);
  });

  it('the first error decides, even after thousands of good entries', () => {
    const good = Array.from({ length: 5000 }, (_, i) => `{"port": ${i + 1}}`).join(',');
    expect(failure(`{${BASE}, "port_policy": {"ports": [${good}, {"port": "x"}]}}`)?.field).toBe('port_policy.ports[5000].port');
  });
});

describe('parseMemorySize (size-parser)', () => {
  it.each([
    ['1024', 1024n],
    ['0', 0n],
    ['007', 7n],
    ['+5K', 5120n],
    ['0x1000', 4096n],
    ['0X2000', 8192n],
    ['0x+10', 16n],
    ['2K', 2048n],
    ['2k', 2048n],
    ['1M', 1048576n],
    ['1g', 1073741824n],
    ['2T', 2199023255552n],
    [' \t1G\u00a0', 1073741824n],
    ['18446744073709551615', 18446744073709551615n],
  ])('%j = %s bytes', (text, bytes) => {
    expect(parseMemorySize(text)).toBe(bytes);
  });

  it.each(['', '   ', '+5', 'abc', '0xgg', '0x', 'abcK', '1.5G', '-1', '18446744073709551616', '16777216T', 'K'])('%j is refused', (text) => {
    expect(typeof parseMemorySize(text)).toBe('string');
  });
});
