// Outbound PROXY headers as real receivers parse them: nginx (`listen ... proxy_protocol`) and
// HAProxy (`accept-proxy`) behind the gateway must learn the client's address and the address it
// connected to, with `[upstream] pp_version = 2` and `= 1`, over IPv4 and IPv6.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, ADDR, type Proc } from './helpers/lab.js';
import { haproxyAcceptProxy, httpGetVia, parsePpEcho, startHaproxy, startNginxPpReport, startPpEchoBackend, tcpExchange } from './helpers/peers.js';

const NGINX = 8080;
const HAPROXY = 8082;
const PP_ECHO = 8083;

function config(ppVersion: 1 | 2): string {
  return `
[listen]
address = "127.0.0.1"
port = 15001
address6 = "::1"

[[intercept.targets]]
cidr = "198.18.2.0/24"
ports = [${NGINX}, ${HAPROXY}, ${PP_ECHO}]

[[intercept.targets]]
cidr = "fd00:18:2::/64"
ports = [${NGINX}, ${HAPROXY}, ${PP_ECHO}]

[upstream]
connect_timeout = "2s"
pp_version = ${ppVersion}
`;
}

describe('outbound PROXY headers accepted by real backends', () => {
  let lab: Lab;
  beforeAll(async () => {
    lab = await Lab.create();
    await startNginxPpReport(lab, lab.ns.backend, [{ port: NGINX, proxyProtocol: true }]);
    await startHaproxy(lab, lab.ns.backend, haproxyAcceptProxy(HAPROXY), [HAPROXY]);
    await startPpEchoBackend(lab, lab.ns.backend, [PP_ECHO]);
    // The registry lives in the lab's dir and outlives daemon restarts: register once.
    const cfg = await lab.writeConfig(config(2));
    const daemon = await lab.startDaemon(cfg);
    const policy = `${NGINX}:pp,${HAPROXY}:pp,${PP_ECHO}:pp`;
    await lab.cli(['instances', 'add', 'conf-v4', '--app', 'conformance', '--ip', ADDR.backend, '--policy', policy, '--config', cfg]);
    await lab.cli(['instances', 'add', 'conf-v6', '--app', 'conformance', '--ip', ADDR.backend6, '--policy', policy, '--config', cfg]);
    await stop(daemon);
  });
  afterAll(async () => lab?.destroy());

  async function stop(daemon: Proc): Promise<void> {
    daemon.child.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
  }

  for (const version of [2, 1] as const) {
    describe(`pp_version = ${version}`, () => {
      let daemon: Proc;
      beforeAll(async () => {
        daemon = await lab.startDaemon(await lab.writeConfig(config(version)));
      });
      afterAll(async () => stop(daemon));

      for (const [family, client, backend] of [
        ['IPv4', ADDR.client, ADDR.backend],
        ['IPv6', ADDR.client6, ADDR.backend6],
      ] as const) {
        it(`nginx proxy_protocol reports the ${family} client and its original destination`, async () => {
          const r = await httpGetVia(lab, lab.ns.client, { host: backend, port: NGINX });
          expect(r.error).toBeNull();
          expect(r.status).toBe(200);
          expect(r.body).toContain(`pp=${client}:${r.localPort} `);
          expect(r.body).toContain(`pp_dst=${backend}:${NGINX} `);
        });

        it(`HAProxy accept-proxy reports the ${family} client and its original destination`, async () => {
          const r = await httpGetVia(lab, lab.ns.client, { host: backend, port: HAPROXY });
          expect(r.error).toBeNull();
          expect(r.status).toBe(200);
          // HAProxy prints IPv6 addresses unbracketed: fd00:18:1::2:40000.
          expect(r.body).toContain(`src=${client}:${r.localPort} `);
          expect(r.body).toContain(`dst=${backend}:${HAPROXY} `);
        });

        it(`sends a v${version} ${family} header in front of the client's bytes, which arrive intact`, async () => {
          const payload = Buffer.from(`hello over ${family}\r\nsecond line\n`);
          const r = await tcpExchange(lab, lab.ns.client, { host: backend, port: PP_ECHO, send: payload, end: true });
          expect(r.error).toBeNull();
          expect(r.ended).toBe(true);
          const { report, echoed } = parsePpEcho(r.data);
          expect(report).toMatchObject({
            version,
            command: 'PROXY',
            family: family === 'IPv4' ? 'INET' : 'INET6',
            source: { address: client, port: r.localPort },
            destination: { address: backend, port: PP_ECHO },
          });
          expect(echoed.equals(payload)).toBe(true);
        });
      }
    });
  }
});
