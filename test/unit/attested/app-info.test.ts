// The identity in an RA-TLS client certificate: both MessagePack encodings of AppInfo, the app-id
// fallback, and every malformed shape, read from real DER certificates.
import { describe, expect, it } from 'vitest';
import { encode } from '@msgpack/msgpack';
import { decodeAppInfo, identityFromCertificate, OID_APP_ID, OID_APP_INFO } from '../../../src/attested/app-info.js';
import { AttestedRejection } from '../../../src/attested/errors.js';
import { TestPki, appInfoFields, encodeAppInfo, hex, ratlsExtension } from '../../../scripts/lib/ra-tls-pki.mjs';

const pki = TestPki.create();
const ON = { appIdFallback: true };
const OFF = { appIdFallback: false };

type CustomExtension = ReturnType<typeof ratlsExtension>;

function certWith(extensions: CustomExtension[]): Uint8Array {
  return pki.client({ extensions }).der;
}

function rejection(fn: () => unknown): AttestedRejection {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(AttestedRejection);
    return err as AttestedRejection;
  }
  throw new Error('expected an AttestedRejection');
}

/** The bytes rmp_serde::to_vec writes for an AppInfo, spelled out: a fixarray of 9, bin8 fields, nil. */
function goldenPositional(): Uint8Array {
  const bin = (n: number, b: number) => [0xc4, n, ...new Array<number>(n).fill(b)];
  return Uint8Array.from([
    0x99,
    ...bin(20, 0x11), // app_id
    ...bin(32, 0x22), // compose_hash
    ...bin(20, 0x33), // instance_id
    ...bin(32, 0x44), // device_id
    ...bin(32, 0x55), // mr_system
    ...bin(32, 0x66), // mr_aggregated
    ...bin(32, 0x77), // os_image_hash
    ...bin(2, 0x7b), // key_provider_info
    0xc0, // init_script_hashes: None
  ]);
}

describe('identityFromCertificate: app-info', () => {
  it('reads the positional array rmp_serde writes (golden bytes), ids as lowercase hex', () => {
    const id = identityFromCertificate(certWith([ratlsExtension(OID_APP_INFO, goldenPositional())]), OFF);
    expect(id).toMatchObject({ source: 'app-info', appId: '11'.repeat(20), instanceId: '33'.repeat(20), composeHash: '22'.repeat(32) });
    expect(id.appInfo).toMatchObject({ deviceId: '44'.repeat(32), mrSystem: '55'.repeat(32), mrAggregated: '66'.repeat(32), osImageHash: '77'.repeat(32), keyProviderInfo: '7b7b', initScriptHashes: null, encoding: 'array' });
  });

  it('reads the named map, and both encodings give the same identity', () => {
    const f = appInfoFields(7, { init_script_hashes: [new Uint8Array(32).fill(0xee)] });
    const asArray = identityFromCertificate(pki.instance(f, 'array').der, OFF);
    const asMap = identityFromCertificate(pki.instance(f, 'map').der, OFF);
    expect(asMap.appInfo?.encoding).toBe('map');
    expect({ ...asMap, appInfo: { ...asMap.appInfo, encoding: 'array' } }).toEqual(asArray);
    expect(asArray).toMatchObject({ appId: hex(f.app_id), instanceId: hex(f.instance_id), composeHash: hex(f.compose_hash) });
    expect(asArray.appInfo?.initScriptHashes).toEqual(['ee'.repeat(32)]);
  });

  it('takes an 8-element array and a map without init_script_hashes (serde default)', () => {
    const f = appInfoFields(2);
    const eight = encode([f.app_id, f.compose_hash, f.instance_id, f.device_id, f.mr_system, f.mr_aggregated, f.os_image_hash, f.key_provider_info]);
    expect(decodeAppInfo(eight).initScriptHashes).toBeNull();
    const { init_script_hashes: _none, ...rest } = f;
    expect(decodeAppInfo(encode(rest)).appId).toBe(hex(f.app_id));
  });

  it('ignores unknown map keys, as serde does', () => {
    const f = appInfoFields(3);
    expect(decodeAppInfo(encode({ ...f, future_field: 1 })).instanceId).toBe(hex(f.instance_id));
  });

  it('reports the validity period', () => {
    const notBefore = new Date('2026-01-01T00:00:00Z');
    const notAfter = new Date('2027-01-01T00:00:00Z');
    const id = identityFromCertificate(pki.instance(appInfoFields(4), 'array', { notBefore, notAfter }).der, OFF);
    expect(id.notBefore).toEqual(notBefore);
    expect(id.notAfter).toEqual(notAfter);
  });
});

describe('identityFromCertificate: the app-id fallback', () => {
  const appId = new Uint8Array(20).fill(0xab);

  it('is refused by default: the certificate names no instance and no compose hash', () => {
    const err = rejection(() => identityFromCertificate(certWith([ratlsExtension(OID_APP_ID, appId)]), OFF));
    expect(err.reason).toBe('app_info_missing');
    expect(err.code).toBe('ERR_ATTESTED_APP_INFO_MISSING');
    expect(err.message).toContain('app_id_fallback');
  });

  it('when enabled, registers by app id: the app id stands for the instance, no compose hash', () => {
    const id = identityFromCertificate(certWith([ratlsExtension(OID_APP_ID, appId)]), ON);
    expect(id).toMatchObject({ source: 'app-id', appId: 'ab'.repeat(20), instanceId: 'ab'.repeat(20), composeHash: null, appInfo: null });
  });

  it('never replaces a malformed app-info', () => {
    const err = rejection(() => identityFromCertificate(certWith([ratlsExtension(OID_APP_ID, appId), ratlsExtension(OID_APP_INFO, Uint8Array.from([0xc1]))]), ON));
    expect(err.reason).toBe('app_info_malformed');
  });

  it('a certificate with neither extension identifies no app', () => {
    expect(rejection(() => identityFromCertificate(certWith([]), ON)).reason).toBe('app_info_missing');
  });

  it('an empty app-id is malformed', () => {
    expect(rejection(() => identityFromCertificate(certWith([ratlsExtension(OID_APP_ID, new Uint8Array(0))]), ON)).reason).toBe('certificate_malformed');
  });
});

describe('identityFromCertificate: malformed app-info', () => {
  const f = appInfoFields(9);
  const good = encodeAppInfo(f, 'array');
  const malformed = (extensions: CustomExtension[]) => {
    const err = rejection(() => identityFromCertificate(certWith(extensions), ON));
    expect(err.reason).toBe('app_info_malformed');
    expect(err.status).toBe(403);
    return err;
  };

  it('a payload not wrapped in an OCTET STRING (add_ext always wraps)', () => {
    malformed([{ oid: OID_APP_INFO, value: good }]);
  });

  it('trailing bytes after the OCTET STRING, or a non-minimal DER length', () => {
    const wrapped = ratlsExtension(OID_APP_INFO, good).value;
    expect(malformed([{ oid: OID_APP_INFO, value: Uint8Array.from([...wrapped, 0x00]) }]).message).toMatch(/exactly one DER OCTET STRING/);
    const long = Uint8Array.from([0x04, 0x82, good.length >> 8, good.length & 0xff, ...good]);
    malformed([{ oid: OID_APP_INFO, value: long }]);
  });

  it('the extension twice', () => {
    expect(malformed([ratlsExtension(OID_APP_INFO, good), ratlsExtension(OID_APP_INFO, good)]).message).toMatch(/appears 2 times/);
  });

  it('not MessagePack, truncated, or followed by more bytes', () => {
    malformed([ratlsExtension(OID_APP_INFO, Uint8Array.from([0xc1]))]);
    malformed([ratlsExtension(OID_APP_INFO, good.slice(0, good.length - 10))]);
    malformed([ratlsExtension(OID_APP_INFO, Uint8Array.from([...good, 0xc0]))]);
  });

  it('neither an array nor a map', () => {
    expect(malformed([ratlsExtension(OID_APP_INFO, encode('app'))]).message).toMatch(/expected an array or a map/);
  });

  it('too few or too many positional elements', () => {
    malformed([ratlsExtension(OID_APP_INFO, encode([f.app_id, f.compose_hash]))]);
    malformed([ratlsExtension(OID_APP_INFO, encode([...decodeFields(f), null, new Uint8Array(1)]))]);
  });

  it('a missing field in the map names it', () => {
    const { compose_hash: _gone, ...rest } = f;
    const err = malformed([ratlsExtension(OID_APP_INFO, encode(rest))]);
    expect(err.field).toBe('compose_hash');
  });

  it('a key that appears twice in the map', () => {
    // The fields plus app_id again, under a fixmap header counting both (@msgpack/msgpack cannot write this).
    const fields = encode(f);
    const dup = Uint8Array.from([0x80 | ((fields[0]! & 0x0f) + 1), ...fields.slice(1), ...encode('app_id'), 0xc4, 1, 0x01]);
    expect(malformed([ratlsExtension(OID_APP_INFO, dup)]).message).toMatch(/twice/);
  });

  it('a byte field written as a string, an array of integers or an integer (only bin is bytes)', () => {
    expect(malformed([ratlsExtension(OID_APP_INFO, encode({ ...f, app_id: hex(f.app_id) }))]).field).toBe('app_id');
    malformed([ratlsExtension(OID_APP_INFO, encode({ ...f, instance_id: [...f.instance_id] }))]);
    malformed([ratlsExtension(OID_APP_INFO, encode({ ...f, compose_hash: 7 }))]);
  });

  it('wrong lengths: compose_hash and the measurements are 32 bytes, ids are not empty', () => {
    expect(malformed([ratlsExtension(OID_APP_INFO, encodeAppInfo({ ...f, compose_hash: new Uint8Array(31) }, 'array'))]).field).toBe('compose_hash');
    expect(malformed([ratlsExtension(OID_APP_INFO, encodeAppInfo({ ...f, mr_system: new Uint8Array(33) }, 'map'))]).field).toBe('mr_system');
    const noInstance = malformed([ratlsExtension(OID_APP_INFO, encodeAppInfo({ ...f, instance_id: new Uint8Array(0) }, 'array'))]);
    expect(noInstance.field).toBe('instance_id');
    expect(noInstance.message).toContain('no_instance_id');
    malformed([ratlsExtension(OID_APP_INFO, encodeAppInfo({ ...f, app_id: new Uint8Array(65) }, 'array'))]);
  });

  it('init_script_hashes: more than 5, or a hash that is not 32 bytes', () => {
    const h = new Uint8Array(32);
    malformed([ratlsExtension(OID_APP_INFO, encodeAppInfo({ ...f, init_script_hashes: [h, h, h, h, h, h] }, 'array'))]);
    malformed([ratlsExtension(OID_APP_INFO, encodeAppInfo({ ...f, init_script_hashes: [new Uint8Array(31)] }, 'map'))]);
  });

  it('an ext value where a bin belongs', () => {
    // device_id as a fixext16 (0xd8, type 1, 16 bytes): built by hand.
    const ext = Uint8Array.from([0x98, ...encode(f.app_id), ...encode(f.compose_hash), ...encode(f.instance_id), 0xd8, 0x01, ...new Uint8Array(16), ...encode(f.mr_system), ...encode(f.mr_aggregated), ...encode(f.os_image_hash), ...encode(f.key_provider_info)]);
    malformed([ratlsExtension(OID_APP_INFO, ext)]);
  });

  it('app-info disagreeing with the app-id extension', () => {
    const err = malformed([ratlsExtension(OID_APP_ID, new Uint8Array(20).fill(0x01)), ratlsExtension(OID_APP_INFO, good)]);
    expect(err.field).toBe('app_id');
  });

  it('a certificate that does not parse at all', () => {
    expect(rejection(() => identityFromCertificate(Uint8Array.from([0x30, 0x03, 0x02, 0x01, 0x01]), ON)).reason).toBe('certificate_malformed');
  });
});

function decodeFields(f: ReturnType<typeof appInfoFields>): Uint8Array[] {
  return [f.app_id, f.compose_hash, f.instance_id, f.device_id, f.mr_system, f.mr_aggregated, f.os_image_hash, f.key_provider_info];
}
