// Config text for the bench: {{NAME}} templates (templates/*), the nftables tables the HAProxy and
// nginx paths need in the gateway, and the daemon's TOML. Pure.

/** Replaces every {{NAME}}; a placeholder without a value, or a value without a placeholder, is an error. */
export function fillTemplate(text, vars) {
  const used = new Set();
  const out = text.replace(/\{\{([A-Z0-9_]+)\}\}/g, (_, name) => {
    if (!Object.hasOwn(vars, name)) throw new RangeError(`template needs {{${name}}}`);
    used.add(name);
    return String(vars[name]);
  });
  for (const name of Object.keys(vars)) {
    if (!used.has(name)) throw new RangeError(`template has no {{${name}}}`);
  }
  return out;
}

const portSet = (ports) => (ports.length === 1 ? String(ports[0]) : `{ ${ports.join(', ')} }`);
const hex = (n) => `0x${n.toString(16)}`;

/**
 * Prerouting for the HAProxy path, the shape of REFERENCE §1: replies to the proxy's spoofed
 * upstream sockets (`socket transparent 1`) are marked for the local route; new target traffic is
 * handed to the transparent listener by `tproxy`, and dropped if no listener took it (nft tproxy
 * fails open).
 */
export function renderTproxyTable({ table, cidr, ports, listenAddress, listenPort, mark }) {
  return `table inet ${table} {
  chain pre {
    type filter hook prerouting priority -150; policy accept;
    meta l4proto tcp socket transparent 1 socket wildcard 0 meta mark set ${hex(mark)} accept
    ip daddr ${cidr} tcp dport ${portSet(ports)} tproxy ip to ${listenAddress}:${listenPort} meta mark set ${hex(mark)} accept
    ip daddr ${cidr} tcp dport ${portSet(ports)} drop
  }
}
`;
}

/**
 * Prerouting for the nginx path: nginx cannot set IP_TRANSPARENT on its listeners, so `tproxy`
 * (which only hands packets to transparent sockets) cannot reach it. Target traffic is marked
 * instead and policy routing delivers it locally, to nginx's 0.0.0.0 listeners; replies to its
 * spoofed upstream sockets are marked the same way.
 */
export function renderMarkTable({ table, cidr, ports, mark }) {
  return `table inet ${table} {
  chain pre {
    type filter hook prerouting priority -150; policy accept;
    meta l4proto tcp socket transparent 1 socket wildcard 0 meta mark set ${hex(mark)} accept
    ip daddr ${cidr} tcp dport ${portSet(ports)} meta mark set ${hex(mark)} accept
  }
}
`;
}

/**
 * The guard every proxy path runs behind: target traffic must never be forwarded raw. If a proxy
 * did not take a connection, it fails instead of being measured as "direct routing".
 */
export function renderGuardTable({ table, cidr, ports }) {
  return `table inet ${table} {
  chain forward {
    type filter hook forward priority 0; policy accept;
    ip daddr ${cidr} tcp dport ${portSet(ports)} counter drop
    ip saddr ${cidr} tcp sport ${portSet(ports)} counter drop
  }
}
`;
}

/**
 * How HAProxy on the gateway connects upstream, as {{SOURCE}} and {{SERVER_OPTIONS}} of
 * templates/haproxy-gateway.cfg. pp=false: from the client's address (`usesrc clientip`, as the
 * daemon's pp=false does). pp=true: from the gateway's own address with a PROXY v2 header naming
 * the client (`send-proxy-v2`, as the daemon's pp=true does), so the two compare the same job.
 */
export function haproxyUpstream(pp) {
  return pp
    ? { SOURCE: '    # from the gateway\'s own address; the PROXY v2 header names the client', SERVER_OPTIONS: ' send-proxy-v2' }
    : { SOURCE: '    source 0.0.0.0 usesrc clientip', SERVER_OPTIONS: '' };
}

/**
 * The daemon's config for one path (TOML). pipeSize: upstream.pipe_size in bytes (0: the
 * kernel's default), left out when null.
 */
export function renderDaemonConfig({ table, cidr, ports, listenPort, dir, threads = null, pipeSize = null }) {
  if (pipeSize !== null && !(Number.isInteger(pipeSize) && pipeSize >= 0)) throw new RangeError(`pipeSize must be a whole number of bytes, got ${pipeSize}`);
  return `# written by scripts/bench/run.mjs
[listen]
address = "127.0.0.1"
address6 = ""
port = ${listenPort}
${threads ? `threads = ${threads}\n` : ''}
[intercept]
table = "${table}"

[[intercept.targets]]
cidr = "${cidr}"
ports = [${ports.join(', ')}]

[upstream]
connect_timeout = "5s"
${pipeSize !== null ? `pipe_size = ${pipeSize}\n` : ''}
[log]
# Per-connection logs are info: at thousands of connections a second they would be measured too.
level = "warn"

[registry]
path = "${dir}/registry"
admin_socket = "${dir}/admin.sock"
`;
}

/** A ~100-byte padding for the HTTP answer, so that every path serves the same size. */
export function httpPadding(targetBytes = 100, prefixBytes = 40) {
  return 'x'.repeat(Math.max(0, targetBytes - prefixBytes));
}
