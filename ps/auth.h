// Admission and accounting: what every call to the parameter server passes before its request is
// looked at (the bearer token, then the protocol version), and the byte counters of the calls
// that were answered.
//
// Every call must carry `authorization: Bearer <token>` metadata with the server's token (else
// UNAUTHENTICATED, "missing ..." or "wrong token") and speak kProtocolVersion (else
// FAILED_PRECONDITION naming both versions). The token is compared in constant time.
// Accounting: a call that succeeded adds its serialized request to bytes_in and its response to
// bytes_out; a refused one (at admission or later) counts once in `rejected`.
// Thread-safety: the functions are pure; CallCounters is guarded by the server's lock.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

#include "ps/call_status.h"
#include "ps/protocol_version.h"

namespace qgrad::ps {

// a == b, in a time that depends on the lengths only: a wrong token's running time says nothing
// about how much of it matched.
bool same_secret(std::string_view a, std::string_view b);

// authorization: the call's `authorization` metadata, nullopt when it has none.
CallStatus admit_call(std::optional<std::string_view> authorization, std::string_view token,
                      uint32_t version);

struct CallCounters {
  uint64_t bytes_in = 0;
  uint64_t bytes_out = 0;
  uint64_t rejected = 0;

  void count(bool ok, size_t request_bytes, size_t response_bytes) {
    if (ok) {
      bytes_in += request_bytes;
      bytes_out += response_bytes;
    } else {
      ++rejected;
    }
  }
};

}  // namespace qgrad::ps
