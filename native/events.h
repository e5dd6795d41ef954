// What the loop threads tell JavaScript, as fixed-layout little-endian records in one byte
// string per batch (src/datapath/events.ts decodes them). A connection never waits for them:
// records are appended to the thread's batch and handed over once per loop iteration.
#pragma once

#include "common.h"

#include <cstdint>
#include <string>

namespace tpi {

enum EventType : uint8_t {
  kEventEnd = 1,      // a connection ended (every accepted connection but those over capacity)
  kEventOpen = 2,     // a connection's upstream connect started (only when asked for: debug logs)
  kEventUnknown = 3,  // an instance was refused for an unknown policy: fetch it (at most once a second per instance)
  // A status snapshot (Engine::RequestSnapshot), answered by each thread at its next wake-up:
  kEventLive = 4,          // a live connection: `end` is its state (LiveState), `err` the request's
                           // number, `endedUs` when it was taken; bytes so far
  kEventSnapshotDone = 5,  // the thread's answer is complete: `id` is the thread's index, `err` the
                           // request's number, `bytesIn` how many connections the thread holds
};

// A live connection's state in a kEventLive record (its `end` byte).
enum LiveState : uint8_t {
  kLiveReadingHeader = 0,  // awaiting a trusted source's PROXY header
  kLiveConnecting = 1,
  kLiveRelaying = 2,
};

// How a connection ended.
enum End : uint8_t {
  kEndDone = 0,
  kEndClientError = 1,    // the client's socket failed (err, syscall)
  kEndUpstreamError = 2,  // the upstream's socket failed
  kEndIdleTimeout = 3,
  kEndAborted = 4,        // stop: ended by the daemon
  kEndConnectFailed = 5,  // the upstream could not be opened or connected; the client was reset
  kEndRefused = 6,        // the decision (or the destination guard) refused it; the client was reset
  kEndPpRejected = 7,     // a trusted source's PROXY header was missing, invalid or late (err: PpError)
};

// The syscall that failed, by index (events.ts SYSCALLS names them in this order).
enum Syscall : uint8_t {
  kSysNone = 0, kSysSplice, kSysSocket, kSysBind, kSysSetsockopt, kSysConnect, kSysSend, kSysEpollCtl, kSysWrite,
  kSysPipe2, kSysGetsockopt, kSysRecv,
};

constexpr size_t kEventFixedSize = 136;

struct EventRecord {
  EventType type;
  uint8_t kind;
  uint8_t reason;
  uint8_t end;
  double id;
  int32_t err;
  uint8_t syscall;
  uint8_t inbound;  // 0: none; 1, 2: the PROXY version received; +4: it named no client (the peer counts); +8: LOCAL
  uint16_t upstreamPort;
  Endpoint peer;
  Endpoint destination;
  Endpoint client;
  double bytesIn;
  double bytesOut;
  double acceptedUs;
  double decidedUs;
  double connectedUs;
  double endedUs;
};

// Appends one record (and the instance id) to `out`.
void AppendEvent(std::string* out, const EventRecord& r, const std::string& instanceId);

}  // namespace tpi
