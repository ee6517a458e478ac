// LIBSVM / SVMlight text data (Chang & Lin, LIBSVM; the format of the LIBSVM data sets page):
// one example per line, `label index:value index:value ...`, indices 1-based and strictly
// increasing, absent indices are 0. Rows are made dense (dim = the largest index over the train
// and test files, or a given dim). `#` starts a comment to the end of the line; blank lines
// (and comment-only lines) are skipped; CRLF line ends are accepted; labels and values may
// carry a leading '+'. Files may be gzip'd (read through zlib).
//
// Labels (LabelMode; chosen on the train file, the same mapping is applied to the test file):
//   regression   targets are the labels as given, num_classes 0.
//   binary       num_classes 2, targets -1 / +1 for the linear classifiers: labels in {-1, +1}
//                stay, {0, 1} become {-1, +1}, any other two values map lower -> -1,
//                higher -> +1.
//   multiclass   the distinct train labels in increasing order become class ids 0..C-1
//                (e.g. {1, 2, 3} -> {0, 1, 2}; {2, 4, 7} -> {0, 1, 2}). With exactly two classes
//                the targets are -1 / +1 as for binary: in every qgrad Dataset, num_classes == 2
//                means targets -1 / +1 (class_index() in train/data/targets.h maps them to 0 / 1).
//   auto         binary if the labels are within {-1, +1} or {0, 1} or take two values;
//                otherwise multiclass if every label is an integer; otherwise regression. A
//                regression file with integer targets needs labels=regression.
// Errors are DataError naming the file and the 1-based line: a label or value that is not a
// finite number, an index that is not a positive integer, not increasing, or above the given
// dim, a `qid:` token (ranking data is not supported), a test label the train file lacks.
// Sharding: the loader reads whole files; see take_rows in train/data/shard.h.
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "train/dataset.h"

namespace qgrad {

enum class LabelMode { kAuto, kBinary, kMultiClass, kRegression };

// "auto|binary|multiclass|regression"; throws InvalidArgument listing them.
LabelMode parse_label_mode(std::string_view name);
const char* label_mode_name(LabelMode mode);

struct LibsvmOptions {
  LabelMode labels = LabelMode::kAuto;
  size_t dim = 0;  // 0: the largest feature index in the files
};

// Loads a train file and, if test_path is not empty, a test file with the same dim and label
// mapping (test is empty otherwise). Throws DataError.
DataSplit load_libsvm(const std::string& train_path, const std::string& test_path = {},
                      const LibsvmOptions& options = {});

// The same on text in memory; `source` names it in error messages ("source:line: ...").
Dataset parse_libsvm_text(std::string_view text, const std::string& source,
                          const LibsvmOptions& options = {});

}  // namespace qgrad
