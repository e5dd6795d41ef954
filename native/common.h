// Helpers every part of the data path shares, once each: the clock, addresses (sockaddr <-> the
// 16-byte form the decision table keys on), and closing a socket with a reset.
#pragma once

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cstdint>

// Linux 4.2; older libc headers lack the name.
#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

namespace tpi {

// CLOCK_MONOTONIC: the clock of process.hrtime(), so JavaScript can line the stamps up.
inline int64_t NowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

inline double NowUs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) * 1e6 + static_cast<double>(ts.tv_nsec) / 1e3;
}

inline void CloseFd(int* fd) {
  if (*fd >= 0) close(*fd);
  *fd = -1;
}

// SO_LINGER {on, 0 s}: the socket's close() sends a RST instead of a FIN (and drops what is
// still queued), so the peer learns that the connection was refused or broke rather than ended
// with an empty answer. 0 or -errno.
inline int ResetOnClose(int fd) {
  linger reset{1, 0};
  return setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset)) < 0 ? -errno : 0;
}

// Closes with a RST; the fd is closed either way. 0 or -errno of the setsockopt.
inline int ResetAndClose(int fd) {
  int rc = ResetOnClose(fd);
  close(fd);
  return rc;
}

// An endpoint as the data path keeps it: IPv4 as its IPv4-mapped IPv6 form (::ffff:a.b.c.d), so
// that one 16-byte key serves both families; `family` says which the socket was.
struct Endpoint {
  uint8_t ip[16];
  uint16_t port;
  uint8_t family;  // 4 or 6; 0 = none
  uint8_t pad;
};

inline void MapV4(const void* v4, uint8_t out[16]) {
  memset(out, 0, 10);
  out[10] = 0xff;
  out[11] = 0xff;
  memcpy(out + 12, v4, 4);
}

inline Endpoint FromSockaddr(const sockaddr_storage& ss) {
  Endpoint e{};
  if (ss.ss_family == AF_INET6) {
    auto* v6 = reinterpret_cast<const sockaddr_in6*>(&ss);
    memcpy(e.ip, &v6->sin6_addr, 16);
    e.port = ntohs(v6->sin6_port);
    e.family = 6;
  } else if (ss.ss_family == AF_INET) {
    auto* v4 = reinterpret_cast<const sockaddr_in*>(&ss);
    MapV4(&v4->sin_addr, e.ip);
    e.port = ntohs(v4->sin_port);
    e.family = 4;
  }
  return e;
}

// The sockaddr of an endpoint; its length, 0 for an endpoint without a family.
inline socklen_t ToSockaddr(const Endpoint& e, uint16_t port, sockaddr_storage* ss) {
  memset(ss, 0, sizeof(*ss));
  if (e.family == 4) {
    auto* v4 = reinterpret_cast<sockaddr_in*>(ss);
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    memcpy(&v4->sin_addr, e.ip + 12, 4);
    return sizeof(sockaddr_in);
  }
  if (e.family == 6) {
    auto* v6 = reinterpret_cast<sockaddr_in6*>(ss);
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    memcpy(&v6->sin6_addr, e.ip, 16);
    return sizeof(sockaddr_in6);
  }
  return 0;
}

inline bool IsMapped(const uint8_t ip[16]) {
  static const uint8_t kPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  return memcmp(ip, kPrefix, 12) == 0;
}

}  // namespace tpi
