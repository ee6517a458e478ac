#include "ps/auth.h"

#include <algorithm>
#include <string>

#include "core/error.h"

namespace qgrad::ps {

bool same_secret(std::string_view a, std::string_view b) {
  unsigned diff = a.size() == b.size() ? 0u : 1u;
  const size_t n = std::min(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) diff |= static_cast<unsigned>(a[i] ^ b[i]);
  return diff == 0;
}

CallStatus admit_call(std::optional<std::string_view> authorization, std::string_view token,
                      uint32_t version) {
  if (!authorization) {
    return {CallCode::kUnauthenticated, "missing 'authorization: Bearer <token>' metadata"};
  }
  if (!same_secret(*authorization, "Bearer " + std::string(token))) {
    return {CallCode::kUnauthenticated, "wrong token"};
  }
  if (version != kProtocolVersion) {
    return precondition(detail::concat("protocol version ", version, " is not supported (server ",
                                       "speaks version ", kProtocolVersion, ")"));
  }
  return call_ok();
}

}  // namespace qgrad::ps
