// The Codec interface: how a gradient becomes bytes on the wire and back (docs/architecture.md,
// "Codec").
//
// A codec is a pure function of (input, RngKey): `encode` is const, keeps no state between calls
// and gives the same bytes for the same input and key whatever the thread count. One instance
// serves every bucket and thread at once. Stateful parts (error feedback, the majority vote) wrap
// codec calls from outside.
//
// Every payload starts with the header of core/wire.h. `decode_add` checks the header (magic,
// version, checksums, codec id and parameters, element count, body length) before it reads the
// body, and bounds-checks variable-length bodies as it parses: bad bytes are a CorruptPayload
// error, never an out-of-bounds read. NaN or Inf in the input of `encode` is InvalidArgument.
#pragma once

#include <cstddef>
#include <optional>
#include <span>
#include <vector>

#include "core/codec_spec.h"
#include "core/philox.h"
#include "core/wire.h"

namespace qgrad {

enum class Aggregation {
  kMean,          // sum the decoded payloads (and divide by the world size)
  kMajorityVote,  // sign(sum of signs), a tie counting as +1 (signSGD with majority vote)
};

class Codec {
 public:
  Codec(CodecId id, CodecSpec spec, WireParams params)
      : id_(id), spec_(std::move(spec)), params_(params) {}
  virtual ~Codec() = default;
  Codec(const Codec&) = delete;
  Codec& operator=(const Codec&) = delete;

  CodecId id() const { return id_; }
  // The canonical spec: every parameter spelled out.
  const CodecSpec& spec() const { return spec_; }
  // E[decode(encode(v))] == v.
  virtual bool unbiased() const = 0;
  virtual Aggregation aggregation() const { return Aggregation::kMean; }

  // Upper bound of the payload size for n elements, header included.
  size_t max_encoded_bytes(size_t n) const { return kHeaderBytes + max_body_bytes(n); }

  // Writes header + body to out (out.size() >= max_encoded_bytes(in.size())); returns the size.
  // Throws InvalidArgument on NaN or Inf in `in`, naming the first such index.
  size_t encode(std::span<const float> in, const RngKey& key, std::span<std::byte> out) const;
  // Convenience: a vector sized to the payload.
  std::vector<std::byte> encode(std::span<const float> in, const RngKey& key) const;

  // out += weight * decode(payload). out.size() must equal the payload's element count.
  void decode_add(std::span<const std::byte> payload, std::span<float> out, float weight) const;

  // residual = in - decode(payload): what error feedback keeps. Codecs may override with a fused
  // loop; the result must equal this default's.
  virtual void residual(std::span<const float> in, std::span<const std::byte> payload,
                        std::span<float> residual) const;

 protected:
  virtual size_t max_body_bytes(size_t n) const = 0;
  // The body's exact size for n elements, for codecs whose size depends only on n. Checked
  // before decode_body; variable-length codecs return nullopt and check while parsing.
  virtual std::optional<size_t> exact_body_bytes(size_t n) const = 0;
  // Writes the body (body.size() >= max_body_bytes(in.size())); returns its size.
  virtual size_t encode_body(std::span<const float> in, const RngKey& key,
                             std::span<std::byte> body) const = 0;
  // out += weight * decode(body); out.size() is the header's element count.
  virtual void decode_body(std::span<const std::byte> body, std::span<float> out,
                           float weight) const = 0;

 private:
  CodecId id_;
  CodecSpec spec_;
  WireParams params_;
};

// Throws InvalidArgument naming the first non-finite element of `in` (offset added to the index),
// if there is one. Codecs call it when their fused check has seen a NaN or Inf.
void throw_if_nonfinite(std::span<const float> in, size_t offset = 0);

}  // namespace qgrad
