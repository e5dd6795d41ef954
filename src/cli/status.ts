// `tproxy-interceptor status --config FILE [--json]`: the running daemon's state, counters and
// live connections (client, original destination, path, bytes each way, age, thread), from its
// admin socket. The loop threads list their own connections when asked (native/loop.cc Snapshot).
import { Command, InvalidArgumentError, Option } from 'commander';
import { createAdminClient } from '../admin/client.js';
import { STATUS_LIMIT } from '../admin/routes.js';
import type { WireDaemonStatus } from '../admin/wire.js';
import { loadConfig } from '../config-parse.js';
import type { CliIo } from './common.js';

export function statusCommand(opts: { io: CliIo; code: { value: number } }): Command {
  return new Command('status')
    .summary("the running daemon's state, counters and live connections")
    .description(
      "Show the running daemon's state (rules installed, listeners accepting, reloads), its counters since start, and its live connections, " +
        'oldest first: client, original destination, path, state, bytes each way (client to upstream, upstream to client), age, loop thread. From the admin socket.',
    )
    .usage('--config FILE [--json] [--limit N]')
    .requiredOption('--config <file>', "the TOML configuration: names the daemon's admin socket")
    .option('--json', 'machine-readable output (the admin API\'s GET /v1/status)')
    .addOption(
      new Option('--limit <n>', `list at most this many connections per loop thread (0: none, only the counts)`).default(STATUS_LIMIT.default).argParser((v) => {
        const n = Number(v);
        if (!/^\d+$/.test(v) || n > STATUS_LIMIT.max) throw new InvalidArgumentError(`--limit must be an integer 0..${STATUS_LIMIT.max}`);
        return n;
      }),
    )
    .action(async (o: { config: string; json?: boolean; limit: number }) => {
      const config = await loadConfig(o.config);
      const status = await createAdminClient(config.registry.adminSocket).status(o.limit);
      opts.io.stdout.write(o.json ? `${JSON.stringify(status, null, 2)}\n` : renderStatus(status));
      opts.code.value = 0;
    });
}

const bytes = (n: number): string => (n < 1024 ? `${n}B` : n < 1024 ** 2 ? `${(n / 1024).toFixed(1)}K` : n < 1024 ** 3 ? `${(n / 1024 ** 2).toFixed(1)}M` : `${(n / 1024 ** 3).toFixed(1)}G`);

function age(ms: number): string {
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d${Math.floor((s % 86400) / 3600)}h`;
}

function table(header: string[], rows: string[][]): string[] {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  return [header, ...rows].map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ').trimEnd());
}

function renderStatus(s: WireDaemonStatus): string {
  const c = s.counters;
  const closed = Object.entries(c.closed)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([k, v]) => `${k} ${v}`)
    .join(', ');
  const lines = [
    `daemon       pid ${s.pid}, up ${age(s.uptime_ms)}, config ${s.config}`,
    `state        ${s.rules_installed ? 'rules installed' : 'rules NOT installed'} (${s.backend}), ${s.accepting ? 'accepting' : 'NOT accepting'}, ${s.engine.threads} loop threads, table generation ${s.engine.table_generation}`,
    `connections  ${s.engine.live} live, ${s.engine.accepted} accepted, ${s.engine.over_capacity} over capacity`,
    `ended        ${c.transparent} transparent, ${c.proxy} proxy, ${c.refused} refused; ${bytes(c.bytes_in)} client to upstream, ${bytes(c.bytes_out)} upstream to client`,
    `close        ${closed || '-'}`,
    `registry     ${s.registry.instances} instances${s.registry.store ? `, store ${s.registry.store.kind} ${s.registry.store.state}` : ''}`,
    `reloads      ${s.reloads.ok} ok, ${s.reloads.failed} failed`,
    '',
  ];
  if (s.connections.length === 0) {
    lines.push(s.live === 0 ? 'no live connections' : `${s.live} live connections (none listed: --limit 0)`);
  } else {
    const rows = s.connections.map((l) => [
      String(l.id),
      String(l.thread),
      l.client,
      l.destination,
      l.path ?? '-',
      l.state,
      bytes(l.bytes_in),
      bytes(l.bytes_out),
      age(l.age_ms),
    ]);
    lines.push(...table(['ID', 'THREAD', 'CLIENT', 'DESTINATION', 'PATH', 'STATE', 'IN', 'OUT', 'AGE'], rows));
    if (s.live > s.connections.length) lines.push(`(${s.connections.length} of ${s.live} listed: raise --limit for more)`);
  }
  return `${lines.join('\n')}\n`;
}
