// The stream relay: bytes both ways with half-close and backpressure. Memory per connection is
// bounded by the sockets' high-water marks: a write that returns false pauses the other side.
import type net from 'node:net';

export type CloseReason =
  | 'done'
  | 'client-reset'
  | 'upstream-reset'
  | 'client-error'
  | 'upstream-error'
  | 'idle-timeout'
  | 'shutdown';

export interface RelayResult {
  /** Which relay moved the bytes. */
  readonly relay: 'stream' | 'splice';
  readonly reason: CloseReason;
  readonly error: (Error & { code?: string }) | null;
  /** Set by relays that move bytes Node never sees (splice): totals over the whole connection. */
  readonly bytesFromClient?: number;
  readonly bytesToClient?: number;
}

export interface Relay {
  readonly done: Promise<RelayResult>;
  /** Ends the relay now (shutdown): both sockets destroyed. */
  abort(reason: CloseReason): void;
}

function pump(from: net.Socket, to: net.Socket): void {
  from.on('data', (chunk: Buffer) => {
    if (!to.write(chunk)) from.pause();
  });
  to.on('drain', () => from.resume());
  // Half-close: the peer's FIN becomes our FIN towards the other side; the other direction
  // keeps flowing until it ends too. The FIN may already have been read (and 'end' emitted)
  // while the upstream connection was being set up.
  if (from.readableEnded) to.end();
  else from.on('end', () => to.end());
}

export function startRelay(client: net.Socket, upstream: net.Socket, idleTimeoutMs: number): Relay {
  let settle!: (r: RelayResult) => void;
  const done = new Promise<RelayResult>((resolve) => (settle = resolve));
  let finished = false;

  const finish = (reason: CloseReason, error: RelayResult['error'], resetOther: net.Socket | null): void => {
    if (finished) return;
    finished = true;
    client.setTimeout(0);
    upstream.setTimeout(0);
    if (resetOther) resetOther.resetAndDestroy();
    client.destroy();
    upstream.destroy();
    settle({ relay: 'stream', reason, error });
  };

  const isReset = (err: Error & { code?: string }): boolean => err.code === 'ECONNRESET' || err.code === 'EPIPE';
  client.on('error', (err: Error & { code?: string }) =>
    finish(isReset(err) ? 'client-reset' : 'client-error', err, upstream),
  );
  upstream.on('error', (err: Error & { code?: string }) =>
    finish(isReset(err) ? 'upstream-reset' : 'upstream-error', err, client),
  );

  let closed = 0;
  const onClose = (): void => {
    if (++closed === 2) finish('done', null, null);
  };
  // 'close' after both directions ended cleanly (allowHalfOpen keeps each socket open until then).
  client.on('close', (hadError) => (hadError ? undefined : onClose()));
  upstream.on('close', (hadError) => (hadError ? undefined : onClose()));

  if (idleTimeoutMs > 0) {
    const onIdle = (): void => finish('idle-timeout', null, null);
    client.setTimeout(idleTimeoutMs, onIdle);
    upstream.setTimeout(idleTimeoutMs, onIdle);
  }

  pump(client, upstream);
  pump(upstream, client);
  client.resume();
  upstream.resume();
  return { done, abort: (reason) => finish(reason, null, null) };
}
