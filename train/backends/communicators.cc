#include "train/backends/communicators.h"

#include <cstdlib>

#include "core/config.h"
#include "core/error.h"
#if QGRAD_HAVE_MPI
#include "comm/mpi/mpi_communicator.h"
#endif

namespace qgrad {
namespace {

#if QGRAD_HAVE_MPI
class MpiWorld final : public ProcessWorld {
 public:
  MpiWorld(int* argc, char*** argv) : runtime_(argc, argv) {}
  std::string_view backend() const override { return "mpi"; }
  int rank() const override { return runtime_.world_rank(); }
  int size() const override { return runtime_.world_size(); }
  std::unique_ptr<Communicator> communicator(const CommOptions& options) override {
    return std::make_unique<MpiCommunicator>(MPI_COMM_WORLD, options);
  }

 private:
  MpiRuntime runtime_;
};
#endif

}  // namespace

bool launched_by_mpirun() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE"}) {
    if (std::getenv(var) != nullptr) return true;
  }
  return false;
}

std::string communicator_names() { return QGRAD_HAVE_MPI ? "local, mpi" : "local"; }

std::unique_ptr<ProcessWorld> join_world(std::string_view backend, int* argc, char*** argv,
                                         std::string_view hint) {
  if (backend == "mpi") {
#if QGRAD_HAVE_MPI
    (void)hint;
    return std::make_unique<MpiWorld>(argc, argv);
#else
    (void)argc;
    (void)argv;
    throw InvalidArgument(detail::concat(launched_by_mpirun() ? "started by mpirun, but " : "",
                                         "this qgrad was built without MPI (-DQGRAD_WITH_MPI=OFF)",
                                         hint.empty() ? "" : "; ", hint));
#endif
  }
  // Later: if (backend == "nccl") { ... comm/nccl ... }
  throw InvalidArgument(detail::concat("unknown multi-process backend '", backend, "' (valid: ",
                                       QGRAD_HAVE_MPI ? "mpi" : "none in this build", ")"));
}

}  // namespace qgrad
