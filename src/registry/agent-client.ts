// One Info call to a dstack guest agent. The agent is untrusted input: every way it can
// misbehave (refuse, stall, drip, flood, garble) ends in a PolicyFetchError within timeoutMs.
// The body is read as it arrives (InfoResponseReader), never held whole.
import http from 'node:http';
import { InfoResponseReader, PolicyFetchError, type InfoFacts } from './compose.js';

export interface AgentInfoRequest {
  ip: string;
  port: number;
  /** For the whole attempt: connect, headers and body. */
  timeoutMs: number;
  /** Largest body accepted: past it the answer is a permanent ERR_AGENT_RESPONSE_TOO_LARGE. */
  maxBytes: number;
  signal?: AbortSignal;
}

const REQUEST_BODY = Buffer.from('{}');

function agentInfoUrl(ip: string, port: number): string {
  return `http://${ip.includes(':') ? `[${ip}]` : ip}:${port}/prpc/Info?json`;
}

/** `POST /prpc/Info?json` as the dstack gateway calls it; resolves what the 200 body says. */
export function fetchAgentInfo(opts: AgentInfoRequest): Promise<InfoFacts> {
  const { ip, port, timeoutMs, maxBytes, signal } = opts;
  const url = agentInfoUrl(ip, port);
  return new Promise<InfoFacts>((resolve, reject) => {
    let settled = false;
    let req: http.ClientRequest | undefined;
    const finish = (err: PolicyFetchError | null, facts?: InfoFacts): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      if (err !== null) {
        req?.destroy();
        reject(err);
      } else {
        resolve(facts as InfoFacts);
      }
    };
    const onAbort = (): void => {
      finish(new PolicyFetchError('ERR_AGENT_ABORTED', `Info ${url}: aborted`, { permanent: false, cause: signal?.reason }));
    };
    const timer = setTimeout(() => {
      finish(new PolicyFetchError('ERR_AGENT_TIMEOUT', `Info ${url}: no complete answer within ${timeoutMs} ms`, { permanent: false }));
    }, timeoutMs);
    if (signal?.aborted) {
      onAbort();
      return;
    }
    signal?.addEventListener('abort', onAbort, { once: true });

    try {
      req = http.request(url, {
        method: 'POST',
        agent: false,
        headers: { 'content-type': 'application/json', 'content-length': REQUEST_BODY.length, accept: 'application/json' },
      });
    } catch (err) {
      finish(new PolicyFetchError('ERR_AGENT_CONNECT', `Info ${url}: ${(err as Error).message}`, { permanent: false, cause: err }));
      return;
    }
    req.on('error', (err: NodeJS.ErrnoException) => {
      finish(
        new PolicyFetchError('ERR_AGENT_CONNECT', `Info ${url}: ${err.code ?? err.message}`, {
          permanent: false,
          cause: err,
          ...(err.code === undefined ? {} : { systemCode: err.code }),
        }),
      );
    });
    req.on('response', (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        finish(
          new PolicyFetchError('ERR_AGENT_HTTP', `Info ${url}: HTTP ${res.statusCode ?? '?'}`, {
            permanent: false,
            status: res.statusCode ?? 0,
          }),
        );
        return;
      }
      const tooLarge = (): PolicyFetchError =>
        new PolicyFetchError('ERR_AGENT_RESPONSE_TOO_LARGE', `Info ${url}: response larger than ${maxBytes} bytes`, {
          permanent: true,
        });
      const declared = res.headers['content-length'];
      if (declared !== undefined && Number(declared) > maxBytes) {
        finish(tooLarge());
        return;
      }
      const reader = new InfoResponseReader();
      let received = 0;
      res.on('data', (chunk: Buffer) => {
        if (settled) return;
        received += chunk.length;
        if (received > maxBytes) {
          finish(tooLarge());
          return;
        }
        try {
          reader.write(chunk);
        } catch (err) {
          finish(asFetchError(err));
        }
      });
      res.on('end', () => {
        if (settled) return;
        try {
          finish(null, reader.end());
        } catch (err) {
          finish(asFetchError(err));
        }
      });
      res.on('error', (err: NodeJS.ErrnoException) => {
        finish(
          new PolicyFetchError('ERR_AGENT_CONNECT', `Info ${url}: response ${err.code ?? err.message}`, {
            permanent: false,
            cause: err,
            ...(err.code === undefined ? {} : { systemCode: err.code }),
          }),
        );
      });
      res.on('close', () => {
        if (!res.complete) {
          finish(new PolicyFetchError('ERR_AGENT_CONNECT', `Info ${url}: connection closed mid-response`, { permanent: false }));
        }
      });
    });
    req.end(REQUEST_BODY);
  });
}

function asFetchError(err: unknown): PolicyFetchError {
  if (err instanceof PolicyFetchError) return err;
  return new PolicyFetchError('ERR_AGENT_BAD_RESPONSE', `Info response could not be read: ${(err as Error).message}`, {
    permanent: false,
    cause: err,
  });
}
