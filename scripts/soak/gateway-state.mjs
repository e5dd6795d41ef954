// What the daemon leaves on the gateway (nftables, ip rules, routes) and says in its log,
// reduced to what can be compared across a crash and a restart. Pure.

/** `nft -j list table ...` output without handles and counters: two listings of the same rules compare equal. */
export function normalizeRuleset(json) {
  let doc;
  try {
    doc = JSON.parse(json);
  } catch {
    return null;
  }
  const strip = (v) => {
    if (Array.isArray(v)) return v.map(strip);
    if (v && typeof v === 'object') {
      const out = {};
      for (const k of Object.keys(v).sort()) {
        if (k === 'handle' || k === 'counter' || k === 'metainfo') continue;
        out[k] = strip(v[k]);
      }
      return out;
    }
    return v;
  };
  return JSON.stringify(strip((doc.nftables ?? []).filter((e) => !e.metainfo)));
}

/** The ip rules that send to our route table. */
export function ourIpRules(lines, routeTable) {
  return lines.filter((l) => new RegExp(`lookup ${routeTable}(\\s|$)`).test(l));
}

/**
 * Compares the gateway as it was with the daemon running before a crash and after its restart.
 * @param {{ tables: string[], table: string | null, rules4: string[], rules6: string[], routes4: string[], routes6: string[] }} before
 * @param {typeof before} after
 * @returns {{ ok: boolean, problems: string[] }}
 */
export function compareGatewayStates(before, after, { table, routeTable }) {
  const problems = [];
  const name = `inet ${table}`;
  const count = after.tables.filter((t) => t === name).length;
  if (count !== 1) problems.push(`${count} tables named ${name} (want exactly 1)`);
  if (before.table === null) problems.push(`table ${name} was missing before the crash`);
  else if (after.table !== before.table) problems.push(`table ${name} differs from before the crash`);
  for (const fam of ['rules4', 'rules6']) {
    const b = ourIpRules(before[fam], routeTable);
    const a = ourIpRules(after[fam], routeTable);
    if (a.length !== new Set(a).size) problems.push(`duplicate ip rules (${fam === 'rules4' ? 'IPv4' : 'IPv6'}): ${a.join(' | ')}`);
    if (a.join('\n') !== b.join('\n')) problems.push(`ip rules (${fam === 'rules4' ? 'IPv4' : 'IPv6'}) were [${b.join(' | ')}], now [${a.join(' | ')}]`);
  }
  for (const fam of ['routes4', 'routes6']) {
    if (after[fam].join('\n') !== before[fam].join('\n')) problems.push(`routes of table ${routeTable} were [${before[fam].join(' | ')}], now [${after[fam].join(' | ')}]`);
  }
  return { ok: problems.length === 0, problems };
}

/** Whether nothing of ours is left: no table, no ip rule to our route table, no route in it. */
export function nothingLeft(state, { table, routeTable }) {
  const left = [];
  if (state.tables.includes(`inet ${table}`)) left.push(`table inet ${table}`);
  for (const fam of ['rules4', 'rules6']) for (const r of ourIpRules(state[fam], routeTable)) left.push(`ip rule ${r}`);
  for (const fam of ['routes4', 'routes6']) for (const r of state[fam]) left.push(`route ${r} (table ${routeTable})`);
  return left;
}

/**
 * Counts a pino line into `logs`: levels, messages, the reasons lines carried (under their
 * message: a start-up warning and a closed connection may give the same reason), and the error
 * code a failure carried, as "reason code" (for the figures; the checks never read the log).
 * @param {string} line
 * @param {{ reasons: Record<string, Record<string, number>>, levels: Record<string, number>, messages: Record<string, number>, errors: Record<string, number> }} logs
 */
export function summarizeLogLine(line, logs) {
  if (!line.startsWith('{')) return;
  let o;
  try {
    o = JSON.parse(line);
  } catch {
    return;
  }
  const level = typeof o.level === 'number' ? o.level : null;
  if (level !== null) logs.levels[level] = (logs.levels[level] ?? 0) + 1;
  if (typeof o.msg === 'string') logs.messages[o.msg] = (logs.messages[o.msg] ?? 0) + 1;
  if (typeof o.reason === 'string') {
    const n = typeof o.refused === 'number' ? o.refused : 1;
    const byReason = (logs.reasons[o.msg ?? ''] ??= {});
    byReason[o.reason] = (byReason[o.reason] ?? 0) + n;
    if (typeof o.err?.code === 'string') {
      const key = `${o.reason} ${o.err.code}`;
      logs.errors[key] = (logs.errors[key] ?? 0) + 1;
    }
  }
}

/** Error and fatal lines counted in a summary. */
export function errorLines(logs) {
  return Object.entries(logs.levels).reduce((n, [lvl, c]) => (Number(lvl) >= 50 ? n + c : n), 0);
}
