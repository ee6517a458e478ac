#include "ps/step_policy.h"

#include "ps/async_apply.h"
#include "ps/sync_round.h"

namespace qgrad::ps {

std::unique_ptr<StepPolicy> make_step_policy(const ServerOptions& options) {
  if (options.async) return std::make_unique<AsyncApply>(options);
  return std::make_unique<SyncRound>(options);
}

}  // namespace qgrad::ps
