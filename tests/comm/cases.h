// Test bodies shared by the local suite (ranks as threads, run_ranks) and the MPI suite (one rank
// per process under mpiexec). Each body is what ONE rank does with its Communicator; bodies check
// with EXPECT_* only (an ASSERT would leave the peers waiting in a collective).
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <span>
#include <string>

#include "comm/communicator.h"
#include "comm/strategies/compressed_allreduce.h"
#include "core/codec.h"

namespace qgrad::cases {

// True when every rank passed the same bytes (an allgatherv of them).
bool same_on_all_ranks(Communicator& comm, std::span<const std::byte> bytes);
bool same_on_all_ranks(Communicator& comm, std::span<const float> values);

// Each collective with its data, its byte counters and bitwise agreement between ranks.
void allreduce_sum(Communicator& comm, size_t n);
void allgatherv(Communicator& comm, size_t base);
void alltoallv(Communicator& comm, size_t base);
void broadcast(Communicator& comm, size_t n);
void barrier(Communicator& comm);

// Failures; the failing rank is the last one. throwing_rank: it throws std::runtime_error
// ("injected failure ..."); the others must get CommError naming it well before `timeout`.
// silent_rank: it never joins; the others must get TimeoutError within 2x `timeout`.
void throwing_rank(Communicator& comm, std::chrono::milliseconds timeout);
void silent_rank(Communicator& comm, std::chrono::milliseconds timeout);

// A codec by spec, plus "test-sign": a minimal majority-vote sign codec written here (one bit
// per element, decodes to +-1), independent of core/codecs/sign.cc.
std::unique_ptr<Codec> make_test_codec(const std::string& spec);
// Null (and the reason in `why`) when the codec is still a placeholder in this build.
std::unique_ptr<Codec> make_codec_or_null(const std::string& spec, std::string* why);

struct AllreduceCase {
  std::string codec;
  Strategy strategy = Strategy::kAuto;
  size_t n = 0;
  bool error_feedback = false;
  int steps = 1;
};
std::string case_name(const AllreduceCase& c, int world);

// compressed_allreduce against a serial reference recomputed on every rank from the documented
// contract (chunking, chunk_key, rank-order decoding): bitwise equal result, error memories and
// exact byte counters; bitwise equal on every rank.
void compressed_allreduce(Communicator& comm, const AllreduceCase& c);

}  // namespace qgrad::cases
