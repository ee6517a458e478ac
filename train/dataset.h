// In-memory data sets for training: dense fp32 feature rows and one target per row. Loaders for
// IDX (Fashion-MNIST), LIBSVM text and synthetic problems live in train/data/ and all return
// this type. Each rank keeps only its shard (see shard_rows).
// Thread-safety: immutable after loading; share freely between threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace qgrad {

struct Dataset {
  std::string name;             // "fashion-mnist/train", "libsvm:heart_scale", "synthetic:..."
  size_t rows = 0;              // examples
  size_t dim = 0;               // features per example
  size_t num_classes = 0;       // 0: regression (targets are real values); >= 2: class ids
  std::vector<float> features;  // rows * dim, row-major
  std::vector<float> targets;   // rows: -1/+1 when num_classes == 2, the class id as float
                                // (0..num_classes-1) when num_classes > 2, or the regression
                                // value (train/data/targets.h converts for softmax models)
  // Image shape for models that need it (CNN): channels x height x width == dim, or all 0.
  size_t channels = 0, height = 0, width = 0;

  std::span<const float> row(size_t i) const { return {features.data() + i * dim, dim}; }
};

// A train/test pair; `test` is empty (rows == 0) when the source has no test split.
struct DataSplit {
  Dataset train;
  Dataset test;
};

}  // namespace qgrad
