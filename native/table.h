// The decision table reader. TypeScript (src/datapath/table.ts) compiles the targets, this host's
// addresses, the trusted PROXY-header sources and every registered instance's DecisionEntry into
// one immutable little-endian buffer; the loop threads only read it, without locks. No policy is
// made here: the table is data, and this file looks things up in it.
//
// Layout (all offsets from the start, every section 8-byte aligned), see table.ts for the writer:
//   header   80 bytes: magic 'TPDT', version, generation, total length, then (offset, count) of
//            targets, port ranges, local networks, trusted sources, slots, ports; strings.
//   cidr     32 bytes: ip[16] (IPv4 mapped), family, prefix (in the 128-bit mapped space), pad,
//            firstRange, rangeCount (targets only), pad
//   range    4 bytes: from, to (u16 each)
//   slot     48 bytes: ip[16], flags (1 used, 2 local address, 4 instance), refuseAll (0 none,
//            1 policy_unknown, 2 fetch_failed, 3 policy_unattested), restrictMode, source (0 none,
//            1 override, 2 policy), firstPort, portCount, idOffset, idLength, index, pad
//   port     u32: port << 1 | pp, ascending
// Slots are an open-addressing hash (linear probing, a power of two, at most half full) keyed by
// the 16-byte address, hashed by KeyHash below (the same arithmetic as table.ts).
#pragma once

#include "common.h"

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>

namespace tpi {

// What a connection gets. The values cross to JavaScript in the connection events.
enum Kind : uint8_t { kTransparent = 0, kProxy = 1, kRefuse = 2, kNoDecision = 255 };

enum Reason : uint8_t {
  kUnregistered = 0,
  kByPolicy = 1,
  kByOverride = 2,
  kPolicyUnknown = 10,
  kFetchFailed = 11,
  kPolicyUnattested = 12,
  kPortNotAllowed = 13,
  kNotATarget = 14,
  kLocalDestination = 15,
  kOverCapacity = 16,
};

struct Decision {
  Kind kind = kNoDecision;
  Reason reason = kUnregistered;
  // The instance's slot (for its id and to report an unknown policy), or -1.
  int32_t slot = -1;
};

class Table {
 public:
  // Takes a copy of `data`; nullptr when it is not a well-formed table.
  static Table* Parse(const uint8_t* data, size_t len);
  ~Table();
  Table(const Table&) = delete;
  Table& operator=(const Table&) = delete;

  uint32_t generation() const { return generation_; }

  Decision Decide(const Endpoint& destination) const;
  bool IsTrusted(const Endpoint& peer) const;
  std::string InstanceId(int32_t slot) const;
  // Whether to report `slot`'s unknown policy now: at most once a second per instance (from any
  // thread), so that traffic keeps a failed fetch coming back without flooding JavaScript.
  bool ShouldReport(int32_t slot, int64_t nowMs) const;

 private:
  Table() = default;
  struct Cidr;
  struct Slot;
  // A section of the buffer: `count` records from `at`.
  template <typename T>
  struct Section {
    const T* at = nullptr;
    uint32_t count = 0;
  };
  bool InCidrs(const Section<Cidr>& list, const Endpoint& e, bool checkPort) const;
  const Slot* Find(const uint8_t ip[16]) const;

  uint8_t* data_ = nullptr;
  size_t len_ = 0;
  uint32_t generation_ = 0;
  Section<Cidr> targets_;
  Section<uint16_t> ranges_;  // count: ranges, two u16 each
  Section<Cidr> localNets_;
  Section<Cidr> trusted_;
  Section<Slot> slots_;
  Section<uint32_t> ports_;
  Section<char> strings_;  // count: bytes
  std::atomic<int64_t>* reported_ = nullptr;  // per slot: when its unknown policy was last reported
};

// The table's hash of a 16-byte key (table.ts keyHash).
uint32_t KeyHash(const uint8_t ip[16]);

}  // namespace tpi
