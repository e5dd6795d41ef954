// The data path: N loop threads, each running its connections to completion (loop.cc), the
// decision table they share (published here, reclaimed once no thread can still read it), the
// connection cap, and the hand-over of their events to JavaScript. No N-API here: binding.cc
// owns the JavaScript side and gives the engine a function to call when events are waiting.
#pragma once

#include "table.h"

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace tpi {

// What a reload may change: each thread takes a new copy at its next wake-up (Engine::SetSettings)
// and applies it to the connections it accepts from then on; established ones keep theirs.
struct EngineSettings {
  uint32_t connectTimeoutMs = 5000;
  uint32_t idleTimeoutMs = 300000; // 0: none
  uint32_t headerTimeoutMs = 3000; // inbound PROXY header from a trusted source
  int ppVersion = 2;
  bool keepClientPort = false;
  bool reportOpen = false;         // an open event per connection (debug logs)
};

struct EngineConfig {
  int pipeSize = 0;                // bytes per splice pipe, 0: the kernel's default
  uint32_t maxV2Length = 4096;
  int64_t maxConnections = 1;
  EngineSettings settings;         // at start
};

class Loop;

// A 64-byte line per counter that one thread writes and others read.
struct alignas(64) PaddedEpoch {
  std::atomic<uint64_t> value;
};

// A thread's live connections, as the other threads see them when they balance accepting.
struct alignas(64) PaddedLoad {
  std::atomic<int64_t> value{0};
};

class Engine {
 public:
  // A thread is offline (blocked in epoll_wait, or not running): it holds no table.
  static constexpr uint64_t kOffline = UINT64_MAX;

  Engine(const EngineConfig& config, void (*wake)(void*), void* wakeContext);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Adds a thread accepting on `listenFds` (taken over: closed by the engine). Before Start().
  int AddLoop(const std::vector<int>& listenFds);
  // Starts the threads; -errno (and nothing started) on failure.
  int Start();

  // From the JavaScript thread: publishes `table` (taken over) for every connection accepted from
  // now on. The one it replaces is freed once every thread has passed a quiescent point.
  void SetTable(Table* table);
  // Frees replaced tables no thread can still hold (called with every event delivery).
  void Reclaim();

  void StopAccepting();
  void AbortAll();
  // From the JavaScript thread: settings for the connections accepted from now on.
  void SetSettings(const EngineSettings& settings);
  // Asks every thread for its live connections (at most `limit` each): each answers at its next
  // wake-up with kEventLive records and one kEventSnapshotDone, through the event batches.
  // Returns the request's number, which the answers carry.
  uint32_t RequestSnapshot(uint32_t limit);
  // Stops and joins the threads; returns how many connections they still held (closed unreported).
  size_t Shutdown();

  // Every thread's waiting events, appended to `out`.
  void TakeEvents(std::string* out);

  struct Stats {
    int64_t live;
    uint64_t accepted;
    uint64_t overCapacity;
    size_t threads;
    size_t pipesInUse;
    size_t pipesPooled;
    size_t pipeSizeRefused;
    size_t tablesRetired;
    uint32_t generation;
  };
  Stats GetStats();

  // For the loops.
  const EngineConfig& config() const { return config_; }
  const Table* CurrentTable() const { return table_.load(std::memory_order_seq_cst); }
  uint64_t Epoch() const { return epoch_.load(std::memory_order_seq_cst); }
  PaddedEpoch* SeenSlot(size_t index) { return &seen_[index]; }
  // Takes a slot under the cap; false when the cap is reached.
  bool Admit() {
    if (live_.fetch_add(1, std::memory_order_relaxed) >= config_.maxConnections) {
      live_.fetch_sub(1, std::memory_order_relaxed);
      return false;
    }
    return true;
  }
  void Release() { live_.fetch_sub(1, std::memory_order_relaxed); }
  size_t Threads() const { return loops_.size(); }
  PaddedLoad& LoadOf(size_t index) { return loads_[index]; }
  // From a loop thread: has thread `index` rejoin the listeners and accept at once.
  void Poke(size_t index);
  void Wake() { wake_(wakeContext_); }
  EngineSettings Settings() {
    std::lock_guard<std::mutex> lock(settingsMu_);
    return settings_;
  }
  uint32_t SnapshotRequest(uint32_t* limit) const {
    *limit = snapshotLimit_.load(std::memory_order_seq_cst);
    return snapshotSeq_.load(std::memory_order_seq_cst);
  }

 private:
  EngineConfig config_;
  void (*wake_)(void*);
  void* wakeContext_;
  std::vector<std::unique_ptr<Loop>> loops_;
  std::unique_ptr<PaddedEpoch[]> seen_;
  std::unique_ptr<PaddedLoad[]> loads_;
  std::atomic<const Table*> table_{nullptr};
  std::atomic<uint64_t> epoch_{1};
  std::atomic<int64_t> live_{0};
  // Taken by the loops only when told to (a command), never per connection.
  std::mutex settingsMu_;
  EngineSettings settings_;
  std::atomic<uint32_t> snapshotSeq_{0};
  std::atomic<uint32_t> snapshotLimit_{0};
  // JavaScript thread only.
  std::vector<std::pair<const Table*, uint64_t>> retired_;
  bool started_ = false;
};

}  // namespace tpi
