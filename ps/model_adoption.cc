#include "ps/model_adoption.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <span>

#include "core/crc32c.h"
#include "core/error.h"

namespace qgrad::ps {

uint32_t crc_of(const std::vector<std::vector<float>>& tensors) {
  uint32_t crc = 0;
  for (const auto& t : tensors) crc = crc32c(std::as_bytes(std::span<const float>(t)), crc);
  return crc;
}

void adopt_model(ServerModel& model, std::vector<ParamShape> shape,
                 std::vector<std::vector<float>> initial, const OptimizerOptions& optimizer,
                 std::string source) {
  std::unique_ptr<Optimizer> made = make_optimizer(optimizer);  // checks the options
  made->init(shape);                                            // checks that names are unique
  model.optimizer = std::move(made);
  model.optimizer_options = optimizer;
  model.shape = std::move(shape);
  model.initial_crc = crc_of(initial);
  model.params = std::move(initial);
  model.source = std::move(source);
  model.present = true;
}

CallStatus adopt_registration(const Registration& reg, ServerModel& model) {
  const uint32_t id = reg.worker;
  const std::vector<ParamShape>& shape = reg.shape;
  if (shape.empty() || reg.initial.empty() || !reg.optimizer) {
    return precondition(
        detail::concat("the server has no model yet: worker ", id,
                       "'s registration must carry the shape of its keys, their initial "
                       "values and the optimizer (it carries ",
                       shape.size(), " keys, ", reg.initial.size(), " initial tensors",
                       reg.optimizer ? "" : ", no optimizer", ")"));
  }
  if (reg.initial.size() != shape.size()) {
    return invalid(detail::concat("worker ", id, " sends ", reg.initial.size(),
                                  " initial tensors for ", shape.size(), " keys"));
  }
  std::vector<std::vector<float>> initial(shape.size());
  for (size_t k = 0; k < shape.size(); ++k) {
    const std::string_view bytes = reg.initial[k];
    if (bytes.size() != shape[k].size * sizeof(float)) {
      return invalid(detail::concat("key ", k, " ('", shape[k].name, "'): the initial value has ",
                                    bytes.size(), " bytes, the shape needs ",
                                    shape[k].size * sizeof(float)));
    }
    initial[k].resize(shape[k].size);
    std::memcpy(initial[k].data(), bytes.data(), bytes.size());
    for (size_t j = 0; j < initial[k].size(); ++j) {
      if (!std::isfinite(initial[k][j])) {
        return invalid(detail::concat("key ", k, " ('", shape[k].name, "'): initial element ", j,
                                      " is ", initial[k][j]));
      }
    }
  }
  try {
    adopt_model(model, shape, std::move(initial), *reg.optimizer, detail::concat("worker ", id));
  } catch (const Error& e) {
    return invalid(detail::concat("worker ", id, "'s model or optimizer: ", e.what()));
  }
  return call_ok();
}

CallStatus compare_registration(const Registration& reg, const ServerModel& model,
                                const AdoptedRun& run) {
  const uint32_t id = reg.worker;
  const auto refuse = [&](const std::string& what, const std::string& source) {
    return precondition(detail::concat("worker ", id, " does not match this server's run: ", what,
                                       " (adopted from ", source, ")"));
  };
  if (run.adopted) {
    for (const auto& [key, value] : run.fields) {
      const auto it = std::find_if(reg.run.begin(), reg.run.end(),
                                   [&](const auto& f) { return f.first == key; });
      if (it == reg.run.end()) {
        return refuse(detail::concat("run.", key, ": worker ", id, " does not send it"),
                      run.source);
      }
      if (it->second != value) {
        return refuse(detail::concat("run.", key, ": worker ", id, " has '", it->second,
                                     "', the server's run has '", value, "'"),
                      run.source);
      }
    }
    for (const auto& [key, value] : reg.run) {
      const bool known = std::any_of(run.fields.begin(), run.fields.end(),
                                     [&](const auto& kv) { return kv.first == key; });
      if (!known) {
        return refuse(detail::concat("run.", key, ": worker ", id, " has '", value,
                                     "', the server's run has no such field"),
                      run.source);
      }
    }
  }
  const std::vector<ParamShape>& shape = reg.shape;
  if (shape.size() != model.shape.size()) {
    return refuse(detail::concat("worker ", id, " has ", shape.size(),
                                 " keys for this server, the server holds ", model.shape.size()),
                  model.source);
  }
  for (size_t k = 0; k < model.shape.size(); ++k) {
    if (shape[k].name != model.shape[k].name || shape[k].size != model.shape[k].size) {
      return refuse(detail::concat("key ", k, ": worker ", id, " has '", shape[k].name, "' (",
                                   shape[k].size, " elements), the server holds '",
                                   model.shape[k].name, "' (", model.shape[k].size, " elements)"),
                    model.source);
    }
  }
  if (reg.optimizer) {
    const std::string diff = optimizer_difference(*reg.optimizer, model.optimizer_options, id);
    if (!diff.empty()) return refuse(diff, model.source);
  }
  if (!reg.initial.empty()) {
    // The checksum of the whole floats of each tensor sent, as crc_of the adopted values.
    uint32_t crc = 0;
    for (size_t k = 0; k < reg.initial.size() && k < model.shape.size(); ++k) {
      const std::string_view bytes = reg.initial[k];
      const size_t whole = bytes.size() / sizeof(float) * sizeof(float);
      crc = crc32c(std::as_bytes(std::span<const char>(bytes.data(), whole)), crc);
    }
    if (reg.initial.size() != model.shape.size() || crc != model.initial_crc) {
      return refuse(detail::concat("initial values: worker ", id,
                                   "'s differ from the adopted ones (another --seed or "
                                   "model initialisation?)"),
                    model.source);
    }
  }
  return call_ok();
}

void adopt_run(const Registration& reg, AdoptedRun& run) {
  if (run.adopted) return;
  run.fields = reg.run;
  run.adopted = true;
  run.source = detail::concat("worker ", reg.worker);
}

std::string optimizer_difference(const OptimizerOptions& theirs, const OptimizerOptions& ours,
                                 uint32_t worker) {
  const auto differ = [&](const char* field, const auto& a, const auto& b) {
    return detail::concat("optimizer.", field, ": worker ", worker, " sends ", a,
                          ", the server runs ", b);
  };
  if (theirs.name != ours.name) {
    return differ("name", "'" + theirs.name + "'", "'" + ours.name + "'");
  }
  if (theirs.momentum != ours.momentum) return differ("momentum", theirs.momentum, ours.momentum);
  if (theirs.nesterov != ours.nesterov) return differ("nesterov", theirs.nesterov, ours.nesterov);
  if (theirs.worker_momentum != ours.worker_momentum) {
    return differ("worker_momentum", theirs.worker_momentum, ours.worker_momentum);
  }
  if (theirs.weight_decay != ours.weight_decay) {
    return differ("weight_decay", theirs.weight_decay, ours.weight_decay);
  }
  if (theirs.beta1 != ours.beta1) return differ("beta1", theirs.beta1, ours.beta1);
  if (theirs.beta2 != ours.beta2) return differ("beta2", theirs.beta2, ours.beta2);
  if (theirs.eps != ours.eps) return differ("eps", theirs.eps, ours.eps);
  return "";
}

}  // namespace qgrad::ps
