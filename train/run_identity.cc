#include "train/run_identity.h"

#include <charconv>
#include <cstdio>

#include "core/error.h"

namespace qgrad {
namespace {

using Stored = RunField::Stored;
using O = const TrainOptions&;
using F = const RunFacts&;

std::string list(const std::vector<size_t>& v) {
  std::string out;
  for (const size_t x : v) {
    if (!out.empty()) out.push_back(',');
    out.append(std::to_string(x));
  }
  return out;
}

std::string flag(bool b) { return b ? "1" : "0"; }

// The shortest text that reads back as the same float: equal texts, equal values.
std::string exact(float v) {
  char buf[32];
  const auto end = std::to_chars(buf, buf + sizeof buf, v).ptr;
  return std::string(buf, end);
}

// The learning rate's text as the first checkpoints and the servers hold it (9 decimals).
std::string lr_text(double lr) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.*f", 9, lr);
  return buf;
}

// Checkpoint formats (train/train_checkpoint.h): 1 recorded the fields marked 1 only; 2 records
// every on_resume field.
constexpr int kFirst = 1;
constexpr int kSecond = 2;

// The table. Order: the order in which the servers have always received run_fields() (a server
// keeps it in its checkpoints), with the resume-only fields beside their kin.
//
// Left out on purpose (neither on resume nor across workers):
//   eval_every, log_every, metrics_path, progress, progress_seconds: what is reported and when;
//   checkpoint_dir, checkpoint_every, resume: where and when the state is saved;
//   link: the emulated link changes time, never bits (tests/tools/qgrad_train_test.sh);
//   model_options.threads: how fast LibTorch runs, a setting of the machine resumed on;
//   model_options.init_scale: only the initial parameters, which a checkpoint replaces and
//     the servers adopt from their first worker;
//   model_options.seed/rank, exchange.seed/adversarial: set from seed, the rank, adversarial;
//   exchange.nan_policy: it changes nothing while gradients are finite; on a non-finite one
//     `error` stops the run, so a run resumed with `skip-step` past a failure is the way out of
//     it, not another run.
constexpr RunField kFields[] = {
    {"model", Stored::kText, kFirst, true, true, [](O o, F) { return o.model; }, nullptr},
    // The data spec as given: the data set, its split and its seed.
    {"data", Stored::kText, kFirst, true, true, [](O o, F) { return o.data; }, nullptr},
    // The model's shape: a changed one is also refused by the parameter sizes, less clearly.
    {"hidden", Stored::kText, kSecond, true, true,
     [](O o, F) { return list(o.model_options.hidden); }, nullptr},
    {"channels", Stored::kText, kSecond, true, true,
     [](O o, F) { return list(o.model_options.channels); }, nullptr},
    // ZipML: the data each step trains on.
    {"data_bits", Stored::kText, kSecond, true, true,
     [](O o, F) { return std::to_string(o.model_options.data_bits); }, nullptr},
    {"double_sampling", Stored::kText, kSecond, true, true,
     [](O o, F) { return flag(o.model_options.double_sampling); }, nullptr},
    // The exchange: what is sent, how it is summed, which steps are compressed.
    {"codec", Stored::kText, kFirst, true, true, [](O, F f) { return f.codec; }, nullptr},
    // The parameter-server path takes only `auto` (the servers aggregate): resume only.
    {"strategy", Stored::kText, kFirst, true, false, [](O, F f) { return f.strategy; }, nullptr},
    {"error_feedback", Stored::kInteger, kFirst, true, true,
     [](O o, F) { return flag(o.exchange.error_feedback); },
     [](O o, F) -> int64_t { return o.exchange.error_feedback ? 1 : 0; }},
    // Buckets set the codec's blocks and the error memories' layout.
    {"bucket_bytes", Stored::kText, kSecond, true, true,
     [](O o, F) { return std::to_string(o.exchange.bucket_bytes); }, nullptr},
    {"warmup_steps", Stored::kText, kSecond, true, true,
     [](O o, F) { return std::to_string(o.exchange.warmup_steps); }, nullptr},
    {"min_compress_bytes", Stored::kText, kSecond, true, true,
     [](O o, F) { return std::to_string(o.exchange.min_compress_bytes); }, nullptr},
    // The optimizer and all its options. Across workers the servers compare the options
    // themselves (ps/server.h), so only the name is a run field there.
    {"optimizer", Stored::kText, kFirst, true, true, [](O, F f) { return f.optimizer; }, nullptr},
    {"momentum", Stored::kText, kSecond, true, false,
     [](O o, F) { return exact(o.optimizer.momentum); }, nullptr},
    {"nesterov", Stored::kText, kSecond, true, false,
     [](O o, F) { return flag(o.optimizer.nesterov); }, nullptr},
    {"worker_momentum", Stored::kText, kSecond, true, false,
     [](O o, F) { return flag(o.optimizer.worker_momentum); }, nullptr},
    {"weight_decay", Stored::kText, kSecond, true, false,
     [](O o, F) { return exact(o.optimizer.weight_decay); }, nullptr},
    {"beta1", Stored::kText, kSecond, true, false, [](O o, F) { return exact(o.optimizer.beta1); },
     nullptr},
    {"beta2", Stored::kText, kSecond, true, false, [](O o, F) { return exact(o.optimizer.beta2); },
     nullptr},
    {"eps", Stored::kText, kSecond, true, false, [](O o, F) { return exact(o.optimizer.eps); },
     nullptr},
    {"lr", Stored::kText, kFirst, true, true, [](O o, F) { return lr_text(o.lr); }, nullptr},
    {"lr_schedule", Stored::kText, kFirst, true, true, [](O o, F) { return to_string(o.schedule); },
     nullptr},
    // The world size sets the shards, the batches and the sums: another world is another run.
    {"world", Stored::kInteger, kFirst, true, true, [](O, F f) { return std::to_string(f.world); },
     [](O, F f) -> int64_t { return f.world; }},
    // Each rank's file holds its own error memories and worker momentum.
    {"rank", Stored::kInteger, kFirst, true, false, [](O, F f) { return std::to_string(f.rank); },
     [](O, F f) -> int64_t { return f.rank; }},
    {"batch", Stored::kInteger, kFirst, true, true, [](O o, F) { return std::to_string(o.batch); },
     [](O o, F) { return static_cast<int64_t>(o.batch); }},
    // Not on resume: extending a run (more epochs, a later or no --max-steps) is what resuming
    // is for. With a schedule over the whole run (cosine, or --max-steps's unchanged span) a
    // changed --epochs reshapes the rates of the steps still to come, as asked.
    {"epochs", Stored::kText, kFirst, false, true, [](O o, F) { return std::to_string(o.epochs); },
     nullptr},
    {"max_steps", Stored::kText, kFirst, false, true,
     [](O o, F) { return std::to_string(o.max_steps); }, nullptr},
    // Initialization, batches and codec randomness.
    {"seed", Stored::kInteger, kFirst, true, true, [](O o, F) { return std::to_string(o.seed); },
     [](O o, F) { return static_cast<int64_t>(o.seed); }},
    {"adversarial", Stored::kInteger, kFirst, true, true,
     [](O o, F) { return std::to_string(o.adversarial); },
     [](O o, F) -> int64_t { return o.adversarial; }},
};

std::string key(const RunField& f) { return std::string("run/") + f.name; }

void check_field(const Checkpoint& ck, int format, const std::string& path, const RunField& f,
                 const TrainOptions& o, const RunFacts& facts) {
  if (!f.on_resume || f.since > format) return;
  std::string theirs, ours;
  if (f.stored == Stored::kInteger) {
    const int64_t t = ck.integer(key(f)), u = f.integer(o, facts);
    if (t == u) return;
    theirs = std::to_string(t);
    ours = std::to_string(u);
  } else {
    theirs = ck.text(key(f));
    ours = f.text(o, facts);
    if (theirs == ours) return;
  }
  throw InvalidArgument(
      detail::concat("checkpoint ", path, " belongs to another run: it was written with ", f.name,
                     " = '", theirs, "', this run has '", ours,
                     "' (resume with the flags of that run, or use another --checkpoint-dir)"));
}

}  // namespace

std::span<const RunField> run_identity_fields() { return kFields; }

RunFacts resume_facts(int world, int rank, const GradientExchange& exchange) {
  RunFacts f;
  f.world = world;
  f.rank = rank;
  f.codec = exchange.codec().spec().str();
  f.strategy = exchange.route();
  f.optimizer = std::string(exchange.optimizer().name());
  return f;
}

std::vector<std::pair<std::string, std::string>> run_fields(const TrainOptions& o, int world) {
  RunFacts facts;
  facts.world = world;
  facts.codec = o.exchange.codec;
  facts.optimizer = o.optimizer.name;
  std::vector<std::pair<std::string, std::string>> out;
  for (const RunField& f : kFields) {
    if (f.across_workers) out.emplace_back(f.name, f.text(o, facts));
  }
  return out;
}

void write_run_identity(Checkpoint& ck, const TrainOptions& o, const RunFacts& facts) {
  for (const RunField& f : kFields) {
    if (!f.on_resume) continue;
    if (f.stored == Stored::kInteger) {
      ck.set_integer(key(f), f.integer(o, facts));
    } else {
      ck.set_text(key(f), f.text(o, facts));
    }
  }
}

void check_run_identity(const Checkpoint& ck, int format, const std::string& path,
                        const TrainOptions& o, const RunFacts& facts) {
  // The integers (world, rank, batch, seed, ...) first: a changed world size also changes the
  // resolved strategy, and the message should name the cause.
  for (const Stored pass : {Stored::kInteger, Stored::kText}) {
    for (const RunField& f : kFields) {
      if (f.stored == pass) check_field(ck, format, path, f, o, facts);
    }
  }
}

}  // namespace qgrad
