// A hostile admin client (root on the gateway, or a bug in a tool that talks to the socket):
// many connections that never finish their headers, garbage and oversized requests, a client
// that half-closes after its request, and instance addresses that must never be registered.
// The daemon must reap the stuck clients, cap how many it holds, answer again soon, answer
// garbage with a 4xx (or a close), answer the half-closed client, refuse the addresses, and
// keep its memory bounded.
import net from 'node:net';
import { sleep } from '../../bench/procs.mjs';
import { adminFloodSize, LAB } from '../plan.mjs';
import { mib } from '../figures.mjs';
import { listInstances, poll } from './common.mjs';

/** A stuck client must be closed by the daemon within this (the issue saw none reaped after 14 s). */
const REAP_MS = 20_000;
const ANSWER_MS = 5000;

/** Addresses no instance may have: not unicast, or this host's own. */
const FORBIDDEN = [
  ['0.0.0.0', 'the unspecified address'],
  ['255.255.255.255', 'broadcast'],
  ['224.0.0.1', 'multicast'],
  ['127.0.0.1', 'loopback'],
  [LAB.gatewayBackendSide, "the gateway's own address"],
  ['::', 'the unspecified IPv6 address'],
  ['ff02::1', 'IPv6 multicast'],
  ['::1', 'IPv6 loopback'],
  [LAB.gatewayBackendSide6, "the gateway's own IPv6 address"],
];

/**
 * Sends `bytes` on a new connection to the admin socket (optionally half-closing after them);
 * resolves once a response head arrived (its status), or the connection closed or timed out.
 */
function rawExchange(socketPath, bytes, { halfClose = false, timeoutMs = ANSWER_MS } = {}) {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const s = net.connect({ path: socketPath, allowHalfOpen: true });
    let data = '';
    let error = null;
    let ms = null;
    const timer = setTimeout(() => {
      error = 'timeout';
      s.destroy();
    }, timeoutMs);
    s.on('connect', () => {
      if (halfClose) s.end(bytes);
      else s.write(bytes);
    });
    s.on('data', (d) => {
      data += d.toString('latin1');
      if (data.includes('\r\n\r\n') || data.length > 65536) {
        ms = Date.now() - t0;
        s.destroy();
      }
    });
    s.on('error', (err) => (error ??= err.code ?? String(err)));
    s.on('close', () => {
      clearTimeout(timer);
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(data);
      resolve({ status: m ? Number(m[1]) : null, error: m ? null : error, ms: ms ?? Date.now() - t0 });
    });
  });
}

/** K stuck clients: each sends half a request head and waits. Resolves when all are open (or failed). */
async function flood(socketPath, k) {
  const clients = [];
  const opened = [];
  for (let i = 0; i < k; i++) {
    const c = { connected: false, closedAtMs: null, error: null };
    const t0 = Date.now();
    const s = net.connect({ path: socketPath });
    c.socket = s;
    s.on('error', (err) => (c.error ??= err.code ?? String(err)));
    s.on('close', () => (c.closedAtMs = Date.now() - t0));
    opened.push(
      new Promise((resolve) => {
        s.once('connect', () => {
          c.connected = true;
          s.write('POST /v1/instances HTTP/1.1\r\nHost: soak\r\nContent-');
          resolve();
        });
        s.once('close', resolve);
      }),
    );
    clients.push(c);
    // Unix sockets have a listen backlog too; a few hundred at once is what a busy tool would do.
    if (i % 200 === 199) await Promise.all(opened.slice(-200));
  }
  await Promise.all(opened);
  return clients;
}

function garbageCases() {
  const deep = '['.repeat(200_000) + ']'.repeat(200_000);
  return [
    { name: '4 KiB of binary junk', bytes: Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 131 + 7) & 0xff)), closeOk: true },
    { name: 'an unknown method', bytes: 'BREW /v1/instances HTTP/1.1\r\nHost: soak\r\n\r\n' },
    { name: 'a body that is not JSON', bytes: 'POST /v1/instances HTTP/1.1\r\nHost: soak\r\nContent-Type: application/json\r\nContent-Length: 20\r\n\r\n{not json at all!!!}' },
    { name: 'a 2 MiB body', bytes: `POST /v1/instances HTTP/1.1\r\nHost: soak\r\nContent-Type: application/json\r\nContent-Length: ${2 * 1024 * 1024}\r\n\r\n${' '.repeat(2 * 1024 * 1024)}`, closeOk: true },
    { name: 'a negative Content-Length', bytes: 'POST /v1/instances HTTP/1.1\r\nHost: soak\r\nContent-Length: -1\r\n\r\n', closeOk: true },
    { name: 'a 100 KiB header line', bytes: `GET /v1/instances HTTP/1.1\r\nHost: soak\r\nX-Junk: ${'j'.repeat(100 * 1024)}\r\n\r\n`, closeOk: true },
    { name: 'JSON nested 200,000 deep', bytes: `POST /v1/instances HTTP/1.1\r\nHost: soak\r\nContent-Type: application/json\r\nContent-Length: ${deep.length}\r\n\r\n${deep}` },
    {
      name: 'a 10 KiB instance id',
      bytes: (() => {
        const body = JSON.stringify({ instance_id: 'x'.repeat(10_240), app_id: 'soak', ip: '198.18.200.1' });
        return `POST /v1/instances HTTP/1.1\r\nHost: soak\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
      })(),
    },
  ];
}

/** @param {import('./common.mjs').SoakContext} ctx */
export async function run(ctx, result) {
  const socketPath = ctx.main.socketPath;
  const k = adminFloodSize(ctx.opts.connections);
  const rssBefore = ctx.daemons.sample(ctx.main).rssKiB;
  let peakRssKiB = rssBefore;
  let peakFds = 0;
  const fdsBefore = ctx.daemons.sample(ctx.main).fds;

  // 1. The flood, and from its start: when does `instances list` answer again?
  const t0 = Date.now();
  const clients = await flood(socketPath, k);
  const openedMs = Date.now() - t0;
  const answering = poll(async () => {
    const s = ctx.daemons.sample(ctx.main);
    peakRssKiB = Math.max(peakRssKiB, s.rssKiB);
    peakFds = Math.max(peakFds, s.fds);
    return (await listInstances(ctx, ctx.main, 5000)) !== null ? Date.now() - t0 : null;
  }, REAP_MS + 10_000, 1000);
  await sleep(2000);
  const heldAfter2s = clients.filter((c) => c.connected && c.closedAtMs === null).length;
  await poll(() => clients.every((c) => c.closedAtMs !== null), REAP_MS, 250);
  const answeredMs = await answering;
  const unreaped = clients.filter((c) => c.closedAtMs === null || c.closedAtMs > REAP_MS);
  for (const c of clients) c.socket.destroy();
  const closedMs = clients.map((c) => c.closedAtMs).filter((ms) => ms !== null);
  const slowest = closedMs.length ? closedMs.reduce((a, b) => Math.max(a, b)) : null;

  // None reaped, none refused: the daemon has no header timeout, no cap (issue 10, item 3).
  result.check(
    `stuck admin clients reaped: all ${k} that never finished their headers closed by the daemon within ${REAP_MS / 1000} s`,
    unreaped.length === 0,
    `${k - unreaped.length} of ${k} closed${slowest !== null ? ` (the last after ${slowest} ms)` : ''}; opened in ${openedMs} ms`,
    unreaped.length === k ? 'an admin header timeout' : null,
  );
  result.check(
    `admin connections capped: the daemon did not hold all ${k} stuck clients`,
    heldAfter2s < k,
    `${heldAfter2s} of ${k} still held 2 s after the flood; daemon descriptors ${fdsBefore} before, ${peakFds} at peak`,
    heldAfter2s === k ? 'a cap on admin connections' : null,
  );
  result.check(
    `the admin socket answered again within ${(REAP_MS + 10_000) / 1000} s of the flood`,
    answeredMs !== null,
    answeredMs !== null ? `\`instances list\` answered ${answeredMs} ms after the flood began` : '`instances list` never answered',
  );
  result.check(
    `daemon memory bounded during the admin flood (RSS grew at most ${ctx.opts.rssMarginMiB} MiB)`,
    peakRssKiB - rssBefore <= ctx.opts.rssMarginMiB * 1024,
    `RSS ${mib(rssBefore)} → peak ${mib(peakRssKiB)} MiB`,
  );

  // 2. Garbage: a 4xx, or for what is not a request at all a close; then the daemon still answers.
  const answers = [];
  for (const g of garbageCases()) {
    const r = await rawExchange(socketPath, g.bytes);
    const ok = (r.status !== null && r.status >= 400 && r.status < 500) || (g.closeOk && r.status === null && r.error !== 'timeout');
    answers.push({ name: g.name, ok, text: `${g.name}: ${r.status ?? r.error ?? 'closed'} in ${r.ms} ms` });
  }
  const listed = await listInstances(ctx, ctx.main);
  result.check(
    'garbage requests answered with a 4xx (or closed when not HTTP at all), the daemon unharmed',
    answers.every((a) => a.ok) && listed !== null && ctx.daemons.alive(ctx.main),
    `${answers.map((a) => a.text).join('; ')}${listed === null ? '; `instances list` failed afterwards' : ''}`,
  );

  // 3. A client that half-closes after a complete request still gets its answer.
  const half = await rawExchange(socketPath, 'GET /v1/instances HTTP/1.1\r\nHost: soak\r\n\r\n', { halfClose: true });
  result.check('a client that half-closed after its request got an answer', half.status !== null, `${half.status ?? half.error ?? 'closed without an answer'} in ${half.ms} ms`);

  // 4. Addresses no instance may have, through the CLI and straight through the API.
  // The API first: the CLI might refuse an address before the daemon sees it. What got in is
  // removed again before the next try (an address can be registered once).
  const accepted = [];
  const post = (id, ip) => {
    const body = JSON.stringify({ instance_id: id, app_id: 'soak-bad', ip, policy: { ports: [{ port: 9001, pp: false }], restrict_mode: false } });
    return rawExchange(socketPath, `POST /v1/instances HTTP/1.1\r\nHost: soak\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`);
  };
  // The same request with a good address must pass, or a refusal below would prove nothing.
  const control = await post('soak-bad-control', '198.18.200.1');
  if (control.status === null || control.status >= 300) accepted.push(`(inconclusive: the API refused a good address too: ${control.status ?? control.error})`);
  else await ctx.daemons.instances(ctx.main, ['remove', 'soak-bad-control']);
  for (const [i, [ip, what]] of FORBIDDEN.entries()) {
    const apiId = `soak-bad-api-${i}`;
    const viaApi = await post(apiId, ip);
    if (viaApi.status === null || viaApi.status < 400) {
      accepted.push(`${ip} (${what}) via the API (${viaApi.status ?? viaApi.error})`);
      await ctx.daemons.instances(ctx.main, ['remove', apiId]);
    }
    const cliId = `soak-bad-cli-${i}`;
    const viaCli = await ctx.daemons.instances(ctx.main, ['add', cliId, '--app', 'soak-bad', '--ip', ip, '--policy', '9001']);
    if (viaCli.code === 0) {
      accepted.push(`${ip} (${what}) via the CLI`);
      await ctx.daemons.instances(ctx.main, ['remove', cliId]);
    }
  }
  const leftOver = [...((await listInstances(ctx, ctx.main)) ?? [])].filter((id) => id.startsWith('soak-bad-'));
  result.check(
    'instance addresses that are not unicast, or are this host\'s, are refused (CLI and API)',
    accepted.length === 0 && leftOver.length === 0,
    `${accepted.length ? `accepted: ${accepted.join(', ')}` : `${FORBIDDEN.length} addresses refused both ways`}${leftOver.length ? `; still registered: ${leftOver.join(', ')}` : ''}`,
    accepted.length >= FORBIDDEN.length * 2 ? 'instance address validation' : null,
  );
  result.figure('flood', { clients: k, heldAfter2s, slowestCloseMs: slowest, answeredMs, peakFds, fdsBefore });
  result.figure('faults', { injected: k + answers.length + 1 + FORBIDDEN.length * 2, handled: k - unreaped.length + answers.filter((a) => a.ok).length + (half.status !== null ? 1 : 0) + FORBIDDEN.length * 2 - accepted.length });
}
