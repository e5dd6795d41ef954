#include "loop.h"

#include "upstream.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>

#include <algorithm>
#include <climits>
#include <cstdio>

namespace tpi {

namespace {

// accept4() calls per listener wake-up: new connections take turns with the relays' events, and
// while this thread works through them the next connection to arrive wakes an idle thread
// (HAProxy's tune.maxaccept default; 4 measured better than 1, 16 and 64 for p99 and conn/s).
constexpr int kAcceptBurst = 4;
constexpr int kMaxEvents = 256;
// How often a connection that could not get a pipe (EMFILE, ENFILE) tries again, unless a pipe
// is freed first; and how long accepting pauses when even the reserve descriptor is gone.
constexpr int kRetryMs = 50;
constexpr int kAcceptPauseMs = 100;
// A thread that stepped aside (AcceptBurst) checks again at least this often whether it is still
// ahead, even with no event of its own to wake it.
constexpr int kAsideRecheckMs = 10;
// Events wake JavaScript at most once per this many ms per thread (1 ms cost 3% more CPU per
// connection in the bench: the wake-ups, not the records).
constexpr int64_t kWakeIntervalMs = 10;
// Client bytes sent along with our PROXY header (the first request, typically).
constexpr size_t kFirstBytes = 16384;

// epoll_event.data.u64: a connection pointer (8-byte aligned) with the side in its low bits, or
// a tag for the listeners and the wake-up.
constexpr uint64_t kTagMask = 7;
constexpr uint64_t kTagListener = 2;
constexpr uint64_t kTagWake = 3;

enum State : uint8_t { kReadingHeader, kConnecting, kRelaying, kEnded };

}  // namespace

struct alignas(8) Conn {
  uint64_t id = 0;
  Side side[2];   // 0: the client, 1: the upstream
  Flow flow[2];   // 0: client -> upstream, 1: upstream -> client
  Conn* prev = nullptr;  // the loop's list of live connections
  Conn* next = nullptr;
  Conn* tprev = nullptr;  // the deadline list it is on
  Conn* tnext = nullptr;
  DeadlineList* timer = nullptr;
  int64_t deadline = 0;
  int64_t lastActive = 0;
  uint32_t idleMs = 0;  // its idle timeout (0: none), as the settings were when it connected
  State state = kReadingHeader;
  Kind kind = kNoDecision;
  Reason reason = kUnregistered;
  uint8_t inbound = 0;
  uint8_t ppVersion = 2;  // of our header, as the settings were when its connect started
  bool waitingForPipe = false;
  bool clientEnded = false;  // EOF or error on the client while its header was awaited
  uint8_t readPaused = 0;    // bit per side: EPOLLIN left out of its interest (Loop::Pump)
  uint16_t upstreamPort = 0;
  uint32_t headerInPipe = 0;  // bytes of our PROXY header that went through flow[0]'s pipe
  Endpoint peer{};
  Endpoint destination{};
  Endpoint client{};  // the peer, or the source of its PROXY header
  double acceptedUs = 0;
  double decidedUs = 0;
  double connectedUs = 0;
  std::string instanceId;
  std::string tlvs;  // from the inbound header, forwarded in ours
};

Loop::Loop(Engine* engine, size_t index, std::vector<int> listenFds)
    : engine_(engine),
      index_(index),
      listenFds_(std::move(listenFds)),
      config_(engine->config()),
      settings_(engine->config().settings),
      seen_(engine->SeenSlot(index)),
      random_(0x9E3779B97F4A7C15ull * (index + 1)),
      pipes_(engine->config().pipeSize) {}

Loop::~Loop() {
  CloseListeners();
  CloseFd(&epfd_);
  CloseFd(&wakefd_);
  CloseFd(&reserveFd_);
}

int Loop::Open() {
  epfd_ = epoll_create1(EPOLL_CLOEXEC);
  if (epfd_ < 0) return -errno;
  wakefd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wakefd_ < 0) return -errno;
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kTagWake;
  if (epoll_ctl(epfd_, EPOLL_CTL_ADD, wakefd_, &ev) < 0) return -errno;
  for (size_t i = 0; i < listenFds_.size(); i++) {
    int rc = WatchListener(i);
    if (rc < 0) return rc;
  }
  reserveFd_ = open("/dev/null", O_RDONLY | O_CLOEXEC);
  peek_.resize(ProxyHeaderMaxLength(config_.maxV2Length));
  return 0;
}

void Loop::Start() {
  thread_ = std::thread([this] { Run(); });
}

void Loop::Post(Command command) {
  commands_.fetch_or(command, std::memory_order_seq_cst);
  uint64_t one = 1;
  ssize_t rc;
  do rc = write(wakefd_, &one, sizeof(one));
  while (rc < 0 && errno == EINTR);
}

size_t Loop::Join() {
  if (thread_.joinable()) thread_.join();
  return closedAtStop_;
}

void Loop::TakeEvents(std::string* out) {
  std::lock_guard<std::mutex> lock(eventsMu_);
  out->append(events_);
  // A burst's batch can be large: give its memory back rather than keep the peak.
  if (events_.capacity() > (1u << 20)) std::string().swap(events_);
  else events_.clear();
}

// Level-triggered: what one burst leaves in the queue wakes the next iteration. EPOLLEXCLUSIVE:
// a listener shared by several threads wakes one of those blocked in epoll_wait, not all of them
// (a thread that is busy finds it ready at its next epoll_wait); alone in its group it changes
// nothing. It rules out EPOLL_CTL_MOD, hence DEL and ADD to pause and resume.
int Loop::WatchListener(size_t i) {
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLEXCLUSIVE;
  ev.data.u64 = (static_cast<uint64_t>(i) << 3) | kTagListener;
  return epoll_ctl(epfd_, EPOLL_CTL_ADD, listenFds_[i], &ev) < 0 ? -errno : 0;
}

void Loop::CloseListeners() {
  for (int& fd : listenFds_) {
    // A shared listener's other descriptors keep it open, and with it this epoll's registration,
    // which only the file's last close would remove.
    if (fd >= 0 && epfd_ >= 0) epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, nullptr);
    CloseFd(&fd);
  }
}

void Loop::Run() {
  char name[16];
  snprintf(name, sizeof(name), "tpi-loop-%zu", index_);
  pthread_setname_np(pthread_self(), name);
  epoll_event events[kMaxEvents];
  bool stop = false;
  while (!stop) {
    // Quiescent while blocked: this thread holds no table (see Engine::Reclaim).
    seen_->value.store(Engine::kOffline, std::memory_order_seq_cst);
    int n = epoll_wait(epfd_, events, kMaxEvents, Timeout());
    seen_->value.store(engine_->Epoch(), std::memory_order_seq_cst);
    table_ = engine_->CurrentTable();
    if (n < 0 && errno != EINTR) break;
    now_ = NowMs();
    for (int i = 0; i < n; i++) {
      uint64_t data = events[i].data.u64;
      uint64_t tag = data & kTagMask;
      if (tag == kTagWake) {
        uint64_t count;
        while (read(wakefd_, &count, sizeof(count)) < 0 && errno == EINTR) {
        }
        uint64_t commands = commands_.exchange(0, std::memory_order_seq_cst);
        if (commands & kSettings) settings_ = engine_->Settings();
        if (commands & kSnapshot) Snapshot();
        if (commands & kStopAccepting) CloseListeners();
        if (commands & kAbortAll) {
          while (all_ != nullptr) Finish(all_, kEndAborted, 0, kSysNone);
        }
        if (commands & kStop) stop = true;
        // Another thread stepped aside and left us the connection that woke it.
        if ((commands & kAcceptNow) && acceptPausedUntil_ == 0 && !PassOn()) {
          if (asideSince_ != 0) Rejoin();
          for (int fd : listenFds_) {
            if (fd >= 0) AcceptBurst(fd, false);
          }
        }
        continue;
      }
      if (tag == kTagListener) {
        size_t k = data >> 3;
        if (k < listenFds_.size() && listenFds_[k] >= 0) AcceptBurst(listenFds_[k]);
        continue;
      }
      Conn* c = reinterpret_cast<Conn*>(data & ~kTagMask);
      if (c->state == kEnded) continue;  // ended earlier in this batch; freed after it
      int s = static_cast<int>(tag);
      uint32_t ev = events[i].events;
      if (s == 1 && c->state == kConnecting) {
        OnUpstreamEvent(c, ev);
        continue;
      }
      if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP)) c->side[s].canRead = true;
      if (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR)) c->side[s].canWrite = true;
      if (c->state == kReadingHeader) {
        if (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) c->clientEnded = true;
        ReadHeader(c);
      } else if (c->state == kRelaying) {
        Pump(c);
        // An error the splices did not surface (that direction had nothing to do).
        if (c->state != kEnded && (ev & EPOLLERR)) {
          int err = 0;
          socklen_t len = sizeof(err);
          if (getsockopt(c->side[s].fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err != 0) Fail(c, s, err, kSysSplice);
        }
      }
      // kConnecting, client side: the readiness is cached until the relay starts.
    }
    if (!starved_.empty()) RetryStarved();
    now_ = NowMs();
    if (asideSince_ != 0) {
      int64_t least;
      LeastLoadedOther(&least);
      if (static_cast<int64_t>(liveCount_) <= least || now_ - asideSince_ >= kAsideRecheckMs) Rejoin();
    }
    Expire();
    Flush();
    for (Conn* c : graveyard_) delete c;
    graveyard_.clear();
  }
  seen_->value.store(Engine::kOffline, std::memory_order_seq_cst);
  while (all_ != nullptr) {
    Conn* c = all_;
    all_ = c->next;
    for (Side& side : c->side) CloseFd(&side.fd);
    for (Flow& f : c->flow) pipes_.Put(&f.pipe, false);
    engine_->Release();
    delete c;
    closedAtStop_++;
  }
  SetLive(0);
  CloseListeners();
  pipes_.Clear();
}

int Loop::Timeout() const {
  int64_t now = NowMs();
  int64_t wait = -1;  // -1: nothing is due, block until an event
  auto due = [&](int64_t at) {
    int64_t w = std::max<int64_t>(0, at - now);
    if (wait < 0 || w < wait) wait = w;
  };
  for (const Deadlines* d : {&headerDeadlines_, &connectDeadlines_, &idleDeadlines_}) {
    int64_t at = d->Earliest();
    if (at >= 0) due(at);
  }
  if (!starved_.empty()) due(now + kRetryMs);
  if (acceptPausedUntil_ != 0) due(acceptPausedUntil_);
  if (asideSince_ != 0) due(asideSince_ + kAsideRecheckMs);
  if (wakePending_) due(lastWakeMs_ + kWakeIntervalMs);
  return wait > INT_MAX ? INT_MAX : static_cast<int>(wait);
}

void Loop::PauseAccepting() {
  // Out of descriptors with none in reserve: the listeners stay readable, so polling them would
  // spin. They sleep a moment; the kernel's backlog holds the queue meanwhile.
  UnwatchListeners();
  acceptPausedUntil_ = now_ + kAcceptPauseMs;
}

void Loop::ResumeAccepting() {
  acceptPausedUntil_ = 0;
  asideSince_ = 0;
  if (reserveFd_ < 0) reserveFd_ = open("/dev/null", O_RDONLY | O_CLOEXEC);
  WatchListeners();
}

void Loop::WatchListeners() {
  for (size_t i = 0; i < listenFds_.size(); i++) {
    if (listenFds_[i] >= 0) WatchListener(i);
  }
}

void Loop::UnwatchListeners() {
  for (int fd : listenFds_) {
    if (fd >= 0) epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, nullptr);
  }
}

// Balancing without a hand-off: a connection stays on the thread that accepts it, so the choice
// is made before accept4. EPOLLEXCLUSIVE wakes the first idle thread in the listener's wait queue
// whatever it already holds (under light load the first one registered takes every connection),
// so a thread that holds more live connections than the least loaded of the threads it compares
// with steps out of the queue and pokes that thread, which rejoins and accepts at once; new
// connections then wake the threads still in the queue. A thread that stepped aside rejoins once
// it is no longer ahead, at the latest kAsideRecheckMs later (its own connections may be idle).
// HAProxy picks the less loaded of two threads too, then hands it the accepted socket.
// Measured (docs/architecture.md): p99 of short connections 9.02 -> 7.20 ms on the bench.
size_t Loop::LeastLoadedOther(int64_t* load) {
  size_t n = engine_->Threads();
  // Up to four others are all read; past that, two picked at random (the power of two choices),
  // so the cost per accept does not grow with the threads.
  size_t reads = n <= 5 ? n - 1 : 2;
  size_t best = index_;
  *load = INT64_MAX;
  for (size_t k = 0; k < reads; k++) {
    size_t offset = 1 + k;
    if (n > 5) {
      random_ ^= random_ << 13;
      random_ ^= random_ >> 7;
      random_ ^= random_ << 17;
      offset = 1 + random_ % (n - 1);
    }
    size_t i = (index_ + offset) % n;
    int64_t l = engine_->LoadOf(i).value.load(std::memory_order_relaxed);
    if (l < *load) {
      *load = l;
      best = i;
    }
  }
  return best;
}

void Loop::StepAside() {
  UnwatchListeners();
  asideSince_ = now_ != 0 ? now_ : 1;
}

void Loop::Rejoin() {
  asideSince_ = 0;
  if (acceptPausedUntil_ == 0) WatchListeners();  // else ResumeAccepting rejoins
}

void Loop::SetLive(size_t n) {
  liveCount_ = n;
  engine_->LoadOf(index_).value.store(static_cast<int64_t>(n), std::memory_order_relaxed);
}

bool Loop::PassOn() {
  if (engine_->Threads() < 2) return false;
  int64_t least;
  size_t other = LeastLoadedOther(&least);
  if (static_cast<int64_t>(liveCount_) <= least) return false;
  if (asideSince_ == 0) StepAside();
  engine_->Poke(other);
  return true;
}

void Loop::AcceptBurst(int listenFd, bool balance) {
  if (balance && PassOn()) return;
  for (int k = 0; k < kAcceptBurst; k++) {
    sockaddr_storage peer;
    socklen_t len = sizeof(peer);
    int fd = accept4(listenFd, reinterpret_cast<sockaddr*>(&peer), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO) continue;
      if (errno == EMFILE || errno == ENFILE) {
        // Out of descriptors: give up the reserve for a moment to accept one connection and reset
        // it, so that clients learn at once instead of waiting in the queue (libuv's trick).
        if (reserveFd_ < 0) {
          PauseAccepting();
          return;
        }
        CloseFd(&reserveFd_);
        int shed = accept4(listenFd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (shed >= 0) {
          accepted_.fetch_add(1, std::memory_order_relaxed);
          Shed(shed);
        }
        // After the reset, so that the descriptor it freed is the one taken back.
        reserveFd_ = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (shed < 0) return;
        continue;
      }
      return;  // EAGAIN, or ENOBUFS/ENOMEM: the next wake-up tries again
    }
    accepted_.fetch_add(1, std::memory_order_relaxed);
    if (!engine_->Admit()) {
      Shed(fd);
      continue;
    }
    Admit(fd, peer);
  }
}

// Over capacity: accepted and reset at once, never left waiting in the accept queue.
void Loop::Shed(int fd) {
  ResetAndClose(fd);
  overCapacity_.fetch_add(1, std::memory_order_relaxed);
}

void Loop::Admit(int fd, const sockaddr_storage& peer) {
  sockaddr_storage local;
  socklen_t len = sizeof(local);
  // Under tproxy the accepted socket's local address is the client's original destination.
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) < 0) {
    ResetAndClose(fd);
    engine_->Release();
    return;
  }
  auto* c = new Conn();
  c->id = (++nextId_ << 8) | index_;
  c->side[0].fd = fd;
  c->peer = FromSockaddr(peer);
  c->destination = FromSockaddr(local);
  c->client = c->peer;
  c->acceptedUs = NowUs();
  c->next = all_;
  if (all_ != nullptr) all_->prev = c;
  all_ = c;
  SetLive(liveCount_ + 1);
  // Registered once for the connection's whole life (only Pump changes its interest); closing the
  // socket removes it (the loop holds its only descriptor), so no EPOLL_CTL_DEL is needed.
  if (Register(c, 0, EPOLL_CTL_ADD) < 0) {
    Finish(c, kEndClientError, errno, kSysEpollCtl);
    return;
  }
  if (table_ != nullptr && table_->IsTrusted(c->peer)) {
    c->state = kReadingHeader;
    ArmAfter(c, &headerDeadlines_, settings_.headerTimeoutMs);
    // The header often arrived with the handshake: try at once rather than after a wake-up.
    c->side[0].canRead = true;
    ReadHeader(c);
    return;
  }
  Decide(c);
}

// A trusted source's PROXY header, peeked until complete, then consumed to its exact length so
// that every byte after it stays in the socket for the relay. The spec forbids guessing: an
// invalid, incomplete or late header ends the connection.
void Loop::ReadHeader(Conn* c) {
  if (!c->side[0].canRead) return;
  ssize_t n;
  do n = recv(c->side[0].fd, peek_.data(), peek_.size(), MSG_PEEK);
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno != EAGAIN) {
      Finish(c, kEndClientError, errno, kSysRecv);
      return;
    }
    c->side[0].canRead = false;
    if (c->clientEnded) Finish(c, kEndPpRejected, kPpIncomplete, kSysNone);
    return;
  }
  if (n == 0) {
    Finish(c, kEndPpRejected, kPpIncomplete, kSysNone);
    return;
  }
  PpHeader h;
  PpError error;
  size_t want;
  PpStatus status = ParseProxyHeader(peek_.data(), static_cast<size_t>(n), config_.maxV2Length, &h, &error, &want);
  if (status == PpStatus::kFailed) {
    Finish(c, kEndPpRejected, error, kSysNone);
    return;
  }
  if (status == PpStatus::kNeedMore) {
    // Nothing was consumed: the next segment is a new edge and brings us back.
    c->side[0].canRead = false;
    if (c->clientEnded) Finish(c, kEndPpRejected, kPpIncomplete, kSysNone);
    return;
  }
  do n = recv(c->side[0].fd, peek_.data(), h.length, 0);
  while (n < 0 && errno == EINTR);
  if (n != static_cast<ssize_t>(h.length)) {
    Finish(c, kEndClientError, n < 0 ? errno : EIO, kSysRecv);
    return;
  }
  c->inbound = static_cast<uint8_t>(h.version | (h.local ? 8 : 0));
  if (h.source.family != 0) {
    c->client = h.source;
    c->tlvs.swap(h.forwarded);
  } else {
    // LOCAL, UNKNOWN, UNSPEC or UNIX: the real connection's peer counts.
    c->inbound |= 4;
  }
  Disarm(c);
  Decide(c);
}

void Loop::Decide(Conn* c) {
  c->decidedUs = NowUs();
  Decision d;
  if (table_ != nullptr) {
    d = table_->Decide(c->destination);
  } else {
    d.kind = kRefuse;  // no table yet: fail closed
    d.reason = kNotATarget;
  }
  c->kind = d.kind;
  c->reason = d.reason;
  if (d.slot >= 0) c->instanceId = table_->InstanceId(d.slot);
  if (d.kind == kRefuse) {
    if (d.reason >= kPolicyUnknown && d.reason <= kPolicyUnattested && table_->ShouldReport(d.slot, now_)) {
      Emit(kEventUnknown, c, kEndRefused, 0, kSysNone);
    }
    Finish(c, kEndRefused, 0, kSysNone);
    return;
  }
  StartConnect(c);
}

void Loop::StartConnect(Conn* c) {
  Endpoint ours{};
  const Endpoint& source = c->kind == kTransparent ? c->client : ours;
  UpstreamResult r = ConnectUpstream(c->destination, source, settings_.keepClientPort ? c->client.port : 0);
  if (r.fd < 0) {
    Finish(c, kEndConnectFailed, r.err, r.syscall);
    return;
  }
  c->side[1].fd = r.fd;
  c->state = kConnecting;
  if (Register(c, 1, EPOLL_CTL_ADD) < 0) {
    Finish(c, kEndConnectFailed, errno, kSysEpollCtl);
    return;
  }
  // The source port the backend sees: picked by connect() (IP_BIND_ADDRESS_NO_PORT) and known now.
  sockaddr_storage local;
  socklen_t len = sizeof(local);
  if (getsockname(r.fd, reinterpret_cast<sockaddr*>(&local), &len) == 0) c->upstreamPort = FromSockaddr(local).port;
  ArmAfter(c, &connectDeadlines_, settings_.connectTimeoutMs);
  c->ppVersion = static_cast<uint8_t>(settings_.ppVersion);
  if (settings_.reportOpen) Emit(kEventOpen, c, kEndDone, 0, kSysNone);
}

// A socket's registration, edge-triggered: in (unless its reading is paused, Pump) and out, and
// for the client its half-close; the side travels in the pointer's low bit.
int Loop::Register(Conn* c, int side, int op) {
  epoll_event ev{};
  ev.events = EPOLLOUT | EPOLLET;
  if ((c->readPaused & (1 << side)) == 0) ev.events |= EPOLLIN;
  if (side == 0) ev.events |= EPOLLRDHUP;
  ev.data.u64 = reinterpret_cast<uint64_t>(c) | static_cast<uint64_t>(side);
  return epoll_ctl(epfd_, op, c->side[side].fd, &ev);
}

void Loop::OnUpstreamEvent(Conn* c, uint32_t ev) {
  if (ev & (EPOLLERR | EPOLLHUP)) {
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(c->side[1].fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
    Finish(c, kEndConnectFailed, err != 0 ? err : ECONNREFUSED, kSysConnect);
    return;
  }
  // EPOLLOUT without an error: connected (no SO_ERROR round trip needed).
  if (!(ev & EPOLLOUT)) return;
  if (ev & EPOLLIN) c->side[1].canRead = true;
  OnConnected(c);
}

void Loop::OnConnected(Conn* c) {
  c->connectedUs = NowUs();
  c->state = kRelaying;
  c->side[1].canWrite = true;
  Disarm(c);
  c->lastActive = now_;
  c->idleMs = settings_.idleTimeoutMs;
  ArmAfter(c, &idleDeadlines_, c->idleMs);
  if (c->kind == kProxy) {
    std::string& header = header_;
    header.clear();
    if (!EncodeProxyHeader(c->ppVersion, c->client, c->destination, c->tlvs, &header)) {
      Fail(c, 1, EMSGSIZE, kSysSend);
      return;
    }
    std::string().swap(c->tlvs);
    size_t headerLength = header.size();
    // The client's first bytes usually arrived while we connected (it speaks first): they go out
    // with the header, in one segment and one send, instead of a send and a splice pair.
    if (c->side[0].canRead) {
      uint8_t first[kFirstBytes];
      ssize_t n;
      do n = recv(c->side[0].fd, first, sizeof(first), MSG_DONTWAIT);
      while (n < 0 && errno == EINTR);
      if (n > 0) {
        header.append(reinterpret_cast<const char*>(first), static_cast<size_t>(n));
      } else if (n == 0) {
        c->flow[0].eof = true;
      } else if (errno == EAGAIN) {
        c->side[0].canRead = false;
      } else {
        Fail(c, 0, errno, kSysRecv);
        return;
      }
    }
    // One write, before any other client byte: receivers such as nginx break when the header is
    // split. A new socket's send buffer takes it whole; what it does not take goes through the pipe.
    ssize_t n;
    do n = send(c->side[1].fd, header.data(), header.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    if (n < 0 && errno != EAGAIN) {
      Fail(c, 1, errno, kSysSend);
      return;
    }
    size_t sent = n > 0 ? static_cast<size_t>(n) : 0;
    if (sent > headerLength) c->flow[0].bytes += sent - headerLength;
    if (sent < header.size()) {
      int rc = Preload(c->flow[0], pipes_, reinterpret_cast<const uint8_t*>(header.data()) + sent, header.size() - sent);
      if (rc < 0) {
        Fail(c, 1, -rc, kSysWrite);
        return;
      }
      if (sent < headerLength) c->headerInPipe = static_cast<uint32_t>(headerLength - sent);
    }
  }
  Pump(c);
}

void Loop::Pump(Conn* c) {
  for (int d = 0; d < 2; d++) {
    MoveResult r = Move(c->side[d], c->side[1 - d], c->flow[d], pipes_, c->flow[1 - d].shut);
    if (r.active) c->lastActive = now_;
    if (r.status == MoveStatus::kFailed) {
      Fail(c, r.failedSide == 0 ? d : 1 - d, r.err, r.syscall);
      return;
    }
    if (r.status == MoveStatus::kNoPipe && !c->waitingForPipe) {
      c->waitingForPipe = true;
      starved_.push_back(c);
    }
  }
  if (c->flow[0].shut && c->flow[1].shut) {
    Finish(c, kEndDone, 0, kSysNone);
    return;
  }
  // A direction whose pipe may be full and whose destination cannot take more makes no progress
  // until the destination's EPOLLOUT; meanwhile every segment that reaches its source would wake
  // the thread for nothing (more than half of all wake-ups during a single bulk stream). Its
  // source stops reporting EPOLLIN until the pipe drains, as HAProxy stops polling a full
  // buffer's reader. Readiness stays cached in canRead, so nothing is lost in between.
  for (int d = 0; d < 2; d++) {
    bool stalled = c->flow[d].pipeMaybeFull && !c->side[1 - d].canWrite;
    uint8_t bit = static_cast<uint8_t>(1 << d);
    if (stalled == ((c->readPaused & bit) != 0)) continue;
    c->readPaused ^= bit;
    if (Register(c, d, EPOLL_CTL_MOD) < 0) {
      Fail(c, d, errno, kSysEpollCtl);
      return;
    }
  }
}

// Connections that could not get a pipe: their readiness is cached (canRead), so nothing is lost
// by waiting, but no epoll event would bring them back. Once one of them fails again the rest
// would too; they keep their place.
void Loop::RetryStarved() {
  std::vector<Conn*> waiting;
  waiting.swap(starved_);
  size_t i = 0;
  for (; i < waiting.size() && starved_.empty(); i++) {
    Conn* c = waiting[i];
    c->waitingForPipe = false;
    if (c->state == kRelaying) Pump(c);
  }
  for (; i < waiting.size(); i++) {
    if (waiting[i]->state == kRelaying) starved_.push_back(waiting[i]);
    else waiting[i]->waitingForPipe = false;
  }
}

void Loop::Expire() {
  if (acceptPausedUntil_ != 0 && acceptPausedUntil_ <= now_) ResumeAccepting();
  for (const auto& list : headerDeadlines_.lists()) {
    while (list->head != nullptr && list->head->deadline <= now_) Finish(list->head, kEndPpRejected, kPpTimeout, kSysNone);
  }
  for (const auto& list : connectDeadlines_.lists()) {
    while (list->head != nullptr && list->head->deadline <= now_) Finish(list->head, kEndConnectFailed, ETIMEDOUT, kSysConnect);
  }
  for (const auto& list : idleDeadlines_.lists()) {
    DeadlineList* l = list.get();
    while (l->head != nullptr && l->head->deadline <= now_) {
      Conn* c = l->head;
      // Activity only moves lastActive; the deadline moves when it comes due.
      int64_t due = c->lastActive + c->idleMs;
      if (due > now_) Arm(c, l, due);
      else Finish(c, kEndIdleTimeout, 0, kSysNone);
    }
  }
  for (Deadlines* d : {&headerDeadlines_, &connectDeadlines_, &idleDeadlines_}) d->Prune();
}

// A status request, answered here: between two events, where each of this thread's connections
// is at rest, and by the thread that owns them, so the snapshot reads plain fields with no lock
// and nothing on the per-connection path is counted, shared or slowed for it. The cost is paid
// only when asked: one record per connection (up to the request's limit, newest first).
void Loop::Snapshot() {
  uint32_t limit = 0;
  uint32_t seq = engine_->SnapshotRequest(&limit);
  int32_t tag = static_cast<int32_t>(seq & 0x7fffffff);
  uint32_t n = 0;
  for (Conn* c = all_; c != nullptr && n < limit; c = c->next) {
    if (c->state == kEnded) continue;
    uint8_t state = c->state == kReadingHeader ? kLiveReadingHeader : c->state == kConnecting ? kLiveConnecting : kLiveRelaying;
    Emit(kEventLive, c, static_cast<End>(state), tag, kSysNone);
    n++;
  }
  EventRecord done{};
  done.type = kEventSnapshotDone;
  done.kind = kNoDecision;
  done.id = static_cast<double>(index_);
  done.err = tag;
  done.bytesIn = static_cast<double>(liveCount_);
  done.endedUs = NowUs();
  AppendEvent(&batch_, done, std::string());
}

// Arms a deadline `ms` from now in the list for that duration; 0: none.
void Loop::ArmAfter(Conn* c, Deadlines* deadlines, uint32_t ms) {
  if (ms == 0) {
    Disarm(c);
    return;
  }
  Arm(c, deadlines->For(ms), now_ + ms);
}

DeadlineList* Deadlines::For(uint32_t durationMs) {
  if (!lists_.empty() && lists_.back()->durationMs == durationMs) return lists_.back().get();
  for (size_t i = 0; i < lists_.size(); i++) {
    if (lists_[i]->durationMs != durationMs) continue;
    // Used again (a reload back to an earlier timeout): it becomes the newest.
    std::rotate(lists_.begin() + static_cast<std::ptrdiff_t>(i), lists_.begin() + static_cast<std::ptrdiff_t>(i) + 1, lists_.end());
    return lists_.back().get();
  }
  lists_.push_back(std::make_unique<DeadlineList>());
  lists_.back()->durationMs = durationMs;
  return lists_.back().get();
}

int64_t Deadlines::Earliest() const {
  int64_t at = -1;
  for (const auto& list : lists_) {
    if (list->head != nullptr && (at < 0 || list->head->deadline < at)) at = list->head->deadline;
  }
  return at;
}

void Deadlines::Prune() {
  if (lists_.size() < 2) return;
  auto last = lists_.end() - 1;
  lists_.erase(std::remove_if(lists_.begin(), last, [](const std::unique_ptr<DeadlineList>& l) { return l->head == nullptr; }), last);
}

// Inserted in deadline order, searching from the tail: new deadlines are almost always the
// latest, so this is O(1) in practice.
void Loop::Arm(Conn* c, DeadlineList* list, int64_t at) {
  Disarm(c);
  c->deadline = at;
  c->timer = list;
  Conn* after = list->tail;
  while (after != nullptr && after->deadline > at) after = after->tprev;
  c->tprev = after;
  c->tnext = after != nullptr ? after->tnext : list->head;
  if (c->tnext != nullptr) c->tnext->tprev = c;
  else list->tail = c;
  if (after != nullptr) after->tnext = c;
  else list->head = c;
}

void Loop::Disarm(Conn* c) {
  DeadlineList* list = c->timer;
  if (list == nullptr) return;
  if (c->tprev != nullptr) c->tprev->tnext = c->tnext;
  else list->head = c->tnext;
  if (c->tnext != nullptr) c->tnext->tprev = c->tprev;
  else list->tail = c->tprev;
  c->tprev = c->tnext = nullptr;
  c->timer = nullptr;
}

// A failed socket ends the connection, and the other socket's close() sends a RST (ResetOnClose):
// its peer learns that the connection broke rather than ended cleanly.
void Loop::Fail(Conn* c, int side, int err, Syscall syscall) {
  if (c->side[1 - side].fd >= 0) ResetOnClose(c->side[1 - side].fd);
  Finish(c, side == 0 ? kEndClientError : kEndUpstreamError, err, syscall);
}

void Loop::Finish(Conn* c, End end, int err, Syscall syscall) {
  if (c->state == kEnded) return;
  // Refused or failed to connect: the client learns it by a reset, not a FIN that would look like
  // an empty answer.
  if (end == kEndRefused || end == kEndConnectFailed) {
    ResetOnClose(c->side[0].fd);
  } else if (end == kEndPpRejected && c->side[0].fd >= 0) {
    // No valid header: the connection is closed (a FIN, as for any closed connection). What the
    // header check only peeked at is read first, or close() would turn the FIN into a reset;
    // beyond a few buffers' worth the reset is what such a sender gets.
    for (int i = 0; i < 4; i++) {
      ssize_t n = recv(c->side[0].fd, peek_.data(), peek_.size(), MSG_DONTWAIT);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
    }
  }
  c->state = kEnded;
  Disarm(c);
  if (c->waitingForPipe) {
    starved_.erase(std::find(starved_.begin(), starved_.end(), c));
    c->waitingForPipe = false;
  }
  if (c->prev != nullptr) c->prev->next = c->next;
  else all_ = c->next;
  if (c->next != nullptr) c->next->prev = c->prev;
  SetLive(liveCount_ - 1);
  for (Flow& f : c->flow) pipes_.Put(&f.pipe, f.queued == 0, f.pipeGrown);
  for (Side& s : c->side) CloseFd(&s.fd);
  engine_->Release();
  Emit(kEventEnd, c, end, err, syscall);
  graveyard_.push_back(c);  // other events of this batch may still point at it
}

void Loop::Emit(EventType type, Conn* c, End end, int err, Syscall syscall) {
  EventRecord r{};
  r.type = type;
  r.kind = c->kind;
  r.reason = c->reason;
  r.end = end;
  r.id = static_cast<double>(c->id);
  r.err = err;
  r.syscall = syscall;
  r.inbound = c->inbound;
  r.upstreamPort = c->upstreamPort;
  r.peer = c->peer;
  r.destination = c->destination;
  r.client = c->client;
  uint64_t toUpstream = c->flow[0].bytes;
  r.bytesIn = static_cast<double>(toUpstream > c->headerInPipe ? toUpstream - c->headerInPipe : 0);
  r.bytesOut = static_cast<double>(c->flow[1].bytes);
  r.acceptedUs = c->acceptedUs;
  r.decidedUs = c->decidedUs;
  r.connectedUs = c->connectedUs;
  r.endedUs = type == kEventOpen ? 0 : NowUs();
  AppendEvent(&batch_, r, c->instanceId);
}

// Hands this iteration's events over, and wakes JavaScript at most once per kWakeIntervalMs:
// under moderate load a wake-up per connection would cost the JavaScript thread more than the
// events themselves (every wake-up is a uv_async round trip).
void Loop::Flush() {
  if (!batch_.empty()) {
    bool wasEmpty;
    {
      std::lock_guard<std::mutex> lock(eventsMu_);
      wasEmpty = events_.empty();
      events_.append(batch_);
    }
    batch_.clear();
    if (wasEmpty) wakePending_ = true;
  }
  if (wakePending_ && now_ - lastWakeMs_ >= kWakeIntervalMs) {
    wakePending_ = false;
    lastWakeMs_ = now_;
    engine_->Wake();
  }
}

}  // namespace tpi
