// The splice relay: moves bytes between two connected TCP sockets with splice(2) through a pipe,
// on a few epoll worker threads, so that relayed bytes never reach JavaScript. A direction holds a
// pipe only while bytes are in flight (HAProxy's approach): each worker keeps a small pool of
// empty pipes, so an idle connection costs its two sockets and nothing more.
// TypeScript decides everything; this file only runs the syscalls and reports, once per
// connection, how it ended (done, an errno on side A or B, idle timeout, aborted) and the bytes
// written each way. Exports return an id, 0 or -errno and never throw for an OS failure.
#include <napi.h>

#include "sockaddr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <climits>
#include <string>
#include <memory>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

namespace {

// How a relay ended; exported as `relayEnd`.
enum End : int {
  kEndDone = 0,
  kEndErrorA = 1,
  kEndErrorB = 2,
  kEndIdleTimeout = 3,
  kEndAborted = 4,
  // relayConnect only: the upstream socket could not be opened or connected; the client was reset.
  kEndConnectFailed = 5,
};

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

constexpr unsigned kSpliceFlags = SPLICE_F_MOVE | SPLICE_F_NONBLOCK;
// Upper bound per splice call; the pipe's capacity is the real bound, and the kernel returns what
// fits.
constexpr size_t kSpliceMax = 1 << 20;
constexpr int kMaxEvents = 256;
constexpr int kMaxThreads = 256;
// Empty pipes a worker keeps for reuse; more are closed. Bounds what idle costs (2 descriptors
// each) while sparing a bulk transfer a pipe2() per wake-up.
constexpr size_t kPipePoolMax = 64;
// How often a connection that could not get a pipe (EMFILE, ENFILE) tries again, unless a pipe
// is freed first.
constexpr int kPipeRetryMs = 50;
// relayConnect's first bytes up to this size are sent straight to the new socket (they fit its
// send buffer and any pipe); larger ones are preloaded into a pipe on the JS thread.
constexpr size_t kFirstBytesInline = 4096;

int64_t NowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

// CLOCK_MONOTONIC in µs: the clock of process.hrtime(), so JavaScript can line times up.
double NowUs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) * 1e6 + static_cast<double>(ts.tv_nsec) / 1e3;
}

void CloseFd(int* fd) {
  if (*fd >= 0) close(*fd);
  *fd = -1;
}

struct Conn;

// One of the two sockets. canRead/canWrite cache edge-triggered readiness: set by an event,
// cleared only when a syscall returns EAGAIN.
struct Side {
  Conn* conn = nullptr;
  int fd = -1;
  bool canRead = false;
  bool canWrite = false;
};

struct Pipe {
  int r = -1;
  int w = -1;
};

// One direction: sockets[from] -> pipe -> sockets[to]. The pipe is held only while queued > 0,
// plus the span of one Move(); an empty one goes back to the worker's pool.
struct Flow {
  Pipe pipe;
  bool pipeGrown = false;  // enlarged for pending bytes: closed when empty, never pooled
  size_t queued = 0;       // bytes in the pipe
  uint64_t bytes = 0;      // bytes written to the destination socket
  bool pipeMaybeFull = false;
  bool eof = false;        // the source sent FIN
  bool shut = false;       // shutdown(SHUT_WR) done on the destination
};

struct Conn {
  uint64_t id = 0;
  Side side[2];
  Flow flow[2];  // flow[0]: side 0 (A) -> side 1 (B); flow[1]: B -> A
  uint32_t idleMs = 0;
  int64_t lastActive = 0;
  int64_t deadline = 0;  // its key in the worker's deadlines; 0 when not armed
  bool closed = false;
  bool waitingForPipe = false;  // in the worker's starved_ list
  // relayConnect: the worker opens side B itself. Until connected only side B is registered,
  // and the deadline is the connect timeout.
  bool connecting = false;
  bool hasSource = false;
  sockaddr_storage source{};
  sockaddr_storage destination{};
  socklen_t sourceLen = 0;
  socklen_t destinationLen = 0;
  uint32_t connectTimeoutMs = 0;
  // relayConnect: small first bytes (the PROXY header), sent straight to the socket once it is
  // connected; larger ones are preloaded into flow[0]'s pipe instead.
  std::string firstBytes;
  // When a worker took it, when the upstream connected (relayConnect), and when it ended (NowUs).
  double adoptedUs = 0;
  double connectedUs = 0;
};

void ClosePipe(Pipe* p) {
  CloseFd(&p->r);
  CloseFd(&p->w);
}

void CloseConnFds(Conn* c) {
  for (Side& s : c->side) CloseFd(&s.fd);
  for (Flow& f : c->flow) ClosePipe(&f.pipe);
}

struct Completion {
  uint64_t id;
  int end;
  int err;
  const char* syscall;
  uint64_t bytesAToB;
  uint64_t bytesBToA;
  double adoptedUs;
  double connectedUs;
  double endedUs;
};

struct Engine;
void Deliver(Engine* engine, std::vector<Completion>* batch);

struct Command {
  enum Kind { kAdopt, kAbort, kStop } kind;
  Conn* conn;
  uint64_t id;
};

class Worker {
 public:
  Worker(Engine* engine, int index) : engine_(engine), index_(index) {}

  int Open(int pipeSize) {
    pipeSize_ = pipeSize;
    epfd_ = epoll_create1(EPOLL_CLOEXEC);
    if (epfd_ < 0) return -errno;
    wakefd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wakefd_ < 0) return -errno;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = nullptr;  // the wake-up; every socket carries its Side
    if (epoll_ctl(epfd_, EPOLL_CTL_ADD, wakefd_, &ev) < 0) return -errno;
    return 0;
  }

  void Start() {
    thread_ = std::thread([this] { Run(); });
  }

  // From the JS thread.
  void Post(Command cmd) {
    bool wasEmpty;
    {
      std::lock_guard<std::mutex> lock(mu_);
      wasEmpty = inbox_.empty();
      inbox_.push_back(cmd);
    }
    // The worker reads the eventfd before taking the inbox, so a command pushed after that read
    // finds the inbox empty and writes again: no wake-up is lost.
    if (wasEmpty) {
      uint64_t one = 1;
      ssize_t rc;
      do rc = write(wakefd_, &one, sizeof(one));
      while (rc < 0 && errno == EINTR);
    }
  }

  // Returns how many connections were still open.
  size_t Join() {
    if (thread_.joinable()) thread_.join();
    CloseFd(&epfd_);
    CloseFd(&wakefd_);
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (Command& cmd : inbox_) {
        if (cmd.kind == Command::kAdopt) {
          CloseConnFds(cmd.conn);
          delete cmd.conn;
          closedAtStop_++;
        }
      }
      inbox_.clear();
    }
    return closedAtStop_;
  }

  ~Worker() {
    CloseFd(&epfd_);
    CloseFd(&wakefd_);
    ClosePool();
  }

  // From any thread: pipes held by connections, and empty ones in the pool; new pipes that kept
  // the kernel's default size because the requested one was refused.
  size_t PipesInUse() const { return pipesInUse_.load(std::memory_order_relaxed); }
  size_t PipesPooled() const { return pipesPooled_.load(std::memory_order_relaxed); }
  size_t PipeSizeRefused() const { return pipeSizeRefused_.load(std::memory_order_relaxed); }

 private:
  void Run() {
    char name[16];
    snprintf(name, sizeof(name), "splice-relay-%d", index_);
    pthread_setname_np(pthread_self(), name);
    epoll_event events[kMaxEvents];
    bool stop = false;
    while (!stop) {
      int n = epoll_wait(epfd_, events, kMaxEvents, Timeout());
      if (n < 0) {
        if (errno == EINTR) continue;
        break;
      }
      now_ = NowMs();
      for (int i = 0; i < n; i++) {
        if (events[i].data.ptr == nullptr) {
          stop = TakeInbox() || stop;
          continue;
        }
        Side* s = static_cast<Side*>(events[i].data.ptr);
        Conn* c = s->conn;
        if (c->closed) continue;  // closed earlier in this batch; freed after it
        uint32_t ev = events[i].events;
        if (c->connecting) {
          OnConnectEvent(c, ev);
          continue;
        }
        if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) s->canRead = true;
        if (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR)) s->canWrite = true;
        Pump(c);
        // An error the splices did not surface (that direction had nothing to do).
        if (!c->closed && (ev & EPOLLERR)) CheckSocketError(c, s == &c->side[0] ? 0 : 1);
      }
      if (!starved_.empty()) RetryStarved();
      ExpireIdle();
      for (Conn* c : graveyard_) delete c;
      graveyard_.clear();
      Deliver(engine_, &finished_);
    }
    for (auto& entry : conns_) {
      CloseConnFds(entry.second);
      delete entry.second;
      closedAtStop_++;
    }
    conns_.clear();
    starved_.clear();
    pipesInUse_.store(0, std::memory_order_relaxed);
    ClosePool();
  }

  int Timeout() {
    int64_t wait = -1;
    if (!deadlines_.empty()) {
      wait = deadlines_.begin()->first - NowMs();
      if (wait < 0) wait = 0;
    }
    if (!starved_.empty() && (wait < 0 || wait > kPipeRetryMs)) wait = kPipeRetryMs;
    return wait > INT_MAX ? INT_MAX : static_cast<int>(wait);
  }

  // A pipe for f: from the pool, else a new one. False when none can be had (out of
  // descriptors or pipe buffers): the caller waits and RetryStarved() tries again.
  bool TakePipe(Flow* f) {
    if (!pool_.empty()) {
      f->pipe = pool_.back();
      pool_.pop_back();
      pipesPooled_.store(pool_.size(), std::memory_order_relaxed);
    } else {
      int p[2];
      if (pipe2(p, O_NONBLOCK | O_CLOEXEC) < 0) return false;
      f->pipe.r = p[0];
      f->pipe.w = p[1];
      // Larger pipes move more per splice call and per wake-up. The kernel refuses beyond
      // fs.pipe-max-size, or once the user's pipes pass fs.pipe-user-pages-soft (without
      // CAP_SYS_RESOURCE): the pipe then keeps its default size, and the refusal is counted.
      if (pipeSize_ > 0 && fcntl(f->pipe.w, F_SETPIPE_SZ, pipeSize_) < 0) {
        pipeSizeRefused_.fetch_add(1, std::memory_order_relaxed);
      }
    }
    pipesInUse_.fetch_add(1, std::memory_order_relaxed);
    return true;
  }

  // Releases f's pipe. Only an empty pipe (queued == 0: every byte spliced in was spliced out)
  // may be reused; one with bytes is closed, and so are those beyond the pool's cap.
  void PutPipe(Flow* f) {
    if (f->pipe.r < 0) return;
    if (f->queued == 0 && !f->pipeGrown && pool_.size() < kPipePoolMax) {
      pool_.push_back(f->pipe);
      f->pipe = Pipe{};
      pipesPooled_.store(pool_.size(), std::memory_order_relaxed);
    } else {
      ClosePipe(&f->pipe);
    }
    f->pipeGrown = false;
    f->pipeMaybeFull = false;
    pipesInUse_.fetch_sub(1, std::memory_order_relaxed);
  }

  void ClosePool() {
    for (Pipe& p : pool_) ClosePipe(&p);
    pool_.clear();
    pipesPooled_.store(0, std::memory_order_relaxed);
  }

  // Connections that could not get a pipe: their readiness is cached (canRead), so nothing
  // is lost by waiting, but no epoll event would bring them back. Once one of them fails
  // again the rest would too; they keep their place.
  void RetryStarved() {
    std::vector<Conn*> waiting;
    waiting.swap(starved_);
    size_t i = 0;
    for (; i < waiting.size() && starved_.empty(); i++) {
      waiting[i]->waitingForPipe = false;
      Pump(waiting[i]);
    }
    starved_.insert(starved_.end(), waiting.begin() + i, waiting.end());
  }

  // Returns true when told to stop.
  bool TakeInbox() {
    uint64_t count;
    while (read(wakefd_, &count, sizeof(count)) < 0 && errno == EINTR) {
    }
    std::vector<Command> cmds;
    {
      std::lock_guard<std::mutex> lock(mu_);
      cmds.swap(inbox_);
    }
    bool stop = false;
    for (Command& cmd : cmds) {
      switch (cmd.kind) {
        case Command::kAdopt:
          Adopt(cmd.conn);
          break;
        case Command::kAbort: {
          auto it = conns_.find(cmd.id);
          if (it != conns_.end()) Finish(it->second, kEndAborted, 0, nullptr);
          break;
        }
        case Command::kStop:
          stop = true;
          break;
      }
    }
    return stop;
  }

  void Adopt(Conn* c) {
    c->adoptedUs = NowUs();
    c->lastActive = now_;
    conns_.emplace(c->id, c);
    for (Flow& f : c->flow) {
      if (f.pipe.r >= 0) pipesInUse_.fetch_add(1, std::memory_order_relaxed);  // pending bytes
    }
    if (c->connecting) {
      StartConnect(c);
      return;
    }
    for (int i = 0; i < 2; i++) {
      // Registering reports the current readiness at once, so nothing that arrived before the
      // hand-off is missed.
      epoll_event ev{};
      ev.events = EPOLLIN | EPOLLOUT | EPOLLET;
      ev.data.ptr = &c->side[i];
      if (epoll_ctl(epfd_, EPOLL_CTL_ADD, c->side[i].fd, &ev) < 0) {
        Fail(c, i, errno, "epoll_ctl");
        return;
      }
    }
    if (c->idleMs > 0) Arm(c, c->lastActive + c->idleMs);
  }

  // relayConnect, on the worker: socket, options, bind, non-blocking connect. Only side B is
  // registered until the connect completes: the client's readiness is picked up when it is
  // registered then, and its bytes wait in its receive queue meanwhile.
  void StartConnect(Conn* c) {
    int family = c->destination.ss_family;
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
    if (fd < 0) {
      FailConnect(c, errno, "socket");
      return;
    }
    c->side[1].fd = fd;
    int one = 1;
    if (c->hasSource) {
      // The same as sockets.ts openSpoofedSocket: IP(V6)_TRANSPARENT before bind (binding a
      // non-local address); the client's port when asked for, else (or when it is in use) port 0 +
      // IP_BIND_ADDRESS_NO_PORT so the kernel picks the port at connect time from the full 4-tuple.
      // No SO_MARK: the SYN would be routed to lo.
      bool v4 = family == AF_INET;
      if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
          setsockopt(fd, v4 ? SOL_IP : SOL_IPV6, v4 ? IP_TRANSPARENT : IPV6_TRANSPARENT, &one, sizeof(one)) < 0) {
        FailConnect(c, errno, "setsockopt");
        return;
      }
      bool bound = false;
      if (SockaddrPort(c->source) != 0) {
        if (bind(fd, reinterpret_cast<sockaddr*>(&c->source), c->sourceLen) == 0) {
          bound = true;
        } else if (errno == EADDRINUSE) {
          SetSockaddrPort(&c->source, 0);
        } else {
          FailConnect(c, errno, "bind");
          return;
        }
      }
      if (!bound) {
        if (setsockopt(fd, SOL_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one)) < 0) {
          FailConnect(c, errno, "setsockopt");
          return;
        }
        if (bind(fd, reinterpret_cast<sockaddr*>(&c->source), c->sourceLen) < 0) {
          FailConnect(c, errno, "bind");
          return;
        }
      }
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    int rc;
    do rc = connect(fd, reinterpret_cast<sockaddr*>(&c->destination), c->destinationLen);
    while (rc < 0 && errno == EINTR);
    if (rc < 0 && errno != EINPROGRESS) {
      FailConnect(c, errno, "connect");
      return;
    }
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT | EPOLLET;
    ev.data.ptr = &c->side[1];
    if (epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) < 0) {
      FailConnect(c, errno, "epoll_ctl");
      return;
    }
    if (c->connectTimeoutMs > 0) Arm(c, now_ + c->connectTimeoutMs);
  }

  void OnConnectEvent(Conn* c, uint32_t ev) {
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(c->side[1].fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
    if (err == 0 && (ev & (EPOLLERR | EPOLLHUP))) err = ECONNREFUSED;
    if (err != 0) {
      FailConnect(c, err, "connect");
      return;
    }
    if (!(ev & EPOLLOUT)) return;
    c->connectedUs = NowUs();
    c->connecting = false;
    if (c->deadline != 0) {
      deadlines_.erase({c->deadline, c});
      c->deadline = 0;
    }
    c->side[1].canWrite = true;
    if (ev & EPOLLIN) c->side[1].canRead = true;
    c->lastActive = now_;
    epoll_event cev{};
    cev.events = EPOLLIN | EPOLLOUT | EPOLLET;
    cev.data.ptr = &c->side[0];
    if (epoll_ctl(epfd_, EPOLL_CTL_ADD, c->side[0].fd, &cev) < 0) {
      Fail(c, 0, errno, "epoll_ctl");
      return;
    }
    if (c->idleMs > 0) Arm(c, c->lastActive + c->idleMs);
    if (!c->firstBytes.empty() && !SendFirstBytes(c)) return;
    // Preloaded first bytes sit in flow[0]'s pipe ahead of any client byte.
    Pump(c);
  }

  // A new connection's send buffer takes a header at once, saving a pipe and two syscalls; what
  // it does not take goes into flow[0]'s pipe, ahead of any client byte. False when it failed.
  bool SendFirstBytes(Conn* c) {
    std::string bytes;
    bytes.swap(c->firstBytes);
    ssize_t n;
    do n = send(c->side[1].fd, bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    if (n < 0 && errno != EAGAIN) {
      Fail(c, 1, errno, "send");
      return false;
    }
    size_t sent = n > 0 ? static_cast<size_t>(n) : 0;
    c->flow[0].bytes += sent;
    if (sent == bytes.size()) return true;
    Flow& f = c->flow[0];
    if (!TakePipe(&f)) {
      Fail(c, 1, errno, "pipe2");
      return false;
    }
    size_t off = sent;
    while (off < bytes.size()) {
      n = write(f.pipe.w, bytes.data() + off, bytes.size() - off);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        Fail(c, 1, n < 0 ? errno : EIO, "write");
        return false;
      }
      off += static_cast<size_t>(n);
    }
    f.queued = bytes.size() - sent;
    return true;
  }

  // The client learns of the failure by a RST (SO_LINGER {on, 0 s}), as connection.ts's
  // resetAndDestroy() does: a FIN would look like an empty response.
  void FailConnect(Conn* c, int err, const char* syscall) {
    linger reset{1, 0};
    setsockopt(c->side[0].fd, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset));
    Finish(c, kEndConnectFailed, err, syscall);
  }

  void Pump(Conn* c) {
    Move(c, 0);
    if (c->closed) return;
    Move(c, 1);
    if (c->closed) return;
    if (c->flow[0].shut && c->flow[1].shut) Finish(c, kEndDone, 0, nullptr);
  }

  // Moves what it can in one direction until a syscall would block.
  //
  // splice(socket -> pipe) returns EAGAIN both when the socket is empty and when the pipe is full,
  // and a pipe can be full with far fewer bytes than its capacity (each slot holds one skb
  // fragment, often less than a page). Telling the two apart matters with edge-triggered epoll:
  // clearing canRead on a full pipe would wait for an EPOLLIN that never comes if the peer has
  // already sent everything (a stall); keeping it on an empty socket would spin. Only an empty
  // pipe is known to have room, so EAGAIN with an empty pipe means the socket is drained; EAGAIN
  // with bytes queued means "maybe full": reading waits until a write to the destination has
  // made room. Bytes are only queued at that point when the destination is blocked (the loop
  // writes first), so its EPOLLOUT is what resumes the flow: no spin, no lost wake-up.
  // splice(pipe -> socket) is called only with bytes queued, so its EAGAIN is unambiguous.
  //
  // The pipe is taken just before reading and given back when Move ends with it empty: a pipe
  // that still holds bytes stays with its direction until the destination's EPOLLOUT drains it
  // (reading stops meanwhile, as above), so bytes never change pipes and keep their order.
  void Move(Conn* c, int d) {
    Flow& f = c->flow[d];
    Side& from = c->side[d];
    Side& to = c->side[1 - d];
    for (;;) {
      if (f.queued > 0 && to.canWrite) {
        ssize_t n = splice(f.pipe.r, nullptr, to.fd, nullptr, f.queued, kSpliceFlags);
        if (n > 0) {
          f.queued -= static_cast<size_t>(n);
          f.bytes += static_cast<uint64_t>(n);
          f.pipeMaybeFull = false;
          c->lastActive = now_;
          continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) {
          to.canWrite = false;
        } else {
          // Node ignores SIGPIPE process-wide, so a reset peer shows up here as EPIPE.
          Fail(c, 1 - d, n < 0 ? errno : EIO, "splice");
          return;
        }
      }
      if (!f.eof && from.canRead && !f.pipeMaybeFull) {
        if (f.pipe.r < 0 && !TakePipe(&f)) {
          WaitForPipe(c);
          break;
        }
        ssize_t n = splice(from.fd, nullptr, f.pipe.w, nullptr, kSpliceMax, kSpliceFlags);
        if (n > 0) {
          f.queued += static_cast<size_t>(n);
          c->lastActive = now_;
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
          Fail(c, d, errno, "splice");
          return;
        }
      }
      break;
    }
    if (f.queued == 0) PutPipe(&f);
    // Half-close: the FIN goes on only after everything before it left the pipe; the other
    // direction keeps flowing. An error from shutdown (peer already gone) surfaces on the next
    // splice or as EPOLLERR.
    if (f.eof && f.queued == 0 && !f.shut) {
      shutdown(to.fd, SHUT_WR);
      f.shut = true;
    }
  }

  void WaitForPipe(Conn* c) {
    if (c->waitingForPipe) return;
    c->waitingForPipe = true;
    starved_.push_back(c);
  }

  void CheckSocketError(Conn* c, int side) {
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(c->side[side].fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err != 0) {
      Fail(c, side, err, "splice");
    }
  }

  // A failed socket ends the connection. SO_LINGER {on, 0 s} makes close() of the other socket
  // send a RST (and drop what is still queued) instead of a FIN, so its peer learns that the
  // connection broke rather than ended cleanly: what the stream relay's resetAndDestroy() does.
  void Fail(Conn* c, int side, int err, const char* syscall) {
    linger reset{1, 0};
    setsockopt(c->side[1 - side].fd, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset));
    Finish(c, side == 0 ? kEndErrorA : kEndErrorB, err, syscall);
  }

  void Arm(Conn* c, int64_t at) {
    c->deadline = at;
    deadlines_.emplace(at, c);
  }

  void ExpireIdle() {
    while (!deadlines_.empty() && deadlines_.begin()->first <= now_) {
      Conn* c = deadlines_.begin()->second;
      deadlines_.erase(deadlines_.begin());
      c->deadline = 0;
      if (c->connecting) {
        FailConnect(c, ETIMEDOUT, "connect");
        continue;
      }
      // Activity only updates lastActive; the deadline moves when it comes due.
      int64_t due = c->lastActive + c->idleMs;
      if (due > now_) Arm(c, due);
      else Finish(c, kEndIdleTimeout, 0, nullptr);
    }
  }

  void Finish(Conn* c, int end, int err, const char* syscall) {
    c->closed = true;
    for (Side& s : c->side) {
      // Explicit: the registration belongs to the open file description, which outlives this fd
      // if anything else still holds it.
      if (s.fd >= 0) epoll_ctl(epfd_, EPOLL_CTL_DEL, s.fd, nullptr);
    }
    for (Flow& f : c->flow) PutPipe(&f);
    CloseConnFds(c);
    if (c->deadline != 0) deadlines_.erase({c->deadline, c});
    if (c->waitingForPipe) {
      for (auto it = starved_.begin(); it != starved_.end(); ++it) {
        if (*it == c) {
          starved_.erase(it);
          break;
        }
      }
      c->waitingForPipe = false;
    }
    conns_.erase(c->id);
    graveyard_.push_back(c);  // other events of this batch may still point at it
    finished_.push_back(
        Completion{c->id, end, err, syscall, c->flow[0].bytes, c->flow[1].bytes, c->adoptedUs, c->connectedUs, NowUs()});
  }

  Engine* engine_;
  int index_;
  int pipeSize_ = 0;  // 0: the kernel's default
  int epfd_ = -1;
  int wakefd_ = -1;
  std::thread thread_;
  std::mutex mu_;
  std::vector<Command> inbox_;
  // Worker-thread only from here on.
  int64_t now_ = 0;
  std::unordered_map<uint64_t, Conn*> conns_;
  std::set<std::pair<int64_t, Conn*>> deadlines_;  // live connections with an idle timeout
  std::vector<Conn*> graveyard_;
  std::vector<Completion> finished_;
  std::vector<Pipe> pool_;         // empty pipes, at most kPipePoolMax
  std::vector<Conn*> starved_;     // live connections waiting for a pipe
  size_t closedAtStop_ = 0;
  // Written by the worker only; read by relayStats().
  std::atomic<size_t> pipesInUse_{0};
  std::atomic<size_t> pipesPooled_{0};
  std::atomic<size_t> pipeSizeRefused_{0};
};

struct Engine {
  napi_env env = nullptr;
  napi_threadsafe_function tsfn = nullptr;
  std::vector<std::unique_ptr<Worker>> workers;
  int pipeSize = 0;
  std::mutex doneMu;
  std::vector<Completion> done;
  // JS thread only.
  int64_t live = 0;
  bool referenced = false;
  bool closing = false;
};

// Deliberately never destroyed while threads may run: process.exit() runs static destructors
// without stopping them.
Engine* g_engine = nullptr;
// Never reused, also across engines, so a stale id cannot abort another connection.
uint64_t g_nextId = 1;

// Worker side: one thread-safe call per batch; completions queued while one is pending ride along.
void Deliver(Engine* engine, std::vector<Completion>* batch) {
  if (batch->empty()) return;
  bool wasEmpty;
  {
    std::lock_guard<std::mutex> lock(engine->doneMu);
    wasEmpty = engine->done.empty();
    engine->done.insert(engine->done.end(), batch->begin(), batch->end());
  }
  batch->clear();
  if (wasEmpty) napi_call_threadsafe_function(engine->tsfn, nullptr, napi_tsfn_nonblocking);
}

void CallJs(napi_env env, napi_value callback, void* context, void* /*data*/) {
  Engine* e = static_cast<Engine*>(context);
  if (env == nullptr || e->closing) return;
  std::vector<Completion> batch;
  {
    std::lock_guard<std::mutex> lock(e->doneMu);
    batch.swap(e->done);
  }
  e->live -= static_cast<int64_t>(batch.size());
  // Idle: let the event loop end; a live relay holds it like a socket would.
  if (e->live == 0 && e->referenced) {
    napi_unref_threadsafe_function(env, e->tsfn);
    e->referenced = false;
  }
  napi_value undefined;
  napi_get_undefined(env, &undefined);
  for (const Completion& c : batch) {
    napi_value argv[9];
    napi_create_double(env, static_cast<double>(c.id), &argv[0]);
    napi_create_int32(env, c.end, &argv[1]);
    napi_create_int32(env, -c.err, &argv[2]);
    if (c.syscall != nullptr) napi_create_string_utf8(env, c.syscall, NAPI_AUTO_LENGTH, &argv[3]);
    else argv[3] = undefined;
    napi_create_double(env, static_cast<double>(c.bytesAToB), &argv[4]);
    napi_create_double(env, static_cast<double>(c.bytesBToA), &argv[5]);
    napi_create_double(env, c.adoptedUs, &argv[6]);
    napi_create_double(env, c.connectedUs, &argv[7]);
    napi_create_double(env, c.endedUs, &argv[8]);
    if (napi_call_function(env, undefined, callback, 9, argv, nullptr) != napi_ok) break;
  }
}

void FinalizeEngine(napi_env /*env*/, void* data, void* /*hint*/) {
  delete static_cast<Engine*>(data);
}

// Stops the workers (closing whatever they still hold, unreported) and releases the callback.
// The Engine itself is freed by the thread-safe function's finalizer.
size_t StopEngine(Engine* e) {
  e->closing = true;
  for (auto& w : e->workers) w->Post(Command{Command::kStop, nullptr, 0});
  size_t closed = 0;
  for (auto& w : e->workers) closed += w->Join();
  e->workers.clear();
  {
    std::lock_guard<std::mutex> lock(e->doneMu);
    e->done.clear();
  }
  e->live = 0;
  if (g_engine == e) g_engine = nullptr;
  napi_release_threadsafe_function(e->tsfn, napi_tsfn_release);
  return closed;
}

void CleanupHook(void* arg) {
  StopEngine(static_cast<Engine*>(arg));
}

// Worker threads take no signals: Node handles them on the main thread.
int StartThreads(Engine* e) {
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  for (auto& w : e->workers) w->Start();
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  return 0;
}

// The size a pipe gets when pipeSize is asked for (0: the default), or -errno when refused.
int ProbePipeSize(int pipeSize) {
  int p[2];
  if (pipe2(p, O_CLOEXEC) < 0) return -errno;
  int rc = pipeSize > 0 ? fcntl(p[1], F_SETPIPE_SZ, pipeSize) : fcntl(p[1], F_GETPIPE_SZ);
  if (rc < 0) rc = -errno;
  close(p[0]);
  close(p[1]);
  return rc;
}

// relayInit(threads, onEnd, pipeSize?): starts the workers. onEnd(id, end, -errno, syscall,
// bytesAToB, bytesBToA, adoptedUs, connectedUs, endedUs) is called on the JS thread once per
// relay; the times are CLOCK_MONOTONIC µs (connectedUs 0 unless relayConnect connected).
// pipeSize: bytes per pipe (0 or absent: the kernel's default); the kernel rounds it up to a power
// of two pages. -EBUSY if already running; the errno of F_SETPIPE_SZ (EPERM beyond
// fs.pipe-max-size) if a pipe of that size cannot be had now.
Napi::Value RelayInitFn(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (g_engine != nullptr) return Napi::Number::New(env, -EBUSY);
  int threads = info[0].As<Napi::Number>().Int32Value();
  if (threads < 1 || threads > kMaxThreads || !info[1].IsFunction()) return Napi::Number::New(env, -EINVAL);
  int pipeSize = info.Length() > 2 && info[2].IsNumber() ? info[2].As<Napi::Number>().Int32Value() : 0;
  if (pipeSize < 0) return Napi::Number::New(env, -EINVAL);
  int granted = ProbePipeSize(pipeSize);
  if (granted < 0) return Napi::Number::New(env, granted);
  auto* e = new Engine();
  e->env = env;
  e->pipeSize = granted;
  for (int i = 0; i < threads; i++) {
    e->workers.push_back(std::make_unique<Worker>(e, i));
    int rc = e->workers.back()->Open(pipeSize > 0 ? granted : 0);
    if (rc < 0) {
      delete e;
      return Napi::Number::New(env, rc);
    }
  }
  napi_value name;
  napi_create_string_utf8(env, "tproxy:splice-relay", NAPI_AUTO_LENGTH, &name);
  napi_status status = napi_create_threadsafe_function(env, info[1], nullptr, name, 0, 1, e, FinalizeEngine, e,
                                                       CallJs, &e->tsfn);
  if (status != napi_ok) {
    delete e;
    return Napi::Number::New(env, -ENOMEM);
  }
  napi_unref_threadsafe_function(env, e->tsfn);
  StartThreads(e);
  // Registered after the thread-safe function's own hook, so it runs first (hooks run in reverse):
  // the workers stop before the function they call goes away.
  napi_add_env_cleanup_hook(env, CleanupHook, e);
  g_engine = e;
  return Napi::Number::New(env, 0);
}

// Puts bytes Node had already read into a new pipe, ahead of anything spliced later. Created here
// on the JS thread (the pools belong to the workers); it grows only when the bytes exceed its
// default capacity, and the worker then closes rather than pools it.
int Preload(Flow* f, const Napi::Value& value) {
  if (!value.IsBuffer()) return value.IsUndefined() || value.IsNull() ? 0 : -EINVAL;
  auto buf = value.As<Napi::Buffer<uint8_t>>();
  size_t len = buf.Length();
  if (len == 0) return 0;
  int p[2];
  if (pipe2(p, O_NONBLOCK | O_CLOEXEC) < 0) return -errno;
  f->pipe.r = p[0];
  f->pipe.w = p[1];
  int cap = fcntl(f->pipe.w, F_GETPIPE_SZ);
  if (cap < 0) return -errno;
  // The workers' size, so that the pipe is like the others once it is pooled.
  if (g_engine->pipeSize > cap && fcntl(f->pipe.w, F_SETPIPE_SZ, g_engine->pipeSize) >= 0) cap = g_engine->pipeSize;
  if (static_cast<size_t>(cap) < len) {
    if (len > INT_MAX) return -EINVAL;
    if (fcntl(f->pipe.w, F_SETPIPE_SZ, static_cast<int>(len)) < 0) return -errno;
    f->pipeGrown = true;
  }
  size_t off = 0;
  while (off < len) {
    ssize_t n = write(f->pipe.w, buf.Data() + off, len - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return n < 0 ? -errno : -EIO;
    off += static_cast<size_t>(n);
  }
  f->queued = len;
  return 0;
}

int SetNonBlocking(int fd) {
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) return -errno;
  return 0;
}

// Gives a new connection an id and hands it to its worker; the completion callback keeps the
// event loop alive while any relay is live.
uint64_t HandToWorker(Napi::Env env, std::unique_ptr<Conn> c) {
  Engine* e = g_engine;
  c->id = g_nextId++;
  for (Side& s : c->side) s.conn = c.get();
  uint64_t id = c->id;
  e->workers[id % e->workers.size()]->Post(Command{Command::kAdopt, c.release(), id});
  if (e->live++ == 0 && !e->referenced) {
    napi_ref_threadsafe_function(env, e->tsfn);
    e->referenced = true;
  }
  return id;
}

// relayStart(fdA, fdB, idleTimeoutMs, pendingToB?, pendingToA?) -> id or -errno. Takes ownership
// of both fds, also on failure. pendingToB/pendingToA: bytes already read from A/B, sent first.
Napi::Value RelayStartFn(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fdA = info[0].As<Napi::Number>().Int32Value();
  int fdB = info[1].As<Napi::Number>().Int32Value();
  int64_t idleMs = info[2].As<Napi::Number>().Int64Value();
  auto c = std::make_unique<Conn>();
  c->side[0].fd = fdA;
  c->side[1].fd = fdB;
  int rc = 0;
  if (g_engine == nullptr || idleMs < 0 || idleMs > UINT32_MAX) rc = -EINVAL;
  c->idleMs = static_cast<uint32_t>(idleMs < 0 ? 0 : idleMs);
  // Non-blocking sockets make splice(socket -> pipe) return EAGAIN instead of sleeping; they
  // already are (libuv set it on the shared file description), this only makes it explicit.
  for (int i = 0; i < 2 && rc == 0; i++) rc = SetNonBlocking(c->side[i].fd);
  if (rc == 0) rc = Preload(&c->flow[0], info[3]);
  if (rc == 0) rc = Preload(&c->flow[1], info[4]);
  if (rc < 0) {
    CloseConnFds(c.get());
    return Napi::Number::New(env, rc);
  }
  return Napi::Number::New(env, static_cast<double>(HandToWorker(env, std::move(c))));
}

// A sockaddr of the given family from an address text; false if it is not one.
bool ToSockaddr(int family, const std::string& host, int port, sockaddr_storage* ss, socklen_t* len) {
  *len = ToSockaddr(host, port, ss);
  return *len != 0 && ss->ss_family == family;
}

// SO_LINGER {on, 0 s}: close() then sends a RST instead of a FIN.
int ResetAndClose(int fd) {
  linger reset{1, 0};
  int rc = setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset));
  int err = rc < 0 ? errno : 0;
  close(fd);
  return -err;
}

// relayConnect(clientFd, family, sourceAddress | "", sourcePort, address, port, connectTimeoutMs,
// idleTimeoutMs, firstBytes?) -> id or -errno. A worker opens the upstream socket (bound to
// sourceAddress with IP(V6)_TRANSPARENT when given, and to sourcePort unless it is 0 or in use),
// connects it (non-blocking, within connectTimeoutMs; 0 = no limit), writes firstBytes before any
// client byte, then relays like relayStart. A failure to open or connect resets the client and
// ends the relay CONNECT_FAILED with the errno (ETIMEDOUT for the timeout) and the failed syscall.
// Takes ownership of clientFd, also on failure: an invalid argument resets the client and returns
// -EINVAL.
Napi::Value RelayConnectFn(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int clientFd = info[0].As<Napi::Number>().Int32Value();
  if (clientFd < 0) return Napi::Number::New(env, -EBADF);
  auto c = std::make_unique<Conn>();
  c->side[0].fd = clientFd;
  int rc = 0;
  if (g_engine == nullptr || info.Length() < 8 || !info[1].IsNumber() || !info[2].IsString() || !info[3].IsNumber() ||
      !info[4].IsString() || !info[5].IsNumber() || !info[6].IsNumber() || !info[7].IsNumber()) {
    rc = -EINVAL;
  }
  if (rc == 0) {
    int family = info[1].As<Napi::Number>().Int32Value();
    std::string source = info[2].As<Napi::String>().Utf8Value();
    int sourcePort = info[3].As<Napi::Number>().Int32Value();
    std::string address = info[4].As<Napi::String>().Utf8Value();
    int port = info[5].As<Napi::Number>().Int32Value();
    int64_t connectMs = info[6].As<Napi::Number>().Int64Value();
    int64_t idleMs = info[7].As<Napi::Number>().Int64Value();
    if (port < 1 || port > 65535 || sourcePort < 0 || sourcePort > 65535 || connectMs < 0 || connectMs > UINT32_MAX ||
        idleMs < 0 || idleMs > UINT32_MAX || !ToSockaddr(family, address, port, &c->destination, &c->destinationLen)) {
      rc = -EINVAL;
    } else if (!source.empty()) {
      c->hasSource = true;
      if (!ToSockaddr(family, source, sourcePort, &c->source, &c->sourceLen)) rc = -EINVAL;
    }
    c->connectTimeoutMs = static_cast<uint32_t>(connectMs < 0 ? 0 : connectMs);
    c->idleMs = static_cast<uint32_t>(idleMs < 0 ? 0 : idleMs);
  }
  if (rc == 0) rc = SetNonBlocking(clientFd);
  if (rc == 0 && info.Length() > 8) {
    if (info[8].IsBuffer() && info[8].As<Napi::Buffer<uint8_t>>().Length() <= kFirstBytesInline) {
      auto buf = info[8].As<Napi::Buffer<uint8_t>>();
      c->firstBytes.assign(reinterpret_cast<const char*>(buf.Data()), buf.Length());
    } else {
      rc = Preload(&c->flow[0], info[8]);
    }
  }
  if (rc < 0) {
    for (Flow& f : c->flow) ClosePipe(&f.pipe);
    ResetAndClose(clientFd);
    return Napi::Number::New(env, rc);
  }
  c->connecting = true;
  return Napi::Number::New(env, static_cast<double>(HandToWorker(env, std::move(c))));
}

// relayReset(fd): closes a socket with a RST (a refused connection). 0 or -errno of the
// SO_LINGER setsockopt; the fd is closed either way.
Napi::Value RelayResetFn(const Napi::CallbackInfo& info) {
  int fd = info[0].As<Napi::Number>().Int32Value();
  if (fd < 0) return Napi::Number::New(info.Env(), -EBADF);
  return Napi::Number::New(info.Env(), ResetAndClose(fd));
}

// relayAbort(id): closes both sockets; the relay reports end ABORTED (unless it ended already).
Napi::Value RelayAbortFn(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  double raw = info[0].As<Napi::Number>().DoubleValue();
  Engine* e = g_engine;
  if (e == nullptr || !(raw >= 1) || raw >= static_cast<double>(g_nextId)) return Napi::Number::New(env, -ENOENT);
  uint64_t id = static_cast<uint64_t>(raw);
  e->workers[id % e->workers.size()]->Post(Command{Command::kAbort, nullptr, id});
  return Napi::Number::New(env, 0);
}

// relayStats() -> { live, threads, pipesInUse, pipesPooled, pipePoolMax, pipeSize,
// pipeSizeRefused }: relays started and not yet reported; pipes held by connections (bytes in
// flight), empty pipes kept by the workers, and the most each worker keeps; the bytes a new pipe
// gets, and how many new pipes the kernel refused that size (they kept its default). Pipe counts
// are a moment's snapshot of running threads.
Napi::Value RelayStatsFn(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object stats = Napi::Object::New(env);
  Engine* e = g_engine;
  size_t inUse = 0;
  size_t pooled = 0;
  size_t refused = 0;
  if (e != nullptr) {
    for (auto& w : e->workers) {
      inUse += w->PipesInUse();
      pooled += w->PipesPooled();
      refused += w->PipeSizeRefused();
    }
  }
  stats.Set("live", Napi::Number::New(env, e ? static_cast<double>(e->live) : 0));
  stats.Set("threads", Napi::Number::New(env, e ? static_cast<double>(e->workers.size()) : 0));
  stats.Set("pipesInUse", Napi::Number::New(env, static_cast<double>(inUse)));
  stats.Set("pipesPooled", Napi::Number::New(env, static_cast<double>(pooled)));
  stats.Set("pipePoolMax", Napi::Number::New(env, static_cast<double>(kPipePoolMax)));
  stats.Set("pipeSize", Napi::Number::New(env, e ? e->pipeSize : 0));
  stats.Set("pipeSizeRefused", Napi::Number::New(env, static_cast<double>(refused)));
  return stats;
}

// relayShutdown() -> how many relays were still open (closed without a report).
Napi::Value RelayShutdownFn(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Engine* e = g_engine;
  if (e == nullptr) return Napi::Number::New(env, 0);
  napi_remove_env_cleanup_hook(env, CleanupHook, e);
  return Napi::Number::New(env, static_cast<double>(StopEngine(e)));
}

}  // namespace

void RelayInit(Napi::Env env, Napi::Object exports) {
  exports.Set("relayInit", Napi::Function::New(env, RelayInitFn, "relayInit"));
  exports.Set("relayStart", Napi::Function::New(env, RelayStartFn, "relayStart"));
  exports.Set("relayAbort", Napi::Function::New(env, RelayAbortFn, "relayAbort"));
  exports.Set("relayConnect", Napi::Function::New(env, RelayConnectFn, "relayConnect"));
  exports.Set("relayReset", Napi::Function::New(env, RelayResetFn, "relayReset"));
  exports.Set("relayStats", Napi::Function::New(env, RelayStatsFn, "relayStats"));
  exports.Set("relayShutdown", Napi::Function::New(env, RelayShutdownFn, "relayShutdown"));
  Napi::Object end = Napi::Object::New(env);
  end.Set("DONE", static_cast<int>(kEndDone));
  end.Set("ERROR_A", static_cast<int>(kEndErrorA));
  end.Set("ERROR_B", static_cast<int>(kEndErrorB));
  end.Set("IDLE_TIMEOUT", static_cast<int>(kEndIdleTimeout));
  end.Set("ABORTED", static_cast<int>(kEndAborted));
  end.Set("CONNECT_FAILED", static_cast<int>(kEndConnectFailed));
  exports.Set("relayEnd", end);
}
