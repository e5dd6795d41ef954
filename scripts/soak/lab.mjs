// The soak's lab: the same three namespaces as the tests and the demo (scripts/lab.sh), tuned for
// thousands of connections, with the extra backend addresses the hostile agents answer on, and
// the blackhole fault (an nftables table in the backend namespace). Nothing outside the three
// namespaces is touched.
import path from 'node:path';
import { HOSTILE_AGENTS, PORTS } from './plan.mjs';
import { runCommand, sysctls } from '../bench/procs.mjs';

const FAULT_TABLE = 'soak_fault';

/**
 * @param {{ root: string, prefix: string }} o
 */
export function createLab({ root, prefix }) {
  const labSh = path.join(root, 'scripts', 'lab.sh');
  const ns = { client: `${prefix}-c`, gateway: `${prefix}-g`, backend: `${prefix}-b` };

  return {
    ns,
    prefix,
    exec: (namespace, argv, opts) => runCommand(namespace, argv, { timeoutMs: 15_000, ...opts }),
    async up() {
      await runCommand(null, ['bash', labSh, 'up', prefix], { timeoutMs: 30_000 });
      const ports = { 'net.ipv4.ip_local_port_range': '1024 65535', 'net.ipv4.tcp_tw_reuse': 1 };
      const queues = { 'net.core.somaxconn': 8192, 'net.ipv4.tcp_max_syn_backlog': 8192 };
      await sysctls(ns.client, ports);
      await sysctls(ns.gateway, { ...ports, ...queues });
      await sysctls(ns.backend, { ...ports, ...queues });
      for (const a of HOSTILE_AGENTS) await runCommand(ns.backend, ['ip', 'addr', 'add', `${a.ip}/32`, 'dev', 'eth0']);
    },
    /** Drops every SYN to the blackhole port in the backend namespace: connects to it time out. */
    async blackhole() {
      const text = `table inet ${FAULT_TABLE} {
  chain input {
    type filter hook input priority 0; policy accept;
    tcp dport ${PORTS.blackhole} tcp flags & (syn | ack) == syn drop
  }
}
`;
      await runCommand(ns.backend, ['nft', '-f', '-'], { input: text, timeoutMs: 10_000 });
    },
    async unblackhole() {
      await runCommand(ns.backend, ['nft', 'delete', 'table', 'inet', FAULT_TABLE], { timeoutMs: 10_000, allowFail: true });
    },
    /** Whether every namespace of the lab is gone. */
    async gone() {
      const { stdout } = await runCommand(null, ['ip', 'netns', 'list'], { timeoutMs: 10_000 });
      return !stdout.split('\n').some((l) => l.startsWith(`${prefix}-`));
    },
  };
}
