// Connecting to the original destination: either spoofing the client's address (pp=false) or
// from our own address (pp=true, the client's address travels in the PROXY header).
import net from 'node:net';
import { openSpoofedSocket } from '../native/sockets.js';
import { InterceptorError } from '../errors.js';

export interface Endpoint {
  readonly address: string;
  readonly port: number;
}

export interface ConnectOptions {
  readonly destination: Endpoint;
  /** Spoof this source (transparent path); null connects from the host's own address. */
  readonly spoofSource: Endpoint | null;
  readonly keepClientPort: boolean;
  readonly timeoutMs: number;
}

export class ConnectTimeoutError extends InterceptorError {
  constructor(destination: Endpoint, timeoutMs: number) {
    super('ERR_CONNECT_TIMEOUT', `connect to ${destination.address}:${destination.port} timed out after ${timeoutMs} ms`);
  }
}

/**
 * Resolves with a connected socket, or rejects with the connect error (a Node system error, or
 * ConnectTimeoutError). The socket is half-open capable and not yet reading.
 */
export function connectUpstream(opts: ConnectOptions): Promise<net.Socket> {
  const { destination, spoofSource } = opts;
  let socket: net.Socket;
  if (spoofSource) {
    // Throws synchronously (EPERM without CAP_NET_ADMIN, EADDRNOTAVAIL...).
    const fd = openSpoofedSocket(spoofSource.address, opts.keepClientPort ? spoofSource.port : 0);
    socket = new net.Socket({ fd, allowHalfOpen: true, readable: true, writable: true });
  } else {
    socket = new net.Socket({ allowHalfOpen: true });
  }
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new ConnectTimeoutError(destination, opts.timeoutMs));
    }, opts.timeoutMs);
    const onError = (err: Error): void => {
      clearTimeout(timer);
      socket.destroy();
      reject(err);
    };
    socket.once('error', onError);
    socket.connect({ port: destination.port, host: destination.address, noDelay: true }, () => {
      clearTimeout(timer);
      socket.removeListener('error', onError);
      resolve(socket);
    });
  });
}
