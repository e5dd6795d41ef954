// The identity an RA-TLS client certificate carries, as dstack's KMS writes it. Pure: DER in,
// identity out (or an AttestedRejection), no I/O. The chain and the validity period are checked
// by OpenSSL during the handshake; this reads what the CA vouched for.
//
// Upstream (Dstack-TEE/dstack): the OIDs are in ra-tls/src/oids.rs; `add_ext` in ra-tls/src/cert.rs
// wraps every extension payload in a DER OCTET STRING (yasna `write_bytes`) and writes the
// app-info payload with `rmp_serde::to_vec(&app_info)`, i.e. MessagePack with the struct as a
// positional array; `CertExt::get_app_info` in ra-tls/src/traits.rs reads it back with
// `rmp_serde::from_slice`, which also accepts the struct as a map of field names. `AppInfo` is in
// dstack-attest/src/attestation.rs: every byte field is `serde_human_bytes`, a MessagePack bin in
// this non-human-readable encoding.
import { decode as decodeMsgpack } from '@msgpack/msgpack';
import { AsnConvert, OctetString } from '@peculiar/asn1-schema';
import { Certificate } from '@peculiar/asn1-x509';
import { AttestedRejection } from './errors.js';

/** PHALA_RATLS_APP_ID: the app id, raw bytes. */
export const OID_APP_ID = '1.3.6.1.4.1.62397.1.3';
/** PHALA_RATLS_APP_INFO: MessagePack of AppInfo. */
export const OID_APP_INFO = '1.3.6.1.4.1.62397.1.9';

/** dstack-attest's AppInfo, byte fields as lowercase hex. */
export interface AppInfo {
  readonly appId: string;
  readonly composeHash: string;
  readonly instanceId: string;
  readonly deviceId: string;
  readonly mrSystem: string;
  readonly mrAggregated: string;
  readonly osImageHash: string;
  readonly keyProviderInfo: string;
  /** null: the evidence did not bind the field (absent or nil). */
  readonly initScriptHashes: readonly string[] | null;
  /** How the payload was written: rmp_serde's positional array, or a map of field names. */
  readonly encoding: 'array' | 'map';
}

export interface CertificateIdentity {
  /** Where the identity came from: the app-info extension, or (fallback) the app-id extension alone. */
  readonly source: 'app-info' | 'app-id';
  readonly appId: string;
  /** With the app-id fallback the certificate names no instance: the app id stands in for it. */
  readonly instanceId: string;
  /** null with the app-id fallback: nothing attests the compose. */
  readonly composeHash: string | null;
  readonly appInfo: AppInfo | null;
  readonly notBefore: Date;
  readonly notAfter: Date;
}

/** AppInfo's fields in declaration order: the positional encoding's element order. */
const FIELDS = [
  'app_id',
  'compose_hash',
  'instance_id',
  'device_id',
  'mr_system',
  'mr_aggregated',
  'os_image_hash',
  'key_provider_info',
  'init_script_hashes',
] as const;
const REQUIRED_FIELDS = 8; // init_script_hashes is `#[serde(default)]`

/** dstack-types MAX_INIT_SCRIPTS. */
const MAX_INIT_SCRIPTS = 5;
/** Ids become registry ids (at most 128 characters): 64 bytes of hex. dstack's are 20 bytes. */
const MAX_ID_BYTES = 64;
/** Bounds for hostile payloads; real ones are a few hundred bytes. */
const MAX_PAYLOAD_BYTES = 16 * 1024;
const DECODE_LIMITS = { maxStrLength: 256, maxBinLength: 4096, maxArrayLength: 16, maxMapLength: 16, maxExtLength: 0 };

function malformed(message: string, field?: string): AttestedRejection {
  return new AttestedRejection('app_info_malformed', `app-info extension (${OID_APP_INFO}): ${message}`, field === undefined ? {} : { field });
}

/**
 * Reads the identity from a client certificate (DER). `appIdFallback`: accept a certificate with
 * only the app-id extension (see the README for what that gives up).
 */
export function identityFromCertificate(der: Uint8Array, opts: { appIdFallback: boolean }): CertificateIdentity {
  let cert: Certificate;
  try {
    cert = AsnConvert.parse(der, Certificate);
  } catch (err) {
    throw new AttestedRejection('certificate_malformed', `the client certificate does not parse as X.509: ${(err as Error).message}`, { cause: err });
  }
  const tbs = cert.tbsCertificate;
  const notBefore = tbs.validity.notBefore.getTime();
  const notAfter = tbs.validity.notAfter.getTime();
  const infoPayload = extensionPayload(tbs.extensions ?? [], OID_APP_INFO);
  const idPayload = extensionPayload(tbs.extensions ?? [], OID_APP_ID);
  const appIdFromExt = idPayload === null ? null : checkAppIdExtension(idPayload);

  if (infoPayload !== null) {
    const appInfo = decodeAppInfo(infoPayload);
    if (appIdFromExt !== null && appIdFromExt !== appInfo.appId) {
      throw malformed(`app_id ${appInfo.appId} disagrees with the app-id extension (${OID_APP_ID}) ${appIdFromExt}`, 'app_id');
    }
    return { source: 'app-info', appId: appInfo.appId, instanceId: appInfo.instanceId, composeHash: appInfo.composeHash, appInfo, notBefore, notAfter };
  }
  if (appIdFromExt === null) {
    throw new AttestedRejection(
      'app_info_missing',
      `the client certificate has no app-info extension (${OID_APP_INFO}) and no app-id extension (${OID_APP_ID}): it identifies no dstack app`,
    );
  }
  if (!opts.appIdFallback) {
    throw new AttestedRejection(
      'app_info_missing',
      `the client certificate has only the app-id extension (${OID_APP_ID}), no app-info (${OID_APP_INFO}): it names no instance and no compose hash; ` +
        'set registry.attested.app_id_fallback = true to register such instances by app id alone',
    );
  }
  return { source: 'app-id', appId: appIdFromExt, instanceId: appIdFromExt, composeHash: null, appInfo: null, notBefore, notAfter };
}

/** The payload inside an extension's DER OCTET STRING wrapper; null when the extension is absent. */
function extensionPayload(extensions: ReadonlyArray<{ extnID: string; extnValue: OctetString }>, oid: string): Uint8Array | null {
  const found = extensions.filter((e) => e.extnID === oid);
  if (found.length === 0) return null;
  const reason = oid === OID_APP_INFO ? 'app_info_malformed' : 'certificate_malformed';
  if (found.length > 1) throw new AttestedRejection(reason, `extension ${oid} appears ${found.length} times (RFC 5280 allows one)`);
  const wrapped = new Uint8Array(found[0]!.extnValue.buffer);
  let inner: OctetString;
  try {
    inner = AsnConvert.parse(wrapped, OctetString);
  } catch (err) {
    throw new AttestedRejection(reason, `extension ${oid}: the value is not a DER OCTET STRING: ${(err as Error).message}`);
  }
  const payload = new Uint8Array(inner.buffer);
  // asn1js tolerates trailing bytes and non-minimal lengths; DER is one encoding, so compare.
  const canonical = new Uint8Array(AsnConvert.serialize(new OctetString(payload)));
  if (!bytesEqual(canonical, wrapped)) {
    throw new AttestedRejection(reason, `extension ${oid}: the value is not exactly one DER OCTET STRING (trailing bytes or a non-minimal length)`);
  }
  return payload;
}

function checkAppIdExtension(payload: Uint8Array): string {
  if (payload.length === 0 || payload.length > MAX_ID_BYTES) {
    throw new AttestedRejection('certificate_malformed', `app-id extension (${OID_APP_ID}): ${payload.length} bytes; expected 1..${MAX_ID_BYTES} (dstack writes 20)`);
  }
  return hex(payload);
}

/** Decodes the app-info payload (MessagePack of AppInfo, positional array or named map). */
export function decodeAppInfo(payload: Uint8Array): AppInfo {
  if (payload.length > MAX_PAYLOAD_BYTES) throw malformed(`${payload.length} bytes; at most ${MAX_PAYLOAD_BYTES}`);
  let value: unknown;
  try {
    value = decodeMsgpack(payload, DECODE_LIMITS);
  } catch (err) {
    throw malformed(`not one MessagePack value: ${(err as Error).message}`);
  }
  let get: (i: number) => unknown;
  let encoding: AppInfo['encoding'];
  if (Array.isArray(value)) {
    // serde's derived visitor takes the elements in order; an optional last field may be left out.
    if (value.length < REQUIRED_FIELDS || value.length > FIELDS.length) {
      throw malformed(`a positional AppInfo has ${REQUIRED_FIELDS} or ${FIELDS.length} elements, this one ${value.length}`);
    }
    encoding = 'array';
    get = (i) => value[i];
  } else if (isPlainObject(value)) {
    // @msgpack/msgpack keeps the last of two equal keys; serde refuses a duplicate field.
    const declared = mapHeaderLength(payload);
    if (declared !== Object.keys(value).length) throw malformed('a map key appears twice');
    encoding = 'map';
    get = (i) => (Object.hasOwn(value, FIELDS[i]!) ? value[FIELDS[i]!] : undefined);
  } else {
    throw malformed(`expected an array or a map (AppInfo), got ${describe(value)}`);
  }

  const bytes = (i: number, check: (n: number) => string | null): string => {
    const name = FIELDS[i]!;
    const v = get(i);
    if (v === undefined) throw malformed(`${name} is missing`, name);
    if (!(v instanceof Uint8Array)) throw malformed(`${name}: expected bytes (MessagePack bin), got ${describe(v)}`, name);
    const problem = check(v.length);
    if (problem !== null) throw malformed(`${name}: ${v.length} bytes; ${problem}`, name);
    return hex(v);
  };
  const exactly = (n: number) => (len: number) => (len === n ? null : `expected ${n}`);
  const id = (len: number) => (len === 0 ? 'expected a non-empty id (an app with no_instance_id cannot register)' : len > MAX_ID_BYTES ? `expected at most ${MAX_ID_BYTES}` : null);
  const any = () => null;

  const info: AppInfo = {
    appId: bytes(0, id),
    composeHash: bytes(1, exactly(32)),
    instanceId: bytes(2, id),
    deviceId: bytes(3, any),
    mrSystem: bytes(4, exactly(32)),
    mrAggregated: bytes(5, exactly(32)),
    osImageHash: bytes(6, any),
    keyProviderInfo: bytes(7, any),
    initScriptHashes: initScriptHashes(get(8)),
    encoding,
  };
  return Object.freeze(info);
}

/** dstack-types `init_script_hashes::option`: nil/absent, or at most 5 bins of 32 bytes. */
function initScriptHashes(v: unknown): readonly string[] | null {
  if (v === undefined || v === null) return null;
  const name = 'init_script_hashes';
  if (!Array.isArray(v)) throw malformed(`${name}: expected nil or an array of 32-byte bins, got ${describe(v)}`, name);
  if (v.length > MAX_INIT_SCRIPTS) throw malformed(`${name}: ${v.length} hashes; at most ${MAX_INIT_SCRIPTS}`, name);
  return Object.freeze(
    v.map((h: unknown, i) => {
      if (!(h instanceof Uint8Array) || h.length !== 32) throw malformed(`${name}[${i}]: expected a 32-byte bin, got ${describe(h)}`, name);
      return hex(h);
    }),
  );
}

/**
 * The entry count a MessagePack map header declares (fixmap, map16, map32). Read by hand: the
 * decoder does not report it, and it is three fixed header forms.
 */
function mapHeaderLength(payload: Uint8Array): number {
  const b = payload[0]!;
  if (b >= 0x80 && b <= 0x8f) return b & 0x0f;
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  if (b === 0xde) return view.getUint16(1);
  if (b === 0xdf) return view.getUint32(1);
  return -1;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array) && Object.getPrototypeOf(v) === Object.prototype;
}

function describe(v: unknown): string {
  if (v === null) return 'nil';
  if (v instanceof Uint8Array) return `a ${v.length}-byte bin`;
  if (Array.isArray(v)) return `an array of ${v.length}`;
  if (typeof v === 'string') return 'a string';
  if (typeof v === 'object') return v.constructor?.name === 'ExtData' ? 'an ext value' : 'a map';
  return `a ${typeof v}`;
}

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength)) === 0;
}
