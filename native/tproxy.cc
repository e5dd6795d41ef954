// Syscalls for transparent proxying. Each export returns a file descriptor, 0, or -errno and
// never throws for an OS failure: TypeScript turns the negative number into a Node-shaped
// error carrying the syscall's name. No policy lives here.
#include <napi.h>

#include "sockaddr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmath>
#include <string>

// The splice relay's exports (relay.cc).
void RelayInit(Napi::Env env, Napi::Object exports);
// The native acceptor's exports (acceptor.cc).
void AcceptorInit(Napi::Env env, Napi::Object exports);

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

namespace {

Napi::Value Result(Napi::Env env, int rc) {
  return Napi::Number::New(env, rc < 0 ? -errno : rc);
}

// socket(family): a non-blocking, close-on-exec TCP socket, so that libuv can own it and a
// spawned child never inherits it.
Napi::Value Socket(const Napi::CallbackInfo& info) {
  int family = info[0].As<Napi::Number>().Int32Value();
  int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
  return Result(info.Env(), fd);
}

// setsockopt(fd, level, name, intValue)
Napi::Value SetSockOpt(const Napi::CallbackInfo& info) {
  int fd = info[0].As<Napi::Number>().Int32Value();
  int level = info[1].As<Napi::Number>().Int32Value();
  int name = info[2].As<Napi::Number>().Int32Value();
  int value = info[3].As<Napi::Number>().Int32Value();
  return Result(info.Env(), setsockopt(fd, level, name, &value, sizeof(value)));
}

// bind(fd, address, port): -EINVAL when the address text does not parse.
Napi::Value Bind(const Napi::CallbackInfo& info) {
  int fd = info[0].As<Napi::Number>().Int32Value();
  std::string host = info[1].As<Napi::String>().Utf8Value();
  int port = info[2].As<Napi::Number>().Int32Value();
  sockaddr_storage ss;
  socklen_t len = ToSockaddr(host, port, &ss);
  if (len == 0) return Napi::Number::New(info.Env(), -EINVAL);
  return Result(info.Env(), bind(fd, reinterpret_cast<sockaddr*>(&ss), len));
}

// listen(fd, backlog)
Napi::Value Listen(const Napi::CallbackInfo& info) {
  int fd = info[0].As<Napi::Number>().Int32Value();
  int backlog = info[1].As<Napi::Number>().Int32Value();
  return Result(info.Env(), listen(fd, backlog));
}

// close(fd). EINTR is not retried: on Linux the descriptor is released even then, and a
// retry could close a descriptor another thread has just been handed.
Napi::Value Close(const Napi::CallbackInfo& info) {
  int fd = info[0].As<Napi::Number>().Int32Value();
  return Result(info.Env(), close(fd));
}

// dup(fd): a close-on-exec duplicate (F_DUPFD_CLOEXEC), so the socket outlives the caller's fd.
Napi::Value Dup(const Napi::CallbackInfo& info) {
  int fd = info[0].As<Napi::Number>().Int32Value();
  return Result(info.Env(), fcntl(fd, F_DUPFD_CLOEXEC, 0));
}

// Limits cross as JS numbers, RLIM_INFINITY as Infinity. Every finite limit Linux reports is far
// below 2^53, so the conversion is exact.
Napi::Value LimitToJs(Napi::Env env, rlim_t v) {
  if (v == RLIM_INFINITY) return Napi::Number::New(env, INFINITY);
  return Napi::Number::New(env, static_cast<double>(v));
}

// Infinity (or anything at or above rlim_t's range) is RLIM_INFINITY; false for a negative or
// fractional number.
bool LimitFromJs(const Napi::Value& value, rlim_t* out) {
  if (!value.IsNumber()) return false;
  double d = value.As<Napi::Number>().DoubleValue();
  if (std::isnan(d) || d < 0 || d != std::floor(d)) return false;
  *out = d >= static_cast<double>(RLIM_INFINITY) ? RLIM_INFINITY : static_cast<rlim_t>(d);
  return true;
}

// getrlimit(resource) -> [soft, hard] or -errno.
Napi::Value GetRlimit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int resource = info[0].As<Napi::Number>().Int32Value();
  rlimit lim;
  if (getrlimit(resource, &lim) < 0) return Napi::Number::New(env, -errno);
  Napi::Array pair = Napi::Array::New(env, 2);
  pair.Set(0u, LimitToJs(env, lim.rlim_cur));
  pair.Set(1u, LimitToJs(env, lim.rlim_max));
  return pair;
}

// setrlimit(resource, soft, hard) -> 0 or -errno; -EINVAL for a limit that is not a
// non-negative integer or Infinity. Raising hard needs CAP_SYS_RESOURCE, and RLIMIT_NOFILE
// cannot exceed /proc/sys/fs/nr_open (EPERM either way).
Napi::Value SetRlimit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int resource = info[0].As<Napi::Number>().Int32Value();
  rlimit lim;
  if (!LimitFromJs(info[1], &lim.rlim_cur) || !LimitFromJs(info[2], &lim.rlim_max)) {
    return Napi::Number::New(env, -EINVAL);
  }
  return Result(env, setrlimit(resource, &lim));
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("socket", Napi::Function::New(env, Socket, "socket"));
  exports.Set("setsockopt", Napi::Function::New(env, SetSockOpt, "setsockopt"));
  exports.Set("bind", Napi::Function::New(env, Bind, "bind"));
  exports.Set("listen", Napi::Function::New(env, Listen, "listen"));
  exports.Set("close", Napi::Function::New(env, Close, "close"));
  exports.Set("dup", Napi::Function::New(env, Dup, "dup"));
  exports.Set("getrlimit", Napi::Function::New(env, GetRlimit, "getrlimit"));
  exports.Set("setrlimit", Napi::Function::New(env, SetRlimit, "setrlimit"));
  RelayInit(env, exports);
  AcceptorInit(env, exports);

  Napi::Object c = Napi::Object::New(env);
  c.Set("AF_INET", AF_INET);
  c.Set("AF_INET6", AF_INET6);
  c.Set("SOL_SOCKET", SOL_SOCKET);
  c.Set("SOL_IP", SOL_IP);
  c.Set("SOL_IPV6", SOL_IPV6);
  c.Set("SO_REUSEADDR", SO_REUSEADDR);
  c.Set("SO_REUSEPORT", SO_REUSEPORT);
  c.Set("IP_TRANSPARENT", IP_TRANSPARENT);
  c.Set("IPV6_TRANSPARENT", IPV6_TRANSPARENT);
  c.Set("IPV6_V6ONLY", IPV6_V6ONLY);
  c.Set("IP_BIND_ADDRESS_NO_PORT", IP_BIND_ADDRESS_NO_PORT);
  c.Set("RLIMIT_NOFILE", static_cast<int>(RLIMIT_NOFILE));
  exports.Set("constants", c);
  return exports;
}

}  // namespace

NODE_API_MODULE(tproxy_native, Init)
