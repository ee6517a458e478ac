// qgrad-train: data-parallel training with compressed gradients.
//
//   qgrad-train --model mlp --data fashion-mnist --ranks 4 --codec qsgd:bits=4 ...
//                   ranks as threads of this process (no launcher needed; the default, 1 rank)
//   mpirun -np 4 qgrad-train --model mlp --data fashion-mnist --codec sign ...
//                   one rank per process over Open MPI (detected from mpirun's environment)
//   qgrad-train ... --link 100mbit[,latency=US][,burst=B]
//                   every rank behind an emulated link (comm/rate_limiter.h): the metrics'
//                   seconds and exchange times include the link's delay
//   qgrad-train --ps HOST:PORT[,HOST:PORT...] --token-file F --worker-id I --workers N ...
//                   one worker of N, through parameter servers (qgrad-ps; QGRAD_WITH_PS builds)
//
// Which backends this build has is the backend factory's business (train/backends/): this file
// asks it for the MPI world and the parameter-server route by name and has no #if.
//
// The first two give the same bits for the same flags. Exit status: 0 done, 1 training failed (with
// a message naming why), 2 bad command line.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <exception>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "comm/local/local_communicator.h"
#include "comm/rate_limiter.h"
#include "core/byte_size.h"
#include "core/codec_registry.h"
#include "core/error.h"
#include "train/backends/communicators.h"
#include "train/backends/routes.h"
#include "train/data/data_spec.h"
#include "train/trainer.h"

namespace {

using qgrad::launched_by_mpirun;
using qgrad::TrainOptions;

// The leading unsigned number of `text`, and where it ended (0 when there is none).
unsigned long long leading_number(const std::string& text, size_t& end) {
  end = 0;
  try {
    return std::stoull(text, &end);
  } catch (const std::exception&) {
    end = 0;
    return 0;
  }
}

std::vector<size_t> parse_widths(const std::string& text, const char* flag) {
  std::vector<size_t> out;
  if (text.empty() || text == "none") return out;
  std::stringstream ss(text);
  for (std::string item; std::getline(ss, item, ',');) {
    size_t pos = 0;
    const unsigned long long v = leading_number(item, pos);
    QGRAD_CHECK(pos == item.size() && !item.empty() && v > 0 && v <= (1u << 20), flag, ": '", item,
                "' is not a width in 1..1048576 (expected e.g. 256,128)");
    out.push_back(static_cast<size_t>(v));
  }
  return out;
}

void print_error(const char* what, const std::exception& e) {
  std::fprintf(stderr, "qgrad-train: %s%s\n", what, e.what());
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "qgrad-train: data-parallel training with compressed gradients.\n"
      "Runs on its own with --ranks N (ranks as threads), or one rank per process under "
      "mpirun."};
  // A later flag overrides an earlier one (scripts append overrides to a base command line).
  app.option_defaults()->always_capture_default()->multi_option_policy(
      CLI::MultiOptionPolicy::TakeLast);
  TrainOptions o;
  std::string strategy = "auto", optimizer = "sgd", schedule = "constant", nan = "error";
  std::string hidden = "256", channels = "16,32", bucket = "4MiB", min_compress = "0";
  int ranks = 0;
  double timeout_s = 300;
  bool quiet = false, nesterov = false;
  std::optional<float> momentum, beta1, beta2, eps;
  float weight_decay = 0;
  std::optional<qgrad::LinkOptions> link;  // --link

  app.add_option("--model", o.model, "linear | logistic | svm | mlp | cnn");
  app.add_option("--data", o.data,
                 "fashion-mnist[:dir=D] | libsvm:PATH[,test=PATH] | synthetic:kind=...");
  app.add_option("--codec", o.exchange.codec, "gradient codec spec (qgrad-codec list)");
  app.add_option("--strategy", strategy, "auto | allgather | scatter-reduce | majority | none");
  app.add_flag("--ef", o.exchange.error_feedback, "error feedback (a memory per bucket)");
  app.add_option("--optimizer", optimizer, "sgd | signum | adam");
  app.add_option("--momentum", momentum, "sgd: momentum (default 0); signum: beta (default 0.9)");
  app.add_flag("--nesterov", nesterov, "sgd: Nesterov momentum");
  app.add_flag("--worker-momentum", o.optimizer.worker_momentum,
               "sgd: momentum on each worker before compression (use with biased codecs + --ef)");
  app.add_option("--weight-decay", weight_decay, "L2 (sgd) or decoupled (signum, adam)");
  app.add_option("--beta1", beta1, "adam (0.9)");
  app.add_option("--beta2", beta2, "adam (0.999)");
  app.add_option("--eps", eps, "adam (1e-8)");
  app.add_option("--lr", o.lr, "learning rate");
  app.add_option("--lr-schedule", schedule, std::string(qgrad::describe_lr_schedules()));
  app.add_option("--batch", o.batch, "examples per rank and step");
  app.add_option("--epochs", o.epochs, "passes over the training set");
  app.add_option("--max-steps", o.max_steps,
                 "stop after this many steps in all (0: run every epoch; the lr schedule still "
                 "spans --epochs)");
  app.add_option("--seed", o.seed, "model init, batches and codec randomness");
  app.add_option("--eval-every", o.eval_every, "steps between evaluations (0: every epoch)");
  app.add_option("--log-every", o.log_every, "steps between metrics records");
  app.add_option("--metrics", o.metrics_path,
                 "JSON-lines metrics file written by rank 0 ({rank} in the name: every rank)");
  app.add_option("--checkpoint-dir", o.checkpoint_dir, "where checkpoints go");
  app.add_option("--checkpoint-every", o.checkpoint_every,
                 "steps between checkpoints (0: every epoch)");
  app.add_flag("--resume", o.resume, "continue from the latest checkpoint in --checkpoint-dir");
  app.add_option("--ranks", ranks, "ranks as threads of this process (not under mpirun)");
  app.add_option("--threads", o.model_options.threads,
                 "LibTorch/OpenBLAS threads per process (0: LibTorch's default)");
  app.add_option("--hidden", hidden, "mlp: hidden widths, comma-separated ('none': logistic)");
  app.add_option("--channels", channels, "cnn: conv channels, comma-separated");
  app.add_option("--bucket-bytes", bucket, "gradient bucket size (e.g. 4MiB)");
  app.add_option("--warmup-steps", o.exchange.warmup_steps,
                 "first steps exchanged uncompressed (fp32)");
  app.add_option("--min-compress-bytes", min_compress,
                 "buckets smaller than this go uncompressed (e.g. 64KiB)");
  app.add_option("--adversarial", o.adversarial,
                 "the last K ranks send negated gradients (robustness experiments)");
  app.add_option("--data-bits", o.model_options.data_bits,
                 "linear models: ZipML data quantization to b bits (0: off)");
  app.add_flag("--double-sampling", o.model_options.double_sampling,
               "linear models: ZipML double sampling (unbiased with --data-bits)");
  app.add_option("--nan", nan, "error | skip-step: what a NaN/Inf gradient does");
  app.add_option("--timeout", timeout_s, "seconds a rank waits for its peers before failing");
  app.add_flag("--quiet", quiet, "no progress output");
  app.add_option("--link", o.link,
                 "emulate a link per rank: RATE[,latency=US][,burst=B], RATE in tc units "
                 "(100mbit, 1gbit, ...) or 'unlimited'");
  std::string ps_servers, token_file;
  int64_t worker_id = -1, workers = 0;
  app.add_option("--ps", ps_servers,
                 "train through parameter servers (qgrad-ps): ADDR[,ADDR...], one per shard, "
                 "the same order on every worker");
  app.add_option("--token-file", token_file, "--ps: file holding the servers' shared token");
  app.add_option("--worker-id", worker_id, "--ps: this worker's id, 0..workers-1");
  app.add_option("--workers", workers, "--ps: the number of workers (qgrad-ps --workers)");
  std::string tls_ca, tls_cert, tls_key;
  app.add_option("--tls-ca", tls_ca,
                 "--ps: connect with TLS, verifying the servers with this CA "
                 "(PEM)");
  app.add_option("--tls-cert", tls_cert,
                 "--ps: this worker's certificate (PEM), for servers "
                 "that require one (qgrad-ps --tls-ca)");
  app.add_option("--tls-key", tls_key, "--ps: the key of --tls-cert (PEM)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);  // prints help, or the error and a hint
    return code == 0 ? 0 : 2;
  }

  // Everything that can be checked without data or peers: a bad flag is exit status 2.
  try {
    o.exchange.strategy = qgrad::parse_strategy(strategy);
    o.exchange.codec = qgrad::parse_codec_spec(o.exchange.codec).str();
    o.exchange.nan_policy = qgrad::parse_nan_policy(nan);
    o.exchange.bucket_bytes = qgrad::parse_byte_size(bucket, "--bucket-bytes");
    o.exchange.min_compress_bytes = qgrad::parse_byte_size(min_compress, "--min-compress-bytes");
    o.schedule = qgrad::parse_lr_schedule(schedule);
    o.optimizer.name = optimizer;
    if (optimizer == "signum") o.optimizer.momentum = 0.9f;
    if (momentum) o.optimizer.momentum = *momentum;
    o.optimizer.nesterov = nesterov;
    o.optimizer.weight_decay = weight_decay;
    if (beta1) o.optimizer.beta1 = *beta1;
    if (beta2) o.optimizer.beta2 = *beta2;
    if (eps) o.optimizer.eps = *eps;
    (void)qgrad::make_optimizer(o.optimizer);  // checks the combination
    o.model_options.hidden = parse_widths(hidden, "--hidden");
    o.model_options.channels = parse_widths(channels, "--channels");
    (void)qgrad::parse_data_spec(o.data);
    QGRAD_CHECK(qgrad::is_model_name(o.model), "--model: unknown model '", o.model,
                "' (valid: ", qgrad::model_names(), ")");
    QGRAD_CHECK(timeout_s > 0 && timeout_s <= 86400, "--timeout must be in (0, 86400] seconds");
    QGRAD_CHECK(ranks >= 0 && ranks <= 1024, "--ranks must be in 1..1024, got ", ranks);
    QGRAD_CHECK(o.model_options.data_bits >= 0 && o.model_options.data_bits <= 8,
                "--data-bits must be in 0..8, got ", o.model_options.data_bits);
    QGRAD_CHECK(o.model_options.threads >= 0, "--threads must be >= 0");
    QGRAD_CHECK((o.model_options.data_bits == 0 && !o.model_options.double_sampling) ||
                    qgrad::is_linear_model(o.model),
                "--data-bits and --double-sampling (ZipML) apply to the linear models only "
                "(linear, logistic, svm), not to ",
                o.model);
    QGRAD_CHECK(!o.model_options.double_sampling || o.model_options.data_bits > 0,
                "--double-sampling needs --data-bits B (1..8)");
    if (!o.link.empty()) {
      try {
        link = qgrad::parse_link_spec(o.link);
      } catch (const qgrad::Error& e) {
        QGRAD_CHECK(false, "--link: ", e.what());
      }
    }
  } catch (const qgrad::Error& e) {
    print_error("", e);
    return 2;
  }
  const bool use_ps = !ps_servers.empty();
  std::vector<std::string> servers;
  try {
    if (!use_ps) {
      QGRAD_CHECK(token_file.empty() && worker_id < 0 && workers == 0,
                  "--token-file, --worker-id and --workers go with --ps ADDR[,ADDR...]");
      QGRAD_CHECK(tls_ca.empty() && tls_cert.empty() && tls_key.empty(),
                  "--tls-ca, --tls-cert and --tls-key go with --ps ADDR[,ADDR...]");
    } else {
      std::stringstream ss(ps_servers);
      for (std::string item; std::getline(ss, item, ',');) {
        QGRAD_CHECK(!item.empty() && item.find(':') != std::string::npos, "--ps: '", item,
                    "' is not a HOST:PORT address");
        servers.push_back(item);
      }
      QGRAD_CHECK(!servers.empty(), "--ps: no server address");
      QGRAD_CHECK(!token_file.empty(), "--ps needs --token-file F (the servers' shared token)");
      QGRAD_CHECK(workers >= 1 && workers <= 65536, "--ps needs --workers N (1..65536)");
      QGRAD_CHECK(worker_id >= 0 && worker_id < workers, "--worker-id must be in 0..", workers - 1,
                  " (--workers ", workers, "), got ", worker_id);
      QGRAD_CHECK(ranks <= 1,
                  "--ranks with --ps: each worker is one process (or use mpirun "
                  "without --ps)");
      QGRAD_CHECK(o.checkpoint_dir.empty() && !o.resume,
                  "--checkpoint-dir/--resume with --ps: workers write no checkpoints; the "
                  "servers do (qgrad-ps --checkpoint-dir) and a restarted worker rejoins at their "
                  "step");
      QGRAD_CHECK(nan == "error",
                  "--nan skip-step with --ps: not supported (the workers would "
                  "have to agree on skipping a step before pushing it); use --nan error");
      QGRAD_CHECK(strategy == "auto", "--strategy with --ps: the servers aggregate");
      QGRAD_CHECK(!launched_by_mpirun(),
                  "--ps under mpirun: start the workers as separate "
                  "processes instead");
      QGRAD_CHECK(o.link.empty(),
                  "--link with --ps: the in-process link emulator wraps the "
                  "MPI/thread communicator; use scripts/netlab.sh to shape a worker's link");
    }
  } catch (const qgrad::Error& e) {
    print_error("", e);
    return 2;
  }
  if (!quiet) o.progress = &std::cout;
  if (link && !quiet) {
    std::cout << "qgrad-train: emulated link per rank: " << qgrad::describe(*link) << "\n";
  }
  // Every rank trains through its own emulated link when --link is given.
  const auto train_on = [&](qgrad::Communicator& comm, const qgrad::DataSplit& data) {
    if (!link) return qgrad::train(comm, data, o);
    qgrad::RateLimitedCommunicator limited(comm, *link);
    return qgrad::train(limited, data, o);
  };
  if (use_ps) {
    qgrad::PsRouteOptions ps;
    ps.servers = servers;
    ps.token_file = token_file;
    ps.worker_id = static_cast<uint32_t>(worker_id);
    ps.workers = static_cast<uint32_t>(workers);
    ps.timeout = std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
    ps.tls_ca = tls_ca;
    ps.tls_cert = tls_cert;
    ps.tls_key = tls_key;
    std::unique_ptr<qgrad::ParameterServerRoute> route;
    try {
      route = qgrad::make_ps_route(ps);  // reads the token and PEM files
      qgrad::validate(o, static_cast<int>(workers));
    } catch (const qgrad::Error& e) {
      print_error("", e);
      return 2;
    }
    // Progress from worker 0 only, as rank 0 prints it on the other paths.
    if (worker_id != 0) o.progress = nullptr;
    try {
      const qgrad::DataSplit data = qgrad::load_data(o.data);
      route->train(data, o);
      return 0;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "qgrad-train: worker %lld: error: %s\n",
                   static_cast<long long>(worker_id), e.what());
      return 1;
    }
  }
  qgrad::CommOptions comm_options;
  comm_options.timeout = std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));

  if (launched_by_mpirun()) {
    std::unique_ptr<qgrad::ProcessWorld> mpi;
    try {
      mpi = qgrad::join_world("mpi", &argc, &argv, "use --ranks N instead");
    } catch (const qgrad::InvalidArgument& e) {
      print_error("", e);  // a build without MPI
      return 2;
    }
    const int rank = mpi->rank();
    if (ranks > 1 && mpi->size() > 1) {
      if (rank == 0) {
        std::fprintf(stderr,
                     "qgrad-train: --ranks %d under mpirun with %d processes: use one or the "
                     "other (mpirun -np N, or --ranks N without mpirun)\n",
                     ranks, mpi->size());
      }
      return 2;
    }
    try {
      qgrad::validate(o, mpi->size());
    } catch (const qgrad::Error& e) {
      if (rank == 0) print_error("", e);  // every rank checks the same flags
      return 2;
    }
    try {
      const std::unique_ptr<qgrad::Communicator> world_comm = mpi->communicator(comm_options);
      qgrad::Communicator& comm = *world_comm;
      qgrad::DataSplit data;
      std::string error;
      try {
        data = qgrad::load_data(o.data);
      } catch (const std::exception& e) {
        error = e.what();
      }
      qgrad::agree_on_error(comm, error);
      (void)train_on(comm, data);
      return 0;
    } catch (const qgrad::InvalidArgument& e) {
      // Agreed failures (bad data, a checkpoint of another run, NaN): every rank has the same
      // message, rank 0 says it.
      if (rank == 0) print_error("error: ", e);
      return 1;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "qgrad-train: rank %d: error: %s\n", rank, e.what());
      return 1;
    }
  }

  const int world = ranks == 0 ? 1 : ranks;
  try {
    qgrad::validate(o, world);
  } catch (const qgrad::Error& e) {
    print_error("", e);
    return 2;
  }
  try {
    const qgrad::DataSplit data = qgrad::load_data(o.data);
    qgrad::run_local(
        world, [&](qgrad::Communicator& comm) { (void)train_on(comm, data); }, comm_options);
    return 0;
  } catch (const std::exception& e) {
    print_error("error: ", e);
    return 1;
  }
}
