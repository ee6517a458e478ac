// The --data spec of qgrad-train: one string names a data source and its options, parsed in one
// place; a bad spec is an InvalidArgument that lists the valid sources, keys or values.
//
//   fashion-mnist[:dir=PATH]                  IDX files (train/data/idx.h); default dir
//                                             /usr/share/datasets/fashion-mnist
//   libsvm:PATH[,test=PATH][,labels=auto|binary|multiclass|regression][,dim=D]
//                                             LIBSVM text (train/data/libsvm.h); no test= means
//                                             an empty test split; `path=PATH` may replace the
//                                             bare PATH. Paths cannot contain ','.
//   synthetic:kind=regression|classification[,rows=N][,test=N][,dim=D][,noise=S][,classes=C]
//             [,seed=K]                       Philox-generated (train/data/synthetic.h);
//                                             classes only with kind=classification
//
// Thread-safety: pure functions.
#pragma once

#include <string>
#include <string_view>

#include "train/data/libsvm.h"
#include "train/data/synthetic.h"
#include "train/dataset.h"

namespace qgrad {

enum class DataSource { kFashionMnist, kLibsvm, kSynthetic };

struct DataSpec {
  DataSource source = DataSource::kSynthetic;
  std::string dir;              // fashion-mnist: the IDX directory
  std::string path, test_path;  // libsvm: train file, optional test file
  LibsvmOptions libsvm;         // libsvm: labels, dim
  SyntheticOptions synthetic;   // synthetic
};

// Parses a spec; throws InvalidArgument naming what is wrong and what is valid.
DataSpec parse_data_spec(std::string_view text);

// The canonical spec (defaults spelled out), which parse_data_spec reads back to an equal spec.
std::string to_string(const DataSpec& spec);

// Loads the data the spec names. Throws DataError for file problems, InvalidArgument for specs.
DataSplit load_data(const DataSpec& spec);
DataSplit load_data(std::string_view text);

// Help text listing the sources and their keys (for --help and error messages).
std::string describe_data_specs();

}  // namespace qgrad
