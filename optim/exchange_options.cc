#include "optim/exchange_options.h"

#include "core/error.h"

namespace qgrad {

NanPolicy parse_nan_policy(std::string_view name) {
  if (name == "error") return NanPolicy::kError;
  if (name == "skip-step") return NanPolicy::kSkipStep;
  throw InvalidArgument(
      detail::concat("unknown nan policy '", name, "'; valid policies: error, skip-step"));
}

std::string_view nan_policy_name(NanPolicy policy) {
  return policy == NanPolicy::kError ? "error" : "skip-step";
}

}  // namespace qgrad
