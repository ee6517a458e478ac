// qgrad-torch-baseline: the yardstick for qgrad's overhead (the target: with codec `none`, a step
// of qgrad-train takes at most 10% longer than this; docs/measurements.md). It is the loop a user
// would write without qgrad: a torch::nn MLP 784-256-10, SGD with momentum from torch::optim, and
// after each backward one MPI_Allreduce of all gradients flattened into one fp32 buffer. Nothing in
// it comes from qgrad except the Fashion-MNIST loader, so that both programs train on the same
// bytes.
//
//   mpirun -np 4 --oversubscribe qgrad-torch-baseline [--steps 300] [--warmup 20] [--batch 64]
//                                                     [--order shuffled|sequential] [--json]
//
// Rank r trains on rows r, r+W, r+2W, ..., --batch of them per step: by default in a new random
// order each epoch, gathered with index_select, as a training loop with a shuffling data loader
// does (and as qgrad-train does: SGD wants shuffled batches); --order sequential takes
// consecutive rows, a slice of the shard without any copy (the lower bound of data handling).
// Prints the mean wall time per step over the steps after --warmup (the slowest rank's), rank 0's
// split of it in the terms of qgrad-train's metrics (compute = forward + backward, exchange =
// flatten + allreduce + copy back, update = the optimizer), and the training loss of the last
// steps, averaged over ranks. scripts/overhead.sh runs it against qgrad-train.
#include <ATen/Parallel.h>
#include <dlfcn.h>
#include <mpi.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/sgd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "train/data/data_spec.h"

namespace {

constexpr int64_t kHidden = 256;
constexpr double kLr = 0.05;
constexpr double kMomentum = 0.9;
constexpr int kLossSteps = 10;  // qgrad-train's default --log-every: its final loss spans as many

// The same thread setup as qgrad-train's default (--threads 1): several ranks share few cores.
// Torch 1.13 does not set OpenBLAS's pool, which starts one thread per core; OpenBLAS is looked
// up at run time so that another BLAS simply leaves it alone.
void use_one_thread() {
  at::set_num_threads(1);
  using BlasSetFn = void (*)(int);
  if (const auto set = reinterpret_cast<BlasSetFn>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads")))
    set(1);
}

struct Options {
  int steps = 300;
  int warmup = 20;
  int batch = 64;
  bool shuffled = true;
  bool json = false;
};

int run(const Options& o, int rank, int world) {
  const qgrad::Dataset data = qgrad::load_data("fashion-mnist").train;
  const int64_t dim = static_cast<int64_t>(data.dim);

  // The shard goes into tensors once, so that a batch is a slice and the timed loop holds only
  // what any training loop does.
  const auto local_rows = static_cast<int64_t>(
      (data.rows - static_cast<size_t>(rank) + static_cast<size_t>(world) - 1) /
      static_cast<size_t>(world));
  const int64_t batches = local_rows / o.batch;
  if (batches == 0) {
    if (rank == 0) std::fprintf(stderr, "qgrad-torch-baseline: --batch is larger than a shard\n");
    return 2;
  }
  torch::Tensor x = torch::empty({local_rows, dim});
  torch::Tensor y = torch::empty({local_rows}, torch::kLong);
  for (int64_t i = 0; i < local_rows; ++i) {
    const size_t r = static_cast<size_t>(rank) + static_cast<size_t>(i * world);
    const auto row = data.row(r);
    std::copy(row.begin(), row.end(), x.data_ptr<float>() + i * dim);
    y.data_ptr<int64_t>()[i] = static_cast<int64_t>(data.targets[r]);
  }

  // The same seed on every rank gives every rank the same initial weights.
  torch::manual_seed(0);
  torch::nn::Sequential model(torch::nn::Linear(dim, kHidden), torch::nn::ReLU(),
                              torch::nn::Linear(kHidden, static_cast<int64_t>(data.num_classes)));
  torch::optim::SGD optimizer(model->parameters(),
                              torch::optim::SGDOptions(kLr).momentum(kMomentum));
  const std::vector<torch::Tensor> params = model->parameters();
  int64_t numel = 0;
  for (const auto& p : params) numel += p.numel();
  torch::Tensor flat = torch::empty({numel});

  using Clock = std::chrono::steady_clock;
  const auto since = [](Clock::time_point t) {
    return std::chrono::duration<double>(Clock::now() - t).count();
  };
  // Each rank its own order (seeded by its rank), drawn at the start of every epoch.
  torch::Generator shuffle = at::detail::createCPUGenerator(1000 + static_cast<uint64_t>(rank));
  torch::Tensor order;
  std::vector<double> losses;
  Clock::time_point start;
  double compute_s = 0, exchange_s = 0, update_s = 0;
  for (int step = 0; step < o.steps; ++step) {
    if (step == o.warmup) {
      // The clock starts on every rank at once; the allreduce keeps them in step after that.
      MPI_Barrier(MPI_COMM_WORLD);
      start = Clock::now();
      compute_s = exchange_s = update_s = 0;
    }
    auto t = Clock::now();
    const int64_t first = (step % batches) * o.batch;
    torch::Tensor bx, by;
    if (o.shuffled) {
      if (step % batches == 0) order = torch::randperm(local_rows, shuffle, torch::kLong);
      const torch::Tensor rows = order.narrow(0, first, o.batch);
      bx = x.index_select(0, rows);
      by = y.index_select(0, rows);
    } else {
      bx = x.narrow(0, first, o.batch);
      by = y.narrow(0, first, o.batch);
    }
    optimizer.zero_grad();
    torch::Tensor loss = torch::nn::functional::cross_entropy(model->forward(bx), by);
    loss.backward();
    losses.push_back(loss.item<double>());
    compute_s += since(t);

    t = Clock::now();
    int64_t offset = 0;
    for (const auto& p : params) {
      flat.narrow(0, offset, p.numel()).copy_(p.grad().view(-1));
      offset += p.numel();
    }
    MPI_Allreduce(MPI_IN_PLACE, flat.data_ptr<float>(), static_cast<int>(numel), MPI_FLOAT, MPI_SUM,
                  MPI_COMM_WORLD);
    flat.div_(world);
    offset = 0;
    for (const auto& p : params) {
      p.grad().view(-1).copy_(flat.narrow(0, offset, p.numel()));
      offset += p.numel();
    }
    exchange_s += since(t);

    t = Clock::now();
    optimizer.step();
    update_s += since(t);
  }
  const double elapsed = since(start);

  double slowest = 0;
  MPI_Allreduce(&elapsed, &slowest, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  const int tail = std::min<int>(kLossSteps, o.steps);
  double loss_sum = 0;
  for (int i = o.steps - tail; i < o.steps; ++i) loss_sum += losses[static_cast<size_t>(i)];
  double all_loss = 0;
  MPI_Allreduce(&loss_sum, &all_loss, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
  const double timed = o.steps - o.warmup;
  const double step_seconds = slowest / timed;
  const double final_loss = all_loss / (tail * world);

  if (rank == 0) {
    if (o.json) {
      std::printf(
          "{\"program\":\"torch-baseline\",\"world\":%d,\"batch\":%d,\"order\":\"%s\",\"steps\":%d,"
          "\"warmup\":%d,\"params\":%lld,\"step_seconds\":%.9g,\"compute_s\":%.9g,"
          "\"exchange_s\":%.9g,\"update_s\":%.9g,\"final_loss\":%.9g}\n",
          world, o.batch, o.shuffled ? "shuffled" : "sequential", o.steps, o.warmup,
          static_cast<long long>(numel), step_seconds, compute_s / timed, exchange_s / timed,
          update_s / timed, final_loss);
    } else {
      std::printf(
          "torch + MPI_Allreduce baseline: %d ranks, batch %d per rank (%s), %lld parameters\n"
          "  %.3f ms per step (mean of steps %d..%d, slowest rank); rank 0: compute %.3f, "
          "exchange %.3f, update %.3f ms\n"
          "  final training loss %.4f\n",
          world, o.batch, o.shuffled ? "shuffled" : "sequential", static_cast<long long>(numel),
          step_seconds * 1e3, o.warmup + 1, o.steps, compute_s / timed * 1e3,
          exchange_s / timed * 1e3, update_s / timed * 1e3, final_loss);
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "qgrad-torch-baseline: LibTorch MLP + MPI_Allreduce, the plain loop qgrad-train "
      "is measured against"};
  Options o;
  app.option_defaults()->always_capture_default();
  app.add_option("--steps", o.steps, "steps in all, the warmup included")
      ->check(CLI::Range(1, 1 << 30));
  app.add_option("--warmup", o.warmup, "first steps left out of the timing")
      ->check(CLI::Range(0, 1 << 30));
  app.add_option("--batch", o.batch, "examples per rank and step")->check(CLI::Range(1, 1 << 20));
  std::string order = "shuffled";
  app.add_option("--order", order,
                 "batches of rows in a new random order each epoch (shuffled) "
                 "or consecutive rows (sequential)")
      ->check(CLI::IsMember({"shuffled", "sequential"}));
  app.add_flag("--json", o.json, "print one JSON object");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  o.shuffled = order == "shuffled";
  if (o.warmup >= o.steps) {
    std::fprintf(stderr, "qgrad-torch-baseline: --warmup (%d) must be less than --steps (%d)\n",
                 o.warmup, o.steps);
    return 2;
  }

  MPI_Init(&argc, &argv);
  int rank = 0, world = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  use_one_thread();
  int status = 0;
  try {
    status = run(o, rank, world);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "qgrad-torch-baseline: rank %d: %s\n", rank, e.what());
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  MPI_Finalize();
  return status;
}
