#include "table.h"

#include <climits>
#include <cstdlib>

namespace tpi {

namespace {

constexpr uint32_t kMagic = 0x54445054;  // "TPDT" little-endian
constexpr uint32_t kVersion = 1;
constexpr size_t kHeaderSize = 80;

uint32_t U32(const uint8_t* p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;  // little-endian hosts only (x86-64, arm64): checked in Parse
}

uint32_t Mul(uint32_t a, uint32_t b) { return a * b; }

}  // namespace

struct Table::Cidr {
  uint8_t ip[16];
  uint8_t family;
  uint8_t prefix;
  uint16_t pad;
  uint32_t firstRange;
  uint32_t rangeCount;
  uint32_t pad2;
};

struct Table::Slot {
  uint8_t ip[16];
  uint8_t flags;
  uint8_t refuseAll;
  uint8_t restrictMode;
  uint8_t source;
  uint32_t firstPort;
  uint32_t portCount;
  uint32_t idOffset;
  uint32_t idLength;
  uint32_t index;
  uint32_t pad[2];
};

uint32_t KeyHash(const uint8_t ip[16]) {
  uint32_t h = 0x9e3779b9u;
  for (int i = 0; i < 4; i++) {
    h = Mul(h ^ U32(ip + 4 * i), 0x85ebca6bu);
    h ^= h >> 13;
  }
  h ^= h >> 16;
  h = Mul(h, 0x7feb352du);
  h ^= h >> 15;
  h = Mul(h, 0x846ca68bu);
  h ^= h >> 16;
  return h;
}

Table* Table::Parse(const uint8_t* data, size_t len) {
  static_assert(sizeof(Cidr) == 32, "cidr record is 32 bytes");
  static_assert(sizeof(Slot) == 48, "slot is 48 bytes");
  const uint16_t probe = 1;
  if (*reinterpret_cast<const uint8_t*>(&probe) != 1) return nullptr;  // big-endian host
  if (len < kHeaderSize || U32(data) != kMagic || U32(data + 4) != kVersion || U32(data + 12) != len) return nullptr;
  // Each section: (offset, count) within bounds, aligned for its records.
  auto section = [&](size_t at, size_t size, uint32_t* count) -> const uint8_t* {
    uint32_t off = U32(data + at);
    *count = U32(data + at + 4);
    if (off % 8 != 0 || off > len || static_cast<uint64_t>(*count) * size > len - off) return nullptr;
    return data + off;
  };
  auto* t = new Table();
  t->data_ = static_cast<uint8_t*>(aligned_alloc(64, (len + 63) / 64 * 64));
  if (t->data_ == nullptr) {
    delete t;
    return nullptr;
  }
  memcpy(t->data_, data, len);
  t->len_ = len;
  const uint8_t* d = t->data_;
  data = d;
  t->generation_ = U32(d + 8);
  bool ok = true;
  auto take = [&](size_t at, size_t size, auto* s) {
    const uint8_t* p = section(at, size, &s->count);
    if (p == nullptr && s->count != 0) ok = false;
    s->at = reinterpret_cast<decltype(s->at)>(p);
  };
  take(16, sizeof(Cidr), &t->targets_);
  take(24, 4, &t->ranges_);
  take(32, sizeof(Cidr), &t->localNets_);
  take(40, sizeof(Cidr), &t->trusted_);
  take(48, sizeof(Slot), &t->slots_);
  take(56, 4, &t->ports_);
  take(64, 1, &t->strings_);
  if (ok && (t->slots_.count == 0 || (t->slots_.count & (t->slots_.count - 1)) != 0)) ok = false;
  for (uint32_t i = 0; ok && i < t->targets_.count; i++) {
    const Cidr& c = t->targets_.at[i];
    if (static_cast<uint64_t>(c.firstRange) + c.rangeCount > t->ranges_.count || c.prefix > 128) ok = false;
  }
  for (uint32_t i = 0; ok && i < t->localNets_.count; i++) ok = t->localNets_.at[i].prefix <= 128;
  for (uint32_t i = 0; ok && i < t->trusted_.count; i++) ok = t->trusted_.at[i].prefix <= 128;
  uint32_t used = 0;
  for (uint32_t i = 0; ok && i < t->slots_.count; i++) {
    const Slot& s = t->slots_.at[i];
    if (s.flags == 0) continue;
    used++;
    if (static_cast<uint64_t>(s.firstPort) + s.portCount > t->ports_.count ||
        static_cast<uint64_t>(s.idOffset) + s.idLength > t->strings_.count || s.refuseAll > 3) {
      ok = false;
    }
  }
  // At least one empty slot, or a lookup of an absent key would never end.
  if (ok && used >= t->slots_.count) ok = false;
  if (!ok) {
    delete t;
    return nullptr;
  }
  t->reported_ = new std::atomic<int64_t>[t->slots_.count];
  for (uint32_t i = 0; i < t->slots_.count; i++) t->reported_[i].store(INT64_MIN / 2, std::memory_order_relaxed);
  return t;
}

Table::~Table() {
  free(data_);
  delete[] reported_;
}

const Table::Slot* Table::Find(const uint8_t ip[16]) const {
  uint32_t mask = slots_.count - 1;
  for (uint32_t i = KeyHash(ip) & mask;; i = (i + 1) & mask) {
    const Slot& s = slots_.at[i];
    if (s.flags == 0) return nullptr;
    if (memcmp(s.ip, ip, 16) == 0) return &s;
  }
}

bool Table::InCidrs(const Section<Cidr>& list, const Endpoint& e, bool checkPort) const {
  for (uint32_t i = 0; i < list.count; i++) {
    const Cidr& c = list.at[i];
    if (c.family != e.family) continue;
    uint32_t bits = c.prefix;
    uint32_t whole = bits / 8;
    if (memcmp(c.ip, e.ip, whole) != 0) continue;
    if (bits % 8 != 0) {
      uint8_t mask = static_cast<uint8_t>(0xff << (8 - bits % 8));
      if ((c.ip[whole] & mask) != (e.ip[whole] & mask)) continue;
    }
    if (!checkPort) return true;
    const uint16_t* r = ranges_.at + 2 * static_cast<size_t>(c.firstRange);
    for (uint32_t k = 0; k < c.rangeCount; k++) {
      if (e.port >= r[2 * k] && e.port <= r[2 * k + 1]) return true;
    }
  }
  return false;
}

Decision Table::Decide(const Endpoint& dst) const {
  Decision d;
  const Slot* s = Find(dst.ip);
  if ((s != nullptr && (s->flags & 2) != 0) || InCidrs(localNets_, dst, false)) {
    d.kind = kRefuse;
    d.reason = kLocalDestination;
    return d;
  }
  if (!InCidrs(targets_, dst, true)) {
    d.kind = kRefuse;
    d.reason = kNotATarget;
    return d;
  }
  if (s == nullptr || (s->flags & 4) == 0) {
    d.kind = kTransparent;
    d.reason = kUnregistered;
    return d;
  }
  d.slot = static_cast<int32_t>(s - slots_.at);
  if (s->refuseAll != 0) {
    d.kind = kRefuse;
    d.reason = static_cast<Reason>(kPolicyUnknown + s->refuseAll - 1);
    return d;
  }
  Reason by = s->source == 1 ? kByOverride : kByPolicy;
  // Binary search over the instance's ports (ascending by port).
  const uint32_t* p = ports_.at + s->firstPort;
  uint32_t lo = 0;
  uint32_t hi = s->portCount;
  while (lo < hi) {
    uint32_t mid = (lo + hi) / 2;
    uint32_t port = p[mid] >> 1;
    if (port == dst.port) {
      d.kind = (p[mid] & 1) != 0 ? kProxy : kTransparent;
      d.reason = by;
      return d;
    }
    if (port < dst.port) lo = mid + 1;
    else hi = mid;
  }
  if (s->restrictMode != 0) {
    d.kind = kRefuse;
    d.reason = kPortNotAllowed;
  } else {
    d.kind = kTransparent;
    d.reason = by;
  }
  return d;
}

bool Table::IsTrusted(const Endpoint& peer) const { return InCidrs(trusted_, peer, false); }

std::string Table::InstanceId(int32_t slot) const {
  if (slot < 0 || static_cast<uint32_t>(slot) >= slots_.count) return std::string();
  const Slot& s = slots_.at[slot];
  return std::string(strings_.at + s.idOffset, s.idLength);
}

bool Table::ShouldReport(int32_t slot, int64_t nowMs) const {
  if (slot < 0 || static_cast<uint32_t>(slot) >= slots_.count) return false;
  constexpr int64_t kReportIntervalMs = 1000;
  int64_t last = reported_[slot].load(std::memory_order_relaxed);
  if (nowMs - last < kReportIntervalMs) return false;
  // One thread wins the interval.
  return reported_[slot].compare_exchange_strong(last, nowMs, std::memory_order_relaxed);
}

}  // namespace tpi
