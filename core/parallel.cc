#include "core/parallel.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace qgrad {
namespace {

class Pool {
 public:
  ~Pool() { resize(0); }

  int threads() const { return static_cast<int>(workers_.size()) + 1; }

  void resize(int total) {
    std::lock_guard call(call_mutex_);
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
      ++generation_;
    }
    wake_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
    stop_ = false;
    // A worker must know the generation it was born in: reading it in the new thread could see
    // a later run's generation and sleep through that run.
    for (int i = 1; i < total; ++i) workers_.emplace_back([this, g = generation_] { loop(g); });
  }

  void run(size_t chunks, const std::function<void(size_t)>& task) {
    std::lock_guard call(call_mutex_);
    std::vector<std::exception_ptr> errors(chunks);
    {
      std::lock_guard lock(mutex_);
      task_ = &task;
      errors_ = &errors;
      chunks_ = chunks;
      next_.store(0);
      active_ = static_cast<int>(workers_.size());
      ++generation_;
    }
    wake_.notify_all();
    work();
    {
      std::unique_lock lock(mutex_);
      done_.wait(lock, [&] { return active_ == 0; });
      task_ = nullptr;
    }
    for (auto& e : errors)
      if (e) std::rethrow_exception(e);
  }

 private:
  void work() {
    for (size_t i = next_.fetch_add(1); i < chunks_; i = next_.fetch_add(1)) {
      try {
        (*task_)(i);
      } catch (...) {
        (*errors_)[i] = std::current_exception();
      }
    }
  }

  void loop(uint64_t seen) {
    while (true) {
      {
        std::unique_lock lock(mutex_);
        wake_.wait(lock, [&] { return generation_ != seen; });
        seen = generation_;
        if (stop_) return;
      }
      work();
      {
        std::lock_guard lock(mutex_);
        --active_;
      }
      done_.notify_one();
    }
  }

  std::mutex call_mutex_;  // one parallel_for (or resize) at a time
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  std::vector<std::thread> workers_;
  const std::function<void(size_t)>* task_ = nullptr;
  std::vector<std::exception_ptr>* errors_ = nullptr;
  size_t chunks_ = 0;
  std::atomic<size_t> next_{0};
  int active_ = 0;
  uint64_t generation_ = 0;
  bool stop_ = false;
};

Pool& pool() {
  static Pool p;
  return p;
}

}  // namespace

void set_num_threads(int n) {
  if (n <= 0) n = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (n != pool().threads()) pool().resize(n);
}

int num_threads() { return pool().threads(); }

void parallel_for(size_t n, size_t grain, const std::function<void(size_t, size_t)>& fn) {
  if (n == 0) return;
  grain = std::max<size_t>(grain, 1);
  const size_t chunks = (n + grain - 1) / grain;
  if (chunks == 1 || num_threads() == 1) {
    for (size_t i = 0; i < chunks; ++i) fn(i * grain, std::min(n, (i + 1) * grain));
    return;
  }
  pool().run(chunks, [&](size_t i) { fn(i * grain, std::min(n, (i + 1) * grain)); });
}

}  // namespace qgrad
