// The backend factory (train/backends/): it reports what this build has, and asking for a
// backend the build lacks, or one that does not exist, is a clear error naming the build option.
// Runs in every build; the cases for a missing backend check the message, those for a present
// one check that it is really there.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "core/error.h"
#include "train/backends/build.h"
#include "train/backends/communicators.h"
#include "train/backends/models.h"
#include "train/backends/routes.h"

namespace qgrad {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

std::string error_of(const auto& body) {
  try {
    body();
  } catch (const InvalidArgument& e) {
    return e.what();
  }
  return "no error";
}

TEST(Backends, TheBuildSummaryListsEveryFeature) {
  EXPECT_FALSE(kBuild.cuda);  // nothing builds them yet
  EXPECT_FALSE(kBuild.nccl);
  const std::string s = build_summary();
  EXPECT_THAT(s, HasSubstr(kBuild.mpi ? "mpi=on" : "mpi=off"));
  EXPECT_THAT(s, HasSubstr(kBuild.grpc ? "grpc=on" : "grpc=off"));
  EXPECT_THAT(s, HasSubstr(kBuild.torch ? "torch=on" : "torch=off"));
  EXPECT_THAT(s, HasSubstr("cuda=off nccl=off"));
}

TEST(Backends, CommunicatorNamesFollowTheBuild) {
  EXPECT_EQ(communicator_names(), kBuild.mpi ? "local, mpi" : "local");
}

TEST(Backends, AnUnknownProcessBackendIsNamed) {
  EXPECT_THAT(error_of([] { (void)join_world("nccl", nullptr, nullptr); }),
              HasSubstr("unknown multi-process backend 'nccl' (valid: "));
}

TEST(Backends, MpiMissingNamesTheOption) {
  if (kBuild.mpi) GTEST_SKIP() << "built with MPI (joining would initialize it here)";
  EXPECT_EQ(error_of([] { (void)join_world("mpi", nullptr, nullptr, "use --ranks N instead"); }),
            std::string(launched_by_mpirun() ? "started by mpirun, but " : "") +
                "this qgrad was built without MPI (-DQGRAD_WITH_MPI=OFF); use --ranks N instead");
}

TEST(Backends, TheParameterServerRoute) {
  PsRouteOptions o;
  o.servers = {"127.0.0.1:1"};
  o.token_file =
      (fs::temp_directory_path() / ("qgrad_backends_test_token_" + std::to_string(::getpid())))
          .string();
  if (!kBuild.grpc) {
    EXPECT_EQ(error_of([&] { (void)make_ps_route(o); }),
              "--ps needs a qgrad built with the parameter server (-DQGRAD_WITH_PS=ON, gRPC and "
              "Protobuf installed)");
    return;
  }
  // A missing token file is a bad command line naming the file; nothing is contacted.
  EXPECT_THAT(error_of([&] { (void)make_ps_route(o); }), HasSubstr(o.token_file));
  std::ofstream(o.token_file) << "secret\n";
  o.tls_cert = "cert.pem";
  EXPECT_EQ(error_of([&] { (void)make_ps_route(o); }), "--tls-cert and --tls-key go together");
  o.tls_cert.clear();
  EXPECT_NE(make_ps_route(o), nullptr);  // made without contacting the server
  fs::remove(o.token_file);
}

TEST(Backends, TorchModelsFollowTheBuild) {
  EXPECT_EQ(have_torch_family(), kBuild.torch);
  if (kBuild.torch) return;  // train/torch's own tests build them
  const Dataset none;
  EXPECT_THAT(error_of([&] { (void)make_torch_family_model("mlp", ModelOptions{}, none); }),
              HasSubstr("model 'mlp' needs LibTorch, and this qgrad was built without it"));
}

}  // namespace
}  // namespace qgrad
