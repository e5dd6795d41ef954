// Matching what the client agent and the backend each recorded for the same connections, byte
// for byte: a connection is whole when both streams arrived complete and correct, each side saw
// the other's end, and the backend saw the client as the path promises (its own address for
// pp=false, a PROXY header naming it for pp=true). Pure.

/**
 * What the client agent records per connection.
 * @typedef {{ id: string, host: string, port: number, pp: boolean, localAddress: string | null,
 *   localPort: number | null, connected: boolean, connectMs: number | null, upSent: number,
 *   downVerified: number, downReceived: number, downMismatchAt: number | null, downEof: boolean,
 *   downExpected: number | null, error: string | null, ms: number }} ClientRecord
 * What the backend records per connection.
 * @typedef {{ id: string | null, port: number, remoteAddress: string, remotePort: number,
 *   pp: { source: { address: string, port: number } | null, destination: { address: string, port: number } | null } | null,
 *   upVerified: number, upReceived: number, upMismatchAt: number | null, upEof: boolean, downSent: number,
 *   error: string | null }} ServerRecord
 */

/** Why one connection is not whole, or null when it is. */
export function connectionProblem(c, s) {
  if (!c.connected) return `connect failed (${c.error ?? 'no error'})`;
  if (!s) return `never reached the backend (client ${c.localAddress}:${c.localPort}: ${c.error ?? 'closed'} after ${c.ms} ms)`;
  if (c.downMismatchAt !== null) return `down stream wrong from byte ${c.downMismatchAt}`;
  if (s.upMismatchAt !== null) return `up stream wrong from byte ${s.upMismatchAt}`;
  if (c.error) return `client saw ${c.error}`;
  if (s.error) return `backend saw ${s.error}`;
  if (s.upVerified !== c.upSent) return `up: client sent ${c.upSent} bytes, backend verified ${s.upVerified}`;
  if (c.downVerified !== s.downSent) return `down: backend sent ${s.downSent} bytes, client verified ${c.downVerified}`;
  if (!c.downEof) return 'the client never saw the backend end its side';
  if (!s.upEof) return 'the backend never saw the client end its side';
  if (c.pp) {
    if (!s.pp || s.pp.source === null) return 'no PROXY header with an address (pp=true port)';
    if (s.pp.source.address !== c.localAddress || s.pp.source.port !== c.localPort) {
      return `PROXY header names ${s.pp.source.address}:${s.pp.source.port}, the client was ${c.localAddress}:${c.localPort}`;
    }
    if (s.pp.destination && (s.pp.destination.address !== c.host || s.pp.destination.port !== c.port)) {
      return `PROXY header destination ${s.pp.destination.address}:${s.pp.destination.port}, the client dialled ${c.host}:${c.port}`;
    }
  } else if (s.remoteAddress !== c.localAddress) {
    return `backend saw ${s.remoteAddress}, not the client's own address ${c.localAddress} (pp=false)`;
  }
  return null;
}

/**
 * @param {ClientRecord[]} clients
 * @param {ServerRecord[]} servers
 * @returns {{ connections: number, whole: number, bytesVerified: number, bytesLost: number,
 *   problems: Array<{ id: string, problem: string }> }}
 */
export function reconcile(clients, servers) {
  const byId = new Map();
  for (const s of servers) if (s.id !== null) byId.set(s.id, s);
  let whole = 0;
  let bytesVerified = 0;
  let bytesLost = 0;
  const problems = [];
  for (const c of clients) {
    const s = byId.get(c.id) ?? null;
    bytesVerified += c.downVerified + (s ? s.upVerified : 0);
    bytesLost += Math.max(0, c.upSent - (s ? s.upVerified : 0));
    if (s) bytesLost += Math.max(0, s.downSent - c.downVerified);
    const problem = connectionProblem(c, s);
    if (problem === null) whole++;
    else problems.push({ id: c.id, problem });
  }
  return { connections: clients.length, whole, bytesVerified, bytesLost, problems };
}

/**
 * How a connection that was meant to fail or be cut ended, as its client saw it:
 * 'reset' (ECONNRESET/EPIPE), 'refused', 'timeout', 'hung' (the agent gave up on it),
 * 'corrupt', 'closed' (a clean end before the whole answer), 'completed' (the whole answer, when
 * its size was known, else at least a byte of it, then a clean end), or 'error:<code>'.
 * @param {ClientRecord} c
 */
export function outcomeOf(c) {
  if (c.error === 'ECONNRESET' || c.error === 'EPIPE') return 'reset';
  if (c.error === 'ECONNREFUSED') return 'refused';
  if (c.error === 'ETIMEDOUT') return 'timeout';
  if (c.error === 'hung') return 'hung';
  if (c.error) return `error:${c.error}`;
  if (c.downMismatchAt !== null) return 'corrupt';
  const whole = c.downExpected === null ? c.downVerified > 0 : c.downVerified === c.downExpected;
  return c.downEof && whole ? 'completed' : 'closed';
}

/** Counts of each outcome. */
export function outcomeCounts(clients) {
  const counts = {};
  for (const c of clients) {
    const o = outcomeOf(c);
    counts[o] = (counts[o] ?? 0) + 1;
  }
  return counts;
}

/** Short text of the first few problems, for a check's detail. */
export function describeProblems(problems, max = 5) {
  if (problems.length === 0) return '';
  const shown = problems.slice(0, max).map((p) => `${p.id}: ${p.problem}`);
  if (problems.length > max) shown.push(`and ${problems.length - max} more`);
  return shown.join('; ');
}
