// A test PKI shaped like dstack's, for the tests and scripts/bench-attested.mjs: a root CA (the
// KMS root), an intermediate, and RA-TLS client certificates carrying the app-id / app-info
// extensions exactly as dstack's ra-tls/src/cert.rs `add_ext` writes them (the payload inside a
// DER OCTET STRING; app-info as rmp_serde::to_vec or to_vec_named MessagePack), with any validity
// period. Built with @peculiar/asn1-x509 and signed with node:crypto (ECDSA P-256), so expired
// or not-yet-valid certificates need no clock tricks; OpenSSL (Node's TLS) then verifies them
// like any other certificate.
import { createHash, generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { encode } from '@msgpack/msgpack';
import { AsnConvert, OctetString } from '@peculiar/asn1-schema';
import * as x from '@peculiar/asn1-x509';

export const OID_APP_ID = '1.3.6.1.4.1.62397.1.3';
export const OID_APP_INFO = '1.3.6.1.4.1.62397.1.9';
const ECDSA_SHA256 = '1.2.840.10045.4.3.2';
const CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';
const SERVER_AUTH = '1.3.6.1.5.5.7.3.1';
const DAY = 86_400_000;

/**
 * @typedef {{ der: Uint8Array, certPem: string, keyPem: string, key: import('node:crypto').KeyObject, name: x.Name, keyId: Uint8Array }} Issued
 * @typedef {Issued & { chainPem: string }} Client
 * @typedef {{ oid: string, value: Uint8Array, critical?: boolean }} CustomExtension  value: the extnValue content
 * @typedef {{ cn: string, notBefore?: Date, notAfter?: Date, ca?: boolean, usage?: 'client' | 'server' | 'none',
 *             ips?: string[], extensions?: CustomExtension[] }} IssueOptions
 */

function nameOf(cn) {
  return new x.Name([new x.RelativeDistinguishedName([new x.AttributeTypeAndValue({ type: '2.5.4.3', value: new x.AttributeValue({ utf8String: cn }) })])]);
}

function ext(oid, value, critical = false) {
  return new x.Extension({ extnID: oid, critical, extnValue: new OctetString(AsnConvert.serialize(value)) });
}

function pem(label, der) {
  const b64 = Buffer.from(der).toString('base64').replace(/.{64}/g, '$&\n').replace(/\n$/, '');
  return `-----BEGIN ${label}-----\n${b64}\n-----END ${label}-----\n`;
}

const arrayBuffer = (b) => b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength);

/**
 * Issues a certificate signed by `issuer` (self-signed when issuer is null).
 * @param {Issued | null} issuer
 * @param {IssueOptions} opts
 * @returns {Issued}
 */
export function issue(issuer, opts) {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const spki = AsnConvert.parse(publicKey.export({ type: 'spki', format: 'der' }), x.SubjectPublicKeyInfo);
  const keyId = createHash('sha1').update(Buffer.from(spki.subjectPublicKey)).digest();
  const name = nameOf(opts.cn);
  const now = Date.now();
  const serial = randomBytes(16);
  // A positive INTEGER in minimal DER: the first byte neither has the sign bit nor is a 0x00 pad.
  serial[0] = (serial[0] & 0x3f) | 0x40;
  const extensions = [ext(x.id_ce_subjectKeyIdentifier, new x.SubjectKeyIdentifier(keyId))];
  if (issuer !== null) extensions.push(ext(x.id_ce_authorityKeyIdentifier, new x.AuthorityKeyIdentifier({ keyIdentifier: new x.KeyIdentifier(issuer.keyId) })));
  if (opts.ca) {
    extensions.push(ext(x.id_ce_basicConstraints, new x.BasicConstraints({ cA: true }), true));
    extensions.push(ext(x.id_ce_keyUsage, new x.KeyUsage(x.KeyUsageFlags.keyCertSign | x.KeyUsageFlags.cRLSign | x.KeyUsageFlags.digitalSignature), true));
  } else {
    extensions.push(ext(x.id_ce_keyUsage, new x.KeyUsage(x.KeyUsageFlags.digitalSignature), true));
    const usage = opts.usage ?? 'client';
    if (usage !== 'none') extensions.push(ext(x.id_ce_extKeyUsage, new x.ExtendedKeyUsage([usage === 'client' ? CLIENT_AUTH : SERVER_AUTH])));
  }
  if (opts.ips && opts.ips.length > 0) {
    extensions.push(ext(x.id_ce_subjectAltName, new x.SubjectAlternativeName(opts.ips.map((ip) => new x.GeneralName({ iPAddress: ip })))));
  }
  for (const e of opts.extensions ?? []) extensions.push(new x.Extension({ extnID: e.oid, critical: e.critical ?? false, extnValue: new OctetString(e.value) }));

  const tbs = new x.TBSCertificate({
    version: x.Version.v3,
    serialNumber: arrayBuffer(serial),
    signature: new x.AlgorithmIdentifier({ algorithm: ECDSA_SHA256 }),
    issuer: issuer?.name ?? name,
    validity: new x.Validity({ notBefore: opts.notBefore ?? new Date(now - DAY), notAfter: opts.notAfter ?? new Date(now + 30 * DAY) }),
    subject: name,
    subjectPublicKeyInfo: spki,
    extensions: new x.Extensions(extensions),
  });
  const signature = sign('sha256', Buffer.from(AsnConvert.serialize(tbs)), issuer?.key ?? privateKey);
  const cert = new x.Certificate({
    tbsCertificate: tbs,
    signatureAlgorithm: new x.AlgorithmIdentifier({ algorithm: ECDSA_SHA256 }),
    signatureValue: arrayBuffer(signature),
  });
  const der = new Uint8Array(AsnConvert.serialize(cert));
  return { der, certPem: pem('CERTIFICATE', der), keyPem: /** @type {string} */ (privateKey.export({ type: 'pkcs8', format: 'pem' })), key: privateKey, name, keyId };
}

/**
 * An extension as dstack's `add_ext` writes it: the payload inside a DER OCTET STRING.
 * @param {string} oid
 * @param {Uint8Array} payload
 * @returns {CustomExtension}
 */
export function ratlsExtension(oid, payload) {
  return { oid, value: new Uint8Array(AsnConvert.serialize(new OctetString(payload))) };
}

/**
 * Deterministic AppInfo fields from a seed: app_id and instance_id are 20 bytes, as dstack's.
 * The app id depends on the low 4 bits of the seed, the instance id on all of it (up to 2^32).
 * @param {number} seed
 * @param {Record<string, unknown>} [overrides]
 */
export function appInfoFields(seed, overrides = {}) {
  const fill = (n, b) => new Uint8Array(n).fill(b);
  const instanceId = fill(20, seed & 0xff);
  new DataView(instanceId.buffer).setUint32(16, seed >>> 0);
  return {
    app_id: fill(20, 0xa0 + (seed & 0x0f)),
    compose_hash: fill(32, 0xc0 + (seed & 0x0f)),
    instance_id: instanceId,
    device_id: fill(32, 0xd0),
    mr_system: fill(32, 0x51),
    mr_aggregated: fill(32, 0x52),
    os_image_hash: fill(32, 0x0e),
    key_provider_info: new TextEncoder().encode('{"kms":"test"}'),
    init_script_hashes: null,
    ...overrides,
  };
}

const ORDER = ['app_id', 'compose_hash', 'instance_id', 'device_id', 'mr_system', 'mr_aggregated', 'os_image_hash', 'key_provider_info', 'init_script_hashes'];

/**
 * MessagePack of AppInfo: 'array' as rmp_serde::to_vec writes it, 'map' as rmp_serde::to_vec_named.
 * @param {Record<string, unknown>} f
 * @param {'array' | 'map'} encoding
 */
export function encodeAppInfo(f, encoding) {
  if (encoding === 'map') return encode(Object.fromEntries(ORDER.map((k) => [k, f[k] ?? null])));
  return encode(ORDER.map((k) => f[k] ?? null));
}

/** @param {Uint8Array} b */
export const hex = (b) => Buffer.from(b).toString('hex');

/** A CA hierarchy: root (the KMS root CA) and an intermediate that signs client certificates. */
export class TestPki {
  /** @param {Issued} root @param {Issued} intermediate */
  constructor(root, intermediate) {
    this.root = root;
    this.intermediate = intermediate;
  }

  /** `cn` names the root: a second PKI with the same name is a forged look-alike. */
  static create(cn = 'Test KMS Root') {
    const root = issue(null, { cn, ca: true, notAfter: new Date(Date.now() + 365 * DAY) });
    const intermediate = issue(root, { cn: `${cn} Intermediate`, ca: true, notAfter: new Date(Date.now() + 365 * DAY) });
    return new TestPki(root, intermediate);
  }

  /** A server certificate for the registration listener, valid for the given IPs. @param {string[]} ips */
  server(ips) {
    return issue(this.root, { cn: 'tproxy-interceptor registration', usage: 'server', ips });
  }

  /**
   * An RA-TLS client certificate signed by the intermediate (or by the root with `direct`).
   * @param {Partial<IssueOptions> & { direct?: boolean }} opts
   * @returns {Client}
   */
  client(opts) {
    const issuer = opts.direct ? this.root : this.intermediate;
    const cert = issue(issuer, { cn: 'dstack-guest-agent', ...opts });
    return { ...cert, chainPem: opts.direct ? cert.certPem : cert.certPem + this.intermediate.certPem };
  }

  /**
   * An instance's certificate carrying app-info (and the matching app-id extension).
   * @param {Record<string, any>} fields from appInfoFields
   * @param {'array' | 'map'} [encoding]
   * @param {Partial<IssueOptions>} [extra]
   * @returns {Client}
   */
  instance(fields, encoding = 'array', extra = {}) {
    return this.client({ ...extra, extensions: [ratlsExtension(OID_APP_ID, fields.app_id), ratlsExtension(OID_APP_INFO, encodeAppInfo(fields, encoding))] });
  }
}

/**
 * Writes text files (mode 0600) into `dir` and returns their paths by name.
 * @param {string} dir
 * @param {Record<string, string>} files
 * @returns {Promise<Record<string, string>>}
 */
export async function writePem(dir, files) {
  await mkdir(dir, { recursive: true });
  const out = {};
  for (const [name, text] of Object.entries(files)) {
    const file = path.join(dir, name);
    await writeFile(file, text, { mode: 0o600 });
    out[name] = file;
  }
  return out;
}
