// A test PKI shaped like dstack's: a root CA (the KMS root), certificates it signs directly or
// through an intermediate, RA-TLS client certificates carrying the app-id / app-info extensions
// exactly as ra-tls/src/cert.rs `add_ext` writes them (the payload in a DER OCTET STRING), with
// any validity period. Built with @peculiar/asn1-x509 and signed with node:crypto (ECDSA P-256),
// so an expired or not-yet-valid certificate needs no clock tricks; OpenSSL (Node's TLS) then
// verifies them like any other certificate.
import { createHash, generateKeyPairSync, randomBytes, sign, type KeyObject } from 'node:crypto';
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

export interface Issued {
  readonly der: Uint8Array;
  readonly certPem: string;
  readonly keyPem: string;
  readonly key: KeyObject;
  readonly name: x.Name;
  readonly keyId: Uint8Array;
}

export interface CustomExtension {
  readonly oid: string;
  /** The extnValue content (what goes inside X.509's own OCTET STRING). */
  readonly value: Uint8Array;
  readonly critical?: boolean;
}

export interface IssueOptions {
  cn: string;
  notBefore?: Date;
  notAfter?: Date;
  ca?: boolean;
  /** Extended key usage of a leaf: client (default), server, or none. */
  usage?: 'client' | 'server' | 'none';
  /** IP subject alternative names (server certificates). */
  ips?: string[];
  extensions?: CustomExtension[];
}

function nameOf(cn: string): x.Name {
  return new x.Name([new x.RelativeDistinguishedName([new x.AttributeTypeAndValue({ type: '2.5.4.3', value: new x.AttributeValue({ utf8String: cn }) })])]);
}

function ext(oid: string, value: unknown, critical = false): x.Extension {
  return new x.Extension({ extnID: oid, critical, extnValue: new OctetString(AsnConvert.serialize(value)) });
}

function pem(label: string, der: Uint8Array): string {
  const b64 = Buffer.from(der).toString('base64').replace(/.{64}/g, '$&\n').replace(/\n$/, '');
  return `-----BEGIN ${label}-----\n${b64}\n-----END ${label}-----\n`;
}

/** Issues a certificate signed by `issuer` (self-signed when issuer is null). */
export function issue(issuer: Issued | null, opts: IssueOptions): Issued {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const spki = AsnConvert.parse(publicKey.export({ type: 'spki', format: 'der' }), x.SubjectPublicKeyInfo);
  const keyId = createHash('sha1').update(Buffer.from(spki.subjectPublicKey)).digest();
  const name = nameOf(opts.cn);
  const now = Date.now();
  const serial = randomBytes(16);
  serial[0]! &= 0x7f;
  const extensions: x.Extension[] = [ext(x.id_ce_subjectKeyIdentifier, new x.SubjectKeyIdentifier(keyId))];
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
    serialNumber: serial.buffer.slice(serial.byteOffset, serial.byteOffset + serial.byteLength),
    signature: new x.AlgorithmIdentifier({ algorithm: ECDSA_SHA256 }),
    issuer: issuer?.name ?? name,
    validity: new x.Validity({ notBefore: opts.notBefore ?? new Date(now - DAY), notAfter: opts.notAfter ?? new Date(now + 30 * DAY) }),
    subject: name,
    subjectPublicKeyInfo: spki,
    extensions: new x.Extensions(extensions),
  });
  const tbsDer = Buffer.from(AsnConvert.serialize(tbs));
  const signature = sign('sha256', tbsDer, issuer?.key ?? privateKey);
  const cert = new x.Certificate({
    tbsCertificate: tbs,
    signatureAlgorithm: new x.AlgorithmIdentifier({ algorithm: ECDSA_SHA256 }),
    signatureValue: signature.buffer.slice(signature.byteOffset, signature.byteOffset + signature.byteLength),
  });
  const der = new Uint8Array(AsnConvert.serialize(cert));
  return { der, certPem: pem('CERTIFICATE', der), keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, key: privateKey, name, keyId };
}

/** An extension as dstack's `add_ext` writes it: the payload inside a DER OCTET STRING. */
export function ratlsExtension(oid: string, payload: Uint8Array): CustomExtension {
  return { oid, value: new Uint8Array(AsnConvert.serialize(new OctetString(payload))) };
}

export interface AppInfoFields {
  app_id: Uint8Array;
  compose_hash: Uint8Array;
  instance_id: Uint8Array;
  device_id: Uint8Array;
  mr_system: Uint8Array;
  mr_aggregated: Uint8Array;
  os_image_hash: Uint8Array;
  key_provider_info: Uint8Array;
  init_script_hashes?: Uint8Array[] | null;
}

/** Deterministic AppInfo fields from a seed byte: app_id and instance_id are 20 bytes, as dstack's. */
export function appInfoFields(seed: number, overrides: Partial<AppInfoFields> = {}): AppInfoFields {
  const fill = (n: number, b: number) => new Uint8Array(n).fill(b);
  return {
    app_id: fill(20, 0xa0 + (seed & 0x0f)),
    compose_hash: fill(32, 0xc0 + (seed & 0x0f)),
    instance_id: fill(20, seed & 0xff),
    device_id: fill(32, 0xd0),
    mr_system: fill(32, 0x51),
    mr_aggregated: fill(32, 0x52),
    os_image_hash: fill(32, 0x0e),
    key_provider_info: new TextEncoder().encode('{"kms":"test"}'),
    init_script_hashes: null,
    ...overrides,
  };
}

const ORDER = ['app_id', 'compose_hash', 'instance_id', 'device_id', 'mr_system', 'mr_aggregated', 'os_image_hash', 'key_provider_info', 'init_script_hashes'] as const;

/** MessagePack of AppInfo: `array` as rmp_serde::to_vec writes it, `map` as rmp_serde::to_vec_named. */
export function encodeAppInfo(f: AppInfoFields, encoding: 'array' | 'map'): Uint8Array {
  if (encoding === 'map') return encode(Object.fromEntries(ORDER.map((k) => [k, f[k] ?? null])));
  return encode(ORDER.map((k) => f[k] ?? null));
}

export const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

/** A CA hierarchy and helpers to write what the daemon and the clients read. */
export class TestPki {
  private constructor(
    readonly root: Issued,
    readonly intermediate: Issued,
  ) {}

  /** `cn` names the root: a second PKI with the same name is a forged look-alike. */
  static create(cn = 'Test KMS Root'): TestPki {
    const root = issue(null, { cn, ca: true, notAfter: new Date(Date.now() + 365 * DAY) });
    const intermediate = issue(root, { cn: `${cn} Intermediate`, ca: true, notAfter: new Date(Date.now() + 365 * DAY) });
    return new TestPki(root, intermediate);
  }

  /** A server certificate for the registration listener, valid for the given IPs. */
  server(ips: string[]): Issued {
    return issue(this.root, { cn: 'tproxy-interceptor registration', usage: 'server', ips });
  }

  /** An RA-TLS client certificate signed by the intermediate, with the given extensions. */
  client(opts: Omit<IssueOptions, 'cn'> & { cn?: string; direct?: boolean }): Issued & { chainPem: string } {
    const issuer = opts.direct ? this.root : this.intermediate;
    const cert = issue(issuer, { cn: 'dstack-guest-agent', ...opts });
    return { ...cert, chainPem: opts.direct ? cert.certPem : cert.certPem + this.intermediate.certPem };
  }

  /** An instance's certificate carrying app-info (and the matching app-id extension). */
  instance(fields: AppInfoFields, encoding: 'array' | 'map' = 'array', extra: Omit<IssueOptions, 'cn' | 'extensions'> = {}): Issued & { chainPem: string } {
    return this.client({ ...extra, extensions: [ratlsExtension(OID_APP_ID, fields.app_id), ratlsExtension(OID_APP_INFO, encodeAppInfo(fields, encoding))] });
  }
}

/** Writes PEM files into `dir` and returns their paths. */
export async function writePem(dir: string, files: Record<string, string>): Promise<Record<string, string>> {
  await mkdir(dir, { recursive: true });
  const out: Record<string, string> = {};
  for (const [name, text] of Object.entries(files)) {
    const file = path.join(dir, name);
    await writeFile(file, text, { mode: 0o600 });
    out[name] = file;
  }
  return out;
}
