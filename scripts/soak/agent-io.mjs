// The agents' side of their link to the runner: one JSON command a line on stdin, each answered
// by one JSON line on stdout carrying the command's id ({"id":N,...} or {"id":N,"error":"..."}).

/** @param {Record<string, (msg: object) => Promise<object> | object>} handlers by command name */
export function serveCommands(handlers) {
  let partial = '';
  process.stdin.setEncoding('utf8');
  process.stdin.on('data', (d) => {
    partial += d;
    const lines = partial.split('\n');
    partial = lines.pop();
    for (const line of lines) if (line.trim() !== '') void dispatch(line);
  });
  // The runner went away: nothing is left to answer to.
  process.stdin.on('end', () => process.exit(0));

  async function dispatch(line) {
    let msg;
    try {
      msg = JSON.parse(line);
    } catch {
      return;
    }
    const handler = handlers[msg.cmd];
    try {
      if (!handler) throw new Error(`unknown command ${JSON.stringify(msg.cmd)}`);
      answer({ id: msg.id, ...(await handler(msg)) });
    } catch (err) {
      answer({ id: msg.id, error: err.stack ?? String(err) });
    }
  }
}

export function answer(obj) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

/** Node reports IPv4 peers of a dual-stack socket as ::ffff:a.b.c.d. */
export const unmap = (a) => (a && a.startsWith('::ffff:') && a.includes('.') ? a.slice(7) : a);

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
