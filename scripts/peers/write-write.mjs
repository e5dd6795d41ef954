#!/usr/bin/env node
// An interactive exchange in which each side sends its part in two small writes 2 ms apart, the
// pattern that Nagle's algorithm on a relay turns into a wait for the peer's delayed ACK.
//   write-write.mjs server PORT
//     answers every request (it ends with "!") with "A", then "B" 2 ms later.
//   write-write.mjs client HOST PORT [--rounds N] [--split]
//     N rounds (default 30) of a request and its two-piece answer; --split sends each request
//     in two writes 2 ms apart ("q", then "!"). Prints one JSON line: each round's milliseconds.
// Both sides set TCP_NODELAY, as interactive programs do: whatever waits is the relay.
import net from 'node:net';

const [mode, ...args] = process.argv.slice(2);
const GAP_MS = 2;

if (mode === 'server') {
  net
    .createServer({ noDelay: true }, (s) => {
      // A request ends with "!": answer each one with "A", then "B" GAP_MS later.
      s.on('data', (d) => {
        for (const byte of d) {
          if (byte !== 0x21) continue;
          s.write('A');
          setTimeout(() => s.write('B'), GAP_MS);
        }
      });
      s.on('error', () => {});
    })
    .listen(Number(args[0]), '::', () => console.log('ready'));
} else if (mode === 'client') {
  const [host, portText, ...rest] = args;
  const rounds = rest.includes('--rounds') ? Number(rest[rest.indexOf('--rounds') + 1]) : 30;
  const split = rest.includes('--split');
  const times = [];
  let got = '';
  let started = 0;
  const s = net.connect({ host, port: Number(portText), noDelay: true });
  const timer = setTimeout(() => {
    console.log(JSON.stringify({ error: 'timeout', times }));
    process.exit(1);
  }, 30_000);
  const ask = () => {
    got = '';
    started = performance.now();
    if (split) {
      s.write('q');
      setTimeout(() => s.write('!'), GAP_MS);
    } else s.write('q!');
  };
  s.on('connect', ask);
  s.on('data', (d) => {
    got += d.toString();
    if (got.length < 2) return;
    times.push(Math.round((performance.now() - started) * 10) / 10);
    if (times.length < rounds) ask();
    else {
      clearTimeout(timer);
      console.log(JSON.stringify({ error: null, times }));
      s.end();
    }
  });
  s.on('error', (e) => {
    console.log(JSON.stringify({ error: e.code ?? String(e), times }));
    process.exit(1);
  });
} else {
  console.error('usage: write-write.mjs server PORT | client HOST PORT [--rounds N] [--split]');
  process.exit(2);
}
