// The bench's end of client-agent.mjs: each request a JSON line with an id, answered by the
// agent's line with the same id. Fails every pending request when the agent exits.

/**
 * @param {{ child: import('node:child_process').ChildProcess, onLine(fn: (line: string) => void): void,
 *   exited: Promise<{ code: number | null, signal: string | null }>, output(): string, alive(): boolean }} proc
 *   the agent, as procs.mjs's tracker started it (stdin 'pipe')
 */
export function linkClientAgent(proc) {
  let nextId = 1;
  const pending = new Map();
  proc.child.stdin.on('error', () => {}); // EPIPE once it has exited: the exit fails what is pending
  proc.onLine((line) => {
    if (!line.startsWith('{')) return;
    let msg;
    try {
      msg = JSON.parse(line);
    } catch {
      return;
    }
    const p = pending.get(msg.id);
    if (!p) return;
    if (msg.progress) {
      p.progress = msg.progress;
      return;
    }
    pending.delete(msg.id);
    clearTimeout(p.timer);
    p.resolve(msg);
  });
  void proc.exited.then((info) => {
    for (const p of pending.values()) {
      clearTimeout(p.timer);
      p.reject(new Error(`the client agent exited (${info.code ?? info.signal}): ${proc.output().trim().slice(-300)}`));
    }
    pending.clear();
  });

  const send = (msg) => proc.child.stdin.write(`${JSON.stringify(msg)}\n`);

  function request(cmd, fields, timeoutMs) {
    if (!proc.alive()) return Promise.reject(new Error(`the client agent is not running: ${proc.output().trim().slice(-300)}`));
    const id = nextId++;
    return new Promise((resolve, reject) => {
      const p = { resolve, reject, progress: null, timer: null };
      p.timer = setTimeout(() => {
        pending.delete(id);
        reject(new Error(`client agent: no answer to ${cmd} within ${timeoutMs} ms${p.progress ? ` (last progress ${JSON.stringify(p.progress)})` : ''}`));
      }, timeoutMs);
      pending.set(id, p);
      send({ id, cmd, ...fields });
    });
  }

  return {
    /** One GET: { status, body } or { error: code }. */
    probe: (host, port, timeoutMs = 5000) => request('probe', { host, port, timeoutMs }, timeoutMs + 5000),
    /** Opens and holds connections: { held, failed, errors, ms } once every attempt settled. */
    hold: ({ host, port, count, concurrency, window }, timeoutMs) => request('hold', { host, port, count, concurrency, window }, timeoutMs),
    /** How many of the held connections the backend has seen (paces the opening). */
    relayed: (count) => {
      if (proc.alive()) send({ cmd: 'relayed', count });
    },
    /** Resets every held connection: { released }. */
    release: (timeoutMs = 10_000) => request('release', {}, timeoutMs),
  };
}
