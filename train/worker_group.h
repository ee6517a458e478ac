// The workers one worker trains with, as the loop of train/trainer.h needs them beside the
// gradient exchange: its rank and their number, agreement on errors (so that no worker goes on
// to wait for a peer that has quit), and exact sums of a few doubles (losses, evaluations).
//   CommunicatorGroup   ranks of a Communicator (MPI or threads): collective agreement and sums
//   IndependentWorker   a worker that shares nothing with the others but its exchange
//                       (parameter servers): its own error, its own values
// Thread-safety: one object per worker, used by that worker's thread; the Communicator's rules
// apply to CommunicatorGroup.
#pragma once

#include <exception>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "comm/communicator.h"

namespace qgrad {

class WorkerGroup {
 public:
  virtual ~WorkerGroup() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string backend() const = 0;  // "local", "mpi", "ps", ... for the header
  // Every worker passes its error ("" when all went well); throws InvalidArgument with the first
  // failure when any worker failed (collective where there is a Communicator, else this
  // worker's own).
  virtual void agree_on_error(const std::string& error) = 0;
  // Element-wise sums over the workers, the same bits on every one; `mine` without peers.
  virtual std::vector<double> sum(std::span<const double> mine) = 0;
  // The Communicator the workers share (checkpoints need it), or nullptr.
  virtual Communicator* communicator() = 0;
};

// Ranks of a Communicator (MPI or threads).
class CommunicatorGroup final : public WorkerGroup {
 public:
  explicit CommunicatorGroup(Communicator& comm) : comm_(comm) {}
  int rank() const override { return comm_.rank(); }
  int size() const override { return comm_.size(); }
  std::string backend() const override { return std::string(comm_.backend()); }
  void agree_on_error(const std::string& error) override;
  // Exact and in rank order, so every rank gets the same bits.
  std::vector<double> sum(std::span<const double> mine) override;
  Communicator* communicator() override { return &comm_; }

 private:
  Communicator& comm_;
};

// A worker that shares nothing with the others but its exchange (parameter servers).
class IndependentWorker final : public WorkerGroup {
 public:
  IndependentWorker(int rank, int size, std::string backend)
      : rank_(rank), size_(size), backend_(std::move(backend)) {}
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return backend_; }
  void agree_on_error(const std::string& error) override;
  std::vector<double> sum(std::span<const double> mine) override {
    return {mine.begin(), mine.end()};
  }
  Communicator* communicator() override { return nullptr; }

 private:
  int rank_, size_;
  std::string backend_;
};

// Collective: every rank passes its error ("" when all went well); when any rank failed, every
// rank throws InvalidArgument with the first failure (prefixed with its rank when world > 1), so
// that no rank goes on to wait for a peer that has quit.
void agree_on_error(Communicator& comm, const std::string& error);

// Runs fn on this worker and agrees with the others on the outcome: either every worker returns
// or every worker throws the first failure (see WorkerGroup::agree_on_error).
template <typename Fn>
void on_every_rank(WorkerGroup& group, Fn&& fn) {
  std::string error;
  try {
    fn();
  } catch (const std::exception& e) {
    error = e.what();
    if (error.empty()) error = "unknown error";
  }
  group.agree_on_error(error);
}

}  // namespace qgrad
