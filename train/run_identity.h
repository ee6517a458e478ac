// A run's identity: the one table of the options that make two runs the same run. Each field has
// a name, how its value is read from TrainOptions (and the world size, the rank, the built
// exchange), and two flags:
//   on_resume        a checkpoint must hold the same value for --resume to continue from it
//                    (train/train_checkpoint.h records every such field as "run/<name>")
//   across_workers   parameter servers compare it at registration (run_fields(), ps/server.h)
//                    and refuse a worker that differs, naming the field
// The rule for a field: it is checked on resume when it changes what a run computes (the
// parameters, the losses, the byte counts) and a resumed run could not continue the same run
// with another value. Options that only change what is reported or when (log_every,
// eval_every, metrics and checkpoint paths, progress), how fast (threads, link) and how long
// (epochs, max_steps: extending a run is legitimate) are not. train/run_identity.cc says why for
// every field, including the ones left out.
// Checkpoints written before a field was recorded: each field names the first training
// checkpoint format that records it (`since`); an older checkpoint is checked on the fields it
// holds only, so that it still resumes with the flags it was written with (a field it lacks
// cannot be told apart from a changed one).
// Thread-safety: the table is immutable; the functions are pure.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "core/checkpoint.h"
#include "optim/gradient_exchange.h"
#include "train/train_options.h"

namespace qgrad {

// What a field's value is read from beside TrainOptions. The collective path reads codec,
// strategy and optimizer from the built exchange (resume_facts(): the codec's canonical spec,
// the resolved strategy), so that a checkpoint resumes whichever way the same codec was spelled;
// run_fields() reads them from the options as given, the form the servers hold.
struct RunFacts {
  int world = 1;
  int rank = 0;
  std::string codec;      // codec spec
  std::string strategy;   // "ring", "scatter-reduce", ... (resume only)
  std::string optimizer;  // optimizer name
};

struct RunField {
  enum class Stored { kText, kInteger };  // how a checkpoint holds "run/<name>"
  const char* name;
  Stored stored;
  int since;  // the first training-checkpoint format that records it (train/train_checkpoint.h)
  bool on_resume;
  bool across_workers;
  std::string (*text)(const TrainOptions&, const RunFacts&);  // every field
  int64_t (*integer)(const TrainOptions&, const RunFacts&);   // Stored::kInteger only
};

// Every field, in a fixed order (the order of run_fields(), which servers keep in checkpoints).
std::span<const RunField> run_identity_fields();

// The facts of this rank's run on the collective path (see RunFacts).
RunFacts resume_facts(int world, int rank, const GradientExchange& exchange);

// The fields on which every worker of one run must agree (model, data, codec, optimizer, lr and
// schedule, world, batch, epochs, seed, ...), as text: parameter servers compare them at
// registration and name the first that differs. The optimizer's options are not among them:
// the servers compare those themselves ("optimizer.momentum", ps/server.h).
std::vector<std::pair<std::string, std::string>> run_fields(const TrainOptions& options, int world);

// Records every on_resume field as "run/<name>".
void write_run_identity(Checkpoint& ck, const TrainOptions& options, const RunFacts& facts);

// Checks the on_resume fields that a checkpoint of `format` records against this run; throws
// InvalidArgument "checkpoint PATH belongs to another run: it was written with NAME = 'THEIRS',
// this run has 'OURS' ..." for the first that differs (the integer-stored fields first, world
// among them, then table order), and the Checkpoint's
// InvalidArgument naming the entry when a field the format records is missing.
void check_run_identity(const Checkpoint& ck, int format, const std::string& path,
                        const TrainOptions& options, const RunFacts& facts);

}  // namespace qgrad
