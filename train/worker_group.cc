#include "train/worker_group.h"

#include <cstring>

#include "core/error.h"

namespace qgrad {

void agree_on_error(Communicator& comm, const std::string& error) {
  ByteBlocks all;
  comm.allgatherv(std::as_bytes(std::span<const char>(error.data(), error.size())), all);
  for (int r = 0; r < all.count(); ++r) {
    if (all.block_bytes(r) == 0) continue;
    const auto block = all.block(r);
    const std::string message(reinterpret_cast<const char*>(block.data()), block.size());
    if (comm.size() == 1) throw InvalidArgument(message);
    throw InvalidArgument(detail::concat("rank ", r, ": ", message));
  }
}

void CommunicatorGroup::agree_on_error(const std::string& error) {
  qgrad::agree_on_error(comm_, error);
}

std::vector<double> CommunicatorGroup::sum(std::span<const double> mine) {
  ByteBlocks all;
  comm_.allgatherv(std::as_bytes(mine), all);
  std::vector<double> sum(mine.size(), 0.0);
  for (int r = 0; r < all.count(); ++r) {
    QGRAD_CHECK(all.block_bytes(r) == mine.size_bytes(), "rank ", r, " sent ", all.block_bytes(r),
                " bytes of statistics, expected ", mine.size_bytes());
    std::vector<double> theirs(mine.size());
    std::memcpy(theirs.data(), all.block(r).data(), mine.size_bytes());
    for (size_t i = 0; i < sum.size(); ++i) sum[i] += theirs[i];
  }
  return sum;
}

void IndependentWorker::agree_on_error(const std::string& error) {
  if (!error.empty()) throw InvalidArgument(error);
}

}  // namespace qgrad
