// The soak's conversation on one connection. The client opens with one line,
// `SOAK1 {"id":…,"seed":…,"down":{…}}\n`, that tells the backend who it is and how to send; then
// each side sends its own seeded stream (stream.mjs) as its plan says, and ends its side when the
// plan is done. Pure.

const MAGIC = 'SOAK1 ';
const MAX_HELLO = 4096;

export class WireError extends Error {
  constructor(message) {
    super(message);
    this.code = 'ERR_SOAK_WIRE';
  }
}

/**
 * How one side sends: `chunk` bytes every `intervalMs` (0: as fast as the socket takes them),
 * until `total` bytes (null: until told to stop, or for the backend until the client's end),
 * then, for the backend only, `afterEof` more bytes once the client has ended its side, `chunk`
 * bytes every `afterEofIntervalMs` (default 0).
 * @typedef {{ chunk: number, intervalMs: number, total: number | null, afterEof?: number, afterEofIntervalMs?: number }} SendPlan
 */

/** @param {{ id: string, seed: string, down: SendPlan }} hello */
export function encodeHello(hello) {
  const line = `${MAGIC}${JSON.stringify({ id: hello.id, seed: hello.seed, down: hello.down })}\n`;
  if (Buffer.byteLength(line) > MAX_HELLO) throw new WireError(`hello line longer than ${MAX_HELLO} bytes`);
  return Buffer.from(line);
}

function validPlan(p) {
  const whole = (v) => Number.isInteger(v) && v >= 0;
  return (
    p !== null && typeof p === 'object' &&
    whole(p.chunk) && p.chunk > 0 && whole(p.intervalMs) &&
    (p.total === null || whole(p.total)) &&
    (p.afterEof === undefined || whole(p.afterEof)) &&
    (p.afterEofIntervalMs === undefined || whole(p.afterEofIntervalMs))
  );
}

/**
 * @param {Buffer} buf bytes received so far (after any PROXY header)
 * @returns {null | { hello: { id: string, seed: string, down: SendPlan }, length: number }} null while incomplete
 */
export function parseHello(buf) {
  const head = buf.subarray(0, MAGIC.length).toString('latin1');
  if (!MAGIC.startsWith(head)) throw new WireError(`not a soak connection: starts with ${JSON.stringify(head)}`);
  const nl = buf.indexOf(10);
  if (nl < 0) {
    if (buf.length > MAX_HELLO) throw new WireError(`no end of the hello line within ${MAX_HELLO} bytes`);
    return null;
  }
  let hello;
  try {
    hello = JSON.parse(buf.subarray(MAGIC.length, nl).toString('utf8'));
  } catch (err) {
    throw new WireError(`hello is not JSON: ${err.message}`);
  }
  if (typeof hello?.id !== 'string' || typeof hello.seed !== 'string' || !validPlan(hello.down)) {
    throw new WireError(`hello lacks id, seed or a valid down plan: ${buf.subarray(0, nl).toString('utf8').slice(0, 200)}`);
  }
  return { hello, length: nl + 1 };
}

/** Plans of the scenarios, in one place. */
export const PLANS = Object.freeze({
  /** The load: a chunk each way about every second, both sides until the finish, then 4 KiB after the client's end. */
  load: (chunk) => ({ up: { chunk, intervalMs: 1000, total: null }, down: { chunk, intervalMs: 1000, total: null, afterEof: 4096 } }),
  /** A slow writer each way: a few bytes every 50-70 ms. */
  slowWriter: () => ({ up: { chunk: 7, intervalMs: 50, total: 7 * 60 }, down: { chunk: 5, intervalMs: 70, total: null, afterEof: 0 } }),
  /** A slow reader: 2 MiB down as fast as it goes, read 64 KiB at a time with a pause after each. */
  slowReader: () => ({
    up: { chunk: 1024, intervalMs: 0, total: 1024 },
    down: { chunk: 65536, intervalMs: 0, total: 2 * 1024 * 1024, afterEof: 0 },
    readPause: { everyBytes: 65536, ms: 100 },
  }),
  /** Half-open: the client sends 64 KiB and ends its side; the backend goes on for 1 MiB over about 2 s. */
  halfOpen: () => ({
    up: { chunk: 65536, intervalMs: 0, total: 65536 },
    down: { chunk: 65536, intervalMs: 125, total: null, afterEof: 1024 * 1024, afterEofIntervalMs: 125 },
  }),
  /** One short exchange (probes, flapping, the ramp): 256 bytes each way, the client ends after holdMs. */
  short: (holdMs = 0) => ({ up: { chunk: 256, intervalMs: 0, total: 256 }, down: { chunk: 256, intervalMs: 0, total: 256, afterEof: 0 }, endDelayMs: holdMs }),
});
