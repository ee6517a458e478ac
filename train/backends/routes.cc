#include "train/backends/routes.h"

#include <utility>

#include "core/config.h"
#include "core/error.h"
#if QGRAD_HAVE_GRPC
#include "ps/client.h"
#include "ps/tls.h"
#include "train/ps_training.h"
#endif

namespace qgrad {
namespace {

#if QGRAD_HAVE_GRPC
class GrpcParameterServerRoute final : public ParameterServerRoute {
 public:
  explicit GrpcParameterServerRoute(PsTrainOptions options) : options_(std::move(options)) {}
  void train(const DataSplit& data, const TrainOptions& options) override {
    (void)train_with_ps(options_, data, options);
  }

 private:
  PsTrainOptions options_;
};
#endif

}  // namespace

std::unique_ptr<ParameterServerRoute> make_ps_route(const PsRouteOptions& o) {
#if QGRAD_HAVE_GRPC
  PsTrainOptions ps;
  ps.servers = o.servers;
  ps.worker_id = o.worker_id;
  ps.workers = o.workers;
  ps.timeout = o.timeout;
  ps.token = ps::read_token_file(o.token_file);
  QGRAD_CHECK(o.tls_cert.empty() == o.tls_key.empty(), "--tls-cert and --tls-key go together");
  QGRAD_CHECK(o.tls_cert.empty() || !o.tls_ca.empty(),
              "--tls-cert needs --tls-ca (the CA that verifies the servers)");
  // Read here, so that a missing file is a bad command line naming the flag.
  if (!o.tls_ca.empty()) (void)ps::read_pem_file(o.tls_ca, "--tls-ca");
  if (!o.tls_cert.empty()) (void)ps::read_pem_file(o.tls_cert, "--tls-cert");
  if (!o.tls_key.empty()) (void)ps::read_pem_file(o.tls_key, "--tls-key");
  ps.tls_ca = o.tls_ca;
  ps.tls_cert = o.tls_cert;
  ps.tls_key = o.tls_key;
  return std::make_unique<GrpcParameterServerRoute>(std::move(ps));
#else
  (void)o;
  throw InvalidArgument(
      "--ps needs a qgrad built with the parameter server (-DQGRAD_WITH_PS=ON, gRPC and "
      "Protobuf installed)");
#endif
}

}  // namespace qgrad
