// One Info call to a dstack guest agent. The agent is untrusted input: every way it can
// misbehave (refuse, stall, drip, flood) ends in a PolicyFetchError within timeoutMs.
import http from 'node:http';
import { PolicyFetchError } from './compose.js';

export interface AgentInfoRequest {
  ip: string;
  port: number;
  /** For the whole attempt: connect, headers and body. */
  timeoutMs: number;
  maxBytes: number;
  signal?: AbortSignal;
}

const REQUEST_BODY = Buffer.from('{}');

export function agentInfoUrl(ip: string, port: number): string {
  return `http://${ip.includes(':') ? `[${ip}]` : ip}:${port}/prpc/Info?json`;
}

/** `POST /prpc/Info?json` as the dstack gateway calls it; resolves the raw 200 body. */
export function fetchAgentInfo(opts: AgentInfoRequest): Promise<Buffer> {
  const { ip, port, timeoutMs, maxBytes, signal } = opts;
  const url = agentInfoUrl(ip, port);
  return new Promise<Buffer>((resolve, reject) => {
    let settled = false;
    let req: http.ClientRequest | undefined;
    const finish = (err: PolicyFetchError | null, body?: Buffer): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      if (err !== null) {
        req?.destroy();
        reject(err);
      } else {
        resolve(body as Buffer);
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
      const chunks: Buffer[] = [];
      let received = 0;
      res.on('data', (chunk: Buffer) => {
        if (settled) return;
        received += chunk.length;
        if (received > maxBytes) {
          finish(tooLarge());
          return;
        }
        chunks.push(chunk);
      });
      res.on('end', () => finish(null, Buffer.concat(chunks, received)));
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
