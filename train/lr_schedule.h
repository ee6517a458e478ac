// Learning-rate schedules for the worker loop: lr(step) as a pure function of the step index, so
// that a resumed run gets the same rates and every rank agrees without talking.
//
//   constant                          lr
//   step:every=E[,gamma=G]            lr * G^floor(epoch / E)           (G default 0.1)
//   cosine[:min=F]                    F*lr + (1-F)*lr * (1 + cos(pi * t / T)) / 2 over T steps
//   any of them with warmup=W         linear ramp lr * (t + 1) / W over the first W steps
//                                     (Goyal et al. 2017's warm-up for large batches)
// e.g. "cosine:warmup=100,min=0.01", "step:every=1,gamma=0.5". t counts steps from 0, the epoch
// is t / steps_per_epoch.
// Thread-safety: immutable value type.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace qgrad {

struct LrSchedule {
  enum class Kind { kConstant, kStep, kCosine };
  Kind kind = Kind::kConstant;
  uint64_t every_epochs = 1;  // step
  double gamma = 0.1;         // step
  double min_fraction = 0;    // cosine
  uint64_t warmup_steps = 0;  // all

  // The rate of step t (0-based) for base rate `lr` over a run of total_steps steps of
  // steps_per_epoch each.
  double at(double lr, uint64_t t, uint64_t steps_per_epoch, uint64_t total_steps) const;
};

// Parses a spec as above; throws InvalidArgument naming the bad part and the valid forms.
LrSchedule parse_lr_schedule(std::string_view text);
// The canonical spec (parse_lr_schedule reads it back equal).
std::string to_string(const LrSchedule& schedule);
// One line per form, for --help.
std::string_view describe_lr_schedules();

}  // namespace qgrad
