// The native acceptor: accept4() on a dedicated epoll thread per listening socket, delivering
// accepted connections to JavaScript in batches through one thread-safe function, so that a new
// connection costs JavaScript one decision and no net.Socket. Its own thread rather than a relay
// worker: accepting never waits behind a worker's splice batch, and the relay stays unchanged.
// Backpressure: at most kMaxQueued connections wait for JavaScript; beyond that the listening
// socket leaves the epoll set and the kernel's backlog holds the rest.
// Exports return an id, 0 or -errno and never throw for an OS failure.
#include <napi.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

namespace {

// Connections accepted and not yet taken by JavaScript.
constexpr size_t kMaxQueued = 1024;
// accept4() calls per wake-up before the batch is handed over.
constexpr int kAcceptBurst = 256;
// How long accepting pauses when out of descriptors (EMFILE, ENFILE, ENOBUFS, ENOMEM): the
// listening socket stays readable, so level-triggered epoll would spin otherwise.
constexpr int kRetryMs = 100;

struct Accepted {
  int fd;
  sockaddr_storage peer;
  sockaddr_storage local;
};

struct Acceptor {
  int id = 0;
  int listenFd = -1;
  int epfd = -1;
  int wakefd = -1;
  std::thread thread;
  napi_threadsafe_function tsfn = nullptr;
  std::atomic<bool> stopping{false};
  std::mutex mu;
  std::vector<Accepted> queue;  // guarded by mu
  bool callPending = false;     // guarded by mu: a tsfn call is queued and has not run yet
  // JS thread only.
  bool stopped = false;
};

std::unordered_map<int, Acceptor*> g_acceptors;  // JS thread only
int g_nextAcceptorId = 1;

void CloseFd(int* fd) {
  if (*fd >= 0) close(*fd);
  *fd = -1;
}

void Wake(Acceptor* a) {
  uint64_t one = 1;
  ssize_t rc;
  do rc = write(a->wakefd, &one, sizeof(one));
  while (rc < 0 && errno == EINTR);
}

bool SetListening(Acceptor* a, bool on) {
  epoll_event ev{};
  ev.events = on ? static_cast<uint32_t>(EPOLLIN) : 0u;
  ev.data.fd = a->listenFd;
  return epoll_ctl(a->epfd, EPOLL_CTL_MOD, a->listenFd, &ev) == 0;
}

void Run(Acceptor* a) {
  char name[16];
  snprintf(name, sizeof(name), "acceptor-%d", a->id);
  pthread_setname_np(pthread_self(), name);
  bool listening = true;
  int timeout = -1;
  std::vector<Accepted> batch;
  while (!a->stopping.load(std::memory_order_acquire)) {
    epoll_event events[2];
    int n = epoll_wait(a->epfd, events, 2, timeout);
    if (n < 0 && errno != EINTR) break;
    timeout = -1;
    bool readable = false;
    for (int i = 0; i < n; i++) {
      if (events[i].data.fd == a->wakefd) {
        uint64_t count;
        while (read(a->wakefd, &count, sizeof(count)) < 0 && errno == EINTR) {
        }
      } else {
        readable = true;
      }
    }
    if (a->stopping.load(std::memory_order_acquire)) break;
    size_t queued;
    {
      std::lock_guard<std::mutex> lock(a->mu);
      queued = a->queue.size();
    }
    if (!listening) {
      // Woken by JavaScript having taken the queue, or by the retry timeout.
      if (queued >= kMaxQueued) continue;
      if (!SetListening(a, true)) break;
      listening = true;
      readable = true;
    }
    if (!readable) continue;
    bool starved = false;
    for (int i = 0; i < kAcceptBurst && queued + batch.size() < kMaxQueued; i++) {
      Accepted acc;
      socklen_t len = sizeof(acc.peer);
      int fd = accept4(a->listenFd, reinterpret_cast<sockaddr*>(&acc.peer), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO) continue;
        if (errno != EAGAIN) starved = true;
        break;
      }
      // Under tproxy the local address is the client's original destination.
      len = sizeof(acc.local);
      if (getsockname(fd, reinterpret_cast<sockaddr*>(&acc.local), &len) < 0) {
        close(fd);
        continue;
      }
      acc.fd = fd;
      batch.push_back(acc);
    }
    if (!batch.empty()) {
      bool call;
      {
        std::lock_guard<std::mutex> lock(a->mu);
        a->queue.insert(a->queue.end(), batch.begin(), batch.end());
        queued = a->queue.size();
        call = !a->callPending;
        a->callPending = true;
      }
      batch.clear();
      if (call) napi_call_threadsafe_function(a->tsfn, nullptr, napi_tsfn_nonblocking);
    }
    if (queued >= kMaxQueued || starved) {
      if (!SetListening(a, false)) break;
      listening = false;
      if (starved) timeout = kRetryMs;
    }
  }
}

const char* FormatAddress(const sockaddr_storage& ss, char* buf, size_t size, int* port, int* family) {
  if (ss.ss_family == AF_INET6) {
    auto* v6 = reinterpret_cast<const sockaddr_in6*>(&ss);
    *port = ntohs(v6->sin6_port);
    *family = 6;
    return inet_ntop(AF_INET6, &v6->sin6_addr, buf, size);
  }
  auto* v4 = reinterpret_cast<const sockaddr_in*>(&ss);
  *port = ntohs(v4->sin_port);
  *family = 4;
  return inet_ntop(AF_INET, &v4->sin_addr, buf, size);
}

// One call per batch: onAccepted([fd, family, peerAddress, peerPort, localAddress, localPort, ...]),
// six entries per connection (family 4 or 6).
void CallJs(napi_env env, napi_value callback, void* context, void* /*data*/) {
  Acceptor* a = static_cast<Acceptor*>(context);
  std::vector<Accepted> batch;
  {
    std::lock_guard<std::mutex> lock(a->mu);
    batch.swap(a->queue);
    a->callPending = false;
  }
  if (env == nullptr || a->stopped) {
    for (Accepted& acc : batch) close(acc.fd);
    return;
  }
  // The thread may have paused accepting on a full queue: it is empty now.
  if (batch.size() >= kMaxQueued) Wake(a);
  if (batch.empty()) return;
  napi_value array;
  napi_create_array_with_length(env, batch.size() * 6, &array);
  uint32_t k = 0;
  char buf[INET6_ADDRSTRLEN];
  for (const Accepted& acc : batch) {
    int port = 0;
    int family = 0;
    napi_value v;
    napi_create_int32(env, acc.fd, &v);
    napi_set_element(env, array, k++, v);
    const char* text = FormatAddress(acc.peer, buf, sizeof(buf), &port, &family);
    napi_create_int32(env, family, &v);
    napi_set_element(env, array, k++, v);
    napi_create_string_latin1(env, text ? text : "", NAPI_AUTO_LENGTH, &v);
    napi_set_element(env, array, k++, v);
    napi_create_int32(env, port, &v);
    napi_set_element(env, array, k++, v);
    text = FormatAddress(acc.local, buf, sizeof(buf), &port, &family);
    napi_create_string_latin1(env, text ? text : "", NAPI_AUTO_LENGTH, &v);
    napi_set_element(env, array, k++, v);
    napi_create_int32(env, port, &v);
    napi_set_element(env, array, k++, v);
  }
  napi_value undefined;
  napi_get_undefined(env, &undefined);
  napi_call_function(env, undefined, callback, 1, &array, nullptr);
}

void FinalizeAcceptor(napi_env /*env*/, void* data, void* /*hint*/) {
  delete static_cast<Acceptor*>(data);
}

// Joins the thread and closes what it accepted and JavaScript never saw. The listening socket
// is the caller's. The Acceptor is freed by the thread-safe function's finalizer.
void StopAcceptor(Acceptor* a) {
  if (a->stopped) return;
  a->stopped = true;
  a->stopping.store(true, std::memory_order_release);
  Wake(a);
  if (a->thread.joinable()) a->thread.join();
  CloseFd(&a->epfd);
  CloseFd(&a->wakefd);
  {
    std::lock_guard<std::mutex> lock(a->mu);
    for (Accepted& acc : a->queue) close(acc.fd);
    a->queue.clear();
  }
  g_acceptors.erase(a->id);
  napi_release_threadsafe_function(a->tsfn, napi_tsfn_release);
}

void CleanupHook(void* arg) {
  StopAcceptor(static_cast<Acceptor*>(arg));
}

// acceptorStart(listenFd, onAccepted) -> id or -errno. The thread-safe function holds the event
// loop open, like a listening net.Server, until acceptorStop.
Napi::Value AcceptorStartFn(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsFunction()) return Napi::Number::New(env, -EINVAL);
  int listenFd = info[0].As<Napi::Number>().Int32Value();
  if (listenFd < 0) return Napi::Number::New(env, -EBADF);
  auto* a = new Acceptor();
  a->listenFd = listenFd;
  a->epfd = epoll_create1(EPOLL_CLOEXEC);
  a->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  int rc = a->epfd < 0 || a->wakefd < 0 ? -errno : 0;
  if (rc == 0) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = a->wakefd;
    if (epoll_ctl(a->epfd, EPOLL_CTL_ADD, a->wakefd, &ev) < 0) rc = -errno;
  }
  if (rc == 0) {
    // Level-triggered: a burst cut short (full queue, kAcceptBurst) is reported again.
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = listenFd;
    if (epoll_ctl(a->epfd, EPOLL_CTL_ADD, listenFd, &ev) < 0) rc = -errno;
  }
  if (rc < 0) {
    CloseFd(&a->epfd);
    CloseFd(&a->wakefd);
    delete a;
    return Napi::Number::New(env, rc);
  }
  napi_value name;
  napi_create_string_utf8(env, "tproxy:acceptor", NAPI_AUTO_LENGTH, &name);
  if (napi_create_threadsafe_function(env, info[1], nullptr, name, 0, 1, a, FinalizeAcceptor, a, CallJs, &a->tsfn) !=
      napi_ok) {
    CloseFd(&a->epfd);
    CloseFd(&a->wakefd);
    delete a;
    return Napi::Number::New(env, -ENOMEM);
  }
  a->id = g_nextAcceptorId++;
  g_acceptors.emplace(a->id, a);
  // The thread takes no signals: Node handles them on the main thread.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  a->thread = std::thread([a] { Run(a); });
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  napi_add_env_cleanup_hook(env, CleanupHook, a);
  return Napi::Number::New(env, a->id);
}

// acceptorStop(id) -> 0 or -ENOENT. Stops accepting; connections accepted and not yet delivered
// are closed. The listening socket stays open (the caller's).
Napi::Value AcceptorStopFn(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int id = info[0].IsNumber() ? info[0].As<Napi::Number>().Int32Value() : 0;
  auto it = g_acceptors.find(id);
  if (it == g_acceptors.end()) return Napi::Number::New(env, -ENOENT);
  Acceptor* a = it->second;
  napi_remove_env_cleanup_hook(env, CleanupHook, a);
  StopAcceptor(a);
  return Napi::Number::New(env, 0);
}

}  // namespace

void AcceptorInit(Napi::Env env, Napi::Object exports) {
  exports.Set("acceptorStart", Napi::Function::New(env, AcceptorStartFn, "acceptorStart"));
  exports.Set("acceptorStop", Napi::Function::New(env, AcceptorStopFn, "acceptorStop"));
}
