#include "comm/strategies/compressed_allreduce.h"

#include <algorithm>
#include <chrono>
#include <exception>
#include <vector>

#include "core/aggregation.h"
#include "core/error.h"
#include "core/timer.h"

namespace qgrad {
namespace {

constexpr std::string_view kStrategyNames = "auto, none, allgather, scatter-reduce, majority";

// Buffers reused across calls on the same thread: an exchange of a multi-MiB bucket should not
// allocate and zero-fill as much again every step.
struct Workspace {
  std::vector<std::byte> payload;
  std::vector<float> contribution;  // p = lr * g + e with worker error feedback
  std::vector<float> memory;        // the worker's new error memory
  std::vector<float> sum;           // the owner's chunk sum
  ByteBlocks send, recv, all;
};

Workspace& workspace() {
  thread_local Workspace ws;
  return ws;
}

// Everything one call needs, with the stats it fills in.
class Exchange {
 public:
  Exchange(Communicator& comm, const Codec& codec, std::span<float> bucket, const RngKey& key,
           ErrorFeedback* worker_ef, ErrorFeedback* owner_ef, float lr, ExchangeStats& stats)
      : comm_(comm),
        codec_(codec),
        bucket_(bucket),
        key_(key),
        worker_ef_(worker_ef),
        owner_ef_(owner_ef),
        lr_(lr),
        stats_(stats),
        ws_(workspace()),
        majority_(codec.aggregation() == Aggregation::kMajorityVote) {}

  void plain() {
    if (worker_ef_ != nullptr) {
      Stopwatch t(stats_.encode_s);
      // Codec `none` is lossless: decoding p's payload gives p itself and leaves e = 0.
      ws_.payload.resize(codec_.max_encoded_bytes(bucket_.size()));
      const size_t bytes = worker_ef_->encode(codec_, bucket_, lr_, own_key(), ws_.payload);
      std::fill(bucket_.begin(), bucket_.end(), 0.0f);
      codec_.decode_add({ws_.payload.data(), bytes}, bucket_, 1.0f);
    }
    Stopwatch t(stats_.exchange_s);
    started_ = true;
    comm_.allreduce_sum(bucket_);
  }

  void allgather() {
    size_t bytes = 0;
    {
      Stopwatch t(stats_.encode_s);
      ws_.payload.resize(codec_.max_encoded_bytes(bucket_.size()));
      bytes = worker_ef_ != nullptr
                  ? worker_ef_->encode(codec_, bucket_, lr_, own_key(), ws_.payload)
                  : codec_.encode(bucket_, own_key(), ws_.payload);
    }
    {
      Stopwatch t(stats_.exchange_s);
      started_ = true;
      comm_.allgatherv({ws_.payload.data(), bytes}, ws_.all);
    }
    Stopwatch t(stats_.decode_s);
    std::fill(bucket_.begin(), bucket_.end(), 0.0f);
    for (int r = 0; r < comm_.size(); ++r) codec_.decode_add(ws_.all.block(r), bucket_, 1.0f);
    if (majority_) vote(bucket_);  // core/aggregation.h: a tie (0) counts as +1
  }

  void scatter_reduce() {
    const int world = comm_.size(), me = comm_.rank();
    const size_t n = bucket_.size();
    {
      Stopwatch t(stats_.encode_s);
      encode_chunks();
    }
    {
      Stopwatch t(stats_.exchange_s);
      started_ = true;
      comm_.alltoallv(ws_.send, ws_.recv);
    }
    const ChunkRange own = balanced_chunk(n, world, me);
    {
      Stopwatch t(stats_.decode_s);
      ws_.sum.assign(own.size(), 0.0f);
      if (own.size() > 0) {
        for (int r = 0; r < world; ++r) codec_.decode_add(ws_.recv.block(r), ws_.sum, 1.0f);
      }
      if (majority_) vote(ws_.sum);  // core/aggregation.h: a tie (0) counts as +1
    }
    size_t bytes = 0;
    if (own.size() > 0) {
      Stopwatch t(stats_.encode_s);
      const RngKey key = chunk_key(key_, ChunkRole::kOwner, me, me);
      ws_.payload.resize(codec_.max_encoded_bytes(own.size()));
      bytes = owner_ef_ != nullptr && !majority_
                  ? owner_ef_->encode(codec_, ws_.sum, 1.0f, key, ws_.payload)
                  : codec_.encode(ws_.sum, key, ws_.payload);
    }
    {
      Stopwatch t(stats_.exchange_s);
      comm_.allgatherv({ws_.payload.data(), bytes}, ws_.all);
    }
    Stopwatch t(stats_.decode_s);
    for (int j = 0; j < world; ++j) {
      const ChunkRange c = balanced_chunk(n, world, j);
      if (c.size() == 0) continue;
      const std::span<float> out = bucket_.subspan(c.begin, c.size());
      std::fill(out.begin(), out.end(), 0.0f);
      codec_.decode_add(ws_.all.block(j), out, 1.0f);
    }
  }

  bool started() const { return started_; }

 private:
  RngKey own_key() const {
    RngKey k = key_;
    k.rank = static_cast<uint32_t>(comm_.rank());
    return k;
  }

  // Fills ws_.send with one payload per non-empty chunk (block j for rank j). With worker error
  // feedback the chunks of p = lr * g + e are encoded and the memory becomes p - D(payload),
  // chunk by chunk; it is only stored once every chunk encoded, so a NaN leaves it unchanged.
  void encode_chunks() {
    const int world = comm_.size(), me = comm_.rank();
    const size_t n = bucket_.size();
    std::span<const float> source = bucket_;
    if (worker_ef_ != nullptr) {
      const std::span<const float> e = worker_ef_->memory();
      ws_.contribution.resize(n);
      // The same expression as ErrorFeedback::encode, so both give the same p.
      for (size_t i = 0; i < n; ++i) ws_.contribution[i] = lr_ * bucket_[i] + e[i];
      source = ws_.contribution;
      ws_.memory.resize(n);
    }
    size_t capacity = 0;
    for (int j = 0; j < world; ++j) {
      const size_t len = balanced_chunk(n, world, j).size();
      if (len > 0) capacity += codec_.max_encoded_bytes(len);
    }
    ws_.send.data.resize(capacity);
    ws_.send.offsets.assign(1, 0);
    size_t pos = 0;
    for (int j = 0; j < world; ++j) {
      const ChunkRange c = balanced_chunk(n, world, j);
      if (c.size() > 0) {
        const std::span<const float> in = source.subspan(c.begin, c.size());
        const std::span<std::byte> out = std::span(ws_.send.data).subspan(pos);
        size_t bytes = 0;
        try {
          bytes = codec_.encode(in, chunk_key(key_, ChunkRole::kWorker, j, me), out);
        } catch (const InvalidArgument&) {
          throw_if_nonfinite(source);  // names the index in the bucket, not in the chunk
          throw;
        }
        if (worker_ef_ != nullptr) {
          codec_.residual(in, out.first(bytes), std::span(ws_.memory).subspan(c.begin, c.size()));
        }
        pos += bytes;
      }
      ws_.send.offsets.push_back(pos);
    }
    ws_.send.data.resize(pos);
    if (worker_ef_ != nullptr) worker_ef_->load(ws_.memory);
  }

  Communicator& comm_;
  const Codec& codec_;
  std::span<float> bucket_;
  const RngKey key_;
  ErrorFeedback* worker_ef_;
  ErrorFeedback* owner_ef_;
  const float lr_;
  ExchangeStats& stats_;
  Workspace& ws_;
  const bool majority_;
  bool started_ = false;
};

}  // namespace

Strategy parse_strategy(std::string_view name) {
  for (Strategy s : {Strategy::kAuto, Strategy::kPlain, Strategy::kAllgather,
                     Strategy::kScatterReduce, Strategy::kMajority}) {
    if (strategy_name(s) == name) return s;
  }
  throw InvalidArgument(
      detail::concat("unknown exchange strategy '", name, "'; valid strategies: ", kStrategyNames));
}

std::string_view strategy_name(Strategy strategy) {
  switch (strategy) {
    case Strategy::kAuto:
      return "auto";
    case Strategy::kPlain:
      return "none";
    case Strategy::kAllgather:
      return "allgather";
    case Strategy::kScatterReduce:
      return "scatter-reduce";
    case Strategy::kMajority:
      return "majority";
  }
  return "?";
}

Strategy resolve_strategy(Strategy requested, const Codec& codec, int world) {
  const bool majority = codec.aggregation() == Aggregation::kMajorityVote;
  const bool lossless = codec.id() == CodecId::kNone;
  const std::string spec = codec.spec().str();
  switch (requested) {
    case Strategy::kAuto:
      if (lossless) return Strategy::kPlain;
      if (majority) return Strategy::kMajority;
      return world <= 2 ? Strategy::kAllgather : Strategy::kScatterReduce;
    case Strategy::kPlain:
      QGRAD_CHECK(lossless,
                  "strategy 'none' is the plain fp32 allreduce and needs codec 'none', "
                  "got '",
                  spec, "'; use allgather or scatter-reduce (or auto)");
      return requested;
    case Strategy::kMajority:
      QGRAD_CHECK(majority,
                  "strategy 'majority' needs a majority-vote codec ('sign' without "
                  "scale), got '",
                  spec,
                  "', which aggregates by mean; use allgather "
                  "or scatter-reduce (or auto)");
      return requested;
    case Strategy::kScatterReduce:
      QGRAD_CHECK(!majority, "codec '", spec,
                  "' aggregates by majority vote: its owners must "
                  "vote, not add; use strategy majority or allgather (or auto)");
      return requested;
    case Strategy::kAllgather:
      return requested;
  }
  throw InvalidArgument(detail::concat("unknown strategy value ", static_cast<int>(requested),
                                       "; valid strategies: ", kStrategyNames));
}

RngKey chunk_key(const RngKey& key, ChunkRole role, int chunk, int rank) {
  RngKey k = key;
  const uint64_t tag = (uint64_t{static_cast<uint32_t>(role)} << 32) | static_cast<uint32_t>(chunk);
  k.seed = mix64(key.seed ^ mix64(tag));
  k.rank = static_cast<uint32_t>(rank);
  return k;
}

ChunkRange owned_chunk(size_t bucket_size, int world, int rank) {
  return balanced_chunk(bucket_size, world, rank);
}

ExchangeStats compressed_allreduce(Communicator& comm, const Codec& codec, Strategy strategy,
                                   std::span<float> bucket, const RngKey& key,
                                   ErrorFeedback* worker_ef, ErrorFeedback* owner_ef, float lr) {
  ExchangeStats stats;
  stats.strategy = resolve_strategy(strategy, codec, comm.size());
  stats.dense_bytes = 4 * uint64_t{bucket.size()};
  QGRAD_CHECK(worker_ef == nullptr || worker_ef->size() == bucket.size(),
              "compressed_allreduce: worker error memory has ", worker_ef ? worker_ef->size() : 0,
              " elements, the bucket ", bucket.size());
  if (owner_ef != nullptr && stats.strategy == Strategy::kScatterReduce) {
    const size_t own = owned_chunk(bucket.size(), comm.size(), comm.rank()).size();
    QGRAD_CHECK(owner_ef->size() == own, "compressed_allreduce: owner error memory has ",
                owner_ef->size(), " elements, rank ", comm.rank(), " owns ", own, " of ",
                bucket.size(), " (owned_chunk)");
  }
  if (bucket.empty()) return stats;

  const TrafficCounters before = comm.traffic();
  Exchange exchange(comm, codec, bucket, key, worker_ef, owner_ef, lr, stats);
  try {
    switch (stats.strategy) {
      case Strategy::kPlain:
        exchange.plain();
        break;
      case Strategy::kAllgather:
        exchange.allgather();
        break;
      case Strategy::kScatterReduce:
      case Strategy::kMajority:
        exchange.scatter_reduce();
        break;
      case Strategy::kAuto:
        break;  // resolved above
    }
  } catch (const CommError&) {
    throw;  // the communicator is broken already, and its peers know
  } catch (...) {
    if (exchange.started()) {
      comm.abort(detail::concat("compressed_allreduce failed on rank ", comm.rank(), ": ",
                                describe_exception(std::current_exception())));
    }
    throw;
  }
  stats.bytes_sent = comm.traffic().bytes_sent - before.bytes_sent;
  stats.bytes_received = comm.traffic().bytes_received - before.bytes_received;
  return stats;
}

}  // namespace qgrad
