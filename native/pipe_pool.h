// A thread's pool of empty pipes, HAProxy's src/pipe.c in spirit (get / put / kill): a direction
// of a relay holds a pipe only while bytes are in flight, so an idle connection costs its two
// sockets and nothing more, and a busy one does not pay pipe2() + F_SETPIPE_SZ per wake-up.
// Owned by one loop thread; the counters are atomics only so that stats can be read anywhere.
#pragma once

#include <atomic>
#include <cstddef>
#include <vector>

namespace tpi {

struct Pipe {
  int r = -1;
  int w = -1;
};

class PipePool {
 public:
  // Empty pipes kept for reuse; more are closed. Bounds what the pool costs (two descriptors
  // each) while sparing bulk transfers a pipe2() per wake-up.
  static constexpr size_t kMax = 64;

  // size: bytes asked for each new pipe (0: the kernel's default, 64 KiB).
  explicit PipePool(int size) : size_(size) {}
  ~PipePool() { Clear(); }
  PipePool(const PipePool&) = delete;
  PipePool& operator=(const PipePool&) = delete;

  // A pipe from the pool, else a new one; false when none can be had (out of descriptors or of
  // pipe buffers): the caller waits and tries again.
  bool Get(Pipe* p);
  // Gives a pipe back. Only an empty one is pooled (bytes never change pipes); a pipe with bytes,
  // or one grown beyond the pool's size, or one past kMax is closed.
  void Put(Pipe* p, bool empty, bool grown = false);
  // Closes every pooled pipe.
  void Clear();

  size_t InUse() const { return inUse_.load(std::memory_order_relaxed); }
  size_t Pooled() const { return pooled_.load(std::memory_order_relaxed); }
  // New pipes the kernel refused the size (fs.pipe-user-pages-soft): they kept its default.
  size_t SizeRefused() const { return refused_.load(std::memory_order_relaxed); }

 private:
  int size_;
  std::vector<Pipe> pool_;
  std::atomic<size_t> inUse_{0};
  std::atomic<size_t> pooled_{0};
  std::atomic<size_t> refused_{0};
};

}  // namespace tpi
