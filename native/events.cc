#include "events.h"

namespace tpi {

namespace {

void Put(std::string* out, size_t at, const void* p, size_t n) { memcpy(&(*out)[at], p, n); }

}  // namespace

void AppendEvent(std::string* out, const EventRecord& r, const std::string& instanceId) {
  uint32_t idLength = static_cast<uint32_t>(instanceId.size());
  uint32_t size = static_cast<uint32_t>((kEventFixedSize + idLength + 7) / 8 * 8);
  size_t at = out->size();
  out->resize(at + size, '\0');
  Put(out, at + 0, &size, 4);
  Put(out, at + 4, &r.type, 1);
  Put(out, at + 5, &r.kind, 1);
  Put(out, at + 6, &r.reason, 1);
  Put(out, at + 7, &r.end, 1);
  Put(out, at + 8, &r.id, 8);
  Put(out, at + 16, &r.err, 4);
  Put(out, at + 20, &r.syscall, 1);
  Put(out, at + 21, &r.inbound, 1);
  Put(out, at + 22, &r.upstreamPort, 2);
  Put(out, at + 24, &r.peer, 20);
  Put(out, at + 44, &r.destination, 20);
  Put(out, at + 64, &r.client, 20);
  Put(out, at + 84, &idLength, 4);
  Put(out, at + 88, &r.bytesIn, 8);
  Put(out, at + 96, &r.bytesOut, 8);
  Put(out, at + 104, &r.acceptedUs, 8);
  Put(out, at + 112, &r.decidedUs, 8);
  Put(out, at + 120, &r.connectedUs, 8);
  Put(out, at + 128, &r.endedUs, 8);
  if (idLength > 0) Put(out, at + kEventFixedSize, instanceId.data(), idLength);
}

}  // namespace tpi
