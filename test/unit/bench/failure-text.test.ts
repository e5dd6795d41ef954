import { describe, expect, it } from 'vitest';
import { parseBackendAnswer, summarizeFailure } from '../../../scripts/bench/parse.mjs';

describe('summarizeFailure', () => {
  it("picks HAProxy's specific alert over its notices and the generic summary", () => {
    const out = `[ALERT]    (22386) : config : Fatal errors found in configuration.
[NOTICE]   (22386) : haproxy version is 2.6.12-1+deb12u4
[ALERT]    (22386) : config : parsing [/tmp/x/haproxy-gateway.cfg:7] : unknown keyword 'tune.maxpipes' in 'global' section
[ALERT]    (22386) : config : Error(s) found in configuration file : /tmp/x/haproxy-gateway.cfg`;
    expect(summarizeFailure(out)).toMatch(/unknown keyword 'tune.maxpipes'/);
  });

  it('falls back to the last line', () => {
    expect(summarizeFailure('starting\nlistening on 15001\nbye\n')).toBe('bye');
    expect(summarizeFailure('')).toBe('');
  });
});

describe('parseBackendAnswer', () => {
  it('reads the address the backend saw, and the TCP peer behind a PROXY header', () => {
    expect(parseBackendAnswer('client=198.18.1.2 xxxx\n')).toEqual({ client: '198.18.1.2', peer: null });
    expect(parseBackendAnswer('client=198.18.1.2 peer=198.18.2.1 xx\n')).toEqual({ client: '198.18.1.2', peer: '198.18.2.1' });
    expect(() => parseBackendAnswer('<html>hello</html>')).toThrow(/no client=/);
  });
});

describe('summarizeFailure with the daemon (pino JSON lines)', () => {
  it('names the component, the message and the error instead of the raw JSON', () => {
    const line = JSON.stringify({ level: 40, component: 'splice-relay', msg: 'splice relay unavailable', err: { type: 'Error', message: 'relayStart EMFILE', code: 'EMFILE' } });
    expect(summarizeFailure(`{"level":30,"msg":"running"}\n${line}\n`)).toBe('splice-relay: splice relay unavailable: EMFILE relayStart EMFILE');
  });
});
