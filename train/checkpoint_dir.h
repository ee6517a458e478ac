// Where a run keeps its checkpoints, and how all ranks agree on which one is whole.
//
//   DIR/step-<N>/rank-<r>.qgck    one file per rank (error memories and Signum's momentum are
//                                 per rank), each written atomically (core/checkpoint.h);
//                                 what one holds: train/train_checkpoint.h
//   DIR/LATEST                    "<N>\n": written atomically by rank 0 only after every rank
//                                 has written its step-N file (a barrier), so it never names a
//                                 step that some rank lacks. Older step folders are removed
//                                 after that, keeping the previous one as a spare.
// A crash at any point leaves LATEST naming a complete set of files.
// Thread-safety: one object per rank; ranks may be threads of one process (different files).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "comm/communicator.h"
#include "core/checkpoint.h"

namespace qgrad {

class CheckpointDir {
 public:
  CheckpointDir(std::string dir, int rank, int world);

  const std::string& dir() const { return dir_; }
  std::string rank_file(uint64_t step) const;

  // Collective: every rank calls it with the same step. Creates DIR when missing. Throws Error
  // naming the path on an I/O failure (then LATEST still names the previous checkpoint).
  void save(Communicator& comm, uint64_t step, const Checkpoint& mine) const;

  // The step LATEST names; nullopt when DIR has no LATEST. Throws CorruptPayload for a LATEST
  // that does not hold a step number.
  std::optional<uint64_t> latest() const;
  // This rank's checkpoint of `step` (InvalidArgument when missing, CorruptPayload if damaged).
  Checkpoint load(uint64_t step) const;

 private:
  std::string dir_;
  int rank_;
  int world_;
};

}  // namespace qgrad
