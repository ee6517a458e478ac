// The version of the parameter-server protocol (ps/ps.proto) that this build speaks. The client
// sends it with every request; the server refuses any other (ps/auth.h) with FAILED_PRECONDITION
// naming both. Raise it with every change of ps.proto that an older peer would misread.
#pragma once

#include <cstdint>

namespace qgrad::ps {

inline constexpr uint32_t kProtocolVersion = 2;

}  // namespace qgrad::ps
