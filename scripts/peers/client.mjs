#!/usr/bin/env node
// Connects, sends BYTES of a deterministic pattern, half-closes, reads to the end, and prints one
// JSON line: what the backend said it saw, whether the echo arrived intact, and how it ended.
// usage: client.mjs HOST PORT [--bytes N] [--send-first TEXT] [--timeout MS]
import net from 'node:net';
import crypto from 'node:crypto';

const [host, portText, ...rest] = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = rest.indexOf(name);
  return i >= 0 ? rest[i + 1] : dflt;
};
const bytes = Number(opt('--bytes', '0'));
const sendFirst = opt('--send-first', '');
const timeoutMs = Number(opt('--timeout', '10000'));

const payload = Buffer.alloc(bytes);
for (let i = 0; i < bytes; i++) payload[i] = (i * 31 + (i >> 13)) & 0xff;
const sent = Buffer.concat([Buffer.from(sendFirst), payload]);
const started = Date.now();
const chunks = [];
const result = { connected: false, localPort: null, saw: null, echoIntact: null, bytesReceived: 0, ended: false, error: null, ms: 0 };
const s = net.connect({ host, port: Number(portText), allowHalfOpen: true });
const timer = setTimeout(() => finish('timeout'), timeoutMs);
s.on('connect', () => {
  result.connected = true;
  result.localPort = s.localPort;
  s.end(sent);
});
s.on('data', (d) => chunks.push(d));
s.on('end', () => {
  result.ended = true;
  s.end();
});
s.on('error', (e) => finish(e.code ?? String(e)));
s.on('close', () => finish(null));
function finish(error) {
  if (result.ms) return;
  clearTimeout(timer);
  result.ms = Date.now() - started || 1;
  result.error = error ?? result.error;
  const all = Buffer.concat(chunks);
  result.bytesReceived = all.length;
  const nl = all.indexOf(10);
  if (nl >= 0) {
    try { result.saw = JSON.parse(all.subarray(0, nl).toString()); } catch { result.saw = all.subarray(0, nl).toString(); }
    const echo = all.subarray(nl + 1);
    const h = (b) => crypto.createHash('sha256').update(b).digest('hex');
    result.echoIntact = echo.length === sent.length && h(echo) === h(sent);
    result.echoBytes = echo.length;
  }
  console.log(JSON.stringify(result));
  s.destroy();
}
