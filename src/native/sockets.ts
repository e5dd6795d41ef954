// Typed, throwing wrappers over the addon's socket syscalls: the transparent listeners the loop
// threads accept on, and the spoofed socket doctor's backend probe connects from. (The data
// path's upstream sockets are opened by the loop threads themselves: native/upstream.cc.)
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

/**
 * A listening socket that accepts the connections tproxy hands it, for any destination: one per
 * family, shared by the loop threads. No SO_REUSEPORT: a second daemon on the same port fails
 * with EADDRINUSE instead of taking a share of the connections. Returns the fd.
 */
export function openTransparentListener(address: string, port: number, opts: { backlog?: number } = {}): number {
  const addon = loadAddon();
  const c = addon.constants;
  const family = familyOf(address);
  const fd = addon.socket(family === 4 ? c.AF_INET : c.AF_INET6);
  check(fd, 'socket', -1, addon);
  check(addon.setsockopt(fd, c.SOL_SOCKET, c.SO_REUSEADDR, 1), 'setsockopt', fd, addon);
  // Before bind: the kernel checks the option when binding to a non-local address.
  if (family === 4) check(addon.setsockopt(fd, c.SOL_IP, c.IP_TRANSPARENT, 1), 'setsockopt', fd, addon);
  else {
    check(addon.setsockopt(fd, c.SOL_IPV6, c.IPV6_TRANSPARENT, 1), 'setsockopt', fd, addon);
    check(addon.setsockopt(fd, c.SOL_IPV6, c.IPV6_V6ONLY, 1), 'setsockopt', fd, addon);
  }
  // Accepted sockets inherit it: a relay must not add Nagle's wait to what the backend sends
  // (a backend's two small writes would otherwise wait for the client's delayed ACK, ~40 ms).
  check(addon.setsockopt(fd, c.IPPROTO_TCP, c.TCP_NODELAY, 1), 'setsockopt', fd, addon);
  check(addon.bind(fd, address, port), 'bind', fd, addon, { address, port });
  check(addon.listen(fd, opts.backlog ?? 4096), 'listen', fd, addon, { address, port });
  return fd;
}

/**
 * An unconnected TCP socket bound to `sourceAddress` (not an address of this host), ready for
 * connect: the bind-before-connect of a pp=false upstream, as native/upstream.cc does it. Port 0
 * with IP_BIND_ADDRESS_NO_PORT: the kernel picks the port at connect time, from the whole
 * 4-tuple. Returns the fd.
 */
export function openSpoofedSocket(sourceAddress: string): number {
  const addon = loadAddon();
  const c = addon.constants;
  const family = familyOf(sourceAddress);
  const fd = addon.socket(family === 4 ? c.AF_INET : c.AF_INET6);
  check(fd, 'socket', -1, addon);
  check(addon.setsockopt(fd, c.SOL_SOCKET, c.SO_REUSEADDR, 1), 'setsockopt', fd, addon);
  // Before bind: it is what lets bind take an address that is not ours.
  if (family === 4) check(addon.setsockopt(fd, c.SOL_IP, c.IP_TRANSPARENT, 1), 'setsockopt', fd, addon);
  else check(addon.setsockopt(fd, c.SOL_IPV6, c.IPV6_TRANSPARENT, 1), 'setsockopt', fd, addon);
  check(addon.setsockopt(fd, c.SOL_IP, c.IP_BIND_ADDRESS_NO_PORT, 1), 'setsockopt', fd, addon);
  check(addon.bind(fd, sourceAddress, 0), 'bind', fd, addon, { address: sourceAddress, port: 0 });
  return fd;
}

export function closeFd(fd: number): void {
  loadAddon().close(fd);
}
