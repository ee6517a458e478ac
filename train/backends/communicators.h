// The backend factory, communicators part: which multi-process communicators this build has,
// and joining one by name. With build.h, models.h and routes.h it is the only code in qgrad
// that tests the backend macros of core/config.h; the tools have no #if at all.
//
// Design. qgrad has three kinds of optional backend, each behind one interface of a lower layer:
//   communicators   Communicator (comm/communicator.h): "local" (threads of one process,
//                   comm/local, always built; run_local), "mpi" (comm/mpi, QGRAD_WITH_MPI);
//                   made here (communicators.cc).
//   gradient routes GradientExchange (optim/gradient_exchange.h): the collectives over a
//                   Communicator (optim/distributed_optimizer.h, always built) or the parameter
//                   servers (ps/, QGRAD_WITH_PS); made in routes.cc.
//   model families  Model (train/model.h): the linear models (train/linear, always built), the
//                   LibTorch MLP and CNN (train/torch, QGRAD_WITH_TORCH); made in models.cc.
// The three .cc files are separate because their backends sit at different link tiers: the
// models below the worker loop (train() builds its model), the parameter-server route above it
// (it runs the loop), the communicators beside it (qgrad-bench uses them without the loop).
// Each library links the backend libraries that CMake built and nothing else.
//
// Adding NCCL: the communicator goes into one folder, comm/nccl/ (its own library,
// qgrad_comm_nccl, the only one that sees <nccl.h>, like comm/mpi and <mpi.h>), a
// QGRAD_WITH_NCCL option sets QGRAD_HAVE_NCCL, and join_world() gets one case, "nccl" (whose
// bootstrap, e.g. the unique id over MPI or a TCP store, lives in comm/nccl too). Nothing else
// changes: the tools pass the name through.
//
// Errors: asking for a backend this build lacks throws InvalidArgument naming the CMake option
// that builds it; an unknown name throws InvalidArgument listing the valid ones.
// Thread-safety: join_world once per process, from main(); a ProcessWorld is used by one thread.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "comm/communicator.h"

namespace qgrad {

// Whether this process was started by mpirun (Open MPI, PMIx or PMI in the environment).
bool launched_by_mpirun();

// "local, mpi": the communicators this build has ("local" is run_local's threads).
std::string communicator_names();

// This process's place in a multi-process launch. The backend's runtime (MPI_Init_thread for
// "mpi") lives as long as the ProcessWorld: destroy every communicator it made first.
class ProcessWorld {
 public:
  virtual ~ProcessWorld() = default;
  virtual std::string_view backend() const = 0;
  virtual int rank() const = 0;  // of this process
  virtual int size() const = 0;  // processes in the launch
  // A communicator over every process of the launch. Collective: every process calls it.
  virtual std::unique_ptr<Communicator> communicator(const CommOptions& options) = 0;
};

// Joins the launch over `backend` ("mpi"). `argc`/`argv` go to the runtime (MPI may take its
// arguments out). In a build without the backend this throws InvalidArgument:
// "<started by mpirun, but >this qgrad was built without MPI (-DQGRAD_WITH_MPI=OFF)<; hint>"
// with the hint (e.g. "use --ranks N instead") when not empty.
std::unique_ptr<ProcessWorld> join_world(std::string_view backend, int* argc, char*** argv,
                                         std::string_view hint = "");

}  // namespace qgrad
