// The SOCKMAP relay (an experiment, issue 16 item 5): instead of splicing through pipes on the
// loop thread, the kernel moves each segment from one socket to its peer. Two SOCKHASH maps and
// one sk_skb stream-verdict program, assembled here and loaded with the raw bpf(2) syscall (no
// clang or libbpf, at build or at install time):
//   peers:   key = a socket's cookie, value = the other socket of its connection (redirect target)
//   members: key = a socket's cookie, value = the socket itself; the verdict program is attached
//            to this map, so a socket's bytes are redirected from the moment it joins it.
// The program: a segment without payload (a bare FIN) is dropped (redirected, it would make the
// peer's sender fail with EPIPE on a zero-length send); any other is redirected to
// peers[cookie(self)], egress (the peer sends it).
//
// What the kernel does not do, and the loop must: pass a FIN on (a FIN is never redirected) once
// every byte before it has left the redirect queue, count bytes, notice idleness (the loop is not
// woken per segment any more). All three from TCP_INFO and SIOCOUTQ, see TcpCounts.
#pragma once

#include <cstdint>

namespace tpi {

class SockmapRelay {
 public:
  SockmapRelay() = default;
  ~SockmapRelay();
  SockmapRelay(const SockmapRelay&) = delete;
  SockmapRelay& operator=(const SockmapRelay&) = delete;

  // Creates the maps (room for `connections` connections) and loads and attaches the program.
  // 0 or -errno (EPERM without CAP_BPF + CAP_NET_ADMIN).
  int Open(uint32_t connections);

  // Hands both sockets of a connection to the kernel: from here their bytes bypass the loop.
  // Bytes already waiting in either socket are pushed through too (see the kick in sockmap.cc).
  // 0; -errno with nothing attached (the caller relays with splice instead); or kAttachBroken:
  // half attached and not undoable without losing bytes (the caller resets the connection).
  int Attach(int client, int upstream);
  static constexpr int kAttachBroken = -100000;

 private:
  int peers_ = -1;
  int members_ = -1;
  int prog_ = -1;
};

// One socket's byte counts as the kernel keeps them.
struct TcpCounts {
  uint64_t received = 0;     // payload bytes received (without the FIN)
  uint64_t written = 0;      // payload bytes written into the socket (sent or queued; without SYN and FIN)
  bool finIn = false;        // the peer's FIN has arrived
  uint32_t idleMs = 0;       // since the last payload byte was received
};

// 0 or -errno. `activeOpen`: the socket connected (its SYN is counted in bytes_acked).
int ReadTcpCounts(int fd, bool activeOpen, TcpCounts* out);

}  // namespace tpi
