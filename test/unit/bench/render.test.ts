import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { fillTemplate, haproxyUpstream, renderDaemonConfig, renderGuardTable, renderMarkTable, renderTproxyTable } from '../../../scripts/bench/render.mjs';
import { PIPE_SIZE } from '../../../scripts/bench/plan.mjs';

/** The configuration without its comments. */
const directives = (text: string) => text.split('\n').filter((l) => !l.trim().startsWith('#')).join('\n');

const TEMPLATES = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../scripts/bench/templates');

describe('fillTemplate', () => {
  it('replaces every placeholder', () => {
    expect(fillTemplate('bind {{A}}:{{B}} # {{A}}', { A: '127.0.0.1', B: 15002 })).toBe('bind 127.0.0.1:15002 # 127.0.0.1');
  });

  it('refuses a missing value and an unused one', () => {
    expect(() => fillTemplate('{{A}} {{B}}', { A: 1 })).toThrow(/needs \{\{B\}\}/);
    expect(() => fillTemplate('{{A}}', { A: 1, C: 2 })).toThrow(/no \{\{C\}\}/);
  });

  it('fills the shipped templates completely', () => {
    const gw = fillTemplate(readFileSync(path.join(TEMPLATES, 'haproxy-gateway.cfg'), 'utf8'), { MAXCONN: 9550, MAXPIPES: 256, PIPE_SIZE: 262144, LISTEN_ADDRESS: '127.0.0.1', LISTEN_PORT: 15002, ...haproxyUpstream(false) });
    expect(gw).toContain('bind 127.0.0.1:15002 transparent');
    expect(gw).toContain('source 0.0.0.0 usesrc clientip');
    expect(gw).toMatch(/server original 0\.0\.0\.0 maxconn 9550\n/);
    expect(directives(gw)).not.toContain('send-proxy');
    expect(gw).toMatch(/^global\n(?: {4}.*\n)*? {4}tune\.pipesize 262144\n/m);
    expect(gw).not.toMatch(/\{\{/);
    const ng = fillTemplate(readFileSync(path.join(TEMPLATES, 'nginx-gateway.conf'), 'utf8'), { NOFILE: 20000, DIR: '/tmp/x', WORKER_CONNECTIONS: 19900, LISTENS: '        listen 8081;' });
    expect(ng).toContain('proxy_bind $remote_addr transparent;');
    expect(ng).toContain('proxy_pass $server_addr:$server_port;');
  });

  it('HAProxy for pp=true sends a PROXY v2 header from its own address, spoofing nothing', () => {
    const gw = fillTemplate(readFileSync(path.join(TEMPLATES, 'haproxy-gateway.cfg'), 'utf8'), { MAXCONN: 9550, MAXPIPES: 256, PIPE_SIZE: 262144, LISTEN_ADDRESS: '127.0.0.1', LISTEN_PORT: 15002, ...haproxyUpstream(true) });
    expect(gw).toMatch(/^ {4}server original 0\.0\.0\.0 maxconn 9550 send-proxy-v2$/m);
    expect(directives(gw)).not.toMatch(/^\s*source /m);
    expect(directives(gw)).not.toContain('usesrc');
    // The same splice relay as the transparent baseline.
    expect(gw).toContain('option splice-request');
    expect(gw).toContain('option splice-response');
    expect(gw).not.toMatch(/\{\{/);
  });
});

describe('nftables tables', () => {
  const base = { cidr: '198.18.2.0/24', ports: [5201, 8081], mark: 2 };

  it('tproxy: replies to spoofed sockets marked, targets to the listener, the rest of the targets dropped', () => {
    const t = renderTproxyTable({ ...base, table: 'tpibench_proxy', listenAddress: '127.0.0.1', listenPort: 15002 });
    const rules = t.split('\n').map((l) => l.trim());
    expect(rules).toContain('type filter hook prerouting priority -150; policy accept;');
    expect(rules).toContain('meta l4proto tcp socket transparent 1 socket wildcard 0 meta mark set 0x2 accept');
    expect(rules).toContain('ip daddr 198.18.2.0/24 tcp dport { 5201, 8081 } tproxy ip to 127.0.0.1:15002 meta mark set 0x2 accept');
    expect(rules.indexOf('ip daddr 198.18.2.0/24 tcp dport { 5201, 8081 } drop')).toBeGreaterThan(rules.findIndex((l) => l.includes('tproxy')));
  });

  it('mark (nginx): targets only marked, no tproxy', () => {
    const t = renderMarkTable({ ...base, table: 'tpibench_proxy', ports: [8081] });
    expect(t).toContain('ip daddr 198.18.2.0/24 tcp dport 8081 meta mark set 0x2 accept');
    expect(t).not.toContain('tproxy');
  });

  it('guard: forwarding of target traffic dropped both ways', () => {
    const t = renderGuardTable({ table: 'tpibench_guard', cidr: base.cidr, ports: base.ports });
    expect(t).toContain('type filter hook forward priority 0; policy accept;');
    expect(t).toContain('ip daddr 198.18.2.0/24 tcp dport { 5201, 8081 } counter drop');
    expect(t).toContain('ip saddr 198.18.2.0/24 tcp sport { 5201, 8081 } counter drop');
  });
});

describe('renderDaemonConfig', () => {
  it('targets the ports, keeps registry and admin socket in the run directory, sets threads only when asked', () => {
    const c = renderDaemonConfig({ table: 'tpibench_tpi', cidr: '198.18.2.0/24', ports: [5201, 8080], listenPort: 15001, dir: '/tmp/d' });
    expect(c).toContain('ports = [5201, 8080]');
    expect(c).toContain('admin_socket = "/tmp/d/admin.sock"');
    expect(c).toContain('address6 = ""');
    expect(c).not.toContain('threads');
    expect(renderDaemonConfig({ table: 't', cidr: '198.18.2.0/24', ports: [1], listenPort: 1, dir: '/d', threads: 2 })).toContain('threads = 2');
  });

  it('gives the splice relay the pipe size HAProxy gets, in [upstream]; 0 is the kernel default', () => {
    const base = { table: 't', cidr: '198.18.2.0/24', ports: [1], listenPort: 1, dir: '/d' };
    const upstream = (c: string) => /^\[upstream\]\n((?:.+\n)*)/m.exec(c)![1];
    expect(upstream(renderDaemonConfig({ ...base, pipeSize: PIPE_SIZE }))).toContain('pipe_size = 262144\n');
    expect(upstream(renderDaemonConfig({ ...base, pipeSize: 0 }))).toContain('pipe_size = 0\n');
    expect(renderDaemonConfig(base)).not.toContain('pipe_size');
    expect(() => renderDaemonConfig({ ...base, pipeSize: 65536.5 })).toThrow(RangeError);
  });

  it('uses one pipe size for both splice relays', () => {
    expect(PIPE_SIZE).toBe(262144);
    const gw = fillTemplate(readFileSync(path.join(TEMPLATES, 'haproxy-gateway.cfg'), 'utf8'), { MAXCONN: 1, MAXPIPES: 1, PIPE_SIZE, LISTEN_ADDRESS: 'a', LISTEN_PORT: 1, ...haproxyUpstream(false) });
    const daemon = renderDaemonConfig({ table: 't', cidr: '198.18.2.0/24', ports: [1], listenPort: 1, dir: '/d', pipeSize: PIPE_SIZE });
    expect(/tune\.pipesize (\d+)/.exec(gw)![1]).toBe(/pipe_size = (\d+)/.exec(daemon)![1]);
  });
});
