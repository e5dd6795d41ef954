// Inbound PROXY headers from a trusted load balancer. HAProxy runs as the LB in the client
// namespace: a test client bound to 198.18.1.77 (an extra address of the client host) connects to
// it, and the LB's own connection to a target behind the gateway comes from 198.18.1.2, the only
// trusted source. The header's source must become the client the backends see (and its TLVs
// travel on in our header); a trusted source without a complete valid header in time gets
// nothing through; LOCAL/UNKNOWN mean the LB's own address.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, ADDR, type Proc } from './helpers/lab.js';
import {
  haproxyAcceptProxy,
  httpGetVia,
  parsePpEcho,
  selfSignedPem,
  startHaproxy,
  startNginxPpReport,
  startPpEchoBackend,
  tcpExchange,
} from './helpers/peers.js';

const LB_CLIENT = '198.18.1.77';
const WHOAMI = 8081; // pp=false
const NGINX = 8080; // pp=true
const HAPROXY = 8082; // pp=true
const PP_ECHO = 8083; // pp=true
const PP_ECHO_CHECKS = 8084; // pp=true, only the LB's health checks reach it
const SLOW_WHOAMI = 8085; // pp=false, a backend whose first SYN is dropped: connecting takes ~1 s
const SNI = 'app.example';

const CONFIG = `
[listen]
address = "127.0.0.1"
port = 15001
address6 = "::1"

[[intercept.targets]]
cidr = "198.18.2.0/24"
ports = [${NGINX}, ${WHOAMI}, ${HAPROXY}, ${PP_ECHO}, ${PP_ECHO_CHECKS}, ${SLOW_WHOAMI}]

[upstream]
connect_timeout = "2s"
pp_version = 2
# Short, so that a relay a failing half-close test leaves open is reaped before the daemon stops.
idle_timeout = "4s"

[inbound_pp]
trusted_sources = ["${ADDR.client}/32"]
timeout = "1s"
`;

/** How the LB sends its header, and the LB ports that lead to each backend. */
const VARIANTS = [
  { name: 'send-proxy (v1)', server: 'send-proxy', tls: false, base: 7100 },
  { name: 'send-proxy-v2', server: 'send-proxy-v2', tls: false, base: 7110 },
  { name: 'send-proxy-v2 with crc32c,unique-id,authority', server: 'send-proxy-v2 proxy-v2-options crc32c,unique-id,authority', tls: true, base: 7120 },
] as const;
const BACKENDS = [WHOAMI, NGINX, HAPROXY, PP_ECHO];
const lbPort = (base: number, backend: number): number => base + BACKENDS.indexOf(backend);
const LB_CHECKS = 7130;
const LB_SLOW = 7140;

// In the backend namespace: drop every other SYN to the slow port, so each connection to it
// waits for the SYN retransmission (1 s) and the client's FIN surely arrives before it is up.
const SLOW_RULES = `
table inet slow_backend {
  chain input {
    type filter hook input priority 0; policy accept;
    tcp dport ${SLOW_WHOAMI} tcp flags & (syn | ack) == syn numgen inc mod 2 == 0 drop
  }
}
`;

function lbConfig(pem: string): string {
  const sections: string[] = [];
  for (const v of VARIANTS) {
    for (const backend of BACKENDS) {
      const port = lbPort(v.base, backend);
      sections.push(`
frontend lb_${port}
  mode tcp
  bind ${ADDR.client}:${port}${v.tls ? ` ssl crt ${pem}` : ''}
  unique-id-format lb-%ci-%cp
  default_backend be_${port}
backend be_${port}
  mode tcp
  server be ${ADDR.backend}:${backend} ${v.server}`);
    }
  }
  // Health checks with send-proxy-v2 carry a LOCAL header: the gateway must use the LB's own
  // address for them, and the check must see a backend answer through the gateway.
  sections.push(`
frontend lb_checks
  mode tcp
  bind ${ADDR.client}:${LB_CHECKS}
  default_backend be_checks
backend be_checks
  mode tcp
  option log-health-checks
  option tcp-check
  tcp-check send "health\\n"
  tcp-check expect rstring "\\"command\\":\\"PROXY\\".*\\"source\\":.\\"address\\":\\"${ADDR.client}\\""
  server be ${ADDR.backend}:${PP_ECHO_CHECKS} send-proxy-v2 check check-send-proxy inter 200ms`);
  sections.push(`
frontend lb_slow
  mode tcp
  bind ${ADDR.client}:${LB_SLOW}
  # Wait for the client's bytes before connecting, so that the header and the payload leave
  # in one segment, as they do whenever the client speaks first.
  tcp-request inspect-delay 2s
  tcp-request content accept if { req.len gt 0 }
  default_backend be_slow
backend be_slow
  mode tcp
  server be ${ADDR.backend}:${SLOW_WHOAMI} send-proxy-v2`);
  return sections.join('\n');
}

// --- hand-made headers (bytes straight from doc/proxy-protocol.txt, not from our codec) ---

const SIG = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);

function crc32c(buf: Buffer): number {
  let crc = 0xffffffff;
  for (const byte of buf) {
    crc ^= byte;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ 0x82f63b78 : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

function ipv4(a: string): Buffer {
  return Buffer.from(a.split('.').map(Number));
}

/** v2 TCP4 (command PROXY unless `verCmd` says otherwise), with an optional CRC32C TLV ('bad' flips a bit of it). */
function v2Header(opts: { src: string; dst: string; sport: number; dport: number; crc?: 'good' | 'bad'; verCmd?: number }): Buffer {
  const addr = Buffer.alloc(12);
  ipv4(opts.src).copy(addr, 0);
  ipv4(opts.dst).copy(addr, 4);
  addr.writeUInt16BE(opts.sport, 8);
  addr.writeUInt16BE(opts.dport, 10);
  const tlv = opts.crc ? Buffer.from([0x03, 0x00, 0x04, 0, 0, 0, 0]) : Buffer.alloc(0);
  const fixed = Buffer.from([opts.verCmd ?? 0x21, 0x11, 0, 0]);
  fixed.writeUInt16BE(addr.length + tlv.length, 2);
  const header = Buffer.concat([SIG, fixed, addr, tlv]);
  if (opts.crc) {
    const value = crc32c(header) ^ (opts.crc === 'bad' ? 1 : 0);
    header.writeUInt32BE(value >>> 0, header.length - 4);
  }
  return header;
}

const V2_LOCAL = Buffer.concat([SIG, Buffer.from([0x20, 0x00, 0x00, 0x00])]);

/** whoami's answer: the address it saw (port dropped) and the bytes it echoed. */
function whoamiAnswer(data: Buffer): { remote: string; local: string; echo: string } | string {
  const text = data.toString();
  const nl = text.indexOf('\n');
  if (nl < 0) return text;
  const saw = JSON.parse(text.slice(0, nl)) as { remote: string; local: string };
  return { remote: saw.remote.replace(/:\d+$/, ''), local: saw.local, echo: text.slice(nl + 1) };
}

interface LogLine {
  reason?: string;
  client?: string;
  inbound?: string;
  peer?: string;
  err?: { code: string; message: string };
  [k: string]: unknown;
}

/** The daemon's "connection closed" line for the connection from `peer` (ip:port). */
async function closedLine(daemon: Proc, peer: string): Promise<LogLine> {
  const re = new RegExp(`^.*"peer":"${peer.replace(/[.[\]]/g, '\\$&')}".*"msg":"connection closed".*$`, 'm');
  await daemon.waitFor(re, 5000);
  return JSON.parse(re.exec(daemon.output())![0]) as LogLine;
}

describe('inbound PROXY headers from a trusted load balancer', () => {
  let lab: Lab;
  let daemon: Proc;
  let checksBackend: Proc;
  let lb: Proc;
  beforeAll(async () => {
    lab = await Lab.create();
    // The end user behind the LB: a second address on the client host.
    await lab.exec(lab.ns.client, ['ip', 'addr', 'add', `${LB_CLIENT}/32`, 'dev', 'lo']);
    await lab.startBackend([WHOAMI, SLOW_WHOAMI]);
    await lab.exec(lab.ns.backend, ['nft', '-f', '-'], { input: SLOW_RULES });
    await startNginxPpReport(lab, lab.ns.backend, [{ port: NGINX, proxyProtocol: true }]);
    await startHaproxy(lab, lab.ns.backend, haproxyAcceptProxy(HAPROXY), [HAPROXY]);
    await startPpEchoBackend(lab, lab.ns.backend, [PP_ECHO]);
    checksBackend = await startPpEchoBackend(lab, lab.ns.backend, [PP_ECHO_CHECKS]);
    const cfg = await lab.writeConfig(CONFIG);
    daemon = await lab.startDaemon(cfg);
    await lab.cli(['instances', 'add', 'inbound-be', '--app', 'inbound', '--ip', ADDR.backend, '--policy', `${NGINX}:pp,${WHOAMI},${HAPROXY}:pp,${PP_ECHO}:pp,${PP_ECHO_CHECKS}:pp`, '--config', cfg]);
    const lbPorts = [...VARIANTS.flatMap((v) => BACKENDS.map((b) => lbPort(v.base, b))), LB_CHECKS, LB_SLOW];
    lb = await startHaproxy(lab, lab.ns.client, lbConfig(await selfSignedPem(lab, 'lb')), lbPorts);
  });
  afterAll(async () => {
    // The LB first: its health checks would otherwise keep opening connections.
    lb?.child.kill('SIGTERM');
    await lb?.exited;
    if (daemon) {
      daemon.child.kill('SIGTERM');
      expect((await daemon.exited).code).toBe(0);
    }
    await lab?.destroy();
  });

  const viaLb = (v: (typeof VARIANTS)[number], backend: number) => ({
    host: ADDR.client,
    port: lbPort(v.base, backend),
    localAddress: LB_CLIENT,
    ...(v.tls ? { tls: { servername: SNI } } : {}),
  });

  for (const v of VARIANTS) {
    describe(`LB ${v.name}`, () => {
      it('the pp=false backend sees the header source as the connection source, and the bytes arrive intact', async () => {
        const r = await tcpExchange(lab, lab.ns.client, { ...viaLb(v, WHOAMI), send: 'through the lb\n', until: 'through the lb\n' });
        expect(r.error).toBeNull();
        // The address only: the spoofed connection gets a fresh port ([upstream] keep_client_port = false).
        expect(whoamiAnswer(r.data)).toEqual({ remote: LB_CLIENT, local: `${ADDR.backend}:${WHOAMI}`, echo: 'through the lb\n' });
      });

      it('nginx (pp=true) gets the header source in our PROXY header', async () => {
        const r = await httpGetVia(lab, lab.ns.client, viaLb(v, NGINX));
        expect(r.error).toBeNull();
        expect(r.status).toBe(200);
        expect(r.body).toContain(`pp=${LB_CLIENT}:${r.localPort} `);
        expect(r.body).toContain(`pp_dst=${ADDR.backend}:${NGINX} `);
      });

      it('HAProxy accept-proxy (pp=true) gets the header source, and forwarded TLVs when the LB sent them', async () => {
        const r = await httpGetVia(lab, lab.ns.client, viaLb(v, HAPROXY));
        expect(r.error).toBeNull();
        expect(r.status).toBe(200);
        expect(r.body).toContain(`src=${LB_CLIENT}:${r.localPort} `);
        expect(r.body).toContain(`dst=${ADDR.backend}:${HAPROXY} `);
        if (v.tls) {
          expect(r.body).toContain(`authority=${SNI} `);
          expect(r.body).toContain(`unique_id=lb-${LB_CLIENT}-${r.localPort}`);
        } else {
          expect(r.body).toMatch(/authority= unique_id=$/);
        }
      });
    });
  }

  it('forwards AUTHORITY and UNIQUE_ID but not the LB\'s CRC32C (our header is a new one)', async () => {
    const v = VARIANTS[2];
    const r = await tcpExchange(lab, lab.ns.client, { ...viaLb(v, PP_ECHO), send: 'tlvs\n', until: 'tlvs\n' });
    expect(r.error).toBeNull();
    const { report, echoed } = parsePpEcho(r.data);
    expect(report?.source).toEqual({ address: LB_CLIENT, port: r.localPort });
    const tlvs = new Map(report!.tlvs!.map((t) => [t.type, Buffer.from(t.value, 'hex').toString()]));
    expect(tlvs.get(0x02)).toBe(SNI);
    expect(tlvs.get(0x05)).toBe(`lb-${LB_CLIENT}-${r.localPort}`);
    expect(tlvs.has(0x03)).toBe(false);
    expect(echoed.toString()).toBe('tlvs\n');
  });

  it('a client outside trusted_sources is relayed as is, without a header being required', async () => {
    const r = await tcpExchange(lab, lab.ns.client, { host: ADDR.backend, port: WHOAMI, localAddress: LB_CLIENT, send: 'direct\n', end: true });
    expect(r.error).toBeNull();
    expect(r.ended).toBe(true);
    expect(whoamiAnswer(r.data)).toEqual({ remote: LB_CLIENT, local: `${ADDR.backend}:${WHOAMI}`, echo: 'direct\n' });
  });

  describe('hand-made headers from the trusted host', () => {
    for (const [name, header] of [
      ['v1 TCP4', Buffer.from(`PROXY TCP4 ${LB_CLIENT} ${ADDR.backend} 40000 ${WHOAMI}\r\n`)],
      ['v2 PROXY TCP4', v2Header({ src: LB_CLIENT, dst: ADDR.backend, sport: 40000, dport: WHOAMI })],
      ['v2 PROXY TCP4 with a correct CRC32C', v2Header({ src: LB_CLIENT, dst: ADDR.backend, sport: 40000, dport: WHOAMI, crc: 'good' })],
    ] as const) {
      it(`${name}: the pp=false backend sees its source, the pp=true backend gets its source and port`, async () => {
        const plain = await tcpExchange(lab, lab.ns.client, { host: ADDR.backend, port: WHOAMI, send: Buffer.concat([header, Buffer.from('hand-made\n')]), until: 'hand-made\n' });
        expect(plain.error).toBeNull();
        expect(whoamiAnswer(plain.data)).toEqual({ remote: LB_CLIENT, local: `${ADDR.backend}:${WHOAMI}`, echo: 'hand-made\n' });

        const pp = await tcpExchange(lab, lab.ns.client, { host: ADDR.backend, port: PP_ECHO, send: Buffer.concat([header, Buffer.from('hand-made\n')]), until: 'hand-made\n' });
        expect(pp.error).toBeNull();
        const { report, echoed } = parsePpEcho(pp.data);
        expect(report?.source).toEqual({ address: LB_CLIENT, port: 40000 });
        expect(echoed.toString()).toBe('hand-made\n');
      });
    }
  });

  describe('half-close right after the header, before the upstream connection is up (slow backend)', () => {
    // Fails while the daemon loses a FIN that arrives between the header and the relay's start:
    // the client then never gets the backend's FIN ('timeout'), the relay hangs until idle_timeout.
    it('header, payload and FIN in one go from the LB host: the echo and the backend\'s FIN reach the client', async () => {
      const header = v2Header({ src: LB_CLIENT, dst: ADDR.backend, sport: 40000, dport: SLOW_WHOAMI });
      const r = await tcpExchange(lab, lab.ns.client, { host: ADDR.backend, port: SLOW_WHOAMI, send: Buffer.concat([header, Buffer.from('bye\n')]), end: true, timeoutMs: 4000 });
      expect(whoamiAnswer(r.data)).toEqual({ remote: LB_CLIENT, local: `${ADDR.backend}:${SLOW_WHOAMI}`, echo: 'bye\n' });
      expect(r.error).toBeNull();
      expect(r.ended).toBe(true);
      const line = await closedLine(daemon, `${ADDR.client}:${r.localPort}`);
      expect(line.reason).toBe('done');
    });

    it('a client that half-closes behind the LB (send-proxy-v2): the echo and the FIN reach it', async () => {
      const r = await tcpExchange(lab, lab.ns.client, { host: ADDR.client, port: LB_SLOW, localAddress: LB_CLIENT, send: 'bye via lb\n', end: true, timeoutMs: 4000 });
      expect(whoamiAnswer(r.data)).toEqual({ remote: LB_CLIENT, local: `${ADDR.backend}:${SLOW_WHOAMI}`, echo: 'bye via lb\n' });
      expect(r.error).toBeNull();
      expect(r.ended).toBe(true);
    });
  });

  describe('a trusted source without a valid header gets nothing through', () => {
    it('no header: closed before any byte of the backend, logged as pp-rejected PP_ERR_NOT_PROXY', async () => {
      // whoami speaks first: any upstream connection would show up as bytes here.
      const r = await tcpExchange(lab, lab.ns.client, { host: ADDR.backend, port: WHOAMI, send: 'GET / HTTP/1.0\r\n\r\n' });
      expect(r.connected).toBe(true);
      expect(r.data.length).toBe(0);
      expect(r.ended).toBe(true);
      expect(r.error).toBeNull();
      const line = await closedLine(daemon, `${ADDR.client}:${r.localPort}`);
      expect(line.reason).toBe('pp-rejected');
      expect(line.err?.code).toBe('PP_ERR_NOT_PROXY');
    });

    for (const [name, bytes, code] of [
      ['a malformed v1 header', Buffer.from(`PROXY TCP4 ${LB_CLIENT} ${ADDR.backend} 40000\r\n`), 'PP_ERR_V1_MALFORMED'],
      ['a v1 header with a lone LF', Buffer.from(`PROXY TCP4 ${LB_CLIENT} ${ADDR.backend} 40000 ${WHOAMI}\n`), 'PP_ERR_V1_MALFORMED'],
      ['a v2 header with a wrong CRC32C', v2Header({ src: LB_CLIENT, dst: ADDR.backend, sport: 40000, dport: WHOAMI, crc: 'bad' }), 'PP_ERR_CRC32C'],
      ['a v2 header with command 2', v2Header({ src: LB_CLIENT, dst: ADDR.backend, sport: 40000, dport: WHOAMI, verCmd: 0x22 }), 'PP_ERR_V2_COMMAND'],
    ] as const) {
      it(`${name}: closed before any byte of the backend, logged with ${code}`, async () => {
        const r = await tcpExchange(lab, lab.ns.client, { host: ADDR.backend, port: WHOAMI, send: Buffer.concat([bytes, Buffer.from('payload\n')]) });
        expect(r.connected).toBe(true);
        expect(r.data.length).toBe(0);
        expect(r.ended).toBe(true);
        expect(r.error).toBeNull();
        const line = await closedLine(daemon, `${ADDR.client}:${r.localPort}`);
        expect(line.reason).toBe('pp-rejected');
        expect(line.err?.code).toBe(code);
      });
    }

    it('a header that is still incomplete when [inbound_pp] timeout (1s) expires: closed at the timeout, ERR_PP_TIMEOUT', async () => {
      const header = v2Header({ src: LB_CLIENT, dst: ADDR.backend, sport: 40000, dport: WHOAMI });
      const r = await tcpExchange(lab, lab.ns.client, {
        host: ADDR.backend,
        port: WHOAMI,
        send: header.subarray(0, 10),
        later: { bytes: header.subarray(10), delayMs: 2500 },
        timeoutMs: 5000,
      });
      expect(r.connected).toBe(true);
      expect(r.data.length).toBe(0);
      expect(r.ended).toBe(true);
      expect(r.endMs).toBeGreaterThanOrEqual(900);
      expect(r.endMs).toBeLessThan(2500);
      const line = await closedLine(daemon, `${ADDR.client}:${r.localPort}`);
      expect(line.reason).toBe('pp-rejected');
      expect(line.err?.code).toBe('ERR_PP_TIMEOUT');
    });

    it('a valid header that was not sent in time counts as no header: ERR_PP_TIMEOUT', async () => {
      const header = v2Header({ src: LB_CLIENT, dst: ADDR.backend, sport: 40000, dport: WHOAMI });
      const r = await tcpExchange(lab, lab.ns.client, { host: ADDR.backend, port: WHOAMI, later: { bytes: header, delayMs: 2500 }, timeoutMs: 5000 });
      expect(r.data.length).toBe(0);
      expect(r.ended).toBe(true);
      expect(r.endMs).toBeLessThan(2500);
      const line = await closedLine(daemon, `${ADDR.client}:${r.localPort}`);
      expect(line.err?.code).toBe('ERR_PP_TIMEOUT');
    });
  });

  describe('LOCAL and UNKNOWN headers use the real connection address', () => {
    for (const [name, header, inbound] of [
      ['v2 LOCAL', V2_LOCAL, 'v2 LOCAL'],
      ['v1 UNKNOWN', Buffer.from('PROXY UNKNOWN\r\n'), 'v1 PROXY'],
    ] as const) {
      it(`${name}: the pp=false backend sees the LB's own address and only the payload`, async () => {
        const r = await tcpExchange(lab, lab.ns.client, { host: ADDR.backend, port: WHOAMI, send: Buffer.concat([header, Buffer.from('after-header\n')]), until: 'after-header\n' });
        expect(r.error).toBeNull();
        expect(whoamiAnswer(r.data)).toEqual({ remote: ADDR.client, local: `${ADDR.backend}:${WHOAMI}`, echo: 'after-header\n' });
        const line = await closedLine(daemon, `${ADDR.client}:${r.localPort}`);
        expect(line.inbound).toBe(inbound);
        expect(line.client).toBe(`${ADDR.client}:${r.localPort}`);
      });
    }

    it('HAProxy health checks (send-proxy-v2 → LOCAL) reach a pp=true backend as the LB address', async () => {
      // The LB checks every 200ms; each check's header is LOCAL, so our header names 198.18.1.2.
      const out = await checksBackend.waitFor(/^conn .*$/m, 10_000);
      const report = JSON.parse(/^conn (.*)$/m.exec(out)![1]!) as { command: string; source: { address: string } };
      expect(report.command).toBe('PROXY');
      expect(report.source.address).toBe(ADDR.client);
      await daemon.waitFor(new RegExp(`"dst":"${ADDR.backend}:${PP_ECHO_CHECKS}","inbound":"v2 LOCAL","client":"${ADDR.client}:\\d+","path":"proxy"`));
      // And the LB, which expects the backend's answer to name its own address, marks the server up.
      await lb.waitFor('Health check for server be_checks/be succeeded');
      expect(lb.output()).not.toContain('be_checks/be is DOWN');
    });
  });
});
