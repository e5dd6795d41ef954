#include "engine.h"

#include "loop.h"

#include <pthread.h>
#include <signal.h>

namespace tpi {

namespace {

constexpr size_t kMaxThreads = 256;

}  // namespace

Engine::Engine(const EngineConfig& config, void (*wake)(void*), void* wakeContext)
    : config_(config), wake_(wake), wakeContext_(wakeContext), seen_(new PaddedEpoch[kMaxThreads]), loads_(new PaddedLoad[kMaxThreads]), settings_(config.settings) {
  for (size_t i = 0; i < kMaxThreads; i++) seen_[i].value.store(kOffline, std::memory_order_relaxed);
}

Engine::~Engine() {
  Shutdown();
  delete table_.load();
  for (auto& r : retired_) delete r.first;
}

int Engine::AddLoop(const std::vector<int>& listenFds) {
  if (started_ || loops_.size() >= kMaxThreads) return -EINVAL;
  loops_.push_back(std::make_unique<Loop>(this, loops_.size(), listenFds));
  return 0;
}

int Engine::Start() {
  if (started_ || loops_.empty()) return -EINVAL;
  for (auto& loop : loops_) {
    int rc = loop->Open();
    if (rc < 0) return rc;
  }
  // Loop threads take no signals: Node handles them on its main thread.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  for (auto& loop : loops_) loop->Start();
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  started_ = true;
  return 0;
}

// Quiescent-state-based reclamation. A loop reads the table only between two quiescent points:
// at the top of each iteration it announces the epoch it saw (and `kOffline` while it blocks in
// epoll_wait), then loads the table, and drops it before the next. SetTable publishes the new
// table, then advances the epoch to E: a thread that has since announced E or more, or is
// offline, loaded the table after the switch (every one of these operations is seq_cst), so
// the old one, retired at E, can go once every thread is past it. No lock on the per-connection
// path, and a stalled JavaScript thread delays only the freeing of old tables.
void Engine::SetTable(Table* table) {
  const Table* old = table_.exchange(table, std::memory_order_seq_cst);
  uint64_t epoch = epoch_.fetch_add(1, std::memory_order_seq_cst) + 1;
  if (old != nullptr) retired_.emplace_back(old, epoch);
  Reclaim();
}

void Engine::Reclaim() {
  size_t kept = 0;
  for (auto& r : retired_) {
    bool free = true;
    for (size_t i = 0; i < loops_.size() && free; i++) {
      uint64_t seen = seen_[i].value.load(std::memory_order_seq_cst);
      free = seen == kOffline || seen >= r.second;
    }
    if (free) delete r.first;
    else retired_[kept++] = r;
  }
  retired_.resize(kept);
}

void Engine::Poke(size_t index) {
  if (index < loops_.size()) loops_[index]->Post(Loop::kAcceptNow);
}

void Engine::StopAccepting() {
  for (auto& loop : loops_) loop->Post(Loop::kStopAccepting);
}

void Engine::AbortAll() {
  for (auto& loop : loops_) loop->Post(Loop::kAbortAll);
}

void Engine::SetSettings(const EngineSettings& settings) {
  {
    std::lock_guard<std::mutex> lock(settingsMu_);
    settings_ = settings;
  }
  for (auto& loop : loops_) loop->Post(Loop::kSettings);
}

uint32_t Engine::RequestSnapshot(uint32_t limit) {
  snapshotLimit_.store(limit, std::memory_order_seq_cst);
  uint32_t seq = snapshotSeq_.fetch_add(1, std::memory_order_seq_cst) + 1;
  for (auto& loop : loops_) loop->Post(Loop::kSnapshot);
  return seq;
}

size_t Engine::Shutdown() {
  size_t closed = 0;
  if (started_) {
    for (auto& loop : loops_) loop->Post(Loop::kStop);
    for (auto& loop : loops_) closed += loop->Join();
  }
  loops_.clear();
  started_ = false;
  Reclaim();
  return closed;
}

void Engine::TakeEvents(std::string* out) {
  for (auto& loop : loops_) loop->TakeEvents(out);
}

Engine::Stats Engine::GetStats() {
  Stats s{};
  s.live = live_.load(std::memory_order_relaxed);
  s.threads = loops_.size();
  for (auto& loop : loops_) {
    s.accepted += loop->Accepted();
    s.overCapacity += loop->OverCapacity();
    s.pipesInUse += loop->Pipes().InUse();
    s.pipesPooled += loop->Pipes().Pooled();
    s.pipeSizeRefused += loop->Pipes().SizeRefused();
  }
  s.tablesRetired = retired_.size();
  const Table* t = table_.load();
  s.generation = t != nullptr ? t->generation() : 0;
  return s;
}

}  // namespace tpi
