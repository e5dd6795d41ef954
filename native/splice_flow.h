// One direction of a relay: bytes from one socket into a pipe and from the pipe into the other
// socket with splice(2), so that they never reach user space (HAProxy's src/raw_sock.c in
// spirit: to pipe, from pipe, and why each EAGAIN means what it means).
#pragma once

#include "events.h"
#include "pipe_pool.h"

#include <cstddef>
#include <cstdint>

namespace tpi {

// One of the two sockets. canRead/canWrite cache edge-triggered readiness: set by an event,
// cleared only when a syscall returns EAGAIN.
struct Side {
  int fd = -1;
  bool canRead = false;
  bool canWrite = false;
};

struct Flow {
  Pipe pipe;
  bool pipeGrown = false;   // enlarged for bytes written into it: closed when empty, never pooled
  bool pipeMaybeFull = false;
  bool eof = false;         // the source sent FIN
  bool shut = false;        // the FIN was passed on (or will be, by close)
  size_t queued = 0;        // bytes in the pipe
  uint64_t bytes = 0;       // bytes written to the destination socket
};

enum class MoveStatus {
  kOk,      // moved what it could; wait for readiness
  kFailed,  // a syscall failed: see `failedSide`, `err`, `syscall`
  kNoPipe,  // bytes wait to be read but no pipe could be had: try again later
};

struct MoveResult {
  MoveStatus status = MoveStatus::kOk;
  bool active = false;      // bytes moved
  int failedSide = 0;       // 0: the source, 1: the destination
  int err = 0;
  Syscall syscall = kSysNone;
};

// Moves what it can in one direction until a syscall would block, then passes a FIN on once
// every byte before it has left the pipe. `closeWillFin`: the other direction is already shut,
// so the caller is about to close both sockets and close() sends the FIN: no shutdown() call.
MoveResult Move(Side& from, Side& to, Flow& f, PipePool& pool, bool closeWillFin);

// Writes `len` bytes into f's pipe (taken from the pool), ahead of anything spliced later: what a
// socket's send buffer did not take. 0 or -errno.
int Preload(Flow& f, PipePool& pool, const uint8_t* data, size_t len);

}  // namespace tpi
