// The addon's one N-API file. Socket syscalls for TypeScript (one export per syscall, an fd, 0 or
// -errno, never a throw for an OS failure: src/native/ turns the negative number into a
// Node-shaped error), and the engine: start, table swap, stop, stats, with its events delivered
// to JavaScript in batches. TypeScript validates every argument before it gets here; this file
// only checks what it must not trust (types, ranges that would be undefined behaviour).
#include <napi.h>

#include "engine.h"
#include "pipe_pool.h"
#include "pp.h"
#include "table.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmath>
#include <memory>
#include <set>
#include <string>
#include <vector>

namespace {

Napi::Value Result(Napi::Env env, int rc) { return Napi::Number::New(env, rc < 0 ? -errno : rc); }

int32_t Int(const Napi::CallbackInfo& info, size_t i) {
  return i < info.Length() && info[i].IsNumber() ? info[i].As<Napi::Number>().Int32Value() : -1;
}

// ---- syscalls ----

// socket(family): a non-blocking, close-on-exec TCP socket.
Napi::Value Socket(const Napi::CallbackInfo& info) {
  return Result(info.Env(), socket(Int(info, 0), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP));
}

// setsockopt(fd, level, name, intValue)
Napi::Value SetSockOpt(const Napi::CallbackInfo& info) {
  int value = Int(info, 3);
  return Result(info.Env(), setsockopt(Int(info, 0), Int(info, 1), Int(info, 2), &value, sizeof(value)));
}

// bind(fd, address, port): -EINVAL when the address text does not parse.
Napi::Value Bind(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[1].IsString()) return Napi::Number::New(env, -EINVAL);
  std::string host = info[1].As<Napi::String>().Utf8Value();
  int port = Int(info, 2);
  sockaddr_storage ss{};
  socklen_t len = 0;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&ss);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&ss);
  if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<uint16_t>(port));
    len = sizeof(sockaddr_in);
  } else if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(port));
    len = sizeof(sockaddr_in6);
  } else {
    return Napi::Number::New(env, -EINVAL);
  }
  return Result(env, bind(Int(info, 0), reinterpret_cast<sockaddr*>(&ss), len));
}

// listen(fd, backlog)
Napi::Value Listen(const Napi::CallbackInfo& info) { return Result(info.Env(), listen(Int(info, 0), Int(info, 1))); }

// close(fd). EINTR is not retried: on Linux the descriptor is released even then, and a retry
// could close a descriptor another thread has just been handed.
Napi::Value Close(const Napi::CallbackInfo& info) { return Result(info.Env(), close(Int(info, 0))); }

// Limits cross as JS numbers, RLIM_INFINITY as Infinity. Every finite limit Linux reports is far
// below 2^53, so the conversion is exact.
Napi::Value LimitToJs(Napi::Env env, rlim_t v) {
  if (v == RLIM_INFINITY) return Napi::Number::New(env, INFINITY);
  return Napi::Number::New(env, static_cast<double>(v));
}

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
  rlimit lim;
  if (getrlimit(Int(info, 0), &lim) < 0) return Napi::Number::New(env, -errno);
  Napi::Array pair = Napi::Array::New(env, 2);
  pair.Set(0u, LimitToJs(env, lim.rlim_cur));
  pair.Set(1u, LimitToJs(env, lim.rlim_max));
  return pair;
}

// setrlimit(resource, soft, hard) -> 0 or -errno; -EINVAL for a limit that is not a
// non-negative integer or Infinity.
Napi::Value SetRlimit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  rlimit lim;
  if (info.Length() < 3 || !LimitFromJs(info[1], &lim.rlim_cur) || !LimitFromJs(info[2], &lim.rlim_max)) {
    return Napi::Number::New(env, -EINVAL);
  }
  return Result(env, setrlimit(Int(info, 0), &lim));
}

// pipeSizeProbe(bytes) -> the size a new pipe gets when `bytes` is asked for (0: the default), or
// -errno: EPERM beyond fs.pipe-max-size. Checked at start, before any thread exists.
Napi::Value PipeSizeProbe(const Napi::CallbackInfo& info) {
  int size = Int(info, 0);
  int p[2];
  if (pipe2(p, O_CLOEXEC) < 0) return Napi::Number::New(info.Env(), -errno);
  int rc = size > 0 ? fcntl(p[1], F_SETPIPE_SZ, size) : fcntl(p[1], F_GETPIPE_SZ);
  if (rc < 0) rc = -errno;
  close(p[0]);
  close(p[1]);
  return Napi::Number::New(info.Env(), rc);
}

// ---- the engine ----

struct Binding {
  std::unique_ptr<tpi::Engine> engine;
  napi_threadsafe_function tsfn = nullptr;
};

// One engine per process: its threads own the listeners and every connection.
Binding* g_binding = nullptr;

void WakeJs(void* context) {
  auto* b = static_cast<Binding*>(context);
  napi_call_threadsafe_function(b->tsfn, nullptr, napi_tsfn_nonblocking);
}

// On the JavaScript thread: every loop's waiting events, as one Buffer, to onEvents.
void DeliverEvents(napi_env env, napi_value callback, void* context, void* /*data*/) {
  auto* b = static_cast<Binding*>(context);
  if (env == nullptr || b->engine == nullptr) return;
  std::string events;
  b->engine->TakeEvents(&events);
  b->engine->Reclaim();
  if (events.empty()) return;
  napi_value buffer;
  napi_value undefined;
  napi_get_undefined(env, &undefined);
  if (napi_create_buffer_copy(env, events.size(), events.data(), nullptr, &buffer) != napi_ok) return;
  napi_call_function(env, undefined, callback, 1, &buffer, nullptr);
}

void StopBinding(Binding* b) {
  if (b->engine != nullptr) b->engine->Shutdown();
  b->engine.reset();
  if (b->tsfn != nullptr) napi_release_threadsafe_function(b->tsfn, napi_tsfn_release);
  b->tsfn = nullptr;
  if (g_binding == b) g_binding = nullptr;
}

// The Binding outlives its engine until the thread-safe function is finalized: calls queued
// before a shutdown still arrive, and find no engine.
void FinalizeBinding(napi_env /*env*/, void* data, void* /*hint*/) { delete static_cast<Binding*>(data); }

void CleanupHook(void* arg) { StopBinding(static_cast<Binding*>(arg)); }

uint32_t U32Option(const Napi::Object& o, const char* key, uint32_t fallback) {
  Napi::Value v = o.Get(key);
  if (!v.IsNumber()) return fallback;
  double d = v.As<Napi::Number>().DoubleValue();
  return d >= 0 && d <= 4294967295.0 ? static_cast<uint32_t>(d) : fallback;
}

// False for a PROXY version other than 1 or 2.
bool SettingsOf(const Napi::Object& o, tpi::EngineSettings* s) {
  s->connectTimeoutMs = U32Option(o, "connectTimeoutMs", 5000);
  s->idleTimeoutMs = U32Option(o, "idleTimeoutMs", 300000);
  s->headerTimeoutMs = U32Option(o, "headerTimeoutMs", 3000);
  s->ppVersion = static_cast<int>(U32Option(o, "ppVersion", 2));
  s->keepClientPort = o.Get("keepClientPort").ToBoolean().Value();
  s->reportOpen = o.Get("reportOpen").ToBoolean().Value();
  return s->ppVersion == 1 || s->ppVersion == 2;
}

// engineStart(options, listenFds, onEvents) -> 0 or -errno. options: { pipeSize, connectTimeoutMs,
// idleTimeoutMs, headerTimeoutMs, maxV2Length, ppVersion, keepClientPort, maxConnections,
// reportOpen }; listenFds: one array of listening sockets per thread (taken over, also on
// failure); onEvents(buffer): event batches (src/datapath/events.ts). The first table must be set
// before the first connection can be let through: until then every connection is refused.
Napi::Value EngineStart(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsObject() || !info[1].IsArray() || !info[2].IsFunction()) return Napi::Number::New(env, -EINVAL);
  Napi::Array threads = info[1].As<Napi::Array>();
  std::vector<std::vector<int>> fds;
  for (uint32_t i = 0; i < threads.Length(); i++) {
    Napi::Value list = threads.Get(i);
    std::vector<int> mine;
    if (list.IsArray()) {
      Napi::Array a = list.As<Napi::Array>();
      for (uint32_t k = 0; k < a.Length(); k++) {
        Napi::Value fd = a.Get(k);
        if (fd.IsNumber()) mine.push_back(fd.As<Napi::Number>().Int32Value());
      }
    }
    fds.push_back(mine);
  }
  // A listener may be given to several threads (one shared listener, each thread's epoll waiting
  // on it exclusively): closed once here.
  auto closeAll = [&fds] {
    std::set<int> closed;
    for (auto& list : fds) {
      for (int fd : list) {
        if (fd >= 0 && closed.insert(fd).second) close(fd);
      }
    }
  };
  if (g_binding != nullptr) {
    closeAll();
    return Napi::Number::New(env, -EBUSY);
  }
  Napi::Object o = info[0].As<Napi::Object>();
  tpi::EngineConfig config;
  config.pipeSize = static_cast<int>(U32Option(o, "pipeSize", 0));
  config.maxV2Length = U32Option(o, "maxV2Length", 4096);
  config.maxConnections = U32Option(o, "maxConnections", 1);
  bool settingsValid = SettingsOf(o, &config.settings);
  if (fds.empty() || config.maxV2Length > 65535 || config.pipeSize < 0 || !settingsValid) {
    closeAll();
    return Napi::Number::New(env, -EINVAL);
  }
  // Each thread owns and closes its own descriptors: a listener shared by threads gets one
  // descriptor (a dup) per thread after the first.
  std::set<int> given;
  for (auto& list : fds) {
    for (int& fd : list) {
      if (fd < 0 || given.insert(fd).second) continue;
      fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
      if (fd < 0) {
        int err = errno;
        closeAll();
        return Napi::Number::New(env, -err);
      }
      given.insert(fd);
    }
  }
  auto* b = new Binding();
  b->engine = std::make_unique<tpi::Engine>(config, WakeJs, b);
  for (auto& list : fds) b->engine->AddLoop(list);  // the loops own the fds from here on
  napi_value name;
  napi_create_string_utf8(env, "tproxy:events", NAPI_AUTO_LENGTH, &name);
  if (napi_create_threadsafe_function(env, info[2], nullptr, name, 0, 1, b, FinalizeBinding, b, DeliverEvents, &b->tsfn) != napi_ok) {
    delete b;
    return Napi::Number::New(env, -ENOMEM);
  }
  // The daemon's own handles keep the process alive; the engine does not.
  napi_unref_threadsafe_function(env, b->tsfn);
  int rc = b->engine->Start();
  if (rc < 0) {
    StopBinding(b);  // the finalizer frees b
    return Napi::Number::New(env, rc);
  }
  g_binding = b;
  napi_add_env_cleanup_hook(env, CleanupHook, b);
  return Napi::Number::New(env, 0);
}

// engineSetTable(buffer) -> 0, -ENOENT without an engine, -EINVAL for a malformed table.
Napi::Value EngineSetTable(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (g_binding == nullptr) return Napi::Number::New(env, -ENOENT);
  if (info.Length() < 1 || !info[0].IsBuffer()) return Napi::Number::New(env, -EINVAL);
  auto buf = info[0].As<Napi::Buffer<uint8_t>>();
  tpi::Table* table = tpi::Table::Parse(buf.Data(), buf.Length());
  if (table == nullptr) return Napi::Number::New(env, -EINVAL);
  g_binding->engine->SetTable(table);
  return Napi::Number::New(env, 0);
}

// engineStopAccepting(): every thread closes its listeners; live connections go on.
Napi::Value EngineStopAccepting(const Napi::CallbackInfo& info) {
  if (g_binding == nullptr) return Napi::Number::New(info.Env(), -ENOENT);
  g_binding->engine->StopAccepting();
  return Napi::Number::New(info.Env(), 0);
}

// engineAbortAll(): every live connection ends now (reported, end ABORTED).
Napi::Value EngineAbortAll(const Napi::CallbackInfo& info) {
  if (g_binding == nullptr) return Napi::Number::New(info.Env(), -ENOENT);
  g_binding->engine->AbortAll();
  return Napi::Number::New(info.Env(), 0);
}

// engineSetSettings({ connectTimeoutMs, idleTimeoutMs, headerTimeoutMs, ppVersion, keepClientPort,
// reportOpen }) -> 0, -ENOENT without an engine, -EINVAL for a PROXY version other than 1 or 2.
// Connections accepted from each thread's next wake-up on use them; established ones keep theirs.
Napi::Value EngineSetSettings(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (g_binding == nullptr) return Napi::Number::New(env, -ENOENT);
  if (info.Length() < 1 || !info[0].IsObject()) return Napi::Number::New(env, -EINVAL);
  tpi::EngineSettings s;
  if (!SettingsOf(info[0].As<Napi::Object>(), &s)) return Napi::Number::New(env, -EINVAL);
  g_binding->engine->SetSettings(s);
  return Napi::Number::New(env, 0);
}

// engineRequestSnapshot(limit) -> the request's number (> 0), or -ENOENT without an engine. The
// answers arrive with the event batches: at most `limit` live records per thread, then one
// snapshot-done record per thread (src/datapath/events.ts).
Napi::Value EngineRequestSnapshot(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (g_binding == nullptr) return Napi::Number::New(env, -ENOENT);
  int32_t limit = Int(info, 0);
  if (limit < 0) return Napi::Number::New(env, -EINVAL);
  return Napi::Number::New(env, g_binding->engine->RequestSnapshot(static_cast<uint32_t>(limit)) & 0x7fffffff);
}

// engineStats() -> { live, accepted, overCapacity, threads, pipesInUse, pipesPooled, pipePoolMax,
// pipeSizeRefused, tablesRetired, generation }, or null without an engine.
Napi::Value EngineStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (g_binding == nullptr) return env.Null();
  tpi::Engine::Stats s = g_binding->engine->GetStats();
  Napi::Object o = Napi::Object::New(env);
  o.Set("live", Napi::Number::New(env, static_cast<double>(s.live)));
  o.Set("accepted", Napi::Number::New(env, static_cast<double>(s.accepted)));
  o.Set("overCapacity", Napi::Number::New(env, static_cast<double>(s.overCapacity)));
  o.Set("threads", Napi::Number::New(env, static_cast<double>(s.threads)));
  o.Set("pipesInUse", Napi::Number::New(env, static_cast<double>(s.pipesInUse)));
  o.Set("pipesPooled", Napi::Number::New(env, static_cast<double>(s.pipesPooled)));
  o.Set("pipePoolMax", Napi::Number::New(env, static_cast<double>(tpi::PipePool::kMax)));
  o.Set("pipeSizeRefused", Napi::Number::New(env, static_cast<double>(s.pipeSizeRefused)));
  o.Set("tablesRetired", Napi::Number::New(env, static_cast<double>(s.tablesRetired)));
  o.Set("generation", Napi::Number::New(env, s.generation));
  return o;
}

// engineTakeEvents() -> Buffer: the events the threads hold that were not delivered yet (before
// a shutdown, so that none is lost).
Napi::Value EngineTakeEvents(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string events;
  if (g_binding != nullptr) g_binding->engine->TakeEvents(&events);
  return Napi::Buffer<uint8_t>::Copy(env, reinterpret_cast<const uint8_t*>(events.data()), events.size());
}

// engineShutdown() -> connections still open, closed unreported (0 without an engine). Events
// already waiting are delivered first.
Napi::Value EngineShutdown(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Binding* b = g_binding;
  if (b == nullptr) return Napi::Number::New(env, 0);
  napi_remove_env_cleanup_hook(env, CleanupHook, b);
  size_t closed = b->engine->Shutdown();
  StopBinding(b);  // the finalizer frees b
  return Napi::Number::New(env, static_cast<double>(closed));
}

// ---- for the differential tests (test/native) ----

Napi::Value EndpointToJs(Napi::Env env, const tpi::Endpoint& e) {
  if (e.family == 0) return env.Null();
  Napi::Object o = Napi::Object::New(env);
  o.Set("ip", Napi::Buffer<uint8_t>::Copy(env, e.ip, 16));
  o.Set("family", Napi::Number::New(env, e.family));
  o.Set("port", Napi::Number::New(env, e.port));
  return o;
}

// ppParse(buffer, maxV2Length) -> { status: 'more' | 'failed' | 'done', error, want, header }.
Napi::Value PpParse(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsBuffer() || !info[1].IsNumber()) return env.Null();
  auto buf = info[0].As<Napi::Buffer<uint8_t>>();
  tpi::PpHeader h;
  tpi::PpError error;
  size_t want = 0;
  int maxV2 = Int(info, 1);
  if (maxV2 < 0 || maxV2 > 65535) return env.Null();
  tpi::PpStatus status = tpi::ParseProxyHeader(buf.Data(), buf.Length(), static_cast<size_t>(maxV2), &h, &error, &want);
  Napi::Object o = Napi::Object::New(env);
  o.Set("status", status == tpi::PpStatus::kDone ? "done" : status == tpi::PpStatus::kFailed ? "failed" : "more");
  o.Set("error", Napi::Number::New(env, error));
  o.Set("want", Napi::Number::New(env, static_cast<double>(want)));
  if (status == tpi::PpStatus::kDone) {
    Napi::Object hdr = Napi::Object::New(env);
    hdr.Set("version", Napi::Number::New(env, h.version));
    hdr.Set("local", Napi::Boolean::New(env, h.local));
    hdr.Set("family", Napi::Number::New(env, h.family));
    hdr.Set("length", Napi::Number::New(env, static_cast<double>(h.length)));
    hdr.Set("source", EndpointToJs(env, h.source));
    hdr.Set("destination", EndpointToJs(env, h.destination));
    hdr.Set("crc32c", Napi::Boolean::New(env, h.crc32c));
    hdr.Set("tlvCount", Napi::Number::New(env, h.tlvCount));
    hdr.Set("forwarded", Napi::Buffer<uint8_t>::Copy(env, reinterpret_cast<const uint8_t*>(h.forwarded.data()), h.forwarded.size()));
    o.Set("header", hdr);
  }
  return o;
}

// ppEncode(version, source, destination, tlvs) -> Buffer, or null when it does not fit. source and
// destination: { ip: 16-byte Buffer (IPv4 mapped), family, port }.
Napi::Value PpEncode(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto endpoint = [](const Napi::Value& v, tpi::Endpoint* e) {
    if (!v.IsObject()) return false;
    Napi::Object o = v.As<Napi::Object>();
    Napi::Value ip = o.Get("ip");
    if (!ip.IsBuffer() || ip.As<Napi::Buffer<uint8_t>>().Length() != 16) return false;
    memcpy(e->ip, ip.As<Napi::Buffer<uint8_t>>().Data(), 16);
    e->family = static_cast<uint8_t>(o.Get("family").ToNumber().Int32Value());
    e->port = static_cast<uint16_t>(o.Get("port").ToNumber().Int32Value());
    return e->family == 4 || e->family == 6;
  };
  tpi::Endpoint src{}, dst{};
  if (info.Length() < 4 || !endpoint(info[1], &src) || !endpoint(info[2], &dst) || !info[3].IsBuffer()) return env.Null();
  auto tlvs = info[3].As<Napi::Buffer<uint8_t>>();
  std::string out;
  if (!tpi::EncodeProxyHeader(Int(info, 0), src, dst, std::string(reinterpret_cast<const char*>(tlvs.Data()), tlvs.Length()), &out)) return env.Null();
  return Napi::Buffer<uint8_t>::Copy(env, reinterpret_cast<const uint8_t*>(out.data()), out.size());
}

// tableDecide(table, ip (16-byte Buffer, IPv4 mapped), family, port) -> [kind, reason, instanceId]
// or null for a malformed table; tableTrusted(table, ip, family) -> boolean.
Napi::Value TableDecide(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 4 || !info[0].IsBuffer() || !info[1].IsBuffer() || info[1].As<Napi::Buffer<uint8_t>>().Length() != 16) return env.Null();
  auto buf = info[0].As<Napi::Buffer<uint8_t>>();
  std::unique_ptr<tpi::Table> table(tpi::Table::Parse(buf.Data(), buf.Length()));
  if (!table) return env.Null();
  tpi::Endpoint e{};
  memcpy(e.ip, info[1].As<Napi::Buffer<uint8_t>>().Data(), 16);
  e.family = static_cast<uint8_t>(Int(info, 2));
  e.port = static_cast<uint16_t>(Int(info, 3));
  Napi::Array out = Napi::Array::New(env, 4);
  tpi::Decision d = table->Decide(e);
  out.Set(0u, Napi::Number::New(env, d.kind));
  out.Set(1u, Napi::Number::New(env, d.reason));
  out.Set(2u, Napi::String::New(env, table->InstanceId(d.slot)));
  out.Set(3u, Napi::Boolean::New(env, table->IsTrusted(e)));
  return out;
}

// tableBench(table, endpoints, rounds) -> ns per decision: `endpoints` holds 20-byte records
// (ip[16] IPv4 mapped, port u16 little-endian, family u8, pad), each decided `rounds` times
// (scripts/bench-loop.mjs).
Napi::Value TableBench(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsBuffer() || !info[1].IsBuffer()) return env.Null();
  auto buf = info[0].As<Napi::Buffer<uint8_t>>();
  std::unique_ptr<tpi::Table> table(tpi::Table::Parse(buf.Data(), buf.Length()));
  auto eps = info[1].As<Napi::Buffer<uint8_t>>();
  size_t n = eps.Length() / sizeof(tpi::Endpoint);
  int rounds = Int(info, 2);
  if (!table || n == 0 || rounds < 1) return env.Null();
  std::vector<tpi::Endpoint> list(n);
  memcpy(list.data(), eps.Data(), n * sizeof(tpi::Endpoint));
  unsigned sink = 0;
  double start = tpi::NowUs();
  for (int r = 0; r < rounds; r++) {
    for (const tpi::Endpoint& e : list) sink += table->Decide(e).reason;
  }
  double elapsed = tpi::NowUs() - start;
  if (sink == 0xffffffffu) return env.Null();  // keeps the loop from being optimised away
  return Napi::Number::New(env, elapsed * 1000.0 / (static_cast<double>(n) * rounds));
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("socket", Napi::Function::New(env, Socket, "socket"));
  exports.Set("setsockopt", Napi::Function::New(env, SetSockOpt, "setsockopt"));
  exports.Set("bind", Napi::Function::New(env, Bind, "bind"));
  exports.Set("listen", Napi::Function::New(env, Listen, "listen"));
  exports.Set("close", Napi::Function::New(env, Close, "close"));
  exports.Set("getrlimit", Napi::Function::New(env, GetRlimit, "getrlimit"));
  exports.Set("setrlimit", Napi::Function::New(env, SetRlimit, "setrlimit"));
  exports.Set("engineStart", Napi::Function::New(env, EngineStart, "engineStart"));
  exports.Set("engineSetTable", Napi::Function::New(env, EngineSetTable, "engineSetTable"));
  exports.Set("engineStopAccepting", Napi::Function::New(env, EngineStopAccepting, "engineStopAccepting"));
  exports.Set("engineAbortAll", Napi::Function::New(env, EngineAbortAll, "engineAbortAll"));
  exports.Set("engineStats", Napi::Function::New(env, EngineStats, "engineStats"));
  exports.Set("engineSetSettings", Napi::Function::New(env, EngineSetSettings, "engineSetSettings"));
  exports.Set("engineRequestSnapshot", Napi::Function::New(env, EngineRequestSnapshot, "engineRequestSnapshot"));
  exports.Set("pipeSizeProbe", Napi::Function::New(env, PipeSizeProbe, "pipeSizeProbe"));
  exports.Set("engineTakeEvents", Napi::Function::New(env, EngineTakeEvents, "engineTakeEvents"));
  exports.Set("engineShutdown", Napi::Function::New(env, EngineShutdown, "engineShutdown"));
  exports.Set("ppParse", Napi::Function::New(env, PpParse, "ppParse"));
  exports.Set("ppEncode", Napi::Function::New(env, PpEncode, "ppEncode"));
  exports.Set("tableDecide", Napi::Function::New(env, TableDecide, "tableDecide"));
  exports.Set("tableBench", Napi::Function::New(env, TableBench, "tableBench"));

  Napi::Object c = Napi::Object::New(env);
  c.Set("AF_INET", static_cast<int>(AF_INET));
  c.Set("AF_INET6", static_cast<int>(AF_INET6));
  c.Set("SOL_SOCKET", static_cast<int>(SOL_SOCKET));
  c.Set("SOL_IP", static_cast<int>(SOL_IP));
  c.Set("SOL_IPV6", static_cast<int>(SOL_IPV6));
  c.Set("SO_REUSEADDR", static_cast<int>(SO_REUSEADDR));
  c.Set("IP_TRANSPARENT", static_cast<int>(IP_TRANSPARENT));
  c.Set("IPV6_TRANSPARENT", static_cast<int>(IPV6_TRANSPARENT));
  c.Set("IPV6_V6ONLY", static_cast<int>(IPV6_V6ONLY));
  c.Set("IP_BIND_ADDRESS_NO_PORT", static_cast<int>(IP_BIND_ADDRESS_NO_PORT));
  c.Set("IPPROTO_TCP", static_cast<int>(IPPROTO_TCP));
  c.Set("TCP_NODELAY", static_cast<int>(TCP_NODELAY));
  c.Set("RLIMIT_NOFILE", static_cast<int>(RLIMIT_NOFILE));
  exports.Set("constants", c);
  return exports;
}

}  // namespace

NODE_API_MODULE(tproxy_native, Init)
