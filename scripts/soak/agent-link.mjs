// The runner's end of an agent (agent-io.mjs): each request a JSON line with an id, answered by
// the agent's line with the same id. Every pending request fails when the agent exits.

/**
 * @param {{ name: string, child: import('node:child_process').ChildProcess, onLine(fn: (line: string) => void): void,
 *   exited: Promise<{ code: number | null, signal: string | null }>, output(): string, alive(): boolean }} proc
 *   the agent as scripts/bench/procs.mjs's tracker started it (stdin 'pipe')
 */
export function linkAgent(proc) {
  let nextId = 1;
  const pending = new Map();
  proc.child.stdin.on('error', () => {}); // EPIPE once it has exited: the exit fails what is pending
  proc.onLine((line) => {
    if (!line.startsWith('{"id":')) return;
    let msg;
    try {
      msg = JSON.parse(line);
    } catch {
      return;
    }
    const p = pending.get(msg.id);
    if (!p) return;
    pending.delete(msg.id);
    clearTimeout(p.timer);
    if (typeof msg.error === 'string') p.reject(new Error(`${proc.name}: ${p.cmd} failed: ${msg.error}`));
    else p.resolve(msg);
  });
  void proc.exited.then((info) => {
    for (const p of pending.values()) {
      clearTimeout(p.timer);
      p.reject(new Error(`${proc.name} exited (${info.code ?? info.signal}) during ${p.cmd}: ${proc.output().trim().slice(-300)}`));
    }
    pending.clear();
  });

  return {
    /** Sends {cmd, ...fields}; resolves with the answer, rejects on an error answer or after timeoutMs. */
    request(cmd, fields = {}, timeoutMs = 30_000) {
      if (!proc.alive()) return Promise.reject(new Error(`${proc.name} is not running: ${proc.output().trim().slice(-300)}`));
      const id = nextId++;
      return new Promise((resolve, reject) => {
        const p = { resolve, reject, cmd, timer: null };
        p.timer = setTimeout(() => {
          pending.delete(id);
          reject(new Error(`${proc.name}: no answer to ${cmd} within ${timeoutMs} ms`));
        }, timeoutMs);
        pending.set(id, p);
        proc.child.stdin.write(`${JSON.stringify({ id, cmd, ...fields })}\n`);
      });
    },
  };
}
