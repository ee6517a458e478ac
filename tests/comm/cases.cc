#include "tests/comm/cases.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <vector>

#include "core/codec_registry.h"
#include "core/error.h"
#include "core/error_feedback.h"
#include "core/synthetic.h"

namespace qgrad::cases {
namespace {

using ::testing::HasSubstr;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::span<const std::byte> as_bytes(std::span<const float> v) { return std::as_bytes(v); }

// Index of the first differing float (by bits), or -1.
long first_difference(std::span<const float> a, std::span<const float> b) {
  if (a.size() != b.size()) return 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::memcmp(&a[i], &b[i], sizeof(float)) != 0) return static_cast<long>(i);
  }
  return -1;
}

// One bit per element, sgn(0) = +1; decodes to +-1: the majority-vote contract in its plainest
// form, so the strategies can be checked without core/codecs/sign.cc.
class TestSignCodec final : public Codec {
 public:
  TestSignCodec()
      : Codec(CodecId::kSign, parse_codec_spec("sign"),
              pack_wire_params(parse_codec_spec("sign"))) {}
  bool unbiased() const override { return false; }
  Aggregation aggregation() const override { return Aggregation::kMajorityVote; }

 protected:
  size_t max_body_bytes(size_t n) const override { return (n + 7) / 8; }
  std::optional<size_t> exact_body_bytes(size_t n) const override { return (n + 7) / 8; }
  size_t encode_body(std::span<const float> in, const RngKey&,
                     std::span<std::byte> body) const override {
    throw_if_nonfinite(in);
    std::fill(body.begin(), body.begin() + (in.size() + 7) / 8, std::byte{0});
    for (size_t i = 0; i < in.size(); ++i) {
      if (in[i] >= 0.0f) body[i / 8] |= std::byte(1u << (i % 8));
    }
    return (in.size() + 7) / 8;
  }
  void decode_body(std::span<const std::byte> body, std::span<float> out,
                   float weight) const override {
    for (size_t i = 0; i < out.size(); ++i) {
      const bool plus = (std::to_integer<unsigned>(body[i / 8]) >> (i % 8)) & 1u;
      out[i] += weight * (plus ? 1.0f : -1.0f);
    }
  }
};

std::vector<float> make_input(size_t n, int rank, int step) {
  std::vector<float> v(n);
  fill_synthetic(v, SyntheticDistribution::kNormal, 1 + 1000 * uint64_t(step) + uint64_t(rank));
  for (size_t i = 0; i < n; i += 5) v[i] = 0.0f;  // zeros: sgn(0), empty levels, ties
  return v;
}

// allreduce_sum's volume: the sums of the schedule's ranges (checked against closed forms in
// local_communicator_test.cc).
uint64_t allreduce_sent_bytes(size_t n, int world, int r) {
  return 4 * allreduce_volume(n, world, r).sent;
}
uint64_t allreduce_received_bytes(size_t n, int world, int r) {
  return 4 * allreduce_volume(n, world, r).received;
}

// Element i of the sum in the order of comm/communicator.h's allreduce: the pairing tree for a
// power-of-two world, else the ring's x_{j+1} + x_{j+2} + ... + x_j for i in chunk j.
float documented_sum(const std::vector<std::vector<float>>& x, size_t i) {
  const int w = static_cast<int>(x.size());
  if (std::has_single_bit(static_cast<unsigned>(w))) {
    std::vector<float> v(w);
    for (int r = 0; r < w; ++r) v[r] = x[r][i];
    for (int d = w / 2; d >= 1; d /= 2) {
      for (int k = 0; k < d; ++k) v[k] = v[k] + v[k + d];
    }
    return v[0];
  }
  int j = 0;
  while (balanced_chunk(x[0].size(), w, j).end <= i) ++j;
  float acc = x[(j + 1) % w][i];
  for (int k = 2; k <= w; ++k) acc = x[(j + k) % w][i] + acc;
  return acc;
}

struct Reference {
  std::vector<float> result;
  std::vector<uint64_t> sent, received;  // per rank
};

// The serial recomputation: what every strategy must produce, from the ranks' inputs and copies
// of their error memories (updated as the ranks' own memories must be).
Reference reference(const Codec& codec, Strategy strategy, int world,
                    const std::vector<std::vector<float>>& inputs, const RngKey& key,
                    std::vector<ErrorFeedback>* worker_ef, std::vector<ErrorFeedback>* owner_ef,
                    float lr) {
  const size_t n = inputs[0].size();
  const bool majority = codec.aggregation() == Aggregation::kMajorityVote;
  Reference ref{std::vector<float>(n, 0.0f), std::vector<uint64_t>(world, 0),
                std::vector<uint64_t>(world, 0)};
  if (n == 0) return ref;
  auto whole_key = [&](int r) {
    RngKey k = key;
    k.rank = static_cast<uint32_t>(r);
    return k;
  };
  auto vote = [](std::span<float> v) {
    for (float& x : v) x = x >= 0.0f ? 1.0f : -1.0f;
  };
  switch (strategy) {
    case Strategy::kPlain: {
      std::vector<std::vector<float>> p = inputs;
      for (int r = 0; r < world; ++r) {
        if (worker_ef != nullptr) {
          const std::span<const float> e = (*worker_ef)[r].memory();
          for (size_t i = 0; i < n; ++i) p[r][i] = lr * inputs[r][i] + e[i];
          std::vector<std::byte> out(codec.max_encoded_bytes(n));
          (*worker_ef)[r].encode(codec, inputs[r], lr, whole_key(r), out);
        }
        ref.sent[r] = allreduce_sent_bytes(n, world, r);
        ref.received[r] = allreduce_received_bytes(n, world, r);
      }
      for (size_t i = 0; i < n; ++i) ref.result[i] = documented_sum(p, i);
      break;
    }
    case Strategy::kAllgather: {
      std::vector<std::vector<std::byte>> payloads(world);
      for (int r = 0; r < world; ++r) {
        payloads[r].resize(codec.max_encoded_bytes(n));
        const size_t bytes =
            worker_ef != nullptr
                ? (*worker_ef)[r].encode(codec, inputs[r], lr, whole_key(r), payloads[r])
                : codec.encode(inputs[r], whole_key(r), payloads[r]);
        payloads[r].resize(bytes);
      }
      for (int r = 0; r < world; ++r) codec.decode_add(payloads[r], ref.result, 1.0f);
      if (majority) vote(ref.result);
      for (int r = 0; r < world; ++r) {
        ref.sent[r] = (world - 1) * payloads[r].size();
        for (int q = 0; q < world; ++q) {
          if (q != r) ref.received[r] += payloads[q].size();
        }
      }
      break;
    }
    case Strategy::kScatterReduce:
    case Strategy::kMajority: {
      // chunk[r][j]: rank r's payload for owner j; owned[j]: owner j's re-encoded sum.
      std::vector<std::vector<std::vector<std::byte>>> chunk(
          world, std::vector<std::vector<std::byte>>(world));
      for (int r = 0; r < world; ++r) {
        std::vector<float> p = inputs[r];
        std::vector<float> memory;
        if (worker_ef != nullptr) {
          const std::span<const float> e = (*worker_ef)[r].memory();
          for (size_t i = 0; i < n; ++i) p[i] = lr * inputs[r][i] + e[i];
          memory.assign(n, 0.0f);
        }
        for (int j = 0; j < world; ++j) {
          const ChunkRange c = balanced_chunk(n, world, j);
          if (c.size() == 0) continue;
          const std::span<const float> in(p.data() + c.begin, c.size());
          chunk[r][j] = codec.encode(in, chunk_key(key, ChunkRole::kWorker, j, r));
          if (worker_ef != nullptr) {
            std::copy(in.begin(), in.end(), memory.begin() + c.begin);
            codec.decode_add(chunk[r][j], std::span(memory).subspan(c.begin, c.size()), -1.0f);
          }
        }
        if (worker_ef != nullptr) (*worker_ef)[r].load(memory);
      }
      std::vector<std::vector<std::byte>> owned(world);
      for (int j = 0; j < world; ++j) {
        const ChunkRange c = balanced_chunk(n, world, j);
        if (c.size() == 0) continue;
        std::vector<float> sum(c.size(), 0.0f);
        for (int r = 0; r < world; ++r) codec.decode_add(chunk[r][j], sum, 1.0f);
        if (majority) vote(sum);
        const RngKey k = chunk_key(key, ChunkRole::kOwner, j, j);
        if (owner_ef != nullptr && !majority) {
          owned[j].resize(codec.max_encoded_bytes(c.size()));
          owned[j].resize((*owner_ef)[j].encode(codec, sum, 1.0f, k, owned[j]));
        } else {
          owned[j] = codec.encode(sum, k);
        }
        codec.decode_add(owned[j], std::span(ref.result).subspan(c.begin, c.size()), 1.0f);
      }
      for (int r = 0; r < world; ++r) {
        for (int j = 0; j < world; ++j) {
          if (j == r) continue;
          ref.sent[r] += chunk[r][j].size() + owned[r].size();
          ref.received[r] += chunk[j][r].size() + owned[j].size();
        }
      }
      break;
    }
    case Strategy::kAuto:
      ADD_FAILURE() << "reference needs a resolved strategy";
  }
  return ref;
}

}  // namespace

bool same_on_all_ranks(Communicator& comm, std::span<const std::byte> bytes) {
  ByteBlocks all;
  comm.allgatherv(bytes, all);
  for (int r = 0; r < comm.size(); ++r) {
    const auto b = all.block(r);
    if (b.size() != bytes.size() || (!b.empty() && std::memcmp(b.data(), bytes.data(), b.size())))
      return false;
  }
  return true;
}

bool same_on_all_ranks(Communicator& comm, std::span<const float> values) {
  return same_on_all_ranks(comm, as_bytes(values));
}

void allreduce_sum(Communicator& comm, size_t n) {
  const int w = comm.size(), me = comm.rank();
  // Small integers: every summation order gives the exact sum, on every backend.
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = float((me + 1) * int(i % 13 + 1));
  const TrafficCounters before = comm.traffic();
  comm.allreduce_sum(v);
  long bad = -1;
  for (size_t i = 0; i < n && bad < 0; ++i) {
    if (v[i] != float(w * (w + 1) / 2 * int(i % 13 + 1))) bad = long(i);
  }
  EXPECT_EQ(bad, -1) << "rank " << me << " n " << n;
  EXPECT_EQ(comm.traffic().bytes_sent - before.bytes_sent, allreduce_sent_bytes(n, w, me));
  EXPECT_EQ(comm.traffic().bytes_received - before.bytes_received,
            allreduce_received_bytes(n, w, me));
  EXPECT_EQ(comm.traffic().calls, before.calls + 1);
  // Random floats of both signs: the order matters. Every rank must hold the same bits, those of
  // the order that comm/communicator.h documents.
  std::vector<std::vector<float>> inputs(w, std::vector<float>(n));
  for (int k = 0; k < w; ++k) {
    fill_synthetic(inputs[k], SyntheticDistribution::kLogNormal, 77 + k);
    for (size_t i = 0; i < n; i += 2) inputs[k][i] = -inputs[k][i];
  }
  std::vector<float> r = inputs[me];
  comm.allreduce_sum(r);
  EXPECT_TRUE(same_on_all_ranks(comm, r)) << "rank " << me << " n " << n;
  long off = -1;
  for (size_t i = 0; i < n && off < 0; ++i) {
    const float want = documented_sum(inputs, i);
    if (std::memcmp(&want, &r[i], sizeof want) != 0) off = long(i);
  }
  EXPECT_EQ(off, -1) << "rank " << me << " n " << n << ": not the documented summation order";
}

void allgatherv(Communicator& comm, size_t base) {
  const int w = comm.size(), me = comm.rank();
  auto size_of = [&](int r) { return r == 1 ? size_t{0} : base + 3 * size_t(r); };
  auto byte_of = [](int r, size_t i) { return std::byte((r * 31 + i * 7) & 0xFF); };
  std::vector<std::byte> mine(size_of(me));
  for (size_t i = 0; i < mine.size(); ++i) mine[i] = byte_of(me, i);
  const TrafficCounters before = comm.traffic();
  ByteBlocks all;
  all.append(std::vector<std::byte>(5, std::byte{9}));  // stale content must be replaced
  comm.allgatherv(mine, all);
  EXPECT_EQ(all.count(), w);
  uint64_t others = 0;
  for (int r = 0; r < std::min(w, all.count()); ++r) {
    const auto b = all.block(r);
    EXPECT_EQ(b.size(), size_of(r)) << "block " << r;
    bool ok = b.size() == size_of(r);
    for (size_t i = 0; ok && i < b.size(); ++i) ok = b[i] == byte_of(r, i);
    EXPECT_TRUE(ok) << "rank " << me << " block " << r;
    if (r != me) others += size_of(r);
  }
  EXPECT_EQ(comm.traffic().bytes_sent - before.bytes_sent, (w - 1) * mine.size());
  EXPECT_EQ(comm.traffic().bytes_received - before.bytes_received, others);
}

void alltoallv(Communicator& comm, size_t base) {
  const int w = comm.size(), me = comm.rank();
  auto size_of = [&](int from, int to) {
    return (from + 2 * to) % 3 == 0 ? size_t{0} : base + size_t(from) + 2 * size_t(to);
  };
  auto byte_of = [](int from, int to, size_t i) {
    return std::byte((from * 17 + to * 29 + i) & 0xFF);
  };
  ByteBlocks send, recv;
  send.clear();
  uint64_t sent = 0, received = 0;
  for (int j = 0; j < w; ++j) {
    std::vector<std::byte> b(size_of(me, j));
    for (size_t i = 0; i < b.size(); ++i) b[i] = byte_of(me, j, i);
    send.append(b);
    if (j != me) sent += b.size(), received += size_of(j, me);
  }
  const TrafficCounters before = comm.traffic();
  comm.alltoallv(send, recv);
  EXPECT_EQ(recv.count(), w);
  for (int r = 0; r < std::min(w, recv.count()); ++r) {
    const auto b = recv.block(r);
    bool ok = b.size() == size_of(r, me);
    for (size_t i = 0; ok && i < b.size(); ++i) ok = b[i] == byte_of(r, me, i);
    EXPECT_TRUE(ok) << "rank " << me << " block from " << r << " (" << b.size() << " bytes)";
  }
  EXPECT_EQ(comm.traffic().bytes_sent - before.bytes_sent, sent);
  EXPECT_EQ(comm.traffic().bytes_received - before.bytes_received, received);
}

void broadcast(Communicator& comm, size_t n) {
  const int w = comm.size(), me = comm.rank();
  for (int root = 0; root < w; ++root) {
    std::vector<std::byte> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = std::byte((me * 13 + i) & 0xFF);
    const TrafficCounters before = comm.traffic();
    comm.broadcast(v, root);
    bool ok = true;
    for (size_t i = 0; ok && i < n; ++i) ok = v[i] == std::byte((root * 13 + i) & 0xFF);
    EXPECT_TRUE(ok) << "rank " << me << " root " << root;
    EXPECT_EQ(comm.traffic().bytes_sent - before.bytes_sent, me == root ? (w - 1) * n : 0);
    EXPECT_EQ(comm.traffic().bytes_received - before.bytes_received, me == root ? 0 : n);
  }
}

void barrier(Communicator& comm) {
  const TrafficCounters before = comm.traffic();
  for (int i = 0; i < 3; ++i) comm.barrier();
  EXPECT_EQ(comm.traffic().calls, before.calls + 3);
  EXPECT_EQ(comm.traffic().bytes_sent, before.bytes_sent);
  EXPECT_EQ(comm.traffic().bytes_received, before.bytes_received);
}

void throwing_rank(Communicator& comm, std::chrono::milliseconds timeout) {
  const int last = comm.size() - 1;
  if (comm.rank() == last) {
    throw std::runtime_error("injected failure on rank " + std::to_string(last));
  }
  const auto t0 = Clock::now();
  ByteBlocks all;
  const std::vector<std::byte> mine(10, std::byte{1});
  try {
    comm.allgatherv(mine, all);
    ADD_FAILURE() << "rank " << comm.rank() << ": allgatherv returned without the last rank";
  } catch (const TimeoutError& e) {
    ADD_FAILURE() << "rank " << comm.rank()
                  << " timed out instead of seeing the abort: " << e.what();
  } catch (const CommError& e) {
    EXPECT_THAT(e.what(), HasSubstr("rank " + std::to_string(last) + " aborted"));
    EXPECT_THAT(e.what(), HasSubstr("injected failure"));
  }
  EXPECT_LT(seconds_since(t0), 0.5 * std::chrono::duration<double>(timeout).count());
  // The communicator stays broken.
  EXPECT_THROW(comm.barrier(), CommError);
}

void silent_rank(Communicator& comm, std::chrono::milliseconds timeout) {
  if (comm.rank() == comm.size() - 1) return;  // never joins
  const auto t0 = Clock::now();
  ByteBlocks all;
  const std::vector<std::byte> mine(10, std::byte{1});
  try {
    comm.allgatherv(mine, all);
    ADD_FAILURE() << "rank " << comm.rank() << ": allgatherv returned without the last rank";
  } catch (const TimeoutError& e) {
    EXPECT_THAT(e.what(), HasSubstr("allgatherv"));
    EXPECT_THAT(e.what(), HasSubstr("timed out"));
  }
  const double t = seconds_since(t0), limit = std::chrono::duration<double>(timeout).count();
  EXPECT_GE(t, 0.5 * limit);
  EXPECT_LE(t, 2.0 * limit);
  EXPECT_THROW(comm.barrier(), TimeoutError);
}

std::unique_ptr<Codec> make_test_codec(const std::string& spec) {
  if (spec == "test-sign") return std::make_unique<TestSignCodec>();
  return make_codec(spec);
}

std::unique_ptr<Codec> make_codec_or_null(const std::string& spec, std::string* why) {
  try {
    return make_test_codec(spec);
  } catch (const InvalidArgument& e) {
    if (std::string(e.what()).find("placeholder") == std::string::npos) throw;
    *why = e.what();
    return nullptr;
  }
}

std::string case_name(const AllreduceCase& c, int world) {
  std::string s = c.codec + "_" + std::string(strategy_name(c.strategy)) + "_w" +
                  std::to_string(world) + "_n" + std::to_string(c.n);
  if (c.error_feedback) s += "_ef" + std::to_string(c.steps);
  for (char& ch : s) {
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  }
  return s;
}

namespace {

// Inputs, reference results and error memories of every rank for every step of one case.
struct Expected {
  std::vector<std::vector<std::vector<float>>> inputs;         // [step][rank]
  std::vector<Reference> refs;                                 // [step]
  std::vector<std::vector<std::vector<float>>> worker_memory;  // [step][rank], after the step
  std::vector<std::vector<std::vector<float>>> owner_memory;
};

RngKey step_key(int step) {
  return {.seed = 42, .step = uint64_t(step), .rank = 99, .tensor = 3, .bucket = 5};
}

// Computed once per process and case: the local ranks of one case share it (the first rank to
// ask computes it while the others wait), so a world of 7 does not pay 7 serial references.
std::shared_ptr<const Expected> expected_for(const Codec& codec, const AllreduceCase& c,
                                             Strategy strategy, int world, float lr) {
  static std::mutex mutex;
  static std::string cached_name;
  static std::shared_ptr<const Expected> cached;
  const std::string name = case_name(c, world) + "|" + codec.spec().str();
  std::lock_guard lock(mutex);
  if (cached && cached_name == name) return cached;
  auto e = std::make_shared<Expected>();
  std::vector<ErrorFeedback> worker, owner;
  for (int r = 0; r < world; ++r) {
    worker.emplace_back(c.n);
    owner.emplace_back(owned_chunk(c.n, world, r).size());
  }
  for (int step = 0; step < c.steps; ++step) {
    auto& inputs = e->inputs.emplace_back(world);
    for (int r = 0; r < world; ++r) inputs[r] = make_input(c.n, r, step);
    e->refs.push_back(reference(codec, strategy, world, inputs, step_key(step),
                                c.error_feedback ? &worker : nullptr,
                                c.error_feedback ? &owner : nullptr, lr));
    auto& wm = e->worker_memory.emplace_back();
    auto& om = e->owner_memory.emplace_back();
    for (int r = 0; r < world; ++r) {
      wm.emplace_back(worker[r].memory().begin(), worker[r].memory().end());
      om.emplace_back(owner[r].memory().begin(), owner[r].memory().end());
    }
  }
  cached_name = name;
  cached = std::move(e);
  return cached;
}

}  // namespace

void compressed_allreduce(Communicator& comm, const AllreduceCase& c) {
  const auto codec = make_test_codec(c.codec);
  const int w = comm.size(), me = comm.rank();
  const size_t n = c.n;
  const Strategy strategy = resolve_strategy(c.strategy, *codec, w);
  const bool majority = codec->aggregation() == Aggregation::kMajorityVote;
  const float lr = c.error_feedback ? 0.5f : 1.0f;
  const auto expected = expected_for(*codec, c, strategy, w, lr);
  ErrorFeedback worker_ef(n), owner_ef(owned_chunk(n, w, me).size());
  for (int step = 0; step < c.steps; ++step) {
    const std::vector<std::vector<float>>& inputs = expected->inputs[step];
    const Reference& ref = expected->refs[step];
    std::vector<float> bucket = inputs[me];
    const ExchangeStats stats = qgrad::compressed_allreduce(
        comm, *codec, c.strategy, bucket, step_key(step), c.error_feedback ? &worker_ef : nullptr,
        c.error_feedback ? &owner_ef : nullptr, lr);
    const std::string where = detail::concat("rank ", me, " step ", step, " ", c.codec, " ",
                                             strategy_name(strategy), " world ", w, " n ", n);
    EXPECT_EQ(stats.strategy, strategy) << where;
    EXPECT_EQ(stats.dense_bytes, 4 * n) << where;
    const long bad = first_difference(bucket, ref.result);
    EXPECT_EQ(bad, -1) << where << ": got " << (bad >= 0 ? bucket[bad] : 0.0f) << ", reference "
                       << (bad >= 0 ? ref.result[bad] : 0.0f);
    EXPECT_EQ(stats.bytes_sent, ref.sent[me]) << where;
    EXPECT_EQ(stats.bytes_received, ref.received[me]) << where;
    if (majority) {
      for (float v : bucket) {
        if (v != 1.0f && v != -1.0f) {
          ADD_FAILURE() << where << ": majority vote gave " << v;
          break;
        }
      }
    }
    if (codec->id() == CodecId::kNone && !c.error_feedback && me == 0) {
      // The reference itself, against the exact sum (lossless codec; the rank order of the
      // strategies and the allreduce order of kPlain differ only by float rounding).
      for (size_t i = 0; i < n; ++i) {
        double s = 0;
        for (int r = 0; r < w; ++r) s += inputs[r][i];
        if (std::fabs(s - ref.result[i]) > 1e-5 * (1 + std::fabs(s))) {
          ADD_FAILURE() << where << ": reference " << ref.result[i] << " != sum " << s;
          break;
        }
      }
    }
    if (c.error_feedback) {
      EXPECT_EQ(first_difference(worker_ef.memory(), expected->worker_memory[step][me]), -1)
          << where;
      EXPECT_EQ(first_difference(owner_ef.memory(), expected->owner_memory[step][me]), -1) << where;
    }
    EXPECT_TRUE(same_on_all_ranks(comm, bucket)) << where;
  }
}

}  // namespace qgrad::cases
