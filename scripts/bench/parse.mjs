// Parsers for what the measuring tools print: iperf3 -J, wrk --latency, /proc. Pure.

export class BenchParseError extends Error {
  constructor(what, message) {
    super(`${what}: ${message}`);
    this.code = 'ERR_BENCH_PARSE';
  }
}

/**
 * iperf3 -J output of the client. Throughput is what the receiver got (sum_received), which is
 * what crossed the proxy; the sender's figure includes bytes still in flight at the end.
 * @returns {{ bitsPerSecond: number, bytes: number, seconds: number, retransmits: number | null, streams: number }}
 */
export function parseIperf3Json(text) {
  let doc;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new BenchParseError('iperf3', `output is not JSON (${err.message})`);
  }
  if (doc && typeof doc.error === 'string') throw new BenchParseError('iperf3', doc.error);
  const received = doc?.end?.sum_received;
  const sent = doc?.end?.sum_sent;
  if (!received || typeof received.bytes !== 'number' || typeof received.seconds !== 'number') {
    throw new BenchParseError('iperf3', 'no end.sum_received in the output');
  }
  if (received.seconds <= 0) throw new BenchParseError('iperf3', 'zero-length test');
  return {
    bitsPerSecond: (received.bytes * 8) / received.seconds,
    bytes: received.bytes,
    seconds: received.seconds,
    retransmits: typeof sent?.retransmits === 'number' ? sent.retransmits : null,
    streams: Array.isArray(doc.end.streams) ? doc.end.streams.length : 1,
  };
}

const TIME_UNITS_MS = { us: 0.001, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** wrk's time format: "812.00us", "4.69ms", "1.02s", "2.00m". Returns milliseconds. */
export function parseWrkTime(text) {
  const m = /^(\d+(?:\.\d+)?)(us|ms|s|m|h)$/.exec(text.trim());
  if (!m) throw new BenchParseError('wrk', `not a time: ${JSON.stringify(text)}`);
  return Number(m[1]) * TIME_UNITS_MS[m[2]];
}

/**
 * wrk --latency output.
 * @returns {{ requestsPerSec: number, requests: number, seconds: number, p50Ms: number, p99Ms: number,
 *   socketErrors: { connect: number, read: number, write: number, timeout: number }, non2xx: number }}
 */
export function parseWrkOutput(text) {
  const rps = /^Requests\/sec:\s+([\d.]+)\s*$/m.exec(text);
  if (!rps) throw new BenchParseError('wrk', 'no "Requests/sec:" line');
  const total = /^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h),/m.exec(text);
  const pct = (p) => {
    const m = new RegExp(`^\\s+${p}%\\s+(\\S+)\\s*$`, 'm').exec(text);
    if (!m) throw new BenchParseError('wrk', `no ${p}% line (was --latency given?)`);
    return parseWrkTime(m[1]);
  };
  const errs = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(text);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(text);
  return {
    requestsPerSec: Number(rps[1]),
    requests: total ? Number(total[1]) : NaN,
    seconds: total ? parseWrkTime(`${total[2]}${total[3]}`) / 1000 : NaN,
    p50Ms: pct(50),
    p99Ms: pct(99),
    socketErrors: errs
      ? { connect: Number(errs[1]), read: Number(errs[2]), write: Number(errs[3]), timeout: Number(errs[4]) }
      : { connect: 0, read: 0, write: 0, timeout: 0 },
    non2xx: non2xx ? Number(non2xx[1]) : 0,
  };
}

/**
 * /proc/PID/stat, or /proc/PID/task/TID/stat for one thread (then `pid` is the tid and `comm` the
 * thread's name). The name is in parentheses and may itself contain spaces and parentheses, so
 * fields are counted from the last ")".
 * @returns {{ pid: number, comm: string, ppid: number, utime: number, stime: number, starttime: number }}
 *   times in clock ticks; starttime since boot, which tells a reused pid from the old one
 */
export function parseProcStat(text) {
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  if (open < 0 || close < open) throw new BenchParseError('/proc/PID/stat', 'no "(comm)"');
  const rest = text.slice(close + 2).trim().split(/\s+/);
  // rest[0] is field 3 (state): ppid is field 4, utime 14, stime 15, starttime 22.
  const num = (field) => {
    const v = Number(rest[field - 3]);
    if (!Number.isFinite(v)) throw new BenchParseError('/proc/PID/stat', `field ${field} missing`);
    return v;
  };
  return { pid: Number(text.slice(0, open).trim()), comm: text.slice(open + 1, close), ppid: num(4), utime: num(14), stime: num(15), starttime: num(22) };
}

/** VmRSS of /proc/PID/status, in KiB (0 for a kernel thread or a zombie without one). */
export function parseVmRssKiB(text) {
  const m = /^VmRSS:\s+(\d+)\s+kB$/m.exec(text);
  return m ? Number(m[1]) : 0;
}

/** The pid and all its descendants, given every process's {pid, ppid}. */
export function descendantsOf(rootPid, procs) {
  const children = new Map();
  for (const p of procs) {
    if (!children.has(p.ppid)) children.set(p.ppid, []);
    children.get(p.ppid).push(p.pid);
  }
  const out = [];
  const seen = new Set();
  const todo = [rootPid];
  while (todo.length > 0) {
    const pid = todo.pop();
    if (seen.has(pid)) continue;
    seen.add(pid);
    if (procs.some((p) => p.pid === pid)) out.push(pid);
    for (const c of children.get(pid) ?? []) todo.push(c);
  }
  return out.sort((a, b) => a - b);
}

/**
 * The address the backend reported in the small HTTP response it serves (templates/nginx-backend.conf):
 * "client=IP" and, behind a PROXY header, also "peer=IP" (the address the TCP connection came from).
 * @returns {{ client: string, peer: string | null }}
 */
export function parseBackendAnswer(body) {
  const client = /\bclient=(\S+)/.exec(body);
  if (!client) throw new BenchParseError('backend answer', `no client=... in ${JSON.stringify(body.slice(0, 200))}`);
  const peer = /\bpeer=(\S+)/.exec(body);
  return { client: client[1], peer: peer ? peer[1] : null };
}

/**
 * The line of a failed program's output that says why: the first error line (HAProxy [ALERT],
 * nginx [emerg], "Error: ...") that is not a generic "errors found" summary, else the last
 * error line, else the last non-empty line.
 */
export function summarizeFailure(output) {
  const lines = output.split('\n').map((l) => l.trim()).filter((l) => l !== '');
  const bad = lines.filter((l) => /\[(ALERT|emerg|crit|alert)\]|\berror\b|\bfailed\b|\bEPERM\b|\bEADDRINUSE\b/i.test(l));
  const specific = bad.find((l) => !/(Fatal errors|Error\(s\)) found/i.test(l));
  return describeLogLine(specific ?? bad.at(-1) ?? lines.at(-1) ?? '').slice(0, 300);
}

/** A pino JSON line as "component: msg: err.code err.message"; any other line as it is. */
function describeLogLine(line) {
  if (!line.startsWith('{')) return line;
  try {
    const o = JSON.parse(line);
    const parts = [o.component, o.msg, o.reason, o.err ? [o.err.code, o.err.message].filter(Boolean).join(' ') : null];
    const text = parts.filter((p) => typeof p === 'string' && p !== '').join(': ');
    return text || line;
  } catch {
    return line;
  }
}

/** The hard RLIMIT_NOFILE from /proc/PID/limits text; Infinity for "unlimited". */
export function parseNofileHardLimit(limitsText) {
  const m = /^Max open files\s+(\S+)\s+(\S+)/m.exec(limitsText);
  if (!m) throw new BenchParseError('/proc/PID/limits', 'no "Max open files" line');
  return m[2] === 'unlimited' ? Infinity : Number(m[2]);
}

/** The aggregate "cpu" line of /proc/stat: busy and total jiffies (idle = idle + iowait). */
export function parseCpuTimes(procStatText) {
  const m = /^cpu\s+(.+)$/m.exec(procStatText);
  if (!m) throw new BenchParseError('/proc/stat', 'no "cpu" line');
  const f = m[1].trim().split(/\s+/).map(Number);
  // user nice system idle iowait irq softirq steal [guest guest_nice: already in user/nice]
  const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
  const idle = f[3] + (f[4] ?? 0);
  return { busy: total - idle, total };
}

/**
 * Packet counters per link from `ip -s -j link`.
 * @returns {Record<string, { tx: number, rx: number }>}
 */
export function parseLinkPackets(jsonText) {
  let links;
  try {
    links = JSON.parse(jsonText);
  } catch {
    throw new BenchParseError('ip -s -j link', 'not JSON');
  }
  if (!Array.isArray(links)) throw new BenchParseError('ip -s -j link', 'not a list of links');
  const out = {};
  for (const l of links) {
    const s = l?.stats64 ?? l?.stats;
    if (typeof l?.ifname !== 'string' || typeof s?.tx?.packets !== 'number' || typeof s?.rx?.packets !== 'number') continue;
    out[l.ifname] = { tx: s.tx.packets, rx: s.rx.packets };
  }
  return out;
}
