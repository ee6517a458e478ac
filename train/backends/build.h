// What this build of qgrad has, as C++ constants: the backend factory's view of core/config.h.
//
// The backend factory (this folder) is the only code that tests the QGRAD_HAVE_* macros; it
// turns them into the constants below, which tools and tests may read (`if (kBuild.mpi)`), and
// it holds every "this qgrad was built without X" message, each naming the CMake option that
// builds X. Design, and where the next backends slot in: train/backends/communicators.h.
// Thread-safety: compile-time constants.
#pragma once

#include <string>

#include "core/config.h"

namespace qgrad {

struct BuildFeatures {
  bool mpi = false;    // comm/mpi: the Open MPI communicator (QGRAD_WITH_MPI)
  bool grpc = false;   // ps/: the parameter server and its client (QGRAD_WITH_PS)
  bool torch = false;  // train/torch: the LibTorch MLP and CNN (QGRAD_WITH_TORCH)
  bool cuda = false;   // core/cuda: CUDA codec kernels (not built yet)
  bool nccl = false;   // comm/nccl: the NCCL communicator (not built yet)
};

inline constexpr BuildFeatures kBuild{
    .mpi = QGRAD_HAVE_MPI != 0,
    .grpc = QGRAD_HAVE_GRPC != 0,
    .torch = QGRAD_HAVE_TORCH != 0,
    .cuda = QGRAD_HAVE_CUDA != 0,
    .nccl = QGRAD_HAVE_NCCL != 0,
};

// "mpi=on grpc=on torch=on cuda=off nccl=off", for logs and bug reports.
inline std::string build_summary() {
  const auto on = [](bool b) { return b ? "on" : "off"; };
  return std::string("mpi=") + on(kBuild.mpi) + " grpc=" + on(kBuild.grpc) +
         " torch=" + on(kBuild.torch) + " cuda=" + on(kBuild.cuda) + " nccl=" + on(kBuild.nccl);
}

}  // namespace qgrad
