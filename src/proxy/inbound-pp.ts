// Reading the PROXY header a trusted load balancer sends first. The spec forbids guessing: a
// connection from a trusted source without a complete valid header within the timeout is closed.
import type net from 'node:net';
import { createHeaderParser, type ProxyHeader } from '../pp/index.js';
import { InterceptorError } from '../errors.js';

export class InboundHeaderTimeoutError extends InterceptorError {
  constructor(timeoutMs: number) {
    super('ERR_PP_TIMEOUT', `no complete PROXY header within ${timeoutMs} ms from a trusted source`);
  }
}

export class InboundHeaderClosedError extends InterceptorError {
  constructor(bytes: number) {
    super('ERR_PP_INCOMPLETE', `connection closed after ${bytes} bytes of an incomplete PROXY header`);
  }
}

/** Reads exactly one header; resolves with it and the payload bytes that followed it. The socket is paused again afterwards. */
export function readProxyHeader(
  socket: net.Socket,
  opts: { timeoutMs: number; maxV2Length: number },
): Promise<{ header: ProxyHeader; rest: Buffer }> {
  const parser = createHeaderParser({ maxV2Length: opts.maxV2Length });
  return new Promise((resolve, reject) => {
    const cleanup = (): void => {
      clearTimeout(timer);
      socket.removeListener('data', onData);
      socket.removeListener('end', onEnd);
      socket.removeListener('error', onError);
      socket.pause();
    };
    const fail = (err: Error): void => {
      cleanup();
      reject(err);
    };
    const onData = (chunk: Buffer): void => {
      let result;
      try {
        result = parser.push(chunk);
      } catch (err) {
        fail(err as Error);
        return;
      }
      if (result) {
        cleanup();
        resolve(result);
      }
    };
    const onEnd = (): void => fail(new InboundHeaderClosedError(parser.bytesBuffered));
    const onError = (err: Error): void => fail(err);
    const timer = setTimeout(() => fail(new InboundHeaderTimeoutError(opts.timeoutMs)), opts.timeoutMs);
    socket.on('data', onData);
    socket.once('end', onEnd);
    socket.once('error', onError);
    socket.resume();
  });
}
