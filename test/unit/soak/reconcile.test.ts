import { describe, expect, it } from 'vitest';
import { connectionProblem, describeProblems, outcomeCounts, outcomeOf, reconcile } from '../../../scripts/soak/reconcile.mjs';

const client = (over: Record<string, unknown> = {}) => ({
  id: 'c1', host: '198.18.2.2', port: 9001, pp: false, localAddress: '198.18.1.2', localPort: 40000, connected: true, connectMs: 1,
  upSent: 1000, downVerified: 2000, downReceived: 2000, downMismatchAt: null, downEof: true, downExpected: null, error: null, ms: 10, ...over,
});
const server = (over: Record<string, unknown> = {}) => ({
  id: 'c1', port: 9001, remoteAddress: '198.18.1.2', remotePort: 51000, pp: null,
  upVerified: 1000, upReceived: 1000, upMismatchAt: null, upEof: true, downSent: 2000, error: null, ...over,
});

describe('connectionProblem', () => {
  it('a whole pp=false connection: the backend saw the client address', () => {
    expect(connectionProblem(client(), server())).toBeNull();
  });

  it('a whole pp=true connection: the header names the client address and port, and what it dialled', () => {
    const pp = { source: { address: '198.18.1.2', port: 40000 }, destination: { address: '198.18.2.2', port: 9002 } };
    expect(connectionProblem(client({ pp: true, port: 9002 }), server({ remoteAddress: '198.18.2.1', pp }))).toBeNull();
  });

  it.each([
    ['a failed connect', client({ connected: false, error: 'ETIMEDOUT' }), server(), /connect failed \(ETIMEDOUT\)/],
    ['a connection the backend never saw', client(), null, /never reached the backend/],
    ['a corrupt down stream', client({ downMismatchAt: 77 }), server(), /down stream wrong from byte 77/],
    ['a corrupt up stream', client(), server({ upMismatchAt: 5 }), /up stream wrong from byte 5/],
    ['a reset at the client', client({ error: 'ECONNRESET' }), server(), /client saw ECONNRESET/],
    ['lost up bytes', client(), server({ upVerified: 900 }), /client sent 1000 bytes, backend verified 900/],
    ['lost down bytes', client({ downVerified: 1500 }), server(), /backend sent 2000 bytes, client verified 1500/],
    ['no end at the client', client({ downEof: false }), server(), /never saw the backend end/],
    ['no end at the backend', client(), server({ upEof: false }), /never saw the client end/],
    ['pp=false seen from the gateway', client(), server({ remoteAddress: '198.18.2.1' }), /backend saw 198.18.2.1, not the client's own address/],
    ['pp=true without a header', client({ pp: true }), server(), /no PROXY header/],
    ['pp=true naming someone else', client({ pp: true }), server({ pp: { source: { address: '198.18.1.2', port: 1 }, destination: null } }), /PROXY header names 198.18.1.2:1/],
  ])('%s', (_name, c, s, problem) => {
    expect(connectionProblem(c, s)).toMatch(problem);
  });
});

describe('reconcile', () => {
  it('counts whole connections and the bytes verified and lost, matching by id', () => {
    const r = reconcile(
      [client({ id: 'a' }), client({ id: 'b', downVerified: 1500 }), client({ id: 'c' })],
      [server({ id: 'b' }), server({ id: 'a' }), server({ id: null })],
    );
    expect(r.connections).toBe(3);
    expect(r.whole).toBe(1);
    expect(r.bytesVerified).toBe(3000 + 2500 + 2000);
    expect(r.bytesLost).toBe(500 + 1000);
    expect(r.problems.map((p) => p.id)).toEqual(['b', 'c']);
  });
});

describe('outcomeOf', () => {
  it.each([
    [client({ error: 'ECONNRESET' }), 'reset'],
    [client({ error: 'EPIPE' }), 'reset'],
    [client({ error: 'ECONNREFUSED' }), 'refused'],
    [client({ error: 'ETIMEDOUT' }), 'timeout'],
    [client({ error: 'hung' }), 'hung'],
    [client({ error: 'EHOSTUNREACH' }), 'error:EHOSTUNREACH'],
    [client({ downMismatchAt: 3 }), 'corrupt'],
    [client(), 'completed'],
    [client({ downExpected: 256, downVerified: 256 }), 'completed'],
    [client({ downExpected: 256, downVerified: 100 }), 'closed'],
    [client({ downVerified: 0 }), 'closed'],
    [client({ downEof: false }), 'closed'],
  ])('%j is %s', (c, outcome) => expect(outcomeOf(c)).toBe(outcome));

  it('counts outcomes and shortens long problem lists', () => {
    expect(outcomeCounts([client(), client({ error: 'ECONNRESET' }), client()])).toEqual({ completed: 2, reset: 1 });
    const text = describeProblems(Array.from({ length: 7 }, (_, i) => ({ id: `c${i}`, problem: 'lost' })), 2);
    expect(text).toBe('c0: lost; c1: lost; and 5 more');
  });
});
