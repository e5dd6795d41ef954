// The bytes the soak sends: per connection and direction a seeded pseudo-random stream
// (AES-128-CTR keystream: fast, native, and the same on both ends), so that the receiving end
// can regenerate what was sent and compare every byte as it arrives, and name the offset of the
// first wrong one. Pure (no I/O).
import { createCipheriv, createHash } from 'node:crypto';

const ZEROS = Buffer.alloc(64 * 1024);

/** The stream of one direction ("up": client to backend, "down": backend to client) of one connection. */
export function keystream(seed, direction) {
  const key = createHash('sha256').update(`soak-stream/${seed}/${direction}`).digest().subarray(0, 16);
  const cipher = createCipheriv('aes-128-ctr', key, Buffer.alloc(16));
  let offset = 0;
  return {
    /** The next n bytes. */
    next(n) {
      offset += n;
      if (n <= ZEROS.length) return cipher.update(ZEROS.subarray(0, n));
      return cipher.update(Buffer.alloc(n));
    },
    get offset() {
      return offset;
    },
  };
}

/**
 * Checks received bytes against the stream. After the first wrong byte it stops comparing:
 * `verified` is the length of the correct prefix, `mismatchAt` the offset of that byte.
 */
export function createVerifier(seed, direction) {
  const expected = keystream(seed, direction);
  let verified = 0;
  let received = 0;
  let mismatchAt = null;
  return {
    push(chunk) {
      received += chunk.length;
      if (mismatchAt !== null) return false;
      const want = expected.next(chunk.length);
      if (want.equals(chunk)) {
        verified += chunk.length;
        return true;
      }
      let i = 0;
      while (chunk[i] === want[i]) i++;
      mismatchAt = verified + i;
      verified += i;
      return false;
    },
    get verified() {
      return verified;
    },
    get received() {
      return received;
    },
    get mismatchAt() {
      return mismatchAt;
    },
  };
}

/** A connection's seed: the run's seed and the connection's id. */
export function connectionSeed(runSeed, id) {
  return createHash('sha256').update(`${runSeed}/${id}`).digest('hex').slice(0, 24);
}
