// The backend factory, gradient-route part: the routes whose libraries are optional (today the
// parameter servers of ps/; the collective route over a Communicator is always built and is
// qgrad::train(comm, ...) itself). The design of the factory: train/backends/communicators.h.
//
// A route is made in two steps so that the caller can tell a bad command line from a failed
// run: make_ps_route() checks and reads everything it can before training (the token and PEM
// files, so that a missing file names its flag), ParameterServerRoute::train() runs.
// Thread-safety: one route per worker, used by one thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "train/dataset.h"
#include "train/trainer.h"

namespace qgrad {

struct PsRouteOptions {
  std::vector<std::string> servers;  // HOST:PORT, one per shard, the same order on every worker
  std::string token_file;            // holds the servers' shared token
  uint32_t worker_id = 0;
  uint32_t workers = 1;
  std::chrono::milliseconds timeout{300'000};  // see PsTrainOptions::timeout (train/ps_training.h)
  std::string tls_ca, tls_cert, tls_key;       // PEM files; empty: plaintext
};

// One worker's way through the parameter servers (train/ps_training.h).
class ParameterServerRoute {
 public:
  virtual ~ParameterServerRoute() = default;
  // Trains on this worker's shard of `data`; throws what train_with_ps throws.
  virtual void train(const DataSplit& data, const TrainOptions& options) = 0;
};

// Throws InvalidArgument for a file that cannot be read (naming its flag) or TLS flags that do
// not go together; in a build without gRPC: "--ps needs a qgrad built with the parameter server
// (-DQGRAD_WITH_PS=ON, gRPC and Protobuf installed)".
std::unique_ptr<ParameterServerRoute> make_ps_route(const PsRouteOptions& options);

}  // namespace qgrad
