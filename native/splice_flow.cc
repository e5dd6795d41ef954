#include "splice_flow.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <climits>

namespace tpi {

namespace {

constexpr unsigned kSpliceFlags = SPLICE_F_MOVE | SPLICE_F_NONBLOCK;
// Upper bound per splice call; the pipe's capacity is the real bound, and the kernel returns
// what fits.
constexpr size_t kSpliceMax = 1 << 20;

}  // namespace

// splice(socket -> pipe) returns EAGAIN both when the socket is empty and when the pipe is full,
// and a pipe can be full with far fewer bytes than its capacity (each slot holds one skb
// fragment, often less than a page). Telling the two apart matters with edge-triggered epoll:
// clearing canRead on a full pipe would wait for an EPOLLIN that never comes if the peer has
// already sent everything (a stall); keeping it on an empty socket would spin. Only an empty
// pipe is known to have room, so EAGAIN with an empty pipe means the socket is drained; EAGAIN
// with bytes queued means "maybe full": reading waits until a write to the destination has made
// room. Bytes are only queued at that point when the destination is blocked (the loop writes
// first), so its EPOLLOUT is what resumes the flow: no spin, no lost wake-up.
// splice(pipe -> socket) is called only with bytes queued, so its EAGAIN is unambiguous.
//
// The pipe is taken just before reading and given back when Move ends with it empty: a pipe
// that still holds bytes stays with its direction until the destination's EPOLLOUT drains it,
// so bytes never change pipes and keep their order.
MoveResult Move(Side& from, Side& to, Flow& f, PipePool& pool, bool closeWillFin) {
  MoveResult r;
  for (;;) {
    if (f.queued > 0 && to.canWrite) {
      ssize_t n = splice(f.pipe.r, nullptr, to.fd, nullptr, f.queued, kSpliceFlags);
      if (n > 0) {
        f.queued -= static_cast<size_t>(n);
        f.bytes += static_cast<uint64_t>(n);
        f.pipeMaybeFull = false;
        r.active = true;
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN) {
        to.canWrite = false;
      } else {
        // SIGPIPE is ignored process-wide (Node does), so a reset peer shows up here as EPIPE.
        r.status = MoveStatus::kFailed;
        r.failedSide = 1;
        r.err = n < 0 ? errno : EIO;
        r.syscall = kSysSplice;
        return r;
      }
    }
    if (!f.eof && from.canRead && !f.pipeMaybeFull) {
      if (f.pipe.r < 0 && !pool.Get(&f.pipe)) {
        r.status = MoveStatus::kNoPipe;
        break;
      }
      ssize_t n = splice(from.fd, nullptr, f.pipe.w, nullptr, kSpliceMax, kSpliceFlags);
      if (n > 0) {
        f.queued += static_cast<size_t>(n);
        r.active = true;
        continue;
      }
      if (n == 0) {
        f.eof = true;
      } else if (errno == EINTR) {
        continue;
      } else if (errno == EAGAIN) {
        if (f.queued == 0) from.canRead = false;
        else f.pipeMaybeFull = true;
      } else {
        r.status = MoveStatus::kFailed;
        r.failedSide = 0;
        r.err = errno;
        r.syscall = kSysSplice;
        return r;
      }
    }
    break;
  }
  if (f.queued == 0 && f.pipe.r >= 0) {
    pool.Put(&f.pipe, true, f.pipeGrown);
    f.pipeGrown = false;
    f.pipeMaybeFull = false;
  }
  // Half-close: the FIN goes on only after everything before it left the pipe; the other
  // direction keeps flowing. An error from shutdown (peer already gone) surfaces on the next
  // splice or as EPOLLERR.
  if (f.eof && f.queued == 0 && !f.shut) {
    if (!closeWillFin) shutdown(to.fd, SHUT_WR);
    f.shut = true;
  }
  return r;
}

int Preload(Flow& f, PipePool& pool, const uint8_t* data, size_t len) {
  if (len == 0) return 0;
  if (f.pipe.r < 0 && !pool.Get(&f.pipe)) return -errno;
  int cap = fcntl(f.pipe.w, F_GETPIPE_SZ);
  if (cap < 0) return -errno;
  if (static_cast<size_t>(cap) - f.queued < len) {
    if (len + f.queued > INT_MAX) return -EINVAL;
    if (fcntl(f.pipe.w, F_SETPIPE_SZ, static_cast<int>(len + f.queued)) < 0) return -errno;
    f.pipeGrown = true;
  }
  size_t off = 0;
  while (off < len) {
    ssize_t n = write(f.pipe.w, data + off, len - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return n < 0 ? -errno : -EIO;
    off += static_cast<size_t>(n);
  }
  f.queued += len;
  return 0;
}

}  // namespace tpi
