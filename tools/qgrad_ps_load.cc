// qgrad-ps-load: a load run against running qgrad-ps servers: W worker threads, each
// a PsExchange (ps/worker.h) on a small synthetic model (no data, no training loop: random
// gradients from fixed seeds), push and pull `steps` synchronous steps. Then it checks that no
// update was lost or counted twice (every server's applied steps and per-worker push counts
// equal what the workers sent) and, given the server's PID, that the server's memory stayed
// flat: its resident set at the end within `rss-tolerance` (plus 4 MiB for allocator slack) of
// the one at `--sample-step`. Prints the figures; exit status 0 when every check holds, 1 when
// one failed, 2 for a bad command line.
//
//   qgrad-ps-load --ps 127.0.0.1:7070 --token-file token --workers 16 --steps 1000
//                 --server-pid 1234 [--elements 20000] [--codec qsgd:bits=4]
#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "core/timer.h"
#include "optim/optimizer.h"
#include "ps/client.h"
#include "ps/worker.h"

namespace {

// VmRSS of a process in bytes (0 when it cannot be read).
uint64_t rss_bytes(int pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmRSS:", 0) == 0) {
      std::istringstream in(line.substr(6));
      uint64_t kb = 0;
      in >> kb;
      return kb * 1024;
    }
  }
  return 0;
}

double mib(uint64_t bytes) { return static_cast<double>(bytes) / (1024.0 * 1024.0); }

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) out.push_back(item);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "qgrad-ps-load: W synthetic workers against qgrad-ps; checks no update is lost "
      "and the server's memory stays flat."};
  std::string servers, token_file, codec = "qsgd:bits=4";
  uint32_t workers = 16;
  uint64_t steps = 1000, sample_step = 100, elements = 20000;
  int server_pid = 0;
  double tolerance = 0.10;
  app.add_option("--ps", servers, "HOST:PORT[,HOST:PORT...] of the servers")->required();
  app.add_option("--token-file", token_file, "the servers' token")->required();
  app.add_option("--workers", workers, "worker threads (qgrad-ps --workers)")
      ->capture_default_str();
  app.add_option("--steps", steps, "synchronous steps")->capture_default_str();
  app.add_option("--elements", elements, "model size (fp32 elements)")->capture_default_str();
  app.add_option("--codec", codec, "the workers' codec (with error feedback)")
      ->capture_default_str();
  app.add_option("--server-pid", server_pid, "PID of qgrad-ps, for its resident memory");
  app.add_option("--sample-step", sample_step, "step of the first memory sample")
      ->capture_default_str();
  app.add_option("--rss-tolerance", tolerance, "allowed growth of the server's RSS (fraction)")
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  std::string token;
  try {
    QGRAD_CHECK(workers >= 1 && workers <= 1024, "--workers must be in 1..1024");
    QGRAD_CHECK(steps > sample_step, "--steps must be more than --sample-step");
    QGRAD_CHECK(elements >= 200, "--elements must be >= 200");
    token = qgrad::ps::read_token_file(token_file);
  } catch (const qgrad::Error& e) {
    std::fprintf(stderr, "qgrad-ps-load: %s\n", e.what());
    return 2;
  }
  const std::vector<std::string> addresses = split(servers);

  // The model: two tensors, the same initial values on every worker (the servers check).
  const std::vector<size_t> sizes = {elements - 100, 100};
  std::atomic<uint64_t> slowest{0};  // steps done by the slowest worker so far
  std::vector<std::atomic<uint64_t>> done(workers);
  std::vector<qgrad::ps::PsCounters> counters(workers);
  std::vector<std::string> errors(workers);
  std::atomic<bool> running{true};
  uint64_t rss_sample = 0, rss_peak = 0;
  std::thread monitor([&] {
    // Samples the server's RSS once every worker is past sample_step, and keeps the peak.
    while (running.load()) {
      uint64_t low = steps;
      for (const auto& d : done) low = std::min<uint64_t>(low, d.load());
      slowest = low;
      if (server_pid > 0) {
        const uint64_t rss = rss_bytes(server_pid);
        if (low >= sample_step && rss_sample == 0) rss_sample = rss;
        rss_peak = std::max(rss_peak, rss);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });

  const qgrad::WallClock clock;
  std::vector<std::thread> threads;
  for (uint32_t w = 0; w < workers; ++w) {
    threads.emplace_back([&, w] {
      try {
        std::vector<std::vector<float>> value(sizes.size()), grad(sizes.size());
        std::vector<qgrad::ParamView> params;
        for (size_t i = 0; i < sizes.size(); ++i) {
          value[i].resize(sizes[i]);
          for (size_t j = 0; j < sizes[i]; ++j) value[i][j] = 0.001f * static_cast<float>(j % 97);
          grad[i].resize(sizes[i]);
          params.push_back({"t" + std::to_string(i), value[i], grad[i]});
        }
        qgrad::ps::PsExchangeOptions o;
        o.servers = addresses;
        o.token = token;
        o.worker_id = w;
        o.workers = workers;
        o.exchange.codec = codec;
        o.exchange.error_feedback = true;
        o.exchange.seed = 1;
        o.run = {{"load", "synthetic"}, {"elements", std::to_string(elements)}};
        qgrad::OptimizerOptions sgd;
        sgd.name = "sgd";
        qgrad::ps::PsExchange x(std::move(params), qgrad::make_optimizer(sgd), o);
        std::mt19937 gen(1000 + w);
        std::normal_distribution<float> normal(0.0f, 1.0f);
        for (uint64_t step = x.first_step(); step < steps; ++step) {
          for (auto& g : grad) {
            for (float& v : g) v = normal(gen);
          }
          x.begin_step(0.01f);
          x.step(0.01f);
          done[w] = step + 1;
        }
        counters[w] = x.counters();
      } catch (const std::exception& e) {
        errors[w] = e.what();
        done[w] = steps;
      }
    });
  }
  uint64_t printed = 0;
  while (slowest.load() < steps) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    const uint64_t now = slowest.load();
    if (now >= printed + steps / 10) {
      printed = now;
      std::printf("step %llu/%llu  [%.1f s]\n", static_cast<unsigned long long>(now),
                  static_cast<unsigned long long>(steps), clock.seconds());
      std::fflush(stdout);
    }
  }
  for (std::thread& t : threads) t.join();
  const double seconds = clock.seconds();
  running = false;
  monitor.join();
  const uint64_t rss_end = server_pid > 0 ? rss_bytes(server_pid) : 0;

  bool ok = true;
  const auto check = [&](bool cond, const std::string& what) {
    if (!cond) {
      ok = false;
      std::printf("FAIL: %s\n", what.c_str());
    }
  };
  for (uint32_t w = 0; w < workers; ++w) {
    check(errors[w].empty(), "worker " + std::to_string(w) + ": " + errors[w]);
  }
  uint64_t pushes = 0, bytes_in = 0, bytes_out = 0;
  for (size_t s = 0; s < addresses.size(); ++s) {
    qgrad::ps::PsClient client(addresses[s], token, 0);
    const qgrad::ps::ServerStats st = client.status();
    const std::string name = "server " + addresses[s];
    check(st.applied_steps == steps, qgrad::detail::concat(name, " applied ", st.applied_steps,
                                                           " steps, the workers ran ", steps));
    for (uint32_t w = 0; w < workers && w < st.pushes.size(); ++w) {
      const uint64_t sent = counters[w].pushes.empty() ? 0 : counters[w].pushes[s];
      check(st.pushes[w] == sent && sent == steps,
            qgrad::detail::concat(name, " counted ", st.pushes[w], " pushes of worker ", w,
                                  ", which sent ", sent, " (", steps, " steps)"));
      pushes += st.pushes[w];
    }
    check(st.quorum_steps == 0, qgrad::detail::concat(name, ": ", st.quorum_steps,
                                                      " steps applied without every worker"));
    bytes_in += st.bytes_in;
    bytes_out += st.bytes_out;
  }
  std::printf(
      "qgrad-ps-load: %u workers, %llu steps, %llu elements (%s) in %.2f s: %.0f steps/s, "
      "%.0f pushes/s; server received %.1f MiB, sent %.1f MiB; %llu pushes counted, "
      "%llu sent\n",
      workers, static_cast<unsigned long long>(steps), static_cast<unsigned long long>(elements),
      codec.c_str(), seconds, static_cast<double>(steps) / seconds,
      static_cast<double>(pushes) / seconds, mib(bytes_in), mib(bytes_out),
      static_cast<unsigned long long>(pushes),
      static_cast<unsigned long long>(steps * workers * addresses.size()));
  if (server_pid > 0) {
    const double limit = static_cast<double>(rss_sample) * (1.0 + tolerance) + 4.0 * 1024 * 1024;
    std::printf(
        "server RSS: %.1f MiB at step %llu, %.1f MiB at step %llu (peak %.1f MiB); "
        "limit %.1f MiB (+%.0f%% + 4 MiB)\n",
        mib(rss_sample), static_cast<unsigned long long>(sample_step), mib(rss_end),
        static_cast<unsigned long long>(steps), mib(rss_peak), limit / (1024.0 * 1024.0),
        100 * tolerance);
    check(rss_sample > 0, "no RSS sample of PID " + std::to_string(server_pid));
    check(static_cast<double>(rss_end) <= limit, "the server's memory grew");
  }
  std::printf("%s\n", ok ? "qgrad-ps-load: all checks passed" : "qgrad-ps-load: FAILED");
  return ok ? 0 : 1;
}
