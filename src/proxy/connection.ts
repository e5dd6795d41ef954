// One intercepted connection: who the client is, where it was going, what the registry decides,
// then the upstream connection and the relay.
import type net from 'node:net';
import type { Logger } from 'pino';
import type { InboundPpConfig, UpstreamConfig } from '../config.js';
import type { Decision } from '../registry/types.js';
import { encodeV1, encodeV2, PP2_TYPE, type ProxyHeader, type PpTlv } from '../pp/index.js';
import type { GuardRefusal } from './guard.js';
import { readProxyHeader } from './inbound-pp.js';
import { connectUpstream, type Endpoint } from './upstream.js';
import type { Relay } from './relay.js';

/** Moves bytes between the two connected sockets until both directions end (stream or splice). */
export type RelayStarter = (client: net.Socket, upstream: net.Socket, idleTimeoutMs: number) => Relay;

export interface ProxyStats {
  accepted: number;
  active: number;
  completed: number;
  refused: number;
  overCapacity: number;
  ppRejected: number;
  connectFailed: number;
  bytesFromClients: number;
  bytesToClients: number;
}

export function createStats(): ProxyStats {
  return { accepted: 0, active: 0, completed: 0, refused: 0, overCapacity: 0, ppRejected: 0, connectFailed: 0, bytesFromClients: 0, bytesToClients: 0 };
}

export interface ConnectionDeps {
  readonly logger: Logger;
  readonly decide: (ip: string, port: number) => Decision;
  /** The destination guard (guard.ts): a refusal code, or null when the destination may be relayed. */
  readonly guard: (ip: string, port: number) => GuardRefusal | null;
  readonly isTrustedSource: (ip: string) => boolean;
  readonly upstream: UpstreamConfig;
  readonly inboundPp: InboundPpConfig;
  readonly stats: ProxyStats;
  /** Live relays, so that shutdown can end them. */
  readonly relays: Set<Relay>;
  readonly startRelay: RelayStarter;
}

/** TLVs of an inbound header that keep their meaning one hop further (see README). */
const FORWARDED_TLVS = new Set<number>([PP2_TYPE.ALPN, PP2_TYPE.AUTHORITY, PP2_TYPE.UNIQUE_ID, PP2_TYPE.SSL]);

function clientFromHeader(header: ProxyHeader, peer: Endpoint): Endpoint {
  // LOCAL, UNKNOWN, UNSPEC and UNIX carry no usable IP source: the real connection's peer counts.
  if (header.command !== 'PROXY' || !header.source) return peer;
  if (header.family !== 'INET' && header.family !== 'INET6') return peer;
  return header.source;
}

export function errorFields(err: unknown): { code: string; message: string } {
  const e = err as { code?: unknown; message?: unknown };
  return { code: typeof e.code === 'string' ? e.code : 'ERR_UNKNOWN', message: String(e.message ?? err) };
}

export async function handleConnection(client: net.Socket, deps: ConnectionDeps): Promise<void> {
  const { stats } = deps;
  const startedAt = performance.now();
  const peer: Endpoint = { address: client.remoteAddress ?? '', port: client.remotePort ?? 0 };
  const destination: Endpoint = { address: client.localAddress ?? '', port: client.localPort ?? 0 };
  stats.accepted++;
  stats.active++;
  let clientError: Error | null = null;
  const onEarlyError = (err: Error): void => {
    clientError = err;
  };
  client.on('error', onEarlyError);
  const fields: Record<string, unknown> = {
    peer: `${peer.address}:${peer.port}`,
    dst: `${destination.address}:${destination.port}`,
  };
  const log = deps.logger;
  // Where the time goes (µs per phase), logged with the connection: scripts/profile-phases.mjs
  // aggregates them over a run.
  const phasesUs: Record<string, number> = {};
  let phaseStart = startedAt;
  const phase = (name: string): void => {
    const t = performance.now();
    phasesUs[name] = Math.round((t - phaseStart) * 1000);
    phaseStart = t;
  };
  const end = (reason: string, level: 'info' | 'warn', extra: Record<string, unknown> = {}, bytesIn = client.bytesRead, bytesOut = client.bytesWritten): void => {
    stats.active--;
    stats.bytesFromClients += bytesIn;
    stats.bytesToClients += bytesOut;
    if (log.isLevelEnabled(level)) log[level]({ ...fields, reason, bytesIn, bytesOut, durationMs: Math.round(performance.now() - startedAt), ...extra, phasesUs }, 'connection closed');
  };

  const refusal = deps.guard(destination.address, destination.port);
  if (refusal !== null) {
    stats.refused++;
    fields.path = 'refuse';
    client.resetAndDestroy();
    end(refusal, 'warn');
    return;
  }

  let source = peer;
  const pending: Buffer[] = [];
  let inbound: ProxyHeader | null = null;
  if (deps.isTrustedSource(peer.address)) {
    try {
      const { header, rest } = await readProxyHeader(client, deps.inboundPp);
      inbound = header;
      source = clientFromHeader(header, peer);
      if (rest.length > 0) pending.push(rest);
      fields.inbound = `v${header.version} ${header.command}`;
      phase('inboundPp');
    } catch (err) {
      stats.ppRejected++;
      client.destroy();
      end('pp-rejected', 'warn', { err: errorFields(err) });
      return;
    }
  }
  fields.client = `${source.address}:${source.port}`;

  const decision = deps.decide(destination.address, destination.port);
  phase('decide');
  fields.path = decision.kind;
  fields.decision = decision.reason;
  if (decision.instanceId) fields.instance = decision.instanceId;
  if (decision.kind === 'refuse') {
    stats.refused++;
    client.resetAndDestroy();
    end('refused', 'warn');
    return;
  }

  let upstream: net.Socket;
  try {
    upstream = await connectUpstream({
      destination,
      spoofSource: decision.kind === 'transparent' ? source : null,
      keepClientPort: deps.upstream.keepClientPort,
      timeoutMs: deps.upstream.connectTimeoutMs,
    });
  } catch (err) {
    stats.connectFailed++;
    // Reset, not FIN: the client must not mistake a failed upstream for an empty response.
    client.resetAndDestroy();
    end('connect-failed', 'warn', { err: errorFields(err) });
    return;
  }
  phase('connect');
  if (client.destroyed || clientError) {
    upstream.destroy();
    end('client-gone', 'info', clientError ? { err: errorFields(clientError) } : {});
    return;
  }

  const buffered = client.read() as Buffer | null;
  if (buffered) pending.push(buffered);
  if (decision.kind === 'proxy') {
    const header =
      deps.upstream.ppVersion === 1
        ? encodeV1(source, destination)
        : encodeV2({ source, destination, tlvs: forwardedTlvs(inbound) });
    // One write: receivers such as nginx break when the header is split across segments.
    upstream.write(pending.length > 0 ? Buffer.concat([header, ...pending]) : header);
  } else if (pending.length > 0) {
    upstream.write(pending.length === 1 ? pending[0]! : Buffer.concat(pending));
  }

  client.removeListener('error', onEarlyError);
  const relay = deps.startRelay(client, upstream, deps.upstream.idleTimeoutMs);
  deps.relays.add(relay);
  phase('setup');
  const result = await relay.done;
  phase('relay');
  deps.relays.delete(relay);
  stats.completed++;
  const abnormal = result.reason !== 'done';
  // The splice relay counts the bytes Node never saw.
  end(result.reason, abnormal && result.reason !== 'client-reset' ? 'warn' : 'info', {
    relay: result.relay,
    ...(result.error ? { err: errorFields(result.error) } : {}),
  }, result.bytesFromClient ?? client.bytesRead, result.bytesToClient ?? client.bytesWritten);
}

function forwardedTlvs(inbound: ProxyHeader | null): PpTlv[] {
  if (!inbound || inbound.version !== 2) return [];
  return inbound.tlvs.filter((t) => FORWARDED_TLVS.has(t.type));
}
