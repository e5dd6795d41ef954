// The native acceptor: accept4() on the JavaScript thread's own event loop (a uv_poll on the
// listening socket), delivering the accepted connections to JavaScript in one call per wake-up, so
// that a new connection costs JavaScript one decision and no net.Socket. No thread of its own: a
// connection then waits for one thread, not two, before a relay worker takes it (each hand-off
// is a wake-up, and on a busy machine a wait to be scheduled).
// Backpressure: at most kAcceptBurst connections per wake-up; the kernel's backlog holds the rest
// until the loop comes round again.
// Exports return an id, 0 or -errno and never throw for an OS failure.
#include <napi.h>
#include <uv.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <unordered_map>
#include <vector>

namespace {

// accept4() calls per wake-up before the batch is handed over.
constexpr int kAcceptBurst = 256;
// How long accepting pauses when out of descriptors (EMFILE, ENFILE, ENOBUFS, ENOMEM): the
// listening socket stays readable, so polling it would spin otherwise.
constexpr uint64_t kRetryMs = 100;

struct Accepted {
  int fd;
  double acceptedUs;  // CLOCK_MONOTONIC µs, the clock of process.hrtime()
  sockaddr_storage peer;
  sockaddr_storage local;
};

struct Acceptor {
  int id = 0;
  int listenFd = -1;
  napi_env env = nullptr;
  napi_ref callback = nullptr;
  napi_async_context context = nullptr;
  uv_poll_t poll;
  uv_timer_t retry;
  int handlesOpen = 0;  // poll and retry, until their close callbacks have run
  bool stopped = false;
  std::vector<Accepted> batch;
};

std::unordered_map<int, Acceptor*> g_acceptors;
int g_nextAcceptorId = 1;

void OnReadable(uv_poll_t* handle, int status, int events);

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

// onAccepted([fd, family, peerAddress, peerPort, localAddress, localPort, acceptedUs, ...]): seven
// entries per connection (family 4 or 6). A throw from it is an uncaught exception, as from any I/O callback.
void Deliver(Acceptor* a) {
  napi_env env = a->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) {
    for (Accepted& acc : a->batch) close(acc.fd);
    a->batch.clear();
    return;
  }
  napi_value array;
  napi_create_array_with_length(env, a->batch.size() * 7, &array);
  uint32_t k = 0;
  char buf[INET6_ADDRSTRLEN];
  for (const Accepted& acc : a->batch) {
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
    napi_create_double(env, acc.acceptedUs, &v);
    napi_set_element(env, array, k++, v);
  }
  a->batch.clear();
  napi_value callback;
  napi_value resource;
  napi_get_reference_value(env, a->callback, &callback);
  napi_create_object(env, &resource);
  if (napi_make_callback(env, a->context, resource, callback, 1, &array, nullptr) == napi_pending_exception) {
    napi_value err;
    napi_get_and_clear_last_exception(env, &err);
    napi_fatal_exception(env, err);
  }
  napi_close_handle_scope(env, scope);
}

void OnRetry(uv_timer_t* timer) {
  Acceptor* a = static_cast<Acceptor*>(timer->data);
  if (!a->stopped) uv_poll_start(&a->poll, UV_READABLE, OnReadable);
}

void OnReadable(uv_poll_t* handle, int status, int /*events*/) {
  Acceptor* a = static_cast<Acceptor*>(handle->data);
  if (a->stopped || status < 0) return;
  bool starved = false;
  timespec now;
  for (int i = 0; i < kAcceptBurst; i++) {
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
    clock_gettime(CLOCK_MONOTONIC, &now);
    acc.acceptedUs = static_cast<double>(now.tv_sec) * 1e6 + static_cast<double>(now.tv_nsec) / 1e3;
    a->batch.push_back(acc);
  }
  if (starved) {
    uv_poll_stop(&a->poll);
    uv_timer_start(&a->retry, OnRetry, kRetryMs, 0);
  }
  if (!a->batch.empty()) Deliver(a);
}

void OnHandleClosed(uv_handle_t* handle) {
  Acceptor* a = static_cast<Acceptor*>(handle->data);
  if (--a->handlesOpen == 0) delete a;
}

// Stops polling at once (the listening socket is the caller's and may be closed right after);
// the Acceptor is freed once libuv has closed its handles.
void StopAcceptor(Acceptor* a) {
  if (a->stopped) return;
  a->stopped = true;
  g_acceptors.erase(a->id);
  uv_close(reinterpret_cast<uv_handle_t*>(&a->poll), OnHandleClosed);
  uv_close(reinterpret_cast<uv_handle_t*>(&a->retry), OnHandleClosed);
  napi_async_destroy(a->env, a->context);
  napi_delete_reference(a->env, a->callback);
}

void CleanupHook(void* arg) {
  StopAcceptor(static_cast<Acceptor*>(arg));
}

// acceptorStart(listenFd, onAccepted) -> id or -errno. Holds the event loop open, like a
// listening net.Server, until acceptorStop.
Napi::Value AcceptorStartFn(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsFunction()) return Napi::Number::New(env, -EINVAL);
  int listenFd = info[0].As<Napi::Number>().Int32Value();
  if (listenFd < 0) return Napi::Number::New(env, -EBADF);
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) return Napi::Number::New(env, -ENOMEM);
  auto* a = new Acceptor();
  a->listenFd = listenFd;
  a->env = env;
  int rc = uv_poll_init(loop, &a->poll, listenFd);
  if (rc < 0) {
    delete a;
    return Napi::Number::New(env, rc);
  }
  a->poll.data = a;
  uv_timer_init(loop, &a->retry);
  a->retry.data = a;
  a->handlesOpen = 2;
  uv_unref(reinterpret_cast<uv_handle_t*>(&a->retry));
  napi_value name;
  napi_create_string_utf8(env, "tproxy:acceptor", NAPI_AUTO_LENGTH, &name);
  napi_create_reference(env, info[1], 1, &a->callback);
  napi_async_init(env, nullptr, name, &a->context);
  a->id = g_nextAcceptorId++;
  g_acceptors.emplace(a->id, a);
  rc = uv_poll_start(&a->poll, UV_READABLE, OnReadable);
  if (rc < 0) {
    StopAcceptor(a);
    return Napi::Number::New(env, rc);
  }
  napi_add_env_cleanup_hook(env, CleanupHook, a);
  return Napi::Number::New(env, a->id);
}

// acceptorStop(id) -> 0 or -ENOENT. Stops accepting; the listening socket stays open (the
// caller's).
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
