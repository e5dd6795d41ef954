#!/usr/bin/env node
// One HTTP GET (Connection: close); prints {"status":N,"body":"..."} or {"error":"CODE"}.
// usage: http-probe.mjs HOST PORT [--timeout-ms MS]
import http from 'node:http';

const [host, portText, flag, msText] = process.argv.slice(2);
const timeoutMs = flag === '--timeout-ms' ? Number(msText) : 5000;
const req = http.get({ host, port: Number(portText), path: '/', headers: { Connection: 'close' }, timeout: timeoutMs }, (res) => {
  let body = '';
  res.setEncoding('utf8');
  res.on('data', (d) => (body += d));
  res.on('end', () => console.log(JSON.stringify({ status: res.statusCode, body })));
});
req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' })));
req.on('error', (err) => {
  console.log(JSON.stringify({ error: err.code ?? err.message }));
  process.exitCode = 1;
});
