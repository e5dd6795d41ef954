#include "sockmap.h"

#include <errno.h>
#include <linux/bpf.h>
#include <netinet/in.h>
#include <linux/sockios.h>
#include <linux/tcp.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>

namespace tpi {

namespace {

long Bpf(int cmd, bpf_attr* attr) { return syscall(__NR_bpf, cmd, attr, sizeof(*attr)); }

int CreateHash(uint32_t entries) {
  bpf_attr a;
  memset(&a, 0, sizeof(a));
  a.map_type = BPF_MAP_TYPE_SOCKHASH;
  a.key_size = sizeof(uint64_t);
  a.value_size = sizeof(uint64_t);  // a descriptor from user space
  a.max_entries = entries;
  int fd = static_cast<int>(Bpf(BPF_MAP_CREATE, &a));
  return fd < 0 ? -errno : fd;
}

int Update(int map, uint64_t key, int fd) {
  uint64_t value = static_cast<uint64_t>(fd);
  bpf_attr a;
  memset(&a, 0, sizeof(a));
  a.map_fd = static_cast<uint32_t>(map);
  a.key = reinterpret_cast<uint64_t>(&key);
  a.value = reinterpret_cast<uint64_t>(&value);
  a.flags = BPF_NOEXIST;
  return Bpf(BPF_MAP_UPDATE_ELEM, &a) < 0 ? -errno : 0;
}

void Delete(int map, uint64_t key) {
  bpf_attr a;
  memset(&a, 0, sizeof(a));
  a.map_fd = static_cast<uint32_t>(map);
  a.key = reinterpret_cast<uint64_t>(&key);
  Bpf(BPF_MAP_DELETE_ELEM, &a);
}

int Cookie(int fd, uint64_t* out) {
  socklen_t len = sizeof(*out);
  return getsockopt(fd, SOL_SOCKET, SO_COOKIE, out, &len) < 0 ? -errno : 0;
}

constexpr bpf_insn Insn(uint8_t code, uint8_t dst, uint8_t src, int16_t off, int32_t imm) {
  return bpf_insn{code, dst, src, off, imm};
}

// The verdict program, by hand (see sockmap.h):
//   if (skb->len == 0) return SK_DROP;
//   u64 key = bpf_get_socket_cookie(skb);
//   return bpf_sk_redirect_hash(skb, &peers, &key, 0);   // SK_PASS, or SK_DROP without a peer
int LoadVerdict(int peers) {
  const bpf_insn insns[] = {
      Insn(BPF_LDX | BPF_MEM | BPF_W, BPF_REG_0, BPF_REG_1, offsetof(__sk_buff, len), 0),
      Insn(BPF_JMP | BPF_JEQ | BPF_K, BPF_REG_0, 0, 10, 0),  // to exit, r0 = 0 = SK_DROP
      Insn(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_6, BPF_REG_1, 0, 0),
      Insn(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_get_socket_cookie),
      Insn(BPF_STX | BPF_MEM | BPF_DW, BPF_REG_10, BPF_REG_0, -8, 0),
      Insn(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_1, BPF_REG_6, 0, 0),
      Insn(BPF_LD | BPF_IMM | BPF_DW, BPF_REG_2, BPF_PSEUDO_MAP_FD, 0, peers),
      Insn(0, 0, 0, 0, 0),
      Insn(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_3, BPF_REG_10, 0, 0),
      Insn(BPF_ALU64 | BPF_ADD | BPF_K, BPF_REG_3, 0, 0, -8),
      Insn(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_4, 0, 0, 0),
      Insn(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_sk_redirect_hash),
      Insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0),
  };
  bpf_attr a;
  memset(&a, 0, sizeof(a));
  a.prog_type = BPF_PROG_TYPE_SK_SKB;
  a.expected_attach_type = BPF_SK_SKB_STREAM_VERDICT;
  a.insns = reinterpret_cast<uint64_t>(insns);
  a.insn_cnt = sizeof(insns) / sizeof(insns[0]);
  a.license = reinterpret_cast<uint64_t>("GPL");  // the sockmap helpers are GPL-only
  int fd = static_cast<int>(Bpf(BPF_PROG_LOAD, &a));
  return fd < 0 ? -errno : fd;
}

// TCP states (include/net/tcp_states.h).
enum : uint8_t { kFinWait1 = 4, kFinWait2 = 5, kTimeWait = 6, kClose = 7, kCloseWait = 8, kLastAck = 9, kClosing = 11 };

}  // namespace

SockmapRelay::~SockmapRelay() {
  for (int* fd : {&prog_, &members_, &peers_}) {
    if (*fd >= 0) close(*fd);
    *fd = -1;
  }
}

int SockmapRelay::Open(uint32_t connections) {
  // Two sockets per connection; a SOCKHASH allocates its buckets up front (16 bytes each).
  uint32_t entries = static_cast<uint32_t>(std::min<uint64_t>(2ull * std::max<uint32_t>(connections, 1), 1u << 21));
  peers_ = CreateHash(entries);
  if (peers_ < 0) return peers_;
  members_ = CreateHash(entries);
  if (members_ < 0) return members_;
  prog_ = LoadVerdict(peers_);
  if (prog_ < 0) return prog_;
  bpf_attr a;
  memset(&a, 0, sizeof(a));
  a.target_fd = static_cast<uint32_t>(members_);
  a.attach_bpf_fd = static_cast<uint32_t>(prog_);
  a.attach_type = BPF_SK_SKB_STREAM_VERDICT;
  return Bpf(BPF_PROG_ATTACH, &a) < 0 ? -errno : 0;
}

int SockmapRelay::Attach(int client, int upstream) {
  uint64_t cc, uc;
  int rc = Cookie(client, &cc);
  if (rc == 0) rc = Cookie(upstream, &uc);
  if (rc < 0) return rc;
  // Both redirect targets first: a socket joins `members` (and its bytes start to move) only once
  // its peer can be found, or its first segments would be dropped.
  if ((rc = Update(peers_, cc, upstream)) < 0) return rc;
  if ((rc = Update(peers_, uc, client)) < 0) {
    Delete(peers_, cc);
    return rc;
  }
  // The upstream first: before it has our request it has nothing to send, and if it answered and
  // closed already (pp=true sent the request with the header), it cannot join (EOPNOTSUPP: only
  // ESTABLISHED sockets can) and nothing has moved yet.
  if ((rc = Update(members_, uc, upstream)) < 0) {
    Delete(peers_, cc);
    Delete(peers_, uc);
    return rc;
  }
  if ((rc = Update(members_, cc, client)) < 0) {
    // The client half-closed in the meantime. Undone only if none of the upstream's bytes wait in
    // the redirect queue (removing the sockets would drop them): then splice takes over.
    Delete(members_, uc);
    TcpCounts up, down;
    if (ReadTcpCounts(upstream, true, &up) < 0 || ReadTcpCounts(client, false, &down) < 0 || down.written < up.received) {
      return kAttachBroken;
    }
    Delete(peers_, cc);
    Delete(peers_, uc);
    return rc;
  }
  // The kick: segments that arrived before a socket joined are not seen by the program until the
  // next one arrives (which may never come: the client waits for an answer). Setting SO_RCVLOWAT
  // calls the socket's data_ready (tcp_set_rcvlowat -> tcp_data_ready), now the program's.
  int one = 1;
  if (setsockopt(client, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof(one)) < 0 ||
      setsockopt(upstream, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof(one)) < 0) {
    return kAttachBroken;
  }
  return 0;
}

int ReadTcpCounts(int fd, bool activeOpen, TcpCounts* out) {
  tcp_info info;
  memset(&info, 0, sizeof(info));
  socklen_t len = sizeof(info);
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) < 0) return -errno;
  int outq = 0;
  if (ioctl(fd, SIOCOUTQ, &outq) < 0) return -errno;
  uint8_t s = info.tcpi_state;
  // CLOSE: both FINs went (a socket still open moves from FIN_WAIT2 to CLOSE, its TIME_WAIT is a
  // separate socket), or a reset (then the connection fails anyway, and its counts may be one off).
  bool finIn = s == kCloseWait || s == kLastAck || s == kClosing || s == kTimeWait || s == kClose;
  bool finOut = s == kFinWait1 || s == kFinWait2 || s == kClosing || s == kLastAck || s == kTimeWait || s == kClose;
  // bytes_received and bytes_acked count every sequence number: the peer's FIN, and our SYN (when
  // we connected) and our FIN; SIOCOUTQ is write_seq - snd_una, our FIN included once queued.
  out->received = info.tcpi_bytes_received - (finIn ? 1 : 0);
  uint64_t sequence = info.tcpi_bytes_acked + static_cast<uint64_t>(outq);
  uint64_t extra = (activeOpen ? 1 : 0) + (finOut ? 1 : 0);
  out->written = sequence >= extra ? sequence - extra : 0;
  out->finIn = finIn;
  out->idleMs = info.tcpi_last_data_recv;
  return 0;
}

}  // namespace tpi
