#include "pp.h"

#include <algorithm>
#include <cstdio>
#include <vector>

namespace tpi {

namespace {

const uint8_t kSignature[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};
const char kV1Prefix[] = "PROXY ";
constexpr size_t kV1PrefixLength = 6;
constexpr size_t kV1MaxLength = 107;
constexpr size_t kV2Fixed = 16;
constexpr size_t kUniqueIdMax = 128;
constexpr size_t kUnixPath = 108;

enum TlvType : uint8_t { kAlpn = 0x01, kAuthority = 0x02, kCrc = 0x03, kUniqueId = 0x05, kSsl = 0x20 };

uint32_t g_crcTable[256];
bool g_crcReady = [] {
  for (uint32_t n = 0; n < 256; n++) {
    uint32_t c = n;
    for (int k = 0; k < 8; k++) c = (c & 1) != 0 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
    g_crcTable[n] = c;
  }
  return true;
}();

uint32_t Crc32c(uint32_t crc, const uint8_t* data, size_t n) {
  for (size_t i = 0; i < n; i++) crc = g_crcTable[(crc ^ data[i]) & 0xff] ^ (crc >> 8);
  return crc;
}

// Size of the address block for a v2 family/transport byte; -1 if the byte is not supported.
int AddressLength(uint8_t family) {
  switch (family) {
    case 0x00: return 0;
    case 0x11: case 0x12: return 12;
    case 0x21: case 0x22: return 36;
    case 0x31: case 0x32: return 216;
    default: return -1;
  }
}

// ---- strict address text (src/pp/address.ts) ----

bool ParseIPv4(const char* s, size_t start, size_t end, uint8_t out[4]) {
  size_t i = start;
  for (int octet = 0; octet < 4; octet++) {
    size_t first = i;
    unsigned value = 0;
    while (i < end && s[i] >= '0' && s[i] <= '9') {
      value = value * 10 + static_cast<unsigned>(s[i] - '0');
      if (value > 1000) value = 1000;  // only "> 255" matters
      i++;
    }
    size_t digits = i - first;
    if (digits == 0 || digits > 3 || value > 255) return false;
    if (digits > 1 && s[first] == '0') return false;
    out[octet] = static_cast<uint8_t>(value);
    if (octet < 3) {
      if (i >= end || s[i] != '.') return false;
      i++;
    }
  }
  return i == end;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool ParseIPv6(const char* s, size_t n, uint8_t out[16]) {
  if (n < 2 || n > 45) return false;
  unsigned words[9];
  size_t count = 0;
  int gap = -1;
  size_t i = 0;
  if (s[0] == ':') {
    if (s[1] != ':') return false;
    gap = 0;
    i = 2;
  }
  while (i < n) {
    size_t start = i;
    unsigned value = 0;
    int h;
    while (i < n && (h = HexValue(s[i])) >= 0) {
      value = ((value << 4) | static_cast<unsigned>(h)) & 0xfffff;
      i++;
    }
    if (i < n && s[i] == '.') {
      uint8_t tail[4];
      if (!ParseIPv4(s, start, n, tail)) return false;
      if (count + 2 > 9) return false;
      words[count++] = (tail[0] << 8) | tail[1];
      words[count++] = (tail[2] << 8) | tail[3];
      i = n;
      break;
    }
    size_t digits = i - start;
    if (digits == 0 || digits > 4) return false;
    if (count >= 9) return false;
    words[count++] = value;
    if (i == n) break;
    if (s[i] != ':') return false;
    i++;
    if (i < n && s[i] == ':') {
      if (gap >= 0) return false;
      gap = static_cast<int>(count);
      i++;
    } else if (i == n) {
      return false;
    }
  }
  if (gap < 0 ? count != 8 : count > 7) return false;
  memset(out, 0, 16);
  size_t tailStart = gap < 0 ? 8 : 8 - (count - static_cast<size_t>(gap));
  for (size_t w = 0; w < count; w++) {
    size_t slot = gap >= 0 && w >= static_cast<size_t>(gap) ? tailStart + (w - static_cast<size_t>(gap)) : w;
    out[slot * 2] = static_cast<uint8_t>(words[w] >> 8);
    out[slot * 2 + 1] = static_cast<uint8_t>(words[w] & 0xff);
  }
  return true;
}

// Decimal 0-65535, no sign, no leading zeros; -1 otherwise.
int ParsePort(const char* s, size_t n) {
  if (n == 0 || n > 5 || (n > 1 && s[0] == '0')) return -1;
  int value = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9') return -1;
    value = value * 10 + (s[i] - '0');
  }
  return value <= 65535 ? value : -1;
}

PpStatus Fail(PpError code, PpError* error) {
  *error = code;
  return PpStatus::kFailed;
}

// A complete v1 line data[0, end): the prefix is checked, and its only CR/LF is the final CRLF.
PpStatus DecodeV1(const uint8_t* data, size_t end, PpHeader* out, PpError* error) {
  const char* line = reinterpret_cast<const char*>(data) + kV1PrefixLength;
  size_t n = end - 2 - kV1PrefixLength;
  out->version = 1;
  out->length = end;
  size_t sp = 0;
  while (sp < n && line[sp] != ' ') sp++;
  if (sp == 7 && memcmp(line, "UNKNOWN", 7) == 0) {
    // The receiver ignores everything after UNKNOWN up to the CRLF.
    out->family = 0x00;
    return PpStatus::kDone;
  }
  bool v6;
  if (sp == 4 && memcmp(line, "TCP4", 4) == 0) v6 = false;
  else if (sp == 4 && memcmp(line, "TCP6", 4) == 0) v6 = true;
  else return Fail(kPpV1Malformed, error);
  // Exactly five single-space separated fields.
  size_t start[5];
  size_t len[5];
  size_t field = 0;
  size_t from = 0;
  for (size_t i = 0; i <= n; i++) {
    if (i == n || line[i] == ' ') {
      if (field == 5) return Fail(kPpV1Malformed, error);
      start[field] = from;
      len[field] = i - from;
      field++;
      from = i + 1;
    }
  }
  if (field != 5) return Fail(kPpV1Malformed, error);
  Endpoint* ends[2] = {&out->source, &out->destination};
  for (int k = 0; k < 2; k++) {
    const char* text = line + start[1 + k];
    Endpoint* e = ends[k];
    if (v6) {
      if (!ParseIPv6(text, len[1 + k], e->ip)) return Fail(kPpV1Malformed, error);
      e->family = 6;
    } else {
      uint8_t v4[4];
      if (!ParseIPv4(text, 0, len[1 + k], v4)) return Fail(kPpV1Malformed, error);
      MapV4(v4, e->ip);
      e->family = 4;
    }
  }
  int sport = ParsePort(line + start[3], len[3]);
  int dport = ParsePort(line + start[4], len[4]);
  if (sport < 0 || dport < 0) return Fail(kPpV1Malformed, error);
  out->source.port = static_cast<uint16_t>(sport);
  out->destination.port = static_cast<uint16_t>(dport);
  out->family = v6 ? 0x21 : 0x11;
  return PpStatus::kDone;
}

struct Tlv {
  uint8_t type;
  size_t offset;  // of the value
  size_t length;
};

// Splits data[start, end) into TLVs; false when one is truncated.
bool SplitTlvs(const uint8_t* data, size_t start, size_t end, std::vector<Tlv>* out) {
  size_t pos = start;
  while (pos < end) {
    if (end - pos < 3) return false;
    size_t length = (static_cast<size_t>(data[pos + 1]) << 8) | data[pos + 2];
    size_t value = pos + 3;
    if (length > end - value) return false;
    if (out != nullptr) out->push_back(Tlv{data[pos], value, length});
    pos = value + length;
  }
  return true;
}

PpStatus DecodeV2(const uint8_t* data, size_t total, PpHeader* out, PpError* error) {
  out->version = 2;
  out->length = total;
  out->local = (data[12] & 0x0f) == 0;
  uint8_t fam = data[13];
  out->family = fam;
  // LOCAL and UNSPEC carry nothing the receiver may use: their bytes are skipped unparsed.
  if (out->local || fam == 0) return PpStatus::kDone;
  const uint8_t* a = data + kV2Fixed;
  size_t tlvStart;
  switch (fam >> 4) {
    case 1:
      MapV4(a, out->source.ip);
      MapV4(a + 4, out->destination.ip);
      out->source.port = static_cast<uint16_t>((a[8] << 8) | a[9]);
      out->destination.port = static_cast<uint16_t>((a[10] << 8) | a[11]);
      out->source.family = out->destination.family = 4;
      tlvStart = kV2Fixed + 12;
      break;
    case 2:
      memcpy(out->source.ip, a, 16);
      memcpy(out->destination.ip, a + 16, 16);
      out->source.port = static_cast<uint16_t>((a[32] << 8) | a[33]);
      out->destination.port = static_cast<uint16_t>((a[34] << 8) | a[35]);
      out->source.family = out->destination.family = 6;
      tlvStart = kV2Fixed + 36;
      break;
    default:
      tlvStart = kV2Fixed + 2 * kUnixPath;
  }
  if (tlvStart >= total) return PpStatus::kDone;
  std::vector<Tlv> tlvs;
  if (!SplitTlvs(data, tlvStart, total, &tlvs)) return Fail(kPpTlv, error);
  out->tlvCount = static_cast<uint32_t>(tlvs.size());
  for (const Tlv& t : tlvs) {
    switch (t.type) {
      case kUniqueId:
        if (t.length > kUniqueIdMax) return Fail(kPpTlv, error);
        break;
      case kSsl:
        // client (1) + verify (4), then sub-TLVs.
        if (t.length < 5 || !SplitTlvs(data, t.offset + 5, t.offset + t.length, nullptr)) return Fail(kPpTlv, error);
        break;
      case kCrc: {
        if (t.length != 4 || out->crc32c) return Fail(kPpCrc32c, error);
        uint32_t expected = (static_cast<uint32_t>(data[t.offset]) << 24) | (data[t.offset + 1] << 16) |
                            (data[t.offset + 2] << 8) | data[t.offset + 3];
        // Over the whole header with the checksum's own 4 bytes taken as zero.
        static const uint8_t kZeros[4] = {0, 0, 0, 0};
        uint32_t crc = Crc32c(0xffffffffu, data, t.offset);
        crc = Crc32c(crc, kZeros, 4);
        crc = ~Crc32c(crc, data + t.offset + 4, total - t.offset - 4);
        if (crc != expected) return Fail(kPpCrc32c, error);
        out->crc32c = true;
        break;
      }
      default:
        break;
    }
  }
  for (const Tlv& t : tlvs) {
    if (t.type == kAlpn || t.type == kAuthority || t.type == kUniqueId || t.type == kSsl) {
      out->forwarded.append(reinterpret_cast<const char*>(data + t.offset - 3), t.length + 3);
    }
  }
  return PpStatus::kDone;
}

}  // namespace

size_t ProxyHeaderMaxLength(size_t maxV2Length) { return std::max(kV1MaxLength, kV2Fixed + maxV2Length); }

PpStatus ParseProxyHeader(const uint8_t* data, size_t n, size_t maxV2Length, PpHeader* out, PpError* error, size_t* want) {
  *out = PpHeader{};
  *error = kPpOk;
  if (n == 0) {
    *want = kV1MaxLength;
    return PpStatus::kNeedMore;
  }
  // 0x0D can only start a v2 signature; anything else must be "PROXY ".
  bool v2 = data[0] == 0x0d;
  const uint8_t* expected = v2 ? kSignature : reinterpret_cast<const uint8_t*>(kV1Prefix);
  size_t expectedLength = v2 ? sizeof(kSignature) : kV1PrefixLength;
  size_t m = n < expectedLength ? n : expectedLength;
  for (size_t i = 0; i < m; i++) {
    if (data[i] != expected[i]) return Fail(kPpNotProxy, error);
  }
  if (!v2) {
    size_t limit = n < kV1MaxLength ? n : kV1MaxLength;
    for (size_t i = kV1PrefixLength < m ? kV1PrefixLength : m; i < limit; i++) {
      if (data[i] == '\n') return Fail(kPpV1Malformed, error);
      if (data[i] != '\r') continue;
      if (i + 2 > kV1MaxLength) return Fail(kPpV1TooLong, error);
      if (i + 1 >= n) {
        *want = kV1MaxLength;
        return PpStatus::kNeedMore;
      }
      if (data[i + 1] != '\n') return Fail(kPpV1Malformed, error);
      return DecodeV1(data, i + 2, out, error);
    }
    if (limit == kV1MaxLength) return Fail(kPpV1TooLong, error);
    *want = kV1MaxLength;
    return PpStatus::kNeedMore;
  }
  if (n > 12) {
    if ((data[12] >> 4) != 2) return Fail(kPpV2Version, error);
    if ((data[12] & 0x0f) > 1) return Fail(kPpV2Command, error);
  }
  if (n > 13 && AddressLength(data[13]) < 0) return Fail(kPpV2Family, error);
  if (n < kV2Fixed) {
    *want = kV2Fixed;
    return PpStatus::kNeedMore;
  }
  size_t length = (static_cast<size_t>(data[14]) << 8) | data[15];
  if ((data[12] & 0x0f) == 1 && length < static_cast<size_t>(AddressLength(data[13]))) return Fail(kPpV2Length, error);
  if (length > maxV2Length) return Fail(kPpV2TooLong, error);
  size_t total = kV2Fixed + length;
  if (n < total) {
    *want = total;
    return PpStatus::kNeedMore;
  }
  return DecodeV2(data, total, out, error);
}

namespace {

// RFC 5952 text of an IPv6 address (src/pp/address.ts formatIPv6); IPv4-mapped as ::ffff:a.b.c.d.
std::string FormatIPv6(const uint8_t ip[16]) {
  char buf[48];
  if (IsMapped(ip)) {
    snprintf(buf, sizeof(buf), "::ffff:%u.%u.%u.%u", ip[12], ip[13], ip[14], ip[15]);
    return buf;
  }
  int bestStart = -1;
  int bestLen = 1;
  int runStart = -1;
  for (int w = 0; w <= 8; w++) {
    bool zero = w < 8 && ip[w * 2] == 0 && ip[w * 2 + 1] == 0;
    if (zero) {
      if (runStart < 0) runStart = w;
    } else if (runStart >= 0) {
      if (w - runStart > bestLen) {
        bestStart = runStart;
        bestLen = w - runStart;
      }
      runStart = -1;
    }
  }
  std::string s;
  for (int w = 0; w < 8; w++) {
    if (w == bestStart) {
      s += "::";
      w += bestLen - 1;
      continue;
    }
    if (!s.empty() && s.back() != ':') s += ':';
    snprintf(buf, sizeof(buf), "%x", (ip[w * 2] << 8) | ip[w * 2 + 1]);
    s += buf;
  }
  return s;
}

}  // namespace

bool EncodeProxyHeader(int version, const Endpoint& source, const Endpoint& destination, const std::string& tlvs, std::string* out) {
  bool v4 = source.family == 4 && destination.family == 4;
  if (version == 1) {
    char line[kV1MaxLength + 1];
    if (v4) {
      const uint8_t* s = source.ip + 12;
      const uint8_t* d = destination.ip + 12;
      snprintf(line, sizeof(line), "PROXY TCP4 %u.%u.%u.%u %u.%u.%u.%u %u %u\r\n", s[0], s[1], s[2], s[3], d[0], d[1], d[2], d[3],
               source.port, destination.port);
    } else {
      snprintf(line, sizeof(line), "PROXY TCP6 %s %s %u %u\r\n", FormatIPv6(source.ip).c_str(), FormatIPv6(destination.ip).c_str(),
               source.port, destination.port);
    }
    out->append(line);
    return true;
  }
  size_t addresses = v4 ? 12 : 36;
  size_t length = addresses + tlvs.size();
  if (length > 65535) return false;
  size_t at = out->size();
  out->resize(at + kV2Fixed + length);
  uint8_t* p = reinterpret_cast<uint8_t*>(&(*out)[at]);
  memcpy(p, kSignature, sizeof(kSignature));
  p[12] = 0x21;  // version 2, PROXY
  p[13] = v4 ? 0x11 : 0x21;
  p[14] = static_cast<uint8_t>(length >> 8);
  p[15] = static_cast<uint8_t>(length & 0xff);
  uint8_t* a = p + kV2Fixed;
  if (v4) {
    memcpy(a, source.ip + 12, 4);
    memcpy(a + 4, destination.ip + 12, 4);
    a += 8;
  } else {
    memcpy(a, source.ip, 16);
    memcpy(a + 16, destination.ip, 16);
    a += 32;
  }
  a[0] = static_cast<uint8_t>(source.port >> 8);
  a[1] = static_cast<uint8_t>(source.port & 0xff);
  a[2] = static_cast<uint8_t>(destination.port >> 8);
  a[3] = static_cast<uint8_t>(destination.port & 0xff);
  if (!tlvs.empty()) memcpy(a + 4, tlvs.data(), tlvs.size());
  return true;
}

}  // namespace tpi
