// PROXY protocol on the loop threads: parsing the header a trusted load balancer sends first, and
// building the one we send to pp=true backends. The rules and limits are HAProxy's
// doc/proxy-protocol.txt as src/pp/ (the TypeScript codec, the reference) implements them; a
// differential fuzz test (test/native/pp-parse.test.ts) holds the two to the same answers.
#pragma once

#include "common.h"

#include <cstddef>
#include <cstdint>
#include <string>

namespace tpi {

// Failures, in the order of src/pp/errors.ts PP_ERROR_CODES (then the two of the connection).
enum PpError : uint8_t {
  kPpOk = 0,
  kPpNotProxy,
  kPpV1TooLong,
  kPpV1Malformed,
  kPpV2Version,
  kPpV2Command,
  kPpV2Family,
  kPpV2Length,
  kPpV2TooLong,
  kPpTlv,
  kPpCrc32c,
  kPpTimeout,     // ERR_PP_TIMEOUT: no complete header in time
  kPpIncomplete,  // ERR_PP_INCOMPLETE: the connection ended inside the header
};

struct PpHeader {
  uint8_t version = 0;      // 1 or 2
  bool local = false;       // v2 LOCAL
  uint8_t family = 0;       // v2 family/transport byte; v1: 0x11 TCP4, 0x21 TCP6, 0x00 UNKNOWN
  size_t length = 0;        // bytes the header takes
  Endpoint source{};        // family 0 unless a PROXY header over INET/INET6
  Endpoint destination{};
  bool crc32c = false;      // carried a (valid) CRC32C TLV
  uint32_t tlvCount = 0;
  // The raw TLVs (type, length, value) that keep their meaning one hop further, in order: ALPN,
  // AUTHORITY, UNIQUE_ID and SSL (see the README's trust model).
  std::string forwarded;
};

enum class PpStatus { kNeedMore, kFailed, kDone };

// Parses a header at the start of data[0, n). kNeedMore: the bytes so far are a valid beginning,
// and `*want` is how many the header needs at most from here on (at most 16 + maxV2Length, or
// 107 for v1); kFailed sets `*error`; kDone fills `*out`. Every check looks only at the bytes it
// is given, so a header split anywhere fails or succeeds the same way once whole.
PpStatus ParseProxyHeader(const uint8_t* data, size_t n, size_t maxV2Length, PpHeader* out, PpError* error, size_t* want);

// The most bytes a header can take: a v1 line, or v2's fixed part and `maxV2Length`.
size_t ProxyHeaderMaxLength(size_t maxV2Length);

// The header we send: v2 (PROXY, STREAM) with `tlvs` (raw records) appended, or v1. IPv4 on both
// sides goes out as IPv4, otherwise both as IPv6 (the IPv4 side mapped). Appends to `out`.
// False when v2's length field cannot hold it.
bool EncodeProxyHeader(int version, const Endpoint& source, const Endpoint& destination, const std::string& tlvs, std::string* out);

}  // namespace tpi
