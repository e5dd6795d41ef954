// One side's sending on a socket, as its SendPlan (wire.mjs) says: paced chunks, or as fast as
// the socket takes them (waiting for 'drain', so nothing piles up in user space), until the
// total; a paced sender skips a tick while the socket is still full (a slow reader or a stalled
// path then holds it back instead of growing a buffer).

/**
 * @param {import('node:net').Socket} socket
 * @param {{ next(n: number): Buffer }} stream
 * @param {{ chunk: number, intervalMs: number, total: number | null }} plan
 * @param {() => void} onDone called once `total` bytes are written
 */
export function createSender(socket, stream, plan, onDone) {
  let sent = 0;
  let timer = null;
  let stopped = false;
  const writable = () => !socket.destroyed && !socket.writableEnded;

  function write(n) {
    sent += n;
    return socket.write(stream.next(n));
  }

  /** Writes until `max` bytes are out, then calls then(). */
  function burst(max, then) {
    while (!stopped && writable() && sent < max) {
      if (!write(Math.min(plan.chunk, max - sent))) {
        socket.once('drain', () => burst(max, then));
        return;
      }
    }
    if (!stopped && sent >= max) then();
  }

  /** One chunk every intervalMs until `max`, then then(). */
  function paced(max, intervalMs, then) {
    const tick = () => {
      timer = null;
      if (stopped || !writable()) return;
      if (!socket.writableNeedDrain && sent < max) write(Math.min(plan.chunk, max - sent));
      if (sent >= max) then();
      else timer = setTimeout(tick, intervalMs);
    };
    // The first tick at a random point of the interval: thousands of connections do not tick together.
    timer = setTimeout(tick, Math.floor(Math.random() * intervalMs));
  }

  return {
    get sent() {
      return sent;
    },
    start() {
      const max = plan.total ?? Infinity;
      if (plan.intervalMs === 0) {
        if (max === Infinity) throw new Error('a plan without a total needs an interval');
        burst(max, onDone);
      } else {
        paced(max, plan.intervalMs, onDone);
      }
    },
    /** Stops the plan; more() may still send. */
    stop() {
      stopped = true;
      clearTimeout(timer);
      timer = null;
    },
    /** After stop(): `bytes` more, paced by intervalMs (0: as fast as it goes), then then(). */
    more(bytes, intervalMs, then) {
      stopped = false;
      const max = sent + bytes;
      if (bytes === 0) then();
      else if (intervalMs === 0) burst(max, then);
      else paced(max, intervalMs, then);
    },
  };
}
