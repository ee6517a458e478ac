#include "ps/server_checkpoint.h"

#include <cstdlib>
#include <filesystem>
#include <system_error>
#include <utility>

#include "core/error.h"

namespace qgrad::ps {

namespace {

constexpr int64_t kFormat = 1;
const std::string kScalarPrefix = "ps/scalar/";
const std::string kStatePrefix = "ps/state/";

// An optimizer scalar: an exact real, or the hex-float text of earlier servers.
double read_scalar(const Checkpoint& c, const std::string& name) {
  try {
    return c.real(name);
  } catch (const InvalidArgument&) {
    return std::strtod(c.text(name).c_str(), nullptr);
  }
}

}  // namespace

std::string prepare_checkpoint_dir(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  QGRAD_CHECK(!ec, "ParameterServer: cannot create the checkpoint directory '", dir,
              "': ", ec.message());
  return (std::filesystem::path(dir) / "ps-server.qgck").string();
}

Checkpoint server_checkpoint(uint64_t applied, uint32_t workers, const ServerModel& model,
                             const Downlink& downlink, const AdoptedRun& run) {
  Checkpoint c;
  c.set_integer("ps/format", kFormat);
  c.set_integer("ps/applied_steps", static_cast<int64_t>(applied));
  c.set_integer("ps/workers", workers);
  c.set_integer("ps/keys", static_cast<int64_t>(model.shape.size()));
  c.set_integer("ps/initial_crc", model.initial_crc);
  for (size_t k = 0; k < model.shape.size(); ++k) {
    c.set_text(detail::concat("ps/key/", k, "/name"), model.shape[k].name);
    c.set_buffer(detail::concat("ps/key/", k, "/values"), model.params[k]);
    c.set_buffer(detail::concat("ps/key/", k, "/replica"), downlink.replica()[k]);
  }
  const OptimizerOptions& o = model.optimizer_options;
  c.set_text("ps/optimizer/name", o.name);
  c.set_integer("ps/optimizer/nesterov", o.nesterov);
  c.set_integer("ps/optimizer/worker_momentum", o.worker_momentum);
  const float floats[] = {o.momentum, o.weight_decay, o.beta1, o.beta2, o.eps};
  c.set_buffer("ps/optimizer/floats", floats);
  const StateDict state = model.optimizer->export_state();
  for (const auto& [name, values] : state.buffers) c.set_buffer(kStatePrefix + name, values);
  for (const auto& [name, value] : state.scalars) c.set_real(kScalarPrefix + name, value);
  c.set_integer("ps/run/fields", run.adopted ? static_cast<int64_t>(run.fields.size()) : -1);
  for (size_t i = 0; i < run.fields.size(); ++i) {
    c.set_text(detail::concat("ps/run/", i, "/key"), run.fields[i].first);
    c.set_text(detail::concat("ps/run/", i, "/value"), run.fields[i].second);
  }
  return c;
}

ServerCheckpointState read_server_checkpoint(const Checkpoint& c, uint32_t workers) {
  ServerCheckpointState s;
  QGRAD_CHECK(c.integer("ps/format") == kFormat, "unknown format ", c.integer("ps/format"));
  QGRAD_CHECK(c.integer("ps/workers") == workers, "it was written by a server with ",
              c.integer("ps/workers"), " workers, this one runs with ", workers);
  const int64_t keys = c.integer("ps/keys");
  QGRAD_CHECK(keys >= 1, "it holds ", keys, " keys");
  for (int64_t k = 0; k < keys; ++k) {
    s.values.push_back(c.buffer(detail::concat("ps/key/", k, "/values")));
    s.shape.push_back({c.text(detail::concat("ps/key/", k, "/name")), s.values.back().size()});
  }
  OptimizerOptions& o = s.optimizer;
  o.name = c.text("ps/optimizer/name");
  o.nesterov = c.integer("ps/optimizer/nesterov") != 0;
  o.worker_momentum = c.integer("ps/optimizer/worker_momentum") != 0;
  const std::vector<float>& f = c.buffer("ps/optimizer/floats");
  QGRAD_CHECK(f.size() == 5, "ps/optimizer/floats holds ", f.size(), " values, not 5");
  o.momentum = f[0];
  o.weight_decay = f[1];
  o.beta1 = f[2];
  o.beta2 = f[3];
  o.eps = f[4];
  for (const std::string& name : c.names()) {
    if (name.rfind(kStatePrefix, 0) == 0) {
      s.state.buffers[name.substr(kStatePrefix.size())] = c.buffer(name);
    }
    if (name.rfind(kScalarPrefix, 0) == 0) {
      s.state.scalars[name.substr(kScalarPrefix.size())] = read_scalar(c, name);
    }
  }
  s.initial_crc = static_cast<uint32_t>(c.integer("ps/initial_crc"));
  for (int64_t k = 0; k < keys; ++k) {
    s.replica.push_back(c.buffer(detail::concat("ps/key/", k, "/replica")));
    const size_t size = s.values[static_cast<size_t>(k)].size();
    QGRAD_CHECK(s.replica.back().size() == size, "key ", k, ": the workers' model has ",
                s.replica.back().size(), " elements, not ", size);
  }
  const int64_t fields = c.integer("ps/run/fields");
  s.run.adopted = fields >= 0;
  for (int64_t i = 0; i < fields; ++i) {
    s.run.fields.emplace_back(c.text(detail::concat("ps/run/", i, "/key")),
                              c.text(detail::concat("ps/run/", i, "/value")));
  }
  s.applied = static_cast<uint64_t>(c.integer("ps/applied_steps"));
  return s;
}

uint64_t resume_server(const std::string& path, uint32_t workers, ServerModel& model,
                       Downlink& downlink, AdoptedRun& run) {
  try {
    ServerCheckpointState s = read_server_checkpoint(Checkpoint::load(path), workers);
    adopt_model(model, std::move(s.shape), std::move(s.values), s.optimizer,
                "the checkpoint " + path);
    downlink.restore(std::move(s.replica));  // workers reconnecting pull it as fp32
    model.optimizer->import_state(s.state);
    // adopt_model took the CRC of the current values; workers send the initial ones.
    model.initial_crc = s.initial_crc;
    run = std::move(s.run);
    run.source = "the checkpoint " + path;
    return s.applied;
  } catch (const Error& e) {
    throw InvalidArgument(detail::concat("ParameterServer: cannot resume from the checkpoint '",
                                         path, "': ", e.what(),
                                         " (move it away to start a new run)"));
  }
}

bool save_server_checkpoint(const std::string& path, uint64_t applied, uint32_t workers,
                            const ServerModel& model, const Downlink& downlink,
                            const AdoptedRun& run, const ServerLog& log) {
  try {
    server_checkpoint(applied, workers, model, downlink, run).save(path);
    return true;
  } catch (const Error& e) {
    // Training goes on; the last good checkpoint stays in place (the write is atomic).
    if (log) log(detail::concat("checkpoint at step ", applied, " failed: ", e.what()));
    return false;
  }
}

}  // namespace qgrad::ps
