// qgrad's error types. Every message names what was wrong and what was expected. Library code
// throws; it never aborts. Thread-safe: plain exception types.
#pragma once

#include <exception>
#include <sstream>
#include <stdexcept>
#include <string>

namespace qgrad {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// A flag, a codec spec, a shape or an input value (NaN, Inf) that the caller got wrong.
struct InvalidArgument : Error {
  using Error::Error;
};
// Wire bytes that failed a check: truncated, flipped, or meant for another codec or shape.
struct CorruptPayload : Error {
  using Error::Error;
};
// A peer is gone, or MPI / NCCL / gRPC reported a failure.
struct CommError : Error {
  using Error::Error;
};
struct TimeoutError : CommError {
  using CommError::CommError;
};

namespace detail {
template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

// The message of a captured exception, for reports that cross threads or ranks.
inline std::string describe_exception(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    return x.what();
  } catch (...) {
    return "an exception that is not a std::exception";
  }
}

}  // namespace qgrad

// QGRAD_CHECK(cond, "what", value, "more") throws InvalidArgument with the concatenated message.
#define QGRAD_CHECK(cond, ...)                                                         \
  do {                                                                                 \
    if (!(cond)) throw ::qgrad::InvalidArgument(::qgrad::detail::concat(__VA_ARGS__)); \
  } while (0)

// QGRAD_PAYLOAD_CHECK is the same for wire bytes: it throws CorruptPayload.
#define QGRAD_PAYLOAD_CHECK(cond, ...)                                                \
  do {                                                                                \
    if (!(cond)) throw ::qgrad::CorruptPayload(::qgrad::detail::concat(__VA_ARGS__)); \
  } while (0)
