// Training through parameter servers: the worker loop of train/trainer.h with a ps::PsExchange
// (ps/worker.h) in place of the DistributedOptimizer. Each worker is its own process (or
// thread) with no communicator to the others: it trains on its shard (worker_id of workers), its
// metrics file is its own (bytes_sent = what it pushed, bytes_received = what it pulled), and it
// evaluates the whole test split (see trainer.h). The servers (qgrad-ps) adopt the model from
// the first worker that registers and refuse workers of another run, naming the field.
// Built only with QGRAD_WITH_PS (library qgrad_ps_trainer).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "ps/worker.h"
#include "train/trainer.h"

namespace qgrad {

struct PsTrainOptions {
  std::vector<std::string> servers;  // one address per shard, the same order on every worker
  std::string token;
  uint32_t worker_id = 0;
  uint32_t workers = 1;
  // Deadline of a pull (it waits for the slowest worker's push); other calls get a tenth of it,
  // at least 10 s. Also how long a server may stay unreachable (restarting) before the worker
  // gives up.
  std::chrono::milliseconds timeout{300'000};
  uint64_t resend_every = 0;                    // tests: see ps::PsExchangeOptions
  uint64_t stop_after = 0;                      // tests: see ps::PsExchangeOptions
  std::chrono::milliseconds push_delay{0};      // tests: see ps::PsExchangeOptions
  std::string tls_ca{}, tls_cert{}, tls_key{};  // see ps::ClientOptions (empty: plaintext)
};

struct PsTrainResult {
  TrainResult train;
  ps::PsCounters counters;  // per server: pushes, resends, duplicates, bytes
  size_t keys = 0;
};

// Throws InvalidArgument for bad options (naming the flag), RpcError (a CommError) naming the
// server when a call fails, and what train() throws.
PsTrainResult train_with_ps(const PsTrainOptions& ps, const DataSplit& data,
                            const TrainOptions& options);

}  // namespace qgrad
