// qgrad-codec: run any codec on raw float32 files from the shell.
//
//   qgrad-codec encode --codec SPEC [--seed S] [--step K] [--threads T] IN.f32 OUT.qg
//   qgrad-codec decode [--threads T] IN.qg OUT.f32          (the codec is read from the header)
//   qgrad-codec stats --codec SPEC [--seed S] [--json] IN.f32
//   qgrad-codec gen --n N [--dist gradient|normal|lognormal|sparse] [--scale X] [--seed S] OUT.f32
//   qgrad-codec list
//
// .f32 files are raw little-endian float32; .qg files are one qgrad payload (core/wire.h).
// Outputs are written to OUT.tmp and renamed, so a reader never sees half a file. Exit codes:
// 0 success, 2 usage or input errors (bad spec, unreadable or malformed file, corrupt payload,
// NaN/Inf input), 1 anything unexpected. Errors go to stderr, naming the problem.
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <numbers>
#include <string>
#include <vector>

#include "core/codec_registry.h"
#include "core/error.h"
#include "core/parallel.h"
#include "core/philox.h"
#include "core/synthetic.h"
#include "core/wire.h"

namespace qgrad {
namespace {

// A usage or input error: reported on stderr, exit code 2.
struct InputError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::vector<std::byte> read_file(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) throw InputError("cannot open '" + path + "': " + std::strerror(errno));
  struct stat st {};
  if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
    std::fclose(f);
    throw InputError("cannot read '" + path + "': it is a directory");
  }
  std::vector<std::byte> data;
  std::byte buffer[1 << 16];
  size_t got;
  while ((got = std::fread(buffer, 1, sizeof buffer, f)) > 0)
    data.insert(data.end(), buffer, buffer + got);
  const bool failed = std::ferror(f) != 0;
  const int err = errno;
  std::fclose(f);
  if (failed) throw InputError("cannot read '" + path + "': " + std::strerror(err));
  return data;
}

std::vector<float> read_f32(const std::string& path) {
  const std::vector<std::byte> bytes = read_file(path);
  if (bytes.size() % 4 != 0)
    throw InputError(detail::concat("'", path, "' has ", bytes.size(),
                                    " bytes, not a multiple of 4: expected raw little-endian "
                                    "float32"));
  std::vector<float> v(bytes.size() / 4);
  if (!v.empty()) std::memcpy(v.data(), bytes.data(), bytes.size());
  return v;
}

// Writes to path.tmp, then renames: readers see the old file or the whole new one.
void write_atomically(const std::string& path, const void* data, size_t size) {
  const std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) throw InputError("cannot create '" + tmp + "': " + std::strerror(errno));
  bool ok = size == 0 || std::fwrite(data, 1, size, f) == size;
  ok = std::fflush(f) == 0 && ok;
  ok = fsync(fileno(f)) == 0 && ok;
  const int err = errno;
  ok = std::fclose(f) == 0 && ok;
  if (ok && std::rename(tmp.c_str(), path.c_str()) == 0) return;
  const std::string why = std::strerror(ok ? errno : err);
  std::remove(tmp.c_str());
  throw InputError("cannot write '" + path + "': " + why);
}

void write_f32(const std::string& path, const std::vector<float>& v) {
  write_atomically(path, v.data(), 4 * v.size());
}

// The codec's error, re-labelled so the user knows which input was bad.
template <typename Fn>
auto with_payload_context(const std::string& path, Fn&& fn) {
  try {
    return fn();
  } catch (const CorruptPayload& e) {
    throw InputError("corrupt payload '" + path + "': " + e.what());
  }
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Refuses element counts whose float32 output could not fit in half of physical memory, so a
// crafted header cannot make `decode` allocate (and zero) terabytes.
void check_output_fits(uint64_t elements, const std::string& path) {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  const double limit = pages > 0 && page > 0 ? 0.5 * static_cast<double>(pages) * page : 1e12;
  if (4.0 * static_cast<double>(elements) > limit)
    throw InputError(detail::concat("payload '", path, "' claims ", elements,
                                    " elements: more float32 output than half of this "
                                    "machine's memory; refusing"));
}

struct EncodeOptions {
  std::string spec, input, output;
  uint64_t seed = 0, step = 0;
  int threads = 1;
};

int run_encode(const EncodeOptions& o) {
  const auto codec = make_codec(o.spec);
  const std::vector<float> v = read_f32(o.input);
  set_num_threads(o.threads);
  const auto payload = codec->encode(v, RngKey{.seed = o.seed, .step = o.step});
  write_atomically(o.output, payload.data(), payload.size());
  return 0;
}

int run_decode(const std::string& input, const std::string& output, int threads) {
  const std::vector<std::byte> payload = read_file(input);
  set_num_threads(threads);
  const std::vector<float> out = with_payload_context(input, [&] {
    const WireHeader header = read_header(payload);
    const auto codec = codec_for_payload(payload);
    check_output_fits(header.elements, input);
    std::vector<float> decoded(header.elements, 0.0f);
    codec->decode_add(payload, decoded, 1.0f);
    return decoded;
  });
  write_f32(output, out);
  return 0;
}

struct StatsOptions {
  std::string spec, input;
  uint64_t seed = 0;
  int threads = 1, repeat = 3;
  bool json = false;
};

int run_stats(const StatsOptions& o) {
  const auto codec = make_codec(o.spec);
  const std::vector<float> v = read_f32(o.input);
  set_num_threads(o.threads);
  const RngKey key{.seed = o.seed};
  std::vector<std::byte> buffer(codec->max_encoded_bytes(v.size()));
  size_t bytes = 0;
  std::vector<float> decoded(v.size());
  // The fastest of a few runs: the first one also pays for page faults and thread start-up.
  double encode_s = INFINITY, decode_s = INFINITY;
  for (int r = 0; r < o.repeat; ++r) {
    auto start = std::chrono::steady_clock::now();
    bytes = codec->encode(v, key, buffer);
    encode_s = std::min(encode_s, seconds_since(start));
    std::fill(decoded.begin(), decoded.end(), 0.0f);
    start = std::chrono::steady_clock::now();
    codec->decode_add(std::span<const std::byte>(buffer.data(), bytes), decoded, 1.0f);
    decode_s = std::min(decode_s, seconds_since(start));
  }
  double err2 = 0, norm2 = 0;
  for (size_t i = 0; i < v.size(); ++i) {
    const double d = static_cast<double>(decoded[i]) - v[i];
    err2 += d * d;
    norm2 += static_cast<double>(v[i]) * v[i];
  }
  const size_t n = v.size();
  const double raw = 4.0 * static_cast<double>(n);
  // Undefined quantities (empty input, zero vector decoded inexactly) are null in JSON.
  const double rel_err = norm2 > 0 ? std::sqrt(err2 / norm2) : (err2 == 0 ? 0.0 : NAN);
  const double bits_per_element = n > 0 ? 8.0 * static_cast<double>(bytes) / n : NAN;
  const double ratio = static_cast<double>(bytes) > 0 ? raw / static_cast<double>(bytes) : NAN;
  const auto rate = [&](double s) { return s > 0 ? raw / s / 1e9 : NAN; };
  const auto num = [](double x) { return std::isfinite(x) ? nlohmann::json(x) : nlohmann::json(); };

  if (o.json) {
    nlohmann::json j;
    j["codec"] = codec->spec().str();
    j["unbiased"] = codec->unbiased();
    j["elements"] = n;
    j["encoded_bytes"] = bytes;
    j["header_bytes"] = kHeaderBytes;
    j["bits_per_element"] = num(bits_per_element);
    j["ratio_vs_fp32"] = num(ratio);
    j["relative_l2_error"] = num(rel_err);
    j["encode_seconds"] = encode_s;
    j["decode_seconds"] = decode_s;
    j["encode_gb_per_s"] = num(rate(encode_s));
    j["decode_gb_per_s"] = num(rate(decode_s));
    j["threads"] = o.threads;
    j["seed"] = o.seed;
    std::cout << j.dump() << "\n";
    return 0;
  }
  std::printf("codec              %s%s\n", codec->spec().str().c_str(),
              codec->unbiased() ? " (unbiased)" : " (biased)");
  std::printf("elements           %zu\n", n);
  std::printf("encoded bytes      %zu (%zu header + %zu body)\n", bytes, kHeaderBytes,
              bytes - kHeaderBytes);
  std::printf("bits per element   %.4f\n", bits_per_element);
  std::printf("ratio vs fp32      %.3fx\n", ratio);
  std::printf("relative L2 error  %.6g\n", rel_err);
  std::printf("encode             %.6f s (%.2f GB/s of fp32, %d thread%s)\n", encode_s,
              rate(encode_s), o.threads, o.threads == 1 ? "" : "s");
  std::printf("decode             %.6f s (%.2f GB/s of fp32)\n", decode_s, rate(decode_s));
  return 0;
}

struct GenOptions {
  std::string output, dist = "gradient";
  uint64_t n = 0, seed = 0;
  double scale = 1.0;
};

// Test data from core/synthetic.h (Philox: the same file for a seed on every machine, up to
// libm's log/cos), multiplied by --scale.
int run_gen(const GenOptions& o) {
  std::vector<float> v(o.n);
  fill_synthetic(v, parse_synthetic_distribution(o.dist), o.seed);
  if (o.scale != 1.0)
    for (float& x : v) x = static_cast<float>(o.scale * x);
  write_f32(o.output, v);
  return 0;
}

int run(int argc, char** argv) {
  CLI::App app{"qgrad-codec: encode, decode and measure gradient codecs on raw float32 files"};
  app.require_subcommand(1);
  app.footer("Codec specs: name[:key=value,...]; run 'qgrad-codec list' for every codec and key.");

  EncodeOptions enc;
  auto* encode = app.add_subcommand("encode", "encode IN.f32 into one payload OUT.qg");
  encode->add_option("--codec", enc.spec, "codec spec, e.g. qsgd:bits=4,bucket=512")->required();
  encode->add_option("--seed", enc.seed, "random seed (same inputs and seed: same bytes)");
  encode->add_option("--step", enc.step, "training step, part of the random stream's key");
  encode->add_option("--threads", enc.threads, "threads (the bytes do not depend on it)")
      ->check(CLI::Range(1, 1024));
  encode->add_option("input", enc.input, "raw little-endian float32 file")->required();
  encode->add_option("output", enc.output, "payload file to write")->required();

  std::string dec_in, dec_out;
  int dec_threads = 1;
  auto* decode = app.add_subcommand("decode", "decode a payload (any codec) into raw float32");
  decode->add_option("input", dec_in, "payload file written by encode")->required();
  decode->add_option("output", dec_out, "raw float32 file to write")->required();
  decode->add_option("--threads", dec_threads, "threads")->check(CLI::Range(1, 1024));

  StatsOptions st;
  auto* stats = app.add_subcommand("stats", "size, error and speed of a codec on IN.f32");
  stats->add_option("--codec", st.spec, "codec spec")->required();
  stats->add_option("--seed", st.seed, "random seed");
  stats->add_option("--threads", st.threads, "threads")->check(CLI::Range(1, 1024));
  stats->add_option("--repeat", st.repeat, "timing runs; the fastest is reported")
      ->check(CLI::Range(1, 1000));
  stats->add_flag("--json", st.json, "print one JSON object");
  stats->add_option("input", st.input, "raw little-endian float32 file")->required();

  GenOptions gen;
  auto* gen_cmd = app.add_subcommand("gen", "write a gradient-like float32 vector");
  gen_cmd->add_option("--n", gen.n, "number of elements")
      ->required()
      ->check(CLI::Range(uint64_t{0}, uint64_t{1} << 32));
  gen_cmd->add_option("--dist", gen.dist, "distribution")
      ->check(CLI::IsMember({"normal", "lognormal", "sparse", "gradient"}));
  gen_cmd->add_option("--seed", gen.seed, "random seed");
  gen_cmd->add_option("--scale", gen.scale, "multiplies every value")->check(CLI::Range(0.0, 1e30));
  gen_cmd->add_option("output", gen.output, "raw float32 file to write")->required();

  auto* list = app.add_subcommand("list", "list every codec and its parameters");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);  // prints the message and the usage
    return 2;
  }

  if (*encode) return run_encode(enc);
  if (*decode) return run_decode(dec_in, dec_out, dec_threads);
  if (*stats) return run_stats(st);
  if (*gen_cmd) return run_gen(gen);
  if (*list) {
    std::cout << "codecs:\n" << describe_codecs();
    return 0;
  }
  return 2;
}

}  // namespace
}  // namespace qgrad

int main(int argc, char** argv) {
  try {
    return qgrad::run(argc, argv);
  } catch (const qgrad::InputError& e) {
    std::cerr << "qgrad-codec: error: " << e.what() << "\n";
  } catch (const qgrad::InvalidArgument& e) {
    std::cerr << "qgrad-codec: error: " << e.what() << "\n";
  } catch (const qgrad::CorruptPayload& e) {
    std::cerr << "qgrad-codec: error: corrupt payload: " << e.what() << "\n";
  } catch (const std::exception& e) {
    std::cerr << "qgrad-codec: internal error: " << e.what() << "\n";
    return 1;
  }
  return 2;
}
