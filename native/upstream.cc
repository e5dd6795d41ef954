#include "upstream.h"

#include <netinet/tcp.h>

namespace tpi {

namespace {

UpstreamResult Failed(int fd, int err, Syscall syscall) {
  if (fd >= 0) close(fd);
  return UpstreamResult{-1, err, syscall};
}

}  // namespace

UpstreamResult ConnectUpstream(const Endpoint& destination, const Endpoint& source, uint16_t sourcePort) {
  sockaddr_storage dst;
  socklen_t dstLen = ToSockaddr(destination, destination.port, &dst);
  if (dstLen == 0) return Failed(-1, EINVAL, kSysConnect);
  int fd = socket(dst.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
  if (fd < 0) return Failed(-1, errno, kSysSocket);
  int one = 1;
  if (source.family != 0) {
    // A spoofed source must be of the destination's family (an IPv4 client header in front of
    // an IPv6 destination cannot be spoofed).
    if (source.family != destination.family) return Failed(fd, EAFNOSUPPORT, kSysBind);
    // IP(V6)_TRANSPARENT before bind: the kernel checks it when binding a non-local address
    // (needs CAP_NET_ADMIN). SO_REUSEADDR: the client's own port may be in TIME_WAIT here.
    // No SO_MARK: a SYN carrying our fwmark would be routed to lo instead of the backend.
    bool v4 = source.family == 4;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        setsockopt(fd, v4 ? SOL_IP : SOL_IPV6, v4 ? IP_TRANSPARENT : IPV6_TRANSPARENT, &one, sizeof(one)) < 0) {
      return Failed(fd, errno, kSysSetsockopt);
    }
    sockaddr_storage src;
    socklen_t srcLen;
    bool bound = false;
    if (sourcePort != 0) {
      srcLen = ToSockaddr(source, sourcePort, &src);
      if (bind(fd, reinterpret_cast<sockaddr*>(&src), srcLen) == 0) bound = true;
      else if (errno != EADDRINUSE) return Failed(fd, errno, kSysBind);
    }
    if (!bound) {
      // Port 0 + IP_BIND_ADDRESS_NO_PORT: the kernel picks the port at connect time from the full
      // 4-tuple, so many connections from one client address do not exhaust its ports.
      if (setsockopt(fd, SOL_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one)) < 0) return Failed(fd, errno, kSysSetsockopt);
      srcLen = ToSockaddr(source, 0, &src);
      if (bind(fd, reinterpret_cast<sockaddr*>(&src), srcLen) < 0) return Failed(fd, errno, kSysBind);
    }
  }
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  int rc;
  do rc = connect(fd, reinterpret_cast<sockaddr*>(&dst), dstLen);
  while (rc < 0 && errno == EINTR);
  if (rc < 0 && errno != EINPROGRESS) return Failed(fd, errno, kSysConnect);
  return UpstreamResult{fd, 0, kSysNone};
}

}  // namespace tpi
