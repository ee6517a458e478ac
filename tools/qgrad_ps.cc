// qgrad-ps: a parameter server for qgrad-train --ps (ps/server.h).
//
//   qgrad-ps --listen 127.0.0.1:7070 --workers 4 --token-file token.txt [--metrics ps.jsonl]
//            [--timeout S [--quorum Q]] [--checkpoint-dir D [--checkpoint-every K]]
//            [--mode sync|async [--max-staleness K]]
//
// --mode async: each push is applied when it arrives (ParameterServer, ps/server.h); a push
// computed on a model more than K versions old is refused (ABORTED) and the worker pulls and
// goes on. Without --max-staleness: no bound. Not with --timeout, --quorum, --downlink-codec
// or a majority-vote codec (refused with a message naming why).
//
// --timeout: a step that has waited S seconds since its first push is applied with the pushes
// it has when at least Q workers (default a majority) pushed; the line "qgrad-ps: step ... applied
// with 3 of 4 workers ... missing workers 2" says so, and quorum_steps counts it.
// --checkpoint-dir: see ParameterServer; a server started on a directory with a checkpoint
// resumes from it and prints "qgrad-ps: resumed from the checkpoint ... at step N"; a damaged
// checkpoint is refused (exit status 1) naming the file.
//
// Knows no model: it adopts the shape of its keys, their initial values, the optimizer and the
// run's identity from the first worker that registers, and refuses workers of another run
// (FAILED_PRECONDITION naming the field). Prints where it listens (with port 0, the port it
// got), the adopted model, progress (applied steps, bytes in and out) at most every 2 s while
// steps are applied, and a summary when it stops. Stops cleanly on SIGINT or SIGTERM.
// Exit status: 0 stopped by a signal, 1 cannot listen, 2 bad command line.
#include <CLI/CLI.hpp>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <ctime>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>
#include <string>

#include "core/byte_size.h"
#include "core/error.h"
#include "core/timer.h"
#include "ps/client.h"
#include "ps/server.h"
#include "ps/tls.h"

namespace {

std::string megabytes(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MB", static_cast<double>(bytes) / 1e6);
  return buf;
}

uint64_t total(const std::vector<uint64_t>& v) {
  return std::accumulate(v.begin(), v.end(), uint64_t{0});
}

// One JSON line per record, flushed at once: a killed server leaves whole lines only.
class MetricsFile {
 public:
  explicit MetricsFile(const std::string& path) : path_(path) {
    if (path.empty()) return;
    file_ = std::fopen(path.c_str(), "w");
    if (file_ == nullptr) {
      throw qgrad::InvalidArgument(qgrad::detail::concat("--metrics: cannot write '", path, "'"));
    }
  }
  ~MetricsFile() {
    if (file_ != nullptr) std::fclose(file_);
  }
  void write(const nlohmann::json& record) {
    if (file_ == nullptr) return;
    const std::string line = record.dump() + "\n";
    std::fwrite(line.data(), 1, line.size(), file_);
    std::fflush(file_);
  }

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
};

nlohmann::json record(const qgrad::ps::ServerStats& s, double seconds) {
  return {{"role", "server"},
          {"step", s.applied_steps},
          {"seconds", seconds},
          // Section 5's names from the server's side: what it received and sent.
          {"bytes_received", s.bytes_in},
          {"bytes_sent", s.bytes_out},
          {"pushes", total(s.pushes)},
          {"duplicates", total(s.duplicates)},
          {"rejected", s.rejected},
          {"quorum_steps", s.quorum_steps},
          {"missed", total(s.missed)},
          {"checkpoint_step", s.checkpoint_step},
          // Asynchronous mode: applied pushes, stale refusals, staleness of the applied pushes.
          {"async_applied", s.async_applied},
          {"stale_refused", s.stale_refused},
          {"staleness_max", s.staleness_max},
          {"staleness_mean", s.async_applied > 0 ? static_cast<double>(s.staleness_sum) /
                                                       static_cast<double>(s.async_applied)
                                                 : 0.0}};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "qgrad-ps: a parameter server for qgrad-train --ps (synchronous mode, with a "
      "quorum after --timeout, or asynchronous with a staleness bound)."};
  std::string listen, token_file, metrics_path, max_message = "64MiB";
  uint32_t workers = 0;
  uint64_t log_every = 10;
  double progress_seconds = 2;
  bool quiet = false;
  double timeout_s = 0;
  uint32_t quorum = 0;
  std::string checkpoint_dir;
  uint64_t checkpoint_every = 100;
  app.add_option("--listen", listen, "HOST:PORT to listen on (port 0: any free port)")->required();
  app.add_option("--workers", workers, "workers per step (each step waits for all of them)")
      ->required();
  app.add_option("--token-file", token_file, "file holding the shared token workers must send")
      ->required();
  app.add_option("--max-message-bytes", max_message,
                 "largest request accepted, e.g. 64MiB (larger: RESOURCE_EXHAUSTED)")
      ->capture_default_str();
  app.add_option("--metrics", metrics_path, "JSON-lines server metrics (bytes, pushes, steps)");
  app.add_option("--log-every", log_every, "applied steps between metrics records")
      ->capture_default_str();
  app.add_option("--progress-seconds", progress_seconds, "at most one progress line per this")
      ->capture_default_str();
  app.add_option("--timeout", timeout_s,
                 "seconds a step waits after its first push before it goes on with a quorum "
                 "(0: wait for every worker)")
      ->capture_default_str();
  app.add_option("--quorum", quorum, "pushes a step needs after --timeout (default: a majority)");
  app.add_option("--checkpoint-dir", checkpoint_dir,
                 "write checkpoints here; resume from the one found here at start");
  app.add_option("--checkpoint-every", checkpoint_every, "applied steps between checkpoints")
      ->capture_default_str();
  std::string mode = "sync";
  uint64_t max_staleness = UINT64_MAX;
  app.add_option("--mode", mode,
                 "sync: a step waits for every worker (or a quorum); async: each "
                 "push is applied when it arrives")
      ->capture_default_str();
  app.add_option("--max-staleness", max_staleness,
                 "async: refuse pushes computed on a model more than K versions old (default: "
                 "no bound)");
  std::string downlink;
  app.add_option("--downlink-codec", downlink,
                 "encode the pulls' updates with this codec and the server's own error memory "
                 "(default: fp32 values)");
  std::string tls_cert, tls_key, tls_ca;
  app.add_option("--tls-cert", tls_cert, "serve TLS with this certificate (PEM; with --tls-key)");
  app.add_option("--tls-key", tls_key, "the key of --tls-cert (PEM)");
  app.add_option("--tls-ca", tls_ca, "require client certificates signed by this CA (mutual TLS)");
  app.add_flag("--quiet", quiet, "no progress lines (the listening line is still printed)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }

  qgrad::ps::ServerOptions options;
  std::unique_ptr<MetricsFile> metrics;
  try {
    QGRAD_CHECK(workers >= 1 && workers <= 65536, "--workers must be in 1..65536, got ", workers);
    QGRAD_CHECK(log_every >= 1, "--log-every must be >= 1");
    QGRAD_CHECK(listen.find(':') != std::string::npos, "--listen: '", listen, "' is not HOST:PORT");
    const uint64_t bytes = qgrad::parse_byte_size(max_message, "--max-message-bytes");
    QGRAD_CHECK(bytes >= 1024 && bytes < (1ull << 31),
                "--max-message-bytes must be in [1KiB, "
                "2GiB), got ",
                max_message);
    options.listen = listen;
    options.workers = workers;
    options.token = qgrad::ps::read_token_file(token_file);
    options.max_message_bytes = static_cast<size_t>(bytes);
    QGRAD_CHECK(timeout_s >= 0 && timeout_s <= 86400,
                "--timeout must be in [0, 86400] seconds, "
                "got ",
                timeout_s);
    QGRAD_CHECK(quorum == 0 || timeout_s > 0,
                "--quorum needs --timeout (without a timeout "
                "every step waits for every worker)");
    QGRAD_CHECK(quorum <= workers, "--quorum ", quorum, " is more than --workers ", workers);
    QGRAD_CHECK(checkpoint_every >= 1, "--checkpoint-every must be >= 1");
    QGRAD_CHECK(app.count("--checkpoint-every") == 0 || !checkpoint_dir.empty(),
                "--checkpoint-every needs --checkpoint-dir");
    options.timeout = std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
    options.quorum = quorum;
    options.checkpoint_dir = checkpoint_dir;
    options.checkpoint_every = checkpoint_every;
    QGRAD_CHECK(tls_cert.empty() == tls_key.empty(), "--tls-cert and --tls-key go together");
    QGRAD_CHECK(tls_ca.empty() || !tls_cert.empty(), "--tls-ca needs --tls-cert and --tls-key");
    if (!tls_cert.empty()) (void)qgrad::ps::read_pem_file(tls_cert, "--tls-cert");
    if (!tls_key.empty()) (void)qgrad::ps::read_pem_file(tls_key, "--tls-key");
    if (!tls_ca.empty()) (void)qgrad::ps::read_pem_file(tls_ca, "--tls-ca");
    options.tls_cert = tls_cert;
    options.downlink_codec = downlink;
    QGRAD_CHECK(mode == "sync" || mode == "async", "--mode must be sync or async, got '", mode,
                "'");
    options.async = mode == "async";
    QGRAD_CHECK(options.async || app.count("--max-staleness") == 0,
                "--max-staleness needs --mode async (the synchronous mode has no stale pushes)");
    QGRAD_CHECK(!options.async || (timeout_s == 0 && quorum == 0),
                "--timeout and --quorum are for --mode sync (async waits for nobody)");
    QGRAD_CHECK(!options.async || downlink.empty(),
                "--downlink-codec needs --mode sync: the server keeps one copy of the workers' "
                "model, and asynchronous workers hold different versions");
    options.max_staleness = max_staleness;
    options.tls_key = tls_key;
    options.tls_ca = tls_ca;
    options.log = [](const std::string& line) {
      std::printf("qgrad-ps: %s\n", line.c_str());
      std::fflush(stdout);
    };
    metrics = std::make_unique<MetricsFile>(metrics_path);
  } catch (const qgrad::Error& e) {
    std::fprintf(stderr, "qgrad-ps: %s\n", e.what());
    return 2;
  }

  // SIGINT/SIGTERM are blocked in every thread (gRPC's inherit the mask) and taken by
  // sigtimedwait below, which also paces the progress lines.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  std::unique_ptr<qgrad::ps::ParameterServer> server;
  try {
    server = std::make_unique<qgrad::ps::ParameterServer>(options);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "qgrad-ps: %s\n", e.what());
    return 1;
  }
  const std::string where =
      listen.substr(0, listen.rfind(':')) + ":" + std::to_string(server->port());
  std::printf("qgrad-ps: listening on %s for %u workers (max message %s", where.c_str(), workers,
              megabytes(options.max_message_bytes).c_str());
  if (timeout_s > 0) {
    std::printf("; timeout %.3g s, quorum %u", timeout_s, quorum > 0 ? quorum : workers / 2 + 1);
  }
  if (options.async) {
    if (max_staleness == UINT64_MAX) {
      std::printf("; async, staleness unbounded");
    } else {
      std::printf("; async, max staleness %llu", static_cast<unsigned long long>(max_staleness));
    }
  }
  if (!tls_cert.empty()) std::printf(tls_ca.empty() ? "; TLS" : "; mutual TLS");
  if (!downlink.empty()) std::printf("; downlink %s", downlink.c_str());
  if (!checkpoint_dir.empty()) {
    std::printf("; checkpoints every %llu steps in %s",
                static_cast<unsigned long long>(checkpoint_every), checkpoint_dir.c_str());
  }
  std::printf(")\n");
  std::fflush(stdout);

  const qgrad::WallClock clock;
  bool announced = false;
  uint64_t logged = 0;
  double last_print = -1e9;
  uint64_t printed_step = 0;
  // Step times from the polls: when steps were first seen applied, and when the count last moved.
  double first_seen = -1, last_moved = 0;
  uint64_t first_steps = 0, last_steps = 0;
  int signal_number = 0;
  for (;;) {
    timespec wait{0, 200'000'000};
    const int got = sigtimedwait(&stop_signals, nullptr, &wait);
    if (got > 0) {
      signal_number = got;
      break;
    }
    const qgrad::ps::ServerStats s = server->stats();
    const double now = clock.seconds();
    if (s.has_model && !announced) {
      announced = true;
      std::printf("qgrad-ps: model adopted: %zu keys, %llu parameters (%s as fp32)\n", s.keys,
                  static_cast<unsigned long long>(s.parameters),
                  megabytes(4 * s.parameters).c_str());
      std::fflush(stdout);
    }
    if (s.applied_steps > 0 && first_seen < 0) {
      first_seen = now;
      first_steps = s.applied_steps;
    }
    if (s.applied_steps != last_steps) {
      last_steps = s.applied_steps;
      last_moved = now;
    }
    if (s.applied_steps >= logged + log_every) {
      logged = s.applied_steps - s.applied_steps % log_every;
      metrics->write(record(s, now));
    }
    if (!quiet && s.applied_steps > printed_step && now - last_print >= progress_seconds) {
      last_print = now;
      printed_step = s.applied_steps;
      std::printf(
          "step %llu  pushes %llu (duplicates %llu)  in %s  out %s  rejected %llu  "
          "quorum steps %llu  [%.1f s]\n",
          static_cast<unsigned long long>(s.applied_steps),
          static_cast<unsigned long long>(total(s.pushes)),
          static_cast<unsigned long long>(total(s.duplicates)), megabytes(s.bytes_in).c_str(),
          megabytes(s.bytes_out).c_str(), static_cast<unsigned long long>(s.rejected),
          static_cast<unsigned long long>(s.quorum_steps), now);
      std::fflush(stdout);
    }
  }

  server->shutdown();
  const qgrad::ps::ServerStats s = server->stats();
  const double seconds = clock.seconds();
  nlohmann::json summary = record(s, seconds);
  summary["summary"] = true;
  summary["workers"] = workers;
  summary["keys"] = s.keys;
  summary["parameters"] = s.parameters;
  // Between the polls that saw the first and the last steps (not the wait for workers before,
  // nor the idle time after): within 0.2 s at each end.
  summary["step_seconds"] =
      last_steps > first_steps
          ? (last_moved - first_seen) / static_cast<double>(last_steps - first_steps)
          : 0.0;
  metrics->write(summary);
  std::printf(
      "qgrad-ps: stopped by %s after %llu applied steps; received %s, sent %s, "
      "%llu pushes (%llu duplicates), %llu calls rejected, %llu steps with a quorum\n",
      signal_number == SIGINT ? "SIGINT" : "SIGTERM",
      static_cast<unsigned long long>(s.applied_steps), megabytes(s.bytes_in).c_str(),
      megabytes(s.bytes_out).c_str(), static_cast<unsigned long long>(total(s.pushes)),
      static_cast<unsigned long long>(total(s.duplicates)),
      static_cast<unsigned long long>(s.rejected), static_cast<unsigned long long>(s.quorum_steps));
  if (options.async) {
    std::printf(
        "qgrad-ps: async: %llu pushes applied, %llu refused as stale; staleness max %llu, "
        "mean %.2f\n",
        static_cast<unsigned long long>(s.async_applied),
        static_cast<unsigned long long>(s.stale_refused),
        static_cast<unsigned long long>(s.staleness_max),
        s.async_applied > 0
            ? static_cast<double>(s.staleness_sum) / static_cast<double>(s.async_applied)
            : 0.0);
  }
  std::fflush(stdout);
  return 0;
}
