import { describe, expect, it } from 'vitest';
import { exitStatus, renderJson, renderText, summarize } from '../../../src/doctor/report.js';
import type { Finding } from '../../../src/doctor/types.js';

const FINDINGS: Finding[] = [
  { check: 'capabilities', severity: 'ok', summary: 'CAP_NET_ADMIN and CAP_NET_RAW are effective' },
  { check: 'ip-rules', severity: 'error', summary: 'a rule takes our packets', fix: ['ip -4 rule del priority 100 fwmark 0x2000/0x2000 lookup 200', 'or use another bit'] },
  { check: 'route-localnet', severity: 'warn', summary: 'route_localnet = 1 on eth0', fix: ['sysctl -w net.ipv4.conf.eth0.route_localnet=0'] },
  { check: 'backend', severity: 'skip', summary: 'no --backend' },
];

describe('doctor report', () => {
  it('prints each finding with its fixes under it, and a verdict', () => {
    expect(renderText(summarize(FINDINGS), 'tproxy-interceptor doctor: c.toml')).toBe(`tproxy-interceptor doctor: c.toml

ok     capabilities    CAP_NET_ADMIN and CAP_NET_RAW are effective
ERROR  ip-rules        a rule takes our packets
                       fix: ip -4 rule del priority 100 fwmark 0x2000/0x2000 lookup 200
                            or use another bit
WARN   route-localnet  route_localnet = 1 on eth0
                       fix: sysctl -w net.ipv4.conf.eth0.route_localnet=0
skip   backend         no --backend

1 error, 1 warning: fix the errors before \`run\`
`);
  });

  it('fails on errors only', () => {
    expect(exitStatus(summarize(FINDINGS))).toBe(1);
    const noErrors = summarize(FINDINGS.filter((f) => f.severity !== 'error'));
    expect(exitStatus(noErrors)).toBe(0);
    expect(renderText(noErrors, 'h')).toMatch(/\nno errors, 1 warning\n$/);
  });

  it('JSON carries the same findings', () => {
    const json = JSON.parse(renderJson(summarize(FINDINGS), 'c.toml')) as { ok: boolean; errors: number; warnings: number; findings: Finding[] };
    expect(json).toMatchObject({ config: 'c.toml', ok: false, errors: 1, warnings: 1 });
    expect(json.findings).toEqual(FINDINGS);
  });
});
