#include "train/train_checkpoint.h"

#include <bit>
#include <cstring>
#include <vector>

#include "core/error.h"

namespace qgrad {
namespace {

constexpr const char* kModelPrefix = "model/";
constexpr const char* kStatePrefix = "state/";
constexpr const char* kScalarPrefix = "scalar/";
constexpr const char* kFormatKey = "progress/format";

uint64_t counter(const Checkpoint& ck, const std::string& name) {
  return static_cast<uint64_t>(ck.integer(name));
}

// A double as format 1 stored it: its bits as an integer.
double from_bits(int64_t bits) { return std::bit_cast<double>(bits); }

}  // namespace

Checkpoint make_train_checkpoint(const TrainOptions& options, const RunFacts& facts,
                                 const Progress& p, Model& model,
                                 const GradientExchange& exchange) {
  Checkpoint ck;
  write_run_identity(ck, options, facts);
  ck.set_integer(kFormatKey, kTrainCheckpointFormat);
  ck.set_integer("progress/step", static_cast<int64_t>(p.step));
  ck.set_integer("progress/skipped", static_cast<int64_t>(p.skipped));
  ck.set_integer("progress/bytes_sent", static_cast<int64_t>(p.bytes_sent));
  ck.set_integer("progress/bytes_received", static_cast<int64_t>(p.bytes_received));
  ck.set_integer("progress/dense_bytes", static_cast<int64_t>(p.dense_bytes));
  ck.set_integer("progress/raw_bytes", static_cast<int64_t>(p.raw_bytes));
  ck.set_real("progress/elapsed", p.elapsed);
  ck.set_integer("progress/data_step", static_cast<int64_t>(model.data_step()));
  for (const ParamView& v : model.params()) ck.set_buffer(kModelPrefix + v.name, v.value);
  const StateDict state = exchange.export_state();
  for (const auto& [k, v] : state.buffers) ck.set_buffer(kStatePrefix + k, v);
  for (const auto& [k, v] : state.scalars) ck.set_real(kScalarPrefix + k, v);
  return ck;
}

Progress restore_train_checkpoint(const Checkpoint& ck, const std::string& path,
                                  const TrainOptions& options, const RunFacts& facts, Model& model,
                                  GradientExchange& exchange) {
  const int64_t format = ck.has(kFormatKey) ? ck.integer(kFormatKey) : 1;
  QGRAD_CHECK(format >= 1 && format <= kTrainCheckpointFormat, "checkpoint ", path, " has format ",
              format, "; this qgrad reads formats 1 to ", kTrainCheckpointFormat,
              " (written by a newer qgrad?)");
  check_run_identity(ck, static_cast<int>(format), path, options, facts);
  const bool v1 = format == 1;

  std::vector<ParamView> params = model.params();
  size_t model_entries = 0;
  StateDict state;
  for (const std::string& name : ck.names()) {
    if (name.rfind(kModelPrefix, 0) == 0) {
      ++model_entries;
    } else if (name.rfind(kStatePrefix, 0) == 0) {
      state.buffers[name.substr(std::strlen(kStatePrefix))] = ck.buffer(name);
    } else if (name.rfind(kScalarPrefix, 0) == 0) {
      state.scalars[name.substr(std::strlen(kScalarPrefix))] =
          v1 ? from_bits(ck.integer(name)) : ck.real(name);
    }
  }
  QGRAD_CHECK(model_entries == params.size(), "checkpoint ", path, " holds ", model_entries,
              " model parameters, the ", model.name(), " model has ", params.size());
  for (const ParamView& v : params) {
    const std::string key = kModelPrefix + v.name;
    QGRAD_CHECK(ck.has(key), "checkpoint ", path, " has no parameter '", v.name, "'");
    const size_t size = ck.buffer(key).size();
    QGRAD_CHECK(size == v.value.size(), "checkpoint ", path, ": parameter '", v.name, "' has ",
                size, " values, the model's has ", v.value.size());
  }
  Progress p;
  p.step = counter(ck, "progress/step");
  p.skipped = counter(ck, "progress/skipped");
  p.bytes_sent = counter(ck, "progress/bytes_sent");
  p.bytes_received = counter(ck, "progress/bytes_received");
  if (v1) {
    p.dense_bytes = counter(ck, "progress/raw_bytes");
    p.raw_bytes = counter(ck, "progress/fp32_bytes_sent");
    p.elapsed = from_bits(ck.integer("progress/elapsed_bits"));
  } else {
    p.dense_bytes = counter(ck, "progress/dense_bytes");
    p.raw_bytes = counter(ck, "progress/raw_bytes");
    p.elapsed = ck.real("progress/elapsed");
  }
  const uint64_t data_step = counter(ck, "progress/data_step");
  try {
    exchange.import_state(state);  // checks every name and size first
  } catch (const Error& e) {
    throw InvalidArgument(detail::concat("checkpoint ", path, ": ", e.what()));
  }
  for (const ParamView& v : params) ck.copy_buffer(kModelPrefix + v.name, v.value);
  model.set_data_step(data_step);
  return p;
}

}  // namespace qgrad
