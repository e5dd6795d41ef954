// Connection specs for the client agent: where each connection goes and how it talks. Pure.
import { LAB, PORTS } from './plan.mjs';
import { connectionSeed } from './stream.mjs';

/** The four paths: pp=false and pp=true, over IPv4 and IPv6 (the instances make 9002 pp=true). */
export const TARGETS = Object.freeze({
  v4: { host: LAB.backend, port: PORTS.verify, pp: false },
  v4pp: { host: LAB.backend, port: PORTS.verifyPp, pp: true },
  v6: { host: LAB.backend6, port: PORTS.verify, pp: false },
  v6pp: { host: LAB.backend6, port: PORTS.verifyPp, pp: true },
});

/** The load's mix: pp=false and pp=true alternating, two in every twenty (one of each) over IPv6. */
export function loadTarget(i) {
  const v6 = i % 20 >= 18;
  const pp = i % 2 === 1;
  return v6 ? (pp ? TARGETS.v6pp : TARGETS.v6) : pp ? TARGETS.v4pp : TARGETS.v4;
}

/**
 * @param {string} runSeed
 * @param {string} id unique in the run
 * @param {{ host: string, port: number, pp: boolean }} target
 * @param {{ up: object, down: object, readPause?: object, endDelayMs?: number }} plan
 * @param {{ connectTimeoutMs?: number }} [extra]
 */
export function makeSpec(runSeed, id, target, plan, extra = {}) {
  return {
    id,
    host: target.host,
    port: target.port,
    pp: target.pp,
    seed: connectionSeed(runSeed, id),
    up: plan.up,
    down: plan.down,
    ...(plan.readPause ? { readPause: plan.readPause } : {}),
    ...(plan.endDelayMs ? { endDelayMs: plan.endDelayMs } : {}),
    connectTimeoutMs: extra.connectTimeoutMs ?? 10_000,
  };
}

/** The load chunk of connection i: 512..2047 bytes, fixed per connection. */
export function loadChunk(runSeed, i) {
  const h = connectionSeed(runSeed, `chunk-${i}`);
  return 512 + (parseInt(h.slice(0, 6), 16) % 1536);
}
