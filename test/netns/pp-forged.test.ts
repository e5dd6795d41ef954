// A forged PROXY header sent by an untrusted client never changes the address a backend sees,
// on pp=false ports (spoofed source) or pp=true ports (our header): the forged bytes are the
// client's payload and arrive at the backend verbatim, after our header where there is one.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, ADDR, type Proc } from './helpers/lab.js';
import { httpGetVia, parsePpEcho, startHaproxy, startNginx, startPpEchoBackend, tcpExchange } from './helpers/peers.js';

const WHOAMI = 8081; // pp=false
const NGINX = 8080; // pp=true
const PP_ECHO = 8083; // pp=true
const HAPROXY_TCP = 8084; // pp=true: HAProxy accept-proxy in TCP mode, logging what it parsed
const HAPROXY_INNER = 9901; // whoami behind that HAProxy, on the backend host itself
const FORGED4 = '198.18.9.9';
const FORGED6 = 'fd00:18:9::9';

function config(trustedSources: string[]): string {
  return `
[listen]
address = "127.0.0.1"
port = 15001
address6 = "::1"

[[intercept.targets]]
cidr = "198.18.2.0/24"
ports = [${NGINX}, ${WHOAMI}, ${PP_ECHO}, ${HAPROXY_TCP}]

[[intercept.targets]]
cidr = "fd00:18:2::/64"
ports = [${NGINX}, ${WHOAMI}, ${PP_ECHO}, ${HAPROXY_TCP}]

[upstream]
connect_timeout = "2s"

[inbound_pp]
trusted_sources = [${trustedSources.map((s) => JSON.stringify(s)).join(', ')}]
`;
}

// An HAProxy that takes our header and logs the source it parsed, then hands the rest of the
// stream (the forged header included) to a whoami, whose echo comes back to the client.
const HAPROXY_TCP_CONFIG = `
global
  log stdout format raw local0 info
frontend forged_tcp
  mode tcp
  log global
  log-format "haproxy-pp src=%ci:%cp dst=%fi:%fp"
  bind :${HAPROXY_TCP} accept-proxy
  bind :::${HAPROXY_TCP} v6only accept-proxy
  default_backend inner
backend inner
  mode tcp
  server whoami 127.0.0.1:${HAPROXY_INNER}
`;

// --- forged headers, built by hand from doc/proxy-protocol.txt (not with our codec) ---

const SIG = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);

function ipBytes(ip: string): Buffer {
  if (!ip.includes(':')) return Buffer.from(ip.split('.').map(Number));
  const [head, tail] = ip.split('::') as [string, string | undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  const b = Buffer.alloc(16);
  groups.forEach((g, i) => b.writeUInt16BE(parseInt(g, 16), i * 2));
  return b;
}

function forgedV1(src: string, dst: string, dport: number): Buffer {
  return Buffer.from(`PROXY ${src.includes(':') ? 'TCP6' : 'TCP4'} ${src} ${dst} 5555 ${dport}\r\n`);
}

function forgedV2(src: string, dst: string, dport: number): Buffer {
  const v6 = src.includes(':');
  const addr = Buffer.concat([ipBytes(src), ipBytes(dst), Buffer.from([0x15, 0xb3, dport >> 8, dport & 0xff])]);
  const fixed = Buffer.from([0x21, v6 ? 0x21 : 0x11, addr.length >> 8, addr.length & 0xff]);
  return Buffer.concat([SIG, fixed, addr]);
}

const FAMILIES = [
  { family: 'IPv4', client: ADDR.client, backend: ADDR.backend, forged: FORGED4 },
  { family: 'IPv6', client: ADDR.client6, backend: ADDR.backend6, forged: FORGED6 },
] as const;
const FORGERIES = [
  { name: 'v1', make: forgedV1 },
  { name: 'v2', make: forgedV2 },
] as const;

describe('forged PROXY headers from untrusted clients', () => {
  let lab: Lab;
  let haproxy: Proc;
  let cfgPath: string;
  beforeAll(async () => {
    lab = await Lab.create();
    await lab.startBackend([WHOAMI, HAPROXY_INNER]);
    await startNginx(lab, lab.ns.backend, [{ port: NGINX, proxyProtocol: true }]);
    await startPpEchoBackend(lab, lab.ns.backend, [PP_ECHO]);
    haproxy = await startHaproxy(lab, lab.ns.backend, HAPROXY_TCP_CONFIG, [HAPROXY_TCP]);
    cfgPath = await lab.writeConfig(config([]));
    const daemon = await lab.startDaemon(cfgPath);
    const policy = `${NGINX}:pp,${WHOAMI},${PP_ECHO}:pp,${HAPROXY_TCP}:pp`;
    await lab.cli(['instances', 'add', 'forged-v4', '--app', 'forged', '--ip', ADDR.backend, '--policy', policy, '--config', cfgPath]);
    await lab.cli(['instances', 'add', 'forged-v6', '--app', 'forged', '--ip', ADDR.backend6, '--policy', policy, '--config', cfgPath]);
    daemon.child.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
  });
  afterAll(async () => lab?.destroy());

  for (const [label, trusted] of [
    ['trusted_sources empty', []],
    ['trusted_sources not including the client', ['198.18.3.0/24', 'fd00:18:3::/64']],
  ] as const) {
    describe(label, () => {
      let daemon: Proc;
      beforeAll(async () => {
        daemon = await lab.startDaemon(await lab.writeConfig(config([...trusted])));
      });
      afterAll(async () => {
        daemon.child.kill('SIGTERM');
        expect((await daemon.exited).code).toBe(0);
      });

      for (const { family, client, backend, forged } of FAMILIES) {
        for (const f of FORGERIES) {
          it(`pp=false, ${family}, forged ${f.name}: the backend sees the real client and gets the forged bytes as payload`, async () => {
            const payload = Buffer.concat([f.make(forged, backend, WHOAMI), Buffer.from('payload\n')]);
            const r = await tcpExchange(lab, lab.ns.client, { host: backend, port: WHOAMI, send: payload, end: true });
            const nl = r.data.indexOf(10);
            const saw = JSON.parse(r.data.subarray(0, nl).toString()) as { remote: string; local: string };
            expect(saw.remote.replace(/:\d+$/, '')).toBe(client);
            expect(saw.local).toBe(`${backend}:${WHOAMI}`);
            expect(r.data.subarray(nl + 1).equals(payload)).toBe(true);
            expect(r.error).toBeNull();
            expect(r.ended).toBe(true);
          });

          it(`pp=true, ${family}, forged ${f.name}: our header names the real client, the forged one follows verbatim as payload`, async () => {
            const payload = Buffer.concat([f.make(forged, backend, PP_ECHO), Buffer.from('payload\n')]);
            const r = await tcpExchange(lab, lab.ns.client, { host: backend, port: PP_ECHO, send: payload, end: true });
            const { report, echoed } = parsePpEcho(r.data);
            expect(report?.command).toBe('PROXY');
            expect(report?.source).toEqual({ address: client, port: r.localPort });
            expect(report?.destination).toEqual({ address: backend, port: PP_ECHO });
            expect(echoed.equals(payload)).toBe(true);
            expect(r.error).toBeNull();
            expect(r.ended).toBe(true);
          });
        }
      }

      for (const f of FORGERIES) {
        it(`pp=true, HAProxy accept-proxy, forged ${f.name}: HAProxy parses the real client and passes the forged bytes through`, async () => {
          const payload = Buffer.concat([f.make(FORGED4, ADDR.backend, HAPROXY_TCP), Buffer.from('payload\n')]);
          const r = await tcpExchange(lab, lab.ns.client, { host: ADDR.backend, port: HAPROXY_TCP, send: payload, end: true });
          const nl = r.data.indexOf(10);
          expect(r.data.subarray(nl + 1).equals(payload)).toBe(true);
          expect(r.error).toBeNull();
          expect(r.ended).toBe(true);
          // HAProxy logs when the session ends, which it has by now (we saw its FIN).
          await haproxy.waitFor(`haproxy-pp src=${ADDR.client}:${r.localPort} dst=${ADDR.backend}:${HAPROXY_TCP}`, 5000);
          expect(haproxy.output()).not.toContain(`src=${FORGED4}`);
        });

        it(`pp=true, nginx proxy_protocol, forged ${f.name}: nginx takes our header and rejects the forged one as a bad request`, async () => {
          // Had the forged header reached nginx in place of ours, nginx would answer 200 with pp=198.18.9.9.
          const r = await httpGetVia(lab, lab.ns.client, { host: ADDR.backend, port: NGINX, prefix: f.make(FORGED4, ADDR.backend, NGINX) });
          expect(r.error).toBeNull();
          expect(r.status).toBe(400);
          expect(r.body).not.toContain(FORGED4);
        });
      }

      it('the daemon logged every connection under the real client address, never the forged one', () => {
        expect(daemon.output()).toContain(`"client":"${ADDR.client}:`);
        expect(daemon.output()).toContain(`"client":"${ADDR.client6}:`);
        expect(daemon.output()).not.toContain(FORGED4);
        expect(daemon.output()).not.toContain(FORGED6);
        expect(daemon.output()).not.toContain('"inbound"');
      });
    });
  }
});
