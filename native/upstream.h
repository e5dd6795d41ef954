// The upstream socket, the one bind-before-connect of the addon: a non-blocking TCP socket to the
// original destination, from the client's own address (pp=false, IP_TRANSPARENT) or from ours
// (pp=true), connect started.
#pragma once

#include "events.h"

namespace tpi {

struct UpstreamResult {
  int fd = -1;            // the connecting socket, or -1
  int err = 0;            // the errno of the failed step
  Syscall syscall = kSysNone;
};

// `source`: the address to spoof (family 0: connect from our own address). `sourcePort`: the
// client's port to keep, 0 for one the kernel picks; a port in use falls back to a picked one.
UpstreamResult ConnectUpstream(const Endpoint& destination, const Endpoint& source, uint16_t sourcePort);

}  // namespace tpi
