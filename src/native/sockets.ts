// Typed, throwing wrappers over the addon's socket syscalls. The only importer of the addon.
import net from 'node:net';
import { constants as osConstants } from 'node:os';
import { systemError } from '../errors.js';
import { loadAddon, type NativeAddon } from './addon.js';

const PERMISSION_HINT = 'IP_TRANSPARENT needs root or CAP_NET_ADMIN';

function check(rc: number, syscall: string, fd: number, addon: NativeAddon, details: { address?: string; port?: number; hint?: string } = {}): void {
  if (rc >= 0) return;
  if (fd >= 0) addon.close(fd);
  throw systemError(rc, syscall, rc === -osConstants.errno.EPERM ? { ...details, hint: PERMISSION_HINT } : details);
}

function familyOf(address: string): 4 | 6 {
  const f = net.isIP(address);
  if (f === 0) throw Object.assign(new TypeError(`not an IP address: ${JSON.stringify(address)}`), { code: 'ERR_INVALID_ARG_VALUE' });
  return f as 4 | 6;
}

function setTransparent(addon: NativeAddon, fd: number, family: 4 | 6): void {
  const c = addon.constants;
  // Before bind: the kernel checks the option when binding to a non-local address.
  if (family === 4) check(addon.setsockopt(fd, c.SOL_IP, c.IP_TRANSPARENT, 1), 'setsockopt', fd, addon);
  else check(addon.setsockopt(fd, c.SOL_IPV6, c.IPV6_TRANSPARENT, 1), 'setsockopt', fd, addon);
}

/** A TCP socket of the address's family with SO_REUSEADDR and IP(V6)_TRANSPARENT set. */
function openTransparentSocket(address: string): { addon: NativeAddon; fd: number; family: 4 | 6 } {
  const addon = loadAddon();
  const c = addon.constants;
  const family = familyOf(address);
  const fd = addon.socket(family === 4 ? c.AF_INET : c.AF_INET6);
  check(fd, 'socket', -1, addon);
  check(addon.setsockopt(fd, c.SOL_SOCKET, c.SO_REUSEADDR, 1), 'setsockopt', fd, addon);
  setTransparent(addon, fd, family);
  return { addon, fd, family };
}

/**
 * A listening socket that accepts connections tproxy hands it, for any destination.
 * Returns the fd, to be passed to `net.Server.listen({ fd })`.
 */
export function openTransparentListener(address: string, port: number, opts: { backlog?: number; reusePort?: boolean } = {}): number {
  const { addon, fd, family } = openTransparentSocket(address);
  const c = addon.constants;
  // Worker processes each open their own listener on the same address; the kernel spreads
  // connections over the group (tproxy's listener lookup honours SO_REUSEPORT).
  if (opts.reusePort) check(addon.setsockopt(fd, c.SOL_SOCKET, c.SO_REUSEPORT, 1), 'setsockopt', fd, addon);
  const backlog = opts.backlog ?? 4096;
  if (family === 6) check(addon.setsockopt(fd, c.SOL_IPV6, c.IPV6_V6ONLY, 1), 'setsockopt', fd, addon);
  check(addon.bind(fd, address, port), 'bind', fd, addon, { address, port });
  check(addon.listen(fd, backlog), 'listen', fd, addon, { address, port });
  return fd;
}

/**
 * An unconnected socket already bound to `sourceAddress` (the client's, not ours), for Node to
 * connect. Port 0 + IP_BIND_ADDRESS_NO_PORT lets the kernel choose the port at connect time from
 * the full 4-tuple, so many clients behind one address do not exhaust ports. With
 * `sourcePort` set the client's port is kept, falling back to an ephemeral one on EADDRINUSE.
 */
export function openSpoofedSocket(sourceAddress: string, sourcePort = 0): number {
  const { addon, fd } = openTransparentSocket(sourceAddress);
  const c = addon.constants;
  if (sourcePort !== 0) {
    const rc = addon.bind(fd, sourceAddress, sourcePort);
    if (rc === 0) return fd;
    if (rc !== -osConstants.errno.EADDRINUSE) check(rc, 'bind', fd, addon, { address: sourceAddress, port: sourcePort });
  }
  check(addon.setsockopt(fd, c.SOL_IP, c.IP_BIND_ADDRESS_NO_PORT, 1), 'setsockopt', fd, addon);
  check(addon.bind(fd, sourceAddress, 0), 'bind', fd, addon, { address: sourceAddress, port: 0 });
  return fd;
}

export function closeFd(fd: number): void {
  loadAddon().close(fd);
}
