// Opening and holding idle TCP connections, for the idle-connection figure (client-agent.mjs).
// Nothing is sent on them; release()
// resets every one (RST: no TIME_WAIT left behind for the next path).
import net from 'node:net';

/**
 * Opens `count` connections, at most `concurrency` connecting at once.
 *
 * `window` paces the opening by what a proxy has passed on: relayed(n) says how many of these
 * connections the backend has seen so far, and no connect starts while `window` connected ones
 * are short of the backend (so at most window + concurrency are). A transparent proxy's kernel
 * completes the client's handshake before the proxy accepts, so without it a proxy that accepts
 * slower than the client connects overflows its accept queue: the kernel drops SYNs, and every
 * dropped one costs the client a 1 s retransmit. Connects still waiting for their SYN-ACK do not
 * count (`concurrency` bounds them), so a few slow handshakes cannot hold up the rest. Should
 * relayed() not be called for `windowStallMs` while the window is full, the window is ignored.
 *
 * @returns {{ done: Promise<{ held: number, failed: number, errors: Record<string, number>, ms: number }>,
 *   relayed(n: number): void, release(): number, progress(): object }}
 */
export function holdConnections({ host, port, count, concurrency = 256, connectTimeoutMs = 10_000, window = Infinity, windowStallMs = 1000 }) {
  const started = Date.now();
  const sockets = new Set();
  const connecting = new Set();
  const errors = {};
  let held = 0;
  let failed = 0;
  let closedWhileHeld = 0;
  let next = 0;
  let inFlight = 0;
  let atBackend = 0;
  let atBackendSince = Date.now();
  let finish;
  const done = new Promise((resolve) => (finish = resolve));
  let finished = false;

  function openOne() {
    next++;
    inFlight++;
    const s = net.connect({ host, port });
    connecting.add(s);
    s.setTimeout(connectTimeoutMs);
    let settled = false;
    const settle = (ok, why) => {
      if (settled) return;
      settled = true;
      inFlight--;
      connecting.delete(s);
      if (ok) {
        held++;
        sockets.add(s);
        s.setTimeout(0);
      } else {
        failed++;
        errors[why] = (errors[why] ?? 0) + 1;
        s.destroy();
      }
      pump();
    };
    s.once('connect', () => settle(true));
    s.on('timeout', () => settle(false, 'ETIMEDOUT'));
    s.on('error', (err) => {
      if (!settled) settle(false, err.code ?? 'error');
    });
    s.on('close', () => {
      if (settled && sockets.delete(s)) {
        closedWhileHeld++;
        errors.closedWhileHeld = closedWhileHeld;
      }
    });
  }

  // Connected, and neither seen by the backend nor known to be gone.
  const windowOpen = () => held - closedWhileHeld - atBackend < window || Date.now() - atBackendSince > windowStallMs;

  function end() {
    finished = true;
    clearInterval(stallCheck);
    finish({ held, failed, errors, ms: Date.now() - started });
  }

  function pump() {
    if (finished) return;
    while (inFlight < concurrency && next < count && windowOpen()) openOne();
    if (inFlight === 0 && next === count) end();
  }

  // Only matters while the window is full and relayed() is not called: then the stall timeout lets it go on.
  const stallCheck = Number.isFinite(window) ? setInterval(pump, 100) : null;
  pump();

  return {
    done,
    relayed(n) {
      atBackend = n;
      atBackendSince = Date.now();
      pump();
    },
    /** Resets every held connection and abandons those still connecting; `done` settles. */
    release() {
      if (!finished) end();
      const n = sockets.size;
      for (const s of sockets) s.resetAndDestroy();
      sockets.clear();
      for (const s of connecting) s.destroy();
      connecting.clear();
      return n;
    },
    progress: () => ({ ms: Date.now() - started, started: next, connecting: inFlight, connected: held, failed, closed: closedWhileHeld, atBackend }),
  };
}
