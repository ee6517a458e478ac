// Compressed allreduce: how the ranks combine one encoded gradient bucket (docs/architecture.md;
// the strategies' papers: docs/algorithms.md). Written once against Communicator, so it runs on
// every backend.
//
// On return `bucket` holds, bitwise identically on every rank,
//   - for codecs that aggregate by mean: the SUM over ranks of the decoded contributions
//     (the caller divides by the world size if it wants the mean);
//   - for majority-vote codecs (`sign` without scale): sign(sum of the ranks' signs) in {-1, +1},
//     a tie counting as +1 (signSGD with majority vote, Bernstein et al. 2019; the rule is
//     core/aggregation.h's vote).
// A rank's contribution is its bucket, or with `worker_ef` the error-feedback sum
// p = lr * g + e (EF-SGD, Karimireddy et al. 2019), whose memory is updated to p - D(C(p)).
// Decoding always adds the payloads in rank order into zeros, which is what makes every rank
// (and a serial recomputation from the same payloads) agree to the bit.
//
// Strategies, with the payload bytes each rank sends (C = encoded size of a whole bucket, n =
// world size, S = 4 * bucket size):
//   kPlain         the fp32 baseline: Communicator::allreduce_sum (codec `none` only).
//                  ~2(n-1)/n * S.
//   kAllgather     every rank encodes its whole bucket; payloads are allgathered; every rank
//                  decodes all n in rank order. Any codec (majority codecs vote locally).
//                  (n-1) * C, and receives the n-1 other payloads.
//   kScatterReduce the bucket is cut in n balanced chunks (balanced_chunk: contiguous, sizes
//                  differ by at most one, empty when the bucket is smaller than n). Chunk j is
//                  encoded and sent to its owner, rank j (alltoallv); the owner decodes the n
//                  payloads in rank order, sums, re-encodes the sum (through `owner_ef` if given)
//                  and the re-encoded chunks are allgathered. EVERY rank, the owner included,
//                  decodes every re-encoded chunk, so all ranks hold the same bits (CGX's SRA,
//                  Markov et al. 2022). Sends sum_{j != me} C(chunk j) + (n-1) * C(own sum),
//                  about 2(n-1)/n * C. Empty chunks are neither encoded nor sent.
//   kMajority      scatter-reduce for majority-vote codecs: owners count the signs and re-encode
//                  the vote; one bit per coordinate each way (plus headers).
//   kAuto          codec `none` -> kPlain; majority-vote codecs -> kMajority; others ->
//                  kScatterReduce, except on one or two ranks, where kAllgather sends no more
//                  bytes and quantizes once instead of twice.
//
// Randomness: rank r encodes its whole bucket (kAllgather) with `key` whose rank field is set to
// r (so ranks draw independent streams whatever the caller put there); the chunked strategies
// give each chunk its own stream, chunk_key() below. The result is a pure function of the ranks'
// inputs, `key`, and the error memories.
//
// Failures: a bad codec/strategy pair or buffer size throws InvalidArgument before any
// communication, as does a NaN/Inf in this rank's contribution (the caller may then recover, e.g.
// skip the step on every rank). A failure after the first collective started (a re-encoded sum
// that overflowed, a corrupt payload) aborts the communicator before it is rethrown, so the peers
// get CommError instead of waiting. Bucket size 0 is a no-op without communication.
// Thread-safety: one call at a time per Communicator; the codec may be shared.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "comm/communicator.h"
#include "core/codec.h"
#include "core/error_feedback.h"
#include "core/philox.h"

namespace qgrad {

enum class Strategy { kAuto, kPlain, kAllgather, kScatterReduce, kMajority };

// "auto", "none" (kPlain), "allgather", "scatter-reduce", "majority". Throws InvalidArgument
// listing the valid names.
Strategy parse_strategy(std::string_view name);
std::string_view strategy_name(Strategy strategy);
// The strategy that compressed_allreduce will run: kAuto resolved for this codec and world size.
// Throws InvalidArgument for a pair that cannot work (kPlain with a codec other than `none`,
// kMajority with a mean codec, kScatterReduce with a majority-vote codec).
Strategy resolve_strategy(Strategy requested, const Codec& codec, int world);

struct ExchangeStats {
  Strategy strategy = Strategy::kAuto;  // the one that ran (kAuto resolved)
  uint64_t bytes_sent = 0;              // deltas of comm.traffic() over the call
  uint64_t bytes_received = 0;
  uint64_t dense_bytes = 0;  // 4 * bucket.size(): what one fp32 copy of the bucket weighs
  double encode_s = 0;       // the worker's encoding, plus the owner's re-encoding
  double exchange_s = 0;     // time inside collectives (waiting for peers included)
  double decode_s = 0;       // decoding, summing, voting
};

// The random stream of chunk `chunk` in the chunked strategies. role kWorker: the contribution
// that rank `rank` sends to the chunk's owner; kOwner: the owner's re-encoding of the sum.
// Derived as {seed' = mix64(seed ^ mix64(role << 32 | chunk)), step, rank, tensor, bucket}: the
// caller's tensor and bucket fields stay free for it to number its buckets, and the 64-bit
// mixed seed separates the (role, chunk) streams of one bucket from each other.
enum class ChunkRole : uint32_t { kWorker = 1, kOwner = 2 };
RngKey chunk_key(const RngKey& key, ChunkRole role, int chunk, int rank);

// The chunk of a bucket of `bucket_size` elements that rank `rank` owns in kScatterReduce and
// kMajority; an owner_ef must have exactly this many elements.
ChunkRange owned_chunk(size_t bucket_size, int world, int rank);

// See the top of this file. worker_ef (bucket.size() elements) and owner_ef
// (owned_chunk(...).size() elements) may be null; lr scales the gradient inside worker_ef only
// (without error feedback the bucket is encoded as it is). owner_ef is used by kScatterReduce
// only: the other strategies do not re-encode, and kMajority's vote is re-encoded exactly.
ExchangeStats compressed_allreduce(Communicator& comm, const Codec& codec, Strategy strategy,
                                   std::span<float> bucket, const RngKey& key,
                                   ErrorFeedback* worker_ef, ErrorFeedback* owner_ef,
                                   float lr = 1.0f);

}  // namespace qgrad
