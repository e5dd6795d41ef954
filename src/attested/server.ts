// The attested self-registration endpoint: HTTPS with mutual TLS, where an instance registers
// itself with its RA-TLS client certificate, as a dstack CVM registers with dstack's gateway
// (`POST /prpc/RegisterCvm?json`). The identity and the compose hash come from the certificate
// only; the body adds the port policy; the address is where the connection comes from. Each
// request is answered once its registration is durable, or refused with a reason that is logged.
import { constants as cryptoConstants, X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import * as https from 'node:https';
import type * as http from 'node:http';
import * as tls from 'node:tls';
import type { Logger } from 'pino';
import type { AttestedConfig } from '../config.js';
import { closeGracefully, sendJson } from '../net/http.js';
import { serializePolicy } from '../registry/policy.js';
import type { RegistryService } from '../registry/service.js';
import type { InstanceRecord, PortPolicy } from '../registry/types.js';
import { compileAddressMap } from './address-map.js';
import { admit, type Admission } from './admission.js';
import { identityFromCertificate, type CertificateIdentity } from './app-info.js';
import { AttestedRejection, AttestedTlsFileError } from './errors.js';
import { parseRegisterCvmBody } from './request.js';

/** RegisterCvm bodies are a few hundred bytes; a policy listing thousands of ports still fits. */
export const MAX_BODY_BYTES = 1024 * 1024;
/** dstack mounts the gateway's RPCs under /prpc and also accepts the old `Tproxy.` method prefix. */
const REGISTER_PATHS = new Set(['/prpc/RegisterCvm', '/prpc/Tproxy.RegisterCvm']);

export interface AttestedServer {
  /** The bound address (port resolved when the config asked for 0). */
  readonly address: { readonly address: string; readonly port: number };
  close(): Promise<void>;
}

export interface AttestedServerOptions {
  logger: Logger;
  config: AttestedConfig;
  service: RegistryService;
  /** Clock for the validity check (tests). */
  now?: () => number;
}

interface Registered {
  readonly record: InstanceRecord;
  readonly admission: Admission;
}

export async function createAttestedServer(opts: AttestedServerOptions): Promise<AttestedServer> {
  const { config, service } = opts;
  const logger = opts.logger.child({ component: 'attested' });
  const now = opts.now ?? Date.now;
  const tlsFiles = await loadTlsFiles(config);
  const mapAddress = compileAddressMap(config.addressMap);
  const allowed = config.allowedApps === null ? null : new Set(config.allowedApps);

  // The conflict check runs inside the registry service's serialized mutation (its precondition),
  // so no other registration, attested or by the operator, can change the registry between the
  // check and the change: two registrations of one instance from two addresses never both pass.
  const inflight = new Set<Promise<unknown>>();
  function register(identity: CertificateIdentity, address: string, policy: PortPolicy | null): Promise<Registered> {
    const p = apply(identity, address, policy);
    inflight.add(p);
    void p.catch(() => {}).finally(() => inflight.delete(p));
    return p;
  }

  async function apply(identity: CertificateIdentity, address: string, policy: PortPolicy | null): Promise<Registered> {
    let admission: Admission | undefined;
    try {
      // The registry's own semantics apply from here: a null policy keeps (or lets the fetcher
      // learn) the cached one, a new compose hash drops it, an operator override stays on top.
      const record = await service.add(
        { instanceId: identity.instanceId, appId: identity.appId, ip: address, composeHash: identity.composeHash, policy },
        (current, holder) => {
          admission = admit({
            instanceId: identity.instanceId,
            appId: identity.appId,
            address,
            current,
            holder,
            allowAddressChange: config.allowAddressChange,
          });
        },
      );
      return { record, admission: admission as Admission };
    } catch (err) {
      if (err instanceof AttestedRejection) throw err;
      throw registryRejection(err);
    }
  }

  function authenticate(socket: tls.TLSSocket): CertificateIdentity {
    const cert = socket.getPeerX509Certificate();
    if (cert === undefined) {
      throw new AttestedRejection('no_client_certificate', "no client certificate; register with the instance's RA-TLS client certificate");
    }
    if (!socket.authorized) {
      const code = String(socket.authorizationError ?? 'UNKNOWN');
      if (code === 'CERT_HAS_EXPIRED') throw new AttestedRejection('certificate_expired', `a certificate in the client's chain has expired (${code})`);
      if (code === 'CERT_NOT_YET_VALID') throw new AttestedRejection('certificate_not_yet_valid', `a certificate in the client's chain is not valid yet (${code})`);
      throw new AttestedRejection('untrusted_certificate', `the client certificate does not chain to registry.attested.ca_file (${code})`);
    }
    const identity = identityFromCertificate(cert.raw, { appIdFallback: config.appIdFallback });
    // Again per request: a kept-alive connection (or a resumed session) outlives the handshake.
    const t = now();
    if (t > identity.notAfter.getTime()) throw new AttestedRejection('certificate_expired', `the client certificate expired at ${identity.notAfter.toISOString()}`);
    if (t < identity.notBefore.getTime()) throw new AttestedRejection('certificate_not_yet_valid', `the client certificate is valid from ${identity.notBefore.toISOString()}`);
    return identity;
  }

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const started = performance.now();
    const socket = req.socket as tls.TLSSocket;
    const fields: Record<string, unknown> = { peer: socket.remoteAddress };
    try {
      const identity = authenticate(socket);
      Object.assign(fields, { identity: identity.source, appId: identity.appId, instanceId: identity.instanceId });
      if (allowed !== null && !allowed.has(identity.appId)) {
        throw new AttestedRejection('app_not_allowed', `app ${identity.appId} is not in registry.attested.allowed_apps`);
      }
      const url = new URL(req.url ?? '/', 'https://registration');
      if (!REGISTER_PATHS.has(url.pathname)) throw new AttestedRejection('not_found', `no RPC at ${url.pathname}; use POST /prpc/RegisterCvm?json`);
      if (req.method !== 'POST') {
        res.setHeader('Allow', 'POST');
        throw new AttestedRejection('method_not_allowed', `${req.method ?? '?'} ${url.pathname}: use POST`);
      }
      if (!url.searchParams.has('json') && !isJson(req.headers['content-type'])) {
        throw new AttestedRejection('protobuf_unsupported', 'only the JSON form of RegisterCvm is served: add ?json to the URL or send Content-Type: application/json');
      }
      const body = parseRegisterCvmBody(await readBody(req));
      const address = socket.remoteAddress === undefined ? null : mapAddress(socket.remoteAddress);
      if (address === null) throw new AttestedRejection('registry_unavailable', 'the connection closed before its address could be read');
      fields['address'] = address;
      const { record, admission } = await register(identity, address, body.portPolicy);
      sendJson(res, 200, answer(identity, record, admission, body.portPolicy));
      const log = { ...fields, composeHash: identity.composeHash, policyReported: body.portPolicy !== null, reregistration: admission.reregistration, ms: elapsed(started) };
      if (admission.movedFrom !== null) logger.warn({ ...log, movedFrom: admission.movedFrom }, 'attested registration moved the instance to a new address');
      else logger.info(log, 'attested registration');
    } catch (err) {
      if (err instanceof AttestedRejection) {
        const level = err.status >= 500 ? 'error' : 'warn';
        logger[level](
          { ...fields, reason: err.reason, code: err.code, status: err.status, field: err.field ?? undefined, detail: err.message, ...(err.cause ? { err: err.cause } : {}), ms: elapsed(started) },
          'attested registration refused',
        );
        res.setHeader('Connection', 'close');
        const body: Record<string, unknown> = { error: err.message, code: err.code, reason: err.reason };
        if (err.field !== null) body['field'] = err.field;
        return sendJson(res, err.status, body);
      }
      throw err;
    }
  }

  const server = https.createServer(
    {
      ...tlsFiles,
      requestCert: true,
      // The verification result is read per request (socket.authorized), so that every refusal
      // is answered and logged with its reason instead of a bare handshake failure.
      rejectUnauthorized: false,
      minVersion: 'TLSv1.2',
      // A TLS 1.2 renegotiation could present another certificate on a connection whose
      // `authorized` was settled by the first handshake: one handshake, one identity.
      secureOptions: cryptoConstants.SSL_OP_NO_RENEGOTIATION,
      handshakeTimeout: 10_000,
    },
    (req, res) => {
      handle(req, res).catch((err: unknown) => {
        logger.error({ err, peer: req.socket.remoteAddress }, 'attested registration failed');
        if (!res.headersSent) {
          res.setHeader('Connection', 'close');
          sendJson(res, 500, { error: 'internal error', code: 'ERR_INTERNAL' });
        } else res.destroy();
      });
    },
  );
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  server.keepAliveTimeout = 5_000;
  server.maxConnections = 512;
  server.on('tlsClientError', (err: NodeJS.ErrnoException, socket: tls.TLSSocket) => {
    logger.warn({ peer: socket.remoteAddress, reason: 'tls_handshake_failed', code: err.code, detail: err.message }, 'attested registration refused');
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.listen.port, config.listen.address, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', (err) => logger.error({ err }, 'attested registration server error'));
  const bound = server.address() as { address: string; port: number };
  logger.info({ address: bound.address, port: bound.port, allowedApps: config.allowedApps, appIdFallback: config.appIdFallback }, 'attested registration listening');

  let closing: Promise<void> | null = null;
  return {
    address: { address: bound.address, port: bound.port },
    close() {
      // A registration whose client was cut off still completes: wait for it.
      closing ??= closeGracefully(server).then(async () => {
        await Promise.allSettled([...inflight]);
      });
      return closing;
    },
  };
}

/** What was registered, in the registry's JSON vocabulary (see `instances show --json`). */
function answer(identity: CertificateIdentity, record: InstanceRecord, admission: Admission, reported: PortPolicy | null): Record<string, unknown> {
  const effective = record.override ?? record.reportedPolicy;
  const out: Record<string, unknown> = {
    instance_id: record.instanceId,
    app_id: record.appId,
    compose_hash: record.composeHash,
    address: record.ip,
    identity: identity.source,
    port_policy: reported === null ? null : serializePolicy(reported),
    effective_policy: {
      source: record.override !== null ? 'override' : record.reportedPolicy !== null ? record.policySource : null,
      policy: effective === null ? null : serializePolicy(effective),
    },
    reregistration: admission.reregistration,
  };
  if (admission.movedFrom !== null) out['moved_from'] = admission.movedFrom;
  return out;
}

function registryRejection(err: unknown): AttestedRejection {
  const code = (err as { code?: unknown } | null)?.code;
  const message = err instanceof Error ? err.message : String(err);
  if (code === 'ERR_IP_IN_USE') return new AttestedRejection('address_in_use', `${message}; nothing changed`);
  if (code === 'ERR_INVALID_REGISTRATION') return new AttestedRejection('registration_invalid', `the registry refused the registration: ${message}`);
  return new AttestedRejection('registry_unavailable', `the registration could not be stored, nothing changed: ${message}`, { cause: err });
}

async function loadTlsFiles(config: AttestedConfig): Promise<{ ca: string; cert: string; key: string }> {
  const read = async (key: string, file: string): Promise<string> => {
    try {
      return await readFile(file, 'utf8');
    } catch (err) {
      throw new AttestedTlsFileError(key, `cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? String(err)})`, { cause: err });
    }
  };
  const ca = await read('registry.attested.ca_file', config.caFile);
  const cert = await read('registry.attested.cert_file', config.certFile);
  const key = await read('registry.attested.key_file', config.keyFile);
  const blocks = ca.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) throw new AttestedTlsFileError('registry.attested.ca_file', `${config.caFile} holds no PEM certificate; expected the CA bundle client certificates chain to (dstack: the KMS root CA)`);
  blocks.forEach((pem, i) => {
    try {
      new X509Certificate(pem);
    } catch (err) {
      throw new AttestedTlsFileError('registry.attested.ca_file', `certificate ${i + 1} in ${config.caFile} does not parse: ${(err as Error).message}`, { cause: err });
    }
  });
  try {
    tls.createSecureContext({ cert, key });
  } catch (err) {
    throw new AttestedTlsFileError(
      'registry.attested.cert_file',
      `${config.certFile} with key ${config.keyFile} is not usable: ${(err as Error).message}; expected a PEM certificate and its matching PEM private key`,
      { cause: err },
    );
  }
  return { ca, cert, key };
}

async function readBody(req: http.IncomingMessage): Promise<string> {
  const declared = Number(req.headers['content-length'] ?? NaN);
  if (declared > MAX_BODY_BYTES) throw new AttestedRejection('body_too_large', `the body of ${declared} bytes exceeds the limit of ${MAX_BODY_BYTES}`);
  const chunks: Buffer[] = [];
  let size = 0;
  await new Promise<void>((resolve, reject) => {
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        req.off('data', onData);
        req.pause();
        reject(new AttestedRejection('body_too_large', `the body exceeds the limit of ${MAX_BODY_BYTES} bytes`));
        return;
      }
      chunks.push(chunk);
    };
    req.on('data', onData);
    req.once('end', resolve);
    req.once('error', reject);
  });
  return Buffer.concat(chunks).toString('utf8');
}

function isJson(contentType: string | undefined): boolean {
  return contentType !== undefined && /^application\/(?:[\w.+-]+\+)?json\b/i.test(contentType.trim());
}

function elapsed(started: number): number {
  return Math.round((performance.now() - started) * 100) / 100;
}
