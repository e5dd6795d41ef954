#!/usr/bin/env node
// Registers an instance with the interceptor's attested registration endpoint, as a dstack CVM
// registers with its gateway: POST /prpc/RegisterCvm?json over mutual TLS with the instance's
// RA-TLS client certificate. Prints one JSON line: {"status": N, "body": {...}} or {"error": CODE}.
// usage: register-cvm.mjs HOST:PORT --cert CHAIN.pem --key KEY.pem --ca CA.pem [--policy JSON] [--key-id K]
//   --policy '{"ports":[{"port":8080,"pp":true}],"restrict_mode":false}'  (omit: not reported)
import https from 'node:https';
import { readFileSync } from 'node:fs';

const [target, ...rest] = process.argv.slice(2);
const opt = (name) => {
  const i = rest.indexOf(name);
  return i >= 0 ? rest[i + 1] : undefined;
};
const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(target ?? '');
if (!m || !opt('--cert') || !opt('--key') || !opt('--ca')) {
  process.stderr.write('usage: register-cvm.mjs HOST:PORT --cert CHAIN.pem --key KEY.pem --ca CA.pem [--policy JSON]\n');
  process.exit(2);
}
const body = { client_public_key: opt('--key-id') ?? '' };
if (opt('--policy') !== undefined) body.port_policy = JSON.parse(opt('--policy'));
const data = JSON.stringify(body);

const req = https.request(
  {
    host: m[1] ?? m[2],
    port: Number(m[3]),
    path: '/prpc/RegisterCvm?json',
    method: 'POST',
    cert: readFileSync(opt('--cert')),
    key: readFileSync(opt('--key')),
    ca: readFileSync(opt('--ca')),
    agent: false,
    timeout: 10_000,
    headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(data) },
  },
  (res) => {
    let text = '';
    res.setEncoding('utf8');
    res.on('data', (d) => (text += d));
    res.on('end', () => {
      let parsed;
      try {
        parsed = JSON.parse(text);
      } catch {
        parsed = text;
      }
      console.log(JSON.stringify({ status: res.statusCode, body: parsed }));
    });
  },
);
req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' })));
req.on('error', (err) => console.log(JSON.stringify({ error: err.code ?? err.message })));
req.end(data);
