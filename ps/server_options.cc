#include "ps/server_options.h"

#include "core/error.h"

namespace qgrad::ps {

void check_server_options(const ServerOptions& options) {
  QGRAD_CHECK(!options.token.empty(), "ParameterServer: the token must not be empty");
  QGRAD_CHECK(options.workers >= 1, "ParameterServer: workers must be >= 1, got ", options.workers);
  QGRAD_CHECK(options.max_message_bytes >= 1024 && options.max_message_bytes <= (1u << 31) - 1,
              "ParameterServer: max_message_bytes must be in [1024, 2^31), got ",
              options.max_message_bytes);
  QGRAD_CHECK(options.timeout.count() >= 0, "ParameterServer: the timeout must be >= 0");
  QGRAD_CHECK(options.quorum <= options.workers, "ParameterServer: quorum ", options.quorum,
              " is more than the ", options.workers, " workers");
  QGRAD_CHECK(options.quorum == 0 || options.timeout.count() > 0,
              "ParameterServer: a quorum needs a timeout (without one every step waits for "
              "every worker)");
  QGRAD_CHECK(options.checkpoint_every >= 1, "ParameterServer: checkpoint_every must be >= 1");
  if (options.async) {
    // Sync-only machinery: a quorum completes a step, the downlink keeps one copy of the
    // workers' model; in async mode there are no steps to complete and no shared copy.
    QGRAD_CHECK(options.timeout.count() == 0 && options.quorum == 0,
                "ParameterServer: --timeout and --quorum are for the synchronous mode (async mode "
                "applies each push when it arrives and waits for nobody)");
    QGRAD_CHECK(options.downlink_codec.empty(),
                "ParameterServer: --downlink-codec needs the synchronous mode: the server keeps "
                "one copy of the workers' model, and asynchronous workers hold different "
                "versions");
  } else {
    QGRAD_CHECK(options.max_staleness == UINT64_MAX,
                "ParameterServer: --max-staleness is for the asynchronous mode (--mode async)");
  }
}

void check_given_model(const ServerOptions& options) {
  if (options.shape.empty()) return;
  QGRAD_CHECK(options.initial.size() == options.shape.size(),
              "ParameterServer: ", options.initial.size(), " initial tensors for ",
              options.shape.size(), " keys");
  for (size_t k = 0; k < options.shape.size(); ++k) {
    QGRAD_CHECK(options.initial[k].size() == options.shape[k].size,
                "ParameterServer: initial value of key ", k, " ('", options.shape[k].name,
                "') has ", options.initial[k].size(), " elements, the shape says ",
                options.shape[k].size);
  }
}

uint32_t effective_quorum(const ServerOptions& options) {
  if (options.timeout.count() == 0) return options.workers;
  return options.quorum > 0 ? options.quorum : options.workers / 2 + 1;
}

}  // namespace qgrad::ps
