// What a Dataset's targets mean, in one place. Every qgrad loader follows this convention:
//   num_classes == 0   regression: the target is the real value.
//   num_classes == 2   binary classification: the target is -1 or +1 (what the linear
//                      classifiers' losses take); class index 0 is -1, index 1 is +1.
//   num_classes >= 3   the target is the class id 0..num_classes-1 (e.g. Fashion-MNIST 0..9).
// Models that want class ids (softmax / cross-entropy) use class_index for every case.
// Thread-safety: pure functions.
#pragma once

#include <cstddef>

#include "train/dataset.h"

namespace qgrad {

// The class id 0..num_classes-1 of a classification target (see the convention above).
inline size_t class_index(float target, size_t num_classes) {
  if (num_classes == 2) return target > 0 ? 1 : 0;
  return static_cast<size_t>(target);
}

inline size_t class_index(const Dataset& data, size_t row) {
  return class_index(data.targets[row], data.num_classes);
}

// The target that stands for class id `index` (the inverse of class_index).
inline float class_target(size_t index, size_t num_classes) {
  if (num_classes == 2) return index == 0 ? -1.0f : 1.0f;
  return static_cast<float>(index);
}

}  // namespace qgrad
