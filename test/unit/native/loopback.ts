// What the addon's loopback tests share: the address, paths, a listener on a kernel-picked port,
// cleanups run after each test (last registered first), and a digest for byte-exact checks.
import { createHash } from 'node:crypto';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const HOST = '127.0.0.1';
export const MiB = 1024 * 1024;
export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

/** Registered by a test, run by runCleanups() in its file's afterEach. */
export const cleanups: (() => Promise<void> | void)[] = [];

export async function runCleanups(): Promise<void> {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
}

export function listen(server: net.Server): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, HOST, () => resolve((server.address() as net.AddressInfo).port));
  });
}

export const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
