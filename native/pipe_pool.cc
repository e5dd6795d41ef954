#include "pipe_pool.h"

#include "common.h"

#include <fcntl.h>
#include <unistd.h>

namespace tpi {

bool PipePool::Get(Pipe* p) {
  if (!pool_.empty()) {
    *p = pool_.back();
    pool_.pop_back();
    pooled_.store(pool_.size(), std::memory_order_relaxed);
  } else {
    int fds[2];
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0) return false;
    p->r = fds[0];
    p->w = fds[1];
    // Larger pipes move more per splice call and per wake-up. The kernel refuses beyond
    // fs.pipe-max-size, or once the user's pipes pass fs.pipe-user-pages-soft (without
    // CAP_SYS_RESOURCE): the pipe then keeps its default size, and the refusal is counted.
    if (size_ > 0 && fcntl(p->w, F_SETPIPE_SZ, size_) < 0) refused_.fetch_add(1, std::memory_order_relaxed);
  }
  inUse_.fetch_add(1, std::memory_order_relaxed);
  return true;
}

void PipePool::Put(Pipe* p, bool empty, bool grown) {
  if (p->r < 0) return;
  if (empty && !grown && pool_.size() < kMax) {
    pool_.push_back(*p);
    pooled_.store(pool_.size(), std::memory_order_relaxed);
  } else {
    CloseFd(&p->r);
    CloseFd(&p->w);
  }
  *p = Pipe{};
  inUse_.fetch_sub(1, std::memory_order_relaxed);
}

void PipePool::Clear() {
  for (Pipe& p : pool_) {
    CloseFd(&p.r);
    CloseFd(&p.w);
  }
  pool_.clear();
  pooled_.store(0, std::memory_order_relaxed);
}

}  // namespace tpi
