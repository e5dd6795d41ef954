// [registry.attested]: the mutual-TLS self-registration listener's configuration.
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../../src/config-parse.js';
import { ConfigError } from '../../../src/errors.js';

const FILES = 'ca_file = "/etc/tpi/ca.pem"\ncert_file = "/etc/tpi/reg.crt"\nkey_file = "/etc/tpi/reg.key"\n';
const MINIMAL = `[registry.attested]\nlisten = "198.18.2.1:8443"\n${FILES}`;

function configError(toml: string): ConfigError {
  try {
    parseConfig(toml, 'test.toml');
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

describe('[registry.attested]', () => {
  it('is off when absent', () => {
    expect(parseConfig('').registry.attested).toBeNull();
  });

  it('minimal: listen and the three files; every option at its default', () => {
    expect(parseConfig(MINIMAL).registry.attested).toEqual({
      listen: { address: '198.18.2.1', port: 8443 },
      caFile: '/etc/tpi/ca.pem',
      certFile: '/etc/tpi/reg.crt',
      keyFile: '/etc/tpi/reg.key',
      allowedApps: null,
      appIdFallback: false,
      allowAddressChange: false,
      addressMap: [],
    });
  });

  it('every option, normalised: app ids lowercase without 0x, networks canonical', () => {
    const c = parseConfig(`[registry.attested]
listen = "[fd00:18:2::1]:9443"
${FILES}allowed_apps = ["EA549F02E1A25FABD1CB788380E033EC5461B2FF", "0xabcd"]
app_id_fallback = true
allow_address_change = true
[[registry.attested.address_map]]
peer = "198.19.0.0/16"
instance = "198.18.0.0/16"
[[registry.attested.address_map]]
peer = "FD00:9:0::/64"
instance = "fd00:18:2::/64"
`).registry.attested;
    expect(c?.listen).toEqual({ address: 'fd00:18:2::1', port: 9443 });
    expect(c?.allowedApps).toEqual(['ea549f02e1a25fabd1cb788380e033ec5461b2ff', 'abcd']);
    expect(c?.appIdFallback).toBe(true);
    expect(c?.allowAddressChange).toBe(true);
    expect(c?.addressMap).toEqual([
      { peer: '198.19.0.0/16', instance: '198.18.0.0/16' },
      { peer: 'fd00:9::/64', instance: 'fd00:18:2::/64' },
    ]);
  });

  it('allowed_apps = [] lets no app register', () => {
    expect(parseConfig(`${MINIMAL}allowed_apps = []\n`).registry.attested?.allowedApps).toEqual([]);
  });

  it.each([
    [`[registry.attested]\n${FILES}`, 'registry.attested.listen', /missing; expected an address and port/],
    [`[registry.attested]\nlisten = "198.18.2.1:8443"\nca_file = "/ca.pem"\ncert_file = "/c"\n`, 'registry.attested.key_file', /missing; expected an absolute path/],
    [`[registry.attested]\nlisten = "198.18.2.1"\n${FILES}`, 'registry.attested.listen', /not an IP address and port/],
    [`[registry.attested]\nlisten = "fd00::1:8443"\n${FILES}`, 'registry.attested.listen', /"\[fd00::1\]:8443"/],
    [`[registry.attested]\nlisten = "example.org:8443"\n${FILES}`, 'registry.attested.listen', /not an IP address and port/],
    [`[registry.attested]\nlisten = "198.18.2.1:0"\n${FILES}`, 'registry.attested.listen', /out of range/],
    [`[registry.attested]\nlisten = "198.18.2.1:70000"\n${FILES}`, 'registry.attested.listen', /out of range/],
    [`[registry.attested]\nlisten = 8443\n${FILES}`, 'registry.attested.listen', /got the integer 8443/],
    [`${MINIMAL.replace('/etc/tpi/ca.pem', 'ca.pem')}`, 'registry.attested.ca_file', /not an absolute path/],
    [`${MINIMAL}allowed_apps = "abcd"\n`, 'registry.attested.allowed_apps', /expected an array of app ids/],
    [`${MINIMAL}allowed_apps = ["abc"]\n`, 'registry.attested.allowed_apps[0]', /even number/],
    [`${MINIMAL}allowed_apps = ["app-1"]\n`, 'registry.attested.allowed_apps[0]', /not an app id/],
    [`${MINIMAL}app_id_fallback = "yes"\n`, 'registry.attested.app_id_fallback', /expected true or false/],
    [`${MINIMAL}allow_adress_change = true\n`, 'registry.attested.allow_adress_change', /did you mean `registry.attested.allow_address_change`/],
    [`${MINIMAL}[[registry.attested.address_map]]\npeer = "198.19.0.0/16"\n`, 'registry.attested.address_map[0].instance', /missing/],
    [`${MINIMAL}[[registry.attested.address_map]]\npeer = "198.19.0.0/16"\ninstance = "198.18.0.0/24"\n`, 'registry.attested.address_map[0].instance', /same family and prefix length/],
    [`${MINIMAL}[[registry.attested.address_map]]\npeer = "198.19.0.1/16"\ninstance = "198.18.0.0/16"\n`, 'registry.attested.address_map[0].peer', /host bits/],
    [`${MINIMAL}[[registry.attested.address_map]]\npeer = "::ffff:198.19.0.0/112"\ninstance = "::ffff:198.18.0.0/112"\n`, 'registry.attested.address_map[0].peer', /IPv4-mapped/],
    [`${MINIMAL}[[registry.attested.address_map]]\npeer = "198.19.0.0/16"\ninstance = "198.18.0.0/16"\nport = 1\n`, 'registry.attested.address_map[0].port', /unknown key/],
    [`${MINIMAL}[[registry.attested.address_map]]\npeer = "198.19.0.0/16"\ninstance = "198.18.0.0/16"\n[[registry.attested.address_map]]\npeer = "198.19.0.0/16"\ninstance = "198.18.0.0/16"\n`, 'registry.attested.address_map[1].peer', /mapped twice/],
    ['[registry]\nattested = true\n', 'registry.attested', /expected a table/],
  ])('%#: names %s', (toml, key, problem) => {
    const err = configError(toml);
    expect(err.key).toBe(key);
    expect(err.message).toMatch(problem);
  });
});
