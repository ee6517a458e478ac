// The parameter server's fault tolerance over loopback: the quorum after the timeout, late
// pushes, rejoining, checkpoints and resuming, and clients that misbehave at the TCP level.
// Servers and clients in one process.
#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "core/codec_registry.h"
#include "ps/client.h"
#include "ps/server.h"
#include "tests/ps/ps_testing.h"
#include "tests/support/temp_dir.h"

namespace qgrad::ps {
namespace {

using Tensors = std::vector<std::vector<float>>;
using Clock = std::chrono::steady_clock;

using testing_support::TempDir;

constexpr char kToken[] = "fault-token";
constexpr float kLr = 0.5f;

const std::vector<ParamShape>& model() {
  static const std::vector<ParamShape> shape = {{"w", 9}, {"b", 3}};
  return shape;
}

Tensors filled(float base) {
  Tensors t;
  for (const ParamShape& p : model()) {
    std::vector<float> v(p.size);
    for (size_t j = 0; j < v.size(); ++j) v[j] = base + 0.25f * static_cast<float>(j);
    t.push_back(std::move(v));
  }
  return t;
}

// Plain fp32 payloads of the gradient `value` everywhere (codec none: decoding is exact).
std::vector<std::vector<std::byte>> push_of(float value) {
  const std::unique_ptr<Codec> none = make_codec("none");
  std::vector<std::vector<std::byte>> out;
  for (const ParamShape& p : model()) {
    const std::vector<float> c(p.size, value);
    out.push_back(none->encode(c, RngKey{}));
  }
  return out;
}

// The server's log lines, kept for the assertions.
struct Log {
  std::mutex mu;
  std::vector<std::string> lines;
  std::function<void(const std::string&)> sink() {
    return [this](const std::string& line) {
      std::lock_guard lock(mu);
      lines.push_back(line);
    };
  }
  bool has(const std::string& needle) {
    std::lock_guard lock(mu);
    for (const std::string& l : lines) {
      if (l.find(needle) != std::string::npos) return true;
    }
    return false;
  }
};

ServerOptions options(uint32_t workers, Log& log) {
  ServerOptions o;
  o.token = kToken;
  o.workers = workers;
  o.shape = model();
  o.initial = filled(1.0f);
  o.optimizer.name = "sgd";
  o.log = log.sink();
  return o;
}

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

TEST(PsFault, QuorumAfterTheTimeoutAveragesThePushesItHasAndReportsTheMissing) {
  Log log;
  ServerOptions o = options(3, log);
  // Long enough that "did not wait for the timeout" holds on a loaded 2-core machine.
  o.timeout = std::chrono::milliseconds(1000);  // quorum: the default majority, 2 of 3
  ParameterServer server(o);
  PsClient w0(server.address(), kToken, 0), w1(server.address(), kToken, 1),
      w2(server.address(), kToken, 2);
  for (PsClient* c : {&w0, &w1, &w2}) c->register_worker(3, model());

  // Step 0: workers 0 and 1 push gradients 1 and 3; worker 2 stays away.
  const auto start = Clock::now();
  w0.push(0, 1, push_of(1.0f), kLr);
  w1.push(0, 1, push_of(3.0f), kLr);
  const PullResult after0 = w0.pull(1);
  const double waited = seconds_since(start);
  EXPECT_GE(waited, 0.99);  // it did wait for worker 2 ...
  EXPECT_LT(waited, 6.0);   // ... but not forever
  // The mean over the two that pushed (2), not over three: x = 1 + 0.25 j - 2.
  const Tensors initial = filled(1.0f);
  for (size_t k = 0; k < initial.size(); ++k) {
    for (size_t j = 0; j < initial[k].size(); ++j) {
      EXPECT_FLOAT_EQ(after0.params[k][j], initial[k][j] - 2.0f) << k << "," << j;
    }
  }
  ServerStats s = server.stats();
  EXPECT_EQ(s.applied_steps, 1u);
  EXPECT_EQ(s.quorum_steps, 1u);
  EXPECT_EQ(s.missed, (std::vector<uint64_t>{0, 0, 1}));
  EXPECT_TRUE(log.has("step 0 applied with 2 of 3 workers")) << "log";
  EXPECT_TRUE(log.has("missing workers 2"));
  // The counters travel in Status too.
  const ServerStats remote = w0.status();
  EXPECT_EQ(remote.quorum_steps, 1u);
  EXPECT_EQ(remote.missed, s.missed);

  // Step 1: worker 2 is marked absent, so the step does not wait for the timeout again.
  const auto start1 = Clock::now();
  w0.push(1, 2, push_of(1.0f), kLr);
  w1.push(1, 2, push_of(1.0f), kLr);
  EXPECT_EQ(w1.pull(2).applied_steps, 2u);
  EXPECT_LT(seconds_since(start1), 0.8);

  // Worker 2's late push of step 0 is refused, clearly; nothing of it is counted.
  expect_rpc_error(
      [&] { w2.push(0, 1, push_of(100.0f), kLr); }, grpc::StatusCode::ABORTED,
      "step 0 was applied without worker 2 after the timeout; the server is at step 2");
  EXPECT_EQ(server.stats().pushes[2], 0u);
  // It resynchronizes: the pull of an applied step answers at once with the current model.
  const PullResult current = w2.pull(0);
  EXPECT_EQ(current.applied_steps, 2u);
  EXPECT_EQ(current.params, server.parameters());
  EXPECT_TRUE(log.has("worker 2 is back"));

  // Back: step 2 waits for all three again and applies their mean at once.
  const auto start2 = Clock::now();
  w0.push(2, 3, push_of(1.0f), kLr);
  w1.push(2, 3, push_of(2.0f), kLr);
  w2.push(2, 3, push_of(3.0f), kLr);
  EXPECT_EQ(w2.pull(3).applied_steps, 3u);
  EXPECT_LT(seconds_since(start2), 0.8);
  s = server.stats();
  EXPECT_EQ(s.quorum_steps, 2u);  // steps 0 and 1 went without worker 2
  EXPECT_EQ(s.missed, (std::vector<uint64_t>{0, 0, 2}));
  EXPECT_EQ(s.pushes, (std::vector<uint64_t>{3, 3, 1}));
}

TEST(PsFault, WithoutAQuorumTheStepWaitsAndTheMissingAreReported) {
  Log log;
  ServerOptions o = options(3, log);
  o.timeout = std::chrono::milliseconds(100);
  o.quorum = 3;
  ParameterServer server(o);
  PsClient w0(server.address(), kToken, 0);
  w0.register_worker(3, model());
  w0.push(0, 1, push_of(1.0f), kLr);
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  EXPECT_EQ(server.stats().applied_steps, 0u);  // never applied below the quorum
  EXPECT_TRUE(log.has("step 0 has waited")) << "no report";
  EXPECT_TRUE(log.has("1 of 3 workers pushed, the quorum is 3; missing workers 1, 2"));
}

TEST(PsFault, ARestartedWorkerRegistersAgainAndGetsTheServersStep) {
  Log log;
  ParameterServer server(options(2, log));
  {
    PsClient w0(server.address(), kToken, 0), w1(server.address(), kToken, 1);
    EXPECT_EQ(w0.register_worker(2, model()), 0u);
    EXPECT_EQ(w1.register_worker(2, model()), 0u);
    for (uint64_t step = 0; step < 3; ++step) {
      w0.push(step, step + 1, push_of(1.0f), kLr);
      w1.push(step, step + 1, push_of(1.0f), kLr);
      w0.pull(step + 1);
    }
  }
  // Worker 1 "restarts": a new client with the same id.
  PsClient again(server.address(), kToken, 1);
  EXPECT_EQ(again.register_worker(2, model()), 3u);
  EXPECT_TRUE(log.has("worker 1 registered again"));
  EXPECT_EQ(again.pull(3).params, server.parameters());
}

TEST(PsFault, CheckpointResumesParametersOptimizerStateStepAndRun) {
  TempDir dir;
  Log log;
  ServerOptions o = options(1, log);
  o.optimizer.momentum = 0.9f;  // server-side momentum: state that must survive
  o.checkpoint_dir = dir.path();
  o.checkpoint_every = 2;
  Tensors at4, at5_reference;
  {
    ParameterServer server(o);
    PsClient w(server.address(), kToken, 0);
    w.register_worker(1, model());
    for (uint64_t step = 0; step < 5; ++step) {
      w.push(step, step + 1, push_of(0.1f * static_cast<float>(step + 1)), kLr);
      const PullResult p = w.pull(step + 1);
      if (step == 3) at4 = p.params;
      if (step == 4) at5_reference = p.params;
    }
    EXPECT_EQ(server.stats().checkpoint_step, 4u);
    EXPECT_TRUE(std::filesystem::exists(dir.path() + "/ps-server.qgck"));
  }
  // A new server on the same directory resumes at step 4 (the latest checkpoint) ...
  ServerOptions fresh = o;
  fresh.shape.clear();  // it must take its model from the checkpoint, not adopt one
  fresh.initial.clear();
  ParameterServer resumed(fresh);
  ServerStats s = resumed.stats();
  EXPECT_TRUE(s.has_model);
  EXPECT_EQ(s.applied_steps, 4u);
  EXPECT_EQ(s.resumed_from, 4u);
  EXPECT_EQ(resumed.parameters(), at4);
  EXPECT_TRUE(log.has("resumed from the checkpoint"));
  // ... and step 4 again gives bit for bit what the first server gave: the momentum came back.
  PsClient w(resumed.address(), kToken, 0);
  RegisterModel m;
  m.initial = filled(1.0f);  // the initial values are checked against the checkpoint's
  m.optimizer = o.optimizer;
  EXPECT_EQ(w.register_worker(1, model(), m).step, 4u);
  w.push(4, 5, push_of(0.5f), kLr);
  EXPECT_EQ(w.pull(5).params, at5_reference);
  // Another run's worker is refused as with an adopted model.
  PsClient other(resumed.address(), kToken, 0);
  RegisterModel wrong = m;
  wrong.initial = filled(2.0f);
  expect_rpc_error([&] { other.register_worker(1, model(), wrong); },
                   grpc::StatusCode::FAILED_PRECONDITION, "initial values");
}

TEST(PsFault, DamagedCheckpointIsAClearError) {
  TempDir dir;
  Log log;
  ServerOptions o = options(1, log);
  o.checkpoint_dir = dir.path();
  o.checkpoint_every = 1;
  {
    ParameterServer server(o);
    PsClient w(server.address(), kToken, 0);
    w.register_worker(1, model());
    w.push(0, 1, push_of(1.0f), kLr);
    w.pull(1);
  }
  const std::string path = dir.path() + "/ps-server.qgck";
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(40);
    f.put('\x5a');
  }
  try {
    ParameterServer broken(o);
    ADD_FAILURE() << "a damaged checkpoint was accepted";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), testing::HasSubstr("cannot resume from the checkpoint"));
    EXPECT_THAT(e.what(), testing::HasSubstr(path));
  }
  // A checkpoint of another world size is refused naming it.
  std::filesystem::remove(path);
  {
    ParameterServer server(o);
    PsClient w(server.address(), kToken, 0);
    w.register_worker(1, model());
    w.push(0, 1, push_of(1.0f), kLr);
    w.pull(1);
  }
  ServerOptions two = o;
  two.workers = 2;
  try {
    ParameterServer wrong(two);
    ADD_FAILURE() << "a checkpoint of another world size was accepted";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), testing::HasSubstr("1 workers, this one runs with 2"));
  }
}

// A raw TCP connection to the server's port: returns the socket (to close later).
int connect_raw(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  return fd;
}

TEST(PsFault, SilentAndGarbageTcpClientsDoNotStopTheOthers) {
  Log log;
  ParameterServer server(options(2, log));
  // One client connects and sends nothing, another sends bytes that are not HTTP/2.
  const int silent = connect_raw(server.port());
  const int garbage = connect_raw(server.port());
  std::mt19937 gen(3);
  std::vector<unsigned char> junk(4096);
  for (unsigned char& b : junk) b = static_cast<unsigned char>(gen());
  EXPECT_EQ(::send(garbage, junk.data(), junk.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(junk.size()));
  // The real workers train on, while both connections stay open.
  PsClient w0(server.address(), kToken, 0), w1(server.address(), kToken, 1);
  w0.register_worker(2, model());
  w1.register_worker(2, model());
  const auto start = Clock::now();
  for (uint64_t step = 0; step < 20; ++step) {
    w0.push(step, step + 1, push_of(0.01f), kLr);
    w1.push(step, step + 1, push_of(0.01f), kLr);
    w0.pull(step + 1);
    w1.pull(step + 1);
  }
  EXPECT_LT(seconds_since(start), 5.0);
  EXPECT_EQ(server.stats().applied_steps, 20u);
  ::close(silent);
  ::close(garbage);
  EXPECT_EQ(w0.heartbeat(), 20u);  // still serving after they went away
}

// Certificates for the TLS tests, made with the openssl command (skipped without it): a CA, a
// server certificate for 127.0.0.1 signed by it, a client certificate signed by it, and another
// CA that signed nothing here.
struct Pki {
  TempDir dir;
  bool ok = false;
  std::string file(const std::string& name) const { return dir.path() + "/" + name; }
  Pki() {
    const std::string d = dir.path();
    std::ofstream(d + "/san.ext") << "subjectAltName=IP:127.0.0.1,DNS:localhost\n";
    const std::string key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    const std::string cmd =
        "cd '" + d +
        "' && "
        "openssl req -x509 " +
        key +
        " -keyout ca.key -out ca.pem -days 2 -subj /CN=qgrad-ca && "
        "openssl req -x509 " +
        key +
        " -keyout other.key -out other.pem -days 2 -subj /CN=other && "
        "openssl req " +
        key +
        " -keyout server.key -out server.csr -subj /CN=localhost && "
        "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
        "-out server.pem -days 2 -extfile san.ext && "
        "openssl req " +
        key +
        " -keyout client.key -out client.csr -subj /CN=worker && "
        "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
        "-out client.pem -days 2";
    ok = std::system(("(" + cmd + ") >/dev/null 2>&1").c_str()) == 0;
  }
};

ClientOptions tls_client(const Pki& pki, const std::string& ca, bool with_cert) {
  ClientOptions c;
  c.deadline = std::chrono::milliseconds(3000);
  c.tls_ca = pki.file(ca);
  if (with_cert) {
    c.tls_cert = pki.file("client.pem");
    c.tls_key = pki.file("client.key");
  }
  return c;
}

// One worker's server with the test CA's server certificate.
ServerOptions tls_server_options(const Pki& pki, Log& log) {
  ServerOptions o = options(1, log);
  o.tls_cert = pki.file("server.pem");
  o.tls_key = pki.file("server.key");
  return o;
}

TEST(PsFault, TlsServesVerifiedClientsAndRefusesPlainOnes) {
  const Pki pki;
  if (!pki.ok) GTEST_SKIP() << "no openssl command to make test certificates";
  Log log;
  ParameterServer server(tls_server_options(pki, log));
  PsClient good(server.address(), kToken, 0, tls_client(pki, "ca.pem", false));
  EXPECT_EQ(good.register_worker(1, model()), 0u);
  good.push(0, 1, push_of(1.0f), kLr);
  EXPECT_EQ(good.pull(1).applied_steps, 1u);
  // A plaintext client, and one that does not trust the server's CA, never get through.
  ClientOptions plain_options;
  plain_options.deadline = std::chrono::milliseconds(3000);
  PsClient plain(server.address(), kToken, 0, plain_options);
  expect_rpc_error([&] { plain.heartbeat(); }, grpc::StatusCode::UNAVAILABLE, "");
  PsClient distrustful(server.address(), kToken, 0, tls_client(pki, "other.pem", false));
  expect_rpc_error([&] { distrustful.heartbeat(); }, grpc::StatusCode::UNAVAILABLE, "");
  EXPECT_EQ(good.heartbeat(), 1u);  // still serving
}

TEST(PsFault, MutualTlsRequiresAClientCertificate) {
  const Pki pki;
  if (!pki.ok) GTEST_SKIP() << "no openssl command to make test certificates";
  Log log;
  ServerOptions o = tls_server_options(pki, log);
  o.tls_ca = pki.file("ca.pem");
  ParameterServer server(o);
  PsClient anonymous(server.address(), kToken, 0, tls_client(pki, "ca.pem", false));
  expect_rpc_error([&] { anonymous.heartbeat(); }, grpc::StatusCode::UNAVAILABLE, "");
  PsClient known(server.address(), kToken, 0, tls_client(pki, "ca.pem", true));
  EXPECT_EQ(known.register_worker(1, model()), 0u);
  // The token is still checked inside TLS.
  PsClient wrong(server.address(), "not-the-token", 0, tls_client(pki, "ca.pem", true));
  expect_rpc_error([&] { wrong.heartbeat(); }, grpc::StatusCode::UNAUTHENTICATED, "wrong token");
  // Bad TLS options are refused naming the file or the missing half.
  ServerOptions half = o;
  half.tls_key.clear();
  EXPECT_THROW(ParameterServer{half}, InvalidArgument);
  ServerOptions missing = o;
  missing.tls_cert = pki.file("absent.pem");
  try {
    ParameterServer server2(missing);
    ADD_FAILURE() << "a missing certificate file was accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_THAT(e.what(), testing::HasSubstr("--tls-cert: cannot read"));
  }
}

TEST(PsFault, RejectsBadQuorumOptions) {
  Log log;
  ServerOptions o = options(3, log);
  o.quorum = 2;  // no timeout
  EXPECT_THROW(ParameterServer{o}, InvalidArgument);
  o.timeout = std::chrono::milliseconds(100);
  o.quorum = 4;
  EXPECT_THROW(ParameterServer{o}, InvalidArgument);
}

}  // namespace
}  // namespace qgrad::ps
