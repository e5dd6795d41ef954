// Attested self-registration end to end: an instance in the backend namespace registers itself
// over mutual TLS with its RA-TLS certificate (pp=true on 8080), and a real nginx with a
// `proxy_protocol` listener then sees the client's address in the header; a look-alike CA's
// certificate for the same instance is refused and changes nothing; the registration survives
// kill -9.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import { Lab, ADDR, BASE_CONFIG, ROOT, type Proc } from './helpers/lab.js';
import { startNginx, httpGet } from './helpers/peers.js';
import { TestPki, appInfoFields, hex, writePem } from '../../scripts/lib/ra-tls-pki.mjs';

const LISTEN = `${ADDR.gatewayBackendSide}:8443`;
const INSTANCE = appInfoFields(5);
const INSTANCE_ID = hex(INSTANCE.instance_id);

interface Registered {
  status?: number;
  body?: Record<string, unknown>;
  error?: string;
}

describe('attested self-registration (RA-TLS, mutual TLS)', () => {
  let lab: Lab;
  let config: string;
  let daemon: Proc;
  let pem: Record<string, string>;

  const register = async (prefix: 'instance' | 'forged', policy: unknown): Promise<Registered> => {
    const argv = ['node', path.join(ROOT, 'scripts', 'peers', 'register-cvm.mjs'), LISTEN, '--cert', pem[`${prefix}.crt`]!, '--key', pem[`${prefix}.key`]!, '--ca', pem['ca.pem']!];
    if (policy !== undefined) argv.push('--policy', JSON.stringify(policy));
    const { stdout } = await lab.exec(lab.ns.backend, argv);
    return JSON.parse(stdout.trim()) as Registered;
  };
  const show = async (): Promise<Record<string, unknown>> => {
    const r = await lab.cli(['instances', 'show', INSTANCE_ID, '--json', '--config', config]);
    return (JSON.parse(r.stdout) as { instance: Record<string, unknown> }).instance;
  };

  beforeAll(async () => {
    lab = await Lab.create();
    const pki = TestPki.create();
    const forged = TestPki.create(); // same root name, other keys
    const server = pki.server([ADDR.gatewayBackendSide]);
    const instance = pki.instance(INSTANCE);
    const fake = forged.instance(INSTANCE);
    pem = await writePem(path.join(lab.dir, 'pki'), {
      'ca.pem': pki.root.certPem,
      'server.crt': server.certPem,
      'server.key': server.keyPem,
      'instance.crt': instance.chainPem,
      'instance.key': instance.keyPem,
      // The forger trusts the real root for the server: only its own certificate is fake.
      'forged.crt': fake.chainPem,
      'forged.key': fake.keyPem,
    });
    await startNginx(lab, lab.ns.backend, [{ port: 8080, proxyProtocol: true }]);
    config = await lab.writeConfig(`${BASE_CONFIG}
[registry.attested]
listen = "${LISTEN}"
ca_file = "${pem['ca.pem']}"
cert_file = "${pem['server.crt']}"
key_file = "${pem['server.key']}"
allowed_apps = ["${hex(INSTANCE.app_id)}"]
`);
    daemon = await lab.startDaemon(config);
  });
  afterAll(async () => {
    await lab?.stopDaemons();
    await lab?.destroy();
  });

  it('the instance registers itself with pp=true on 8080, and nginx sees the client address in the PROXY header', async () => {
    // Not registered yet: no header, and the proxy_protocol listener refuses the bare request.
    expect((await httpGet(lab, ADDR.backend, 8080)).body).not.toContain(`pp=${ADDR.client}`);

    const r = await register('instance', { ports: [{ port: 8080, pp: true }], restrict_mode: false });
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ instance_id: INSTANCE_ID, app_id: hex(INSTANCE.app_id), compose_hash: hex(INSTANCE.compose_hash), address: ADDR.backend, identity: 'app-info' });
    await daemon.waitFor('"msg":"attested registration"');

    const pp = await httpGet(lab, ADDR.backend, 8080);
    expect(pp.status).toBe(200);
    expect(pp.body).toContain(`pp=${ADDR.client}:`);
    expect(pp.body).toContain(`remote=${ADDR.gatewayBackendSide}`);
    expect(await show()).toMatchObject({ ip: ADDR.backend, policy_source: 'registration', compose_hash: hex(INSTANCE.compose_hash) });
  });

  it("a certificate from a different CA is refused, and the instance's ports stay as they were", async () => {
    const before = await show();
    const r = await register('forged', { ports: [], restrict_mode: true });
    expect(r.status).toBe(403);
    expect(r.body).toMatchObject({ reason: 'untrusted_certificate', code: 'ERR_ATTESTED_UNTRUSTED_CERT' });
    await daemon.waitFor('"reason":"untrusted_certificate"');
    expect(await show()).toEqual(before);
    expect((await httpGet(lab, ADDR.backend, 8080)).body).toContain(`pp=${ADDR.client}:`);
  });

  it('the acknowledged registration survives kill -9', async () => {
    daemon.child.kill('SIGKILL');
    await daemon.exited;
    daemon = await lab.startDaemon(config);
    expect((await httpGet(lab, ADDR.backend, 8080)).body).toContain(`pp=${ADDR.client}:`);
    daemon.child.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
    expect(daemon.output()).toContain('"msg":"attested registration listening"');
  });
});
