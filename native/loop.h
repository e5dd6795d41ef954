// One loop thread: its own epoll, waiting with EPOLLEXCLUSIVE on the transparent listeners every
// thread shares, and every connection it accepts, run to completion on it: accept4, cap,
// destination guard and decision from the table, the inbound PROXY header of a trusted source,
// bind-before-connect, our PROXY header, the splice relay, its deadlines, the end. Nothing is
// handed to another thread.
#pragma once

#include "engine.h"
#include "events.h"
#include "pipe_pool.h"
#include "pp.h"
#include "splice_flow.h"

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace tpi {

struct Conn;

// Connections whose deadline is the same duration after their start: appended in time order, so
// the head is always the first due (O(1) arm, disarm and expiry; no heap, no allocation).
struct DeadlineList {
  Conn* head = nullptr;
  Conn* tail = nullptr;
  uint32_t durationMs = 0;
};

// One DeadlineList per duration in use. A reload that changes a timeout gives the connections
// after it a new list (a single list would then no longer be in time order, and inserting in
// order would scan past every older connection); the old list drains as its connections end, and
// is dropped once empty. Almost always one list, two for a while after a reload.
class Deadlines {
 public:
  // The list for `durationMs` (the newest first: the one new connections use).
  DeadlineList* For(uint32_t durationMs);
  // The earliest deadline, or -1 when no connection has one.
  int64_t Earliest() const;
  // Drops empty lists other than the newest.
  void Prune();
  const std::vector<std::unique_ptr<DeadlineList>>& lists() const { return lists_; }

 private:
  std::vector<std::unique_ptr<DeadlineList>> lists_;
};

class Loop {
 public:
  Loop(Engine* engine, size_t index, std::vector<int> listenFds);
  ~Loop();
  Loop(const Loop&) = delete;
  Loop& operator=(const Loop&) = delete;

  int Open();
  void Start();
  enum Command : uint64_t { kStopAccepting = 1, kAbortAll = 2, kStop = 4, kSettings = 8, kSnapshot = 16, kAcceptNow = 32 };
  // From any thread.
  void Post(Command command);
  // Returns how many connections were still open.
  size_t Join();

  // Events waiting for JavaScript, appended to `out`.
  void TakeEvents(std::string* out);

  uint64_t Accepted() const { return accepted_.load(std::memory_order_relaxed); }
  uint64_t OverCapacity() const { return overCapacity_.load(std::memory_order_relaxed); }
  const PipePool& Pipes() const { return pipes_; }

 private:
  void Run();
  int Timeout() const;
  void TakeCommands();
  int WatchListener(size_t i);
  void CloseListeners();
  void WatchListeners();
  void UnwatchListeners();
  int Register(Conn* c, int side, int op);
  // balance: first check whether another thread should take it (PassOn).
  void AcceptBurst(int listenFd, bool balance = true);
  void PauseAccepting();
  void ResumeAccepting();
  size_t LeastLoadedOther(int64_t* load);
  // This thread holds more live connections than the least loaded thread it compares with: it
  // steps out of the listeners' wait queue and pokes that thread to accept instead (true).
  bool PassOn();
  void StepAside();
  void Rejoin();
  void SetLive(size_t n);
  void Shed(int fd);
  void Admit(int fd, const sockaddr_storage& peer);
  void ReadHeader(Conn* c);
  void Decide(Conn* c);
  void StartConnect(Conn* c);
  void OnUpstreamEvent(Conn* c, uint32_t ev);
  void OnConnected(Conn* c);
  void Pump(Conn* c);
  void RetryStarved();
  void Expire();
  void Snapshot();
  void Fail(Conn* c, int side, int err, Syscall syscall);
  void Finish(Conn* c, End end, int err, Syscall syscall);
  void Emit(EventType type, Conn* c, End end, int err, Syscall syscall);
  void Arm(Conn* c, DeadlineList* list, int64_t at);
  void ArmAfter(Conn* c, Deadlines* deadlines, uint32_t ms);
  void Disarm(Conn* c);
  void Flush();

  Engine* engine_;
  size_t index_;
  std::vector<int> listenFds_;
  const EngineConfig& config_;
  EngineSettings settings_;  // loop thread only: a copy taken at start and at each kSettings
  int epfd_ = -1;
  int wakefd_ = -1;
  // Given up to accept (and reset) one connection when the process is out of descriptors, so
  // that a full process still answers with a reset instead of leaving clients in the queue.
  int reserveFd_ = -1;
  std::thread thread_;
  std::atomic<uint64_t> commands_{0};
  PaddedEpoch* seen_;

  // Loop thread only.
  const Table* table_ = nullptr;  // valid within one iteration
  int64_t now_ = 0;
  int64_t acceptPausedUntil_ = 0;  // 0: accepting
  int64_t lastWakeMs_ = 0;
  bool wakePending_ = false;       // events wait for the next wake-up of JavaScript
  uint64_t nextId_ = 0;
  Conn* all_ = nullptr;           // every live connection (for abort)
  size_t liveCount_ = 0;            // set through SetLive: the other threads read it
  int64_t asideSince_ = 0;         // 0: in the listeners' wait queue (or paused)
  uint64_t random_;                // xorshift state: which threads to compare with
  Deadlines headerDeadlines_;
  Deadlines connectDeadlines_;
  Deadlines idleDeadlines_;
  std::vector<Conn*> starved_;    // waiting for a pipe
  std::vector<Conn*> graveyard_;  // ended in this iteration: freed after it
  std::vector<uint8_t> peek_;     // an inbound header's bytes
  std::string header_;            // our header and the client's first bytes (its capacity is kept)
  std::string batch_;             // events of this iteration
  PipePool pipes_;
  size_t closedAtStop_ = 0;

  // Shared with the JavaScript thread.
  std::mutex eventsMu_;
  std::string events_;
  std::atomic<uint64_t> accepted_{0};
  std::atomic<uint64_t> overCapacity_{0};
};

}  // namespace tpi
