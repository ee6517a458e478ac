// IDX files (LeCun's MNIST format, also used by Fashion-MNIST) and the Fashion-MNIST data set.
//
// IDX layout: a 4-byte big-endian magic 0x00000800 | (type << 8) | ndim, where type 0x08 means
// unsigned bytes, then ndim big-endian uint32 sizes, then the data in row-major order. Images
// are magic 0x00000803 (count, rows, cols), labels 0x00000801 (count). Files may be gzip'd
// (read through zlib) or raw. Every check failure is a DataError naming the file and what is
// wrong: bad magic, zero or inconsistent sizes, data shorter or longer than the header says, a
// gzip stream that is cut short or fails its CRC, labels out of range, image/label counts that
// differ.
//
// Fashion-MNIST (Xiao, Rasul, Vollgraf 2017): 60,000 training and 10,000 test 28x28 grey images
// of 10 clothing classes, 6,000 / 1,000 per class. Debian's `dataset-fashion-mnist` installs
// the four .gz files into kFashionMnistDir; scripts/install-deps.sh installs it.
// Normalization: a pixel byte p becomes the float p / 255 in [0, 1]; no mean/std
// standardization (the train mean is 0.2860, the std 0.3530, if a model wants to apply it).
// Targets are the class ids 0..9 as floats, num_classes 10, image shape 1 x 28 x 28 (dim 784).
// Sharding: the loader reads whole files; a rank that wants only its shard keeps it with
// take_rows (train/data/shard.h) and lets the full copy go.
// Thread-safety: pure functions; concurrent loads are fine.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "train/dataset.h"

namespace qgrad {

inline constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";
inline constexpr const char* kFashionMnistPackage = "dataset-fashion-mnist";

struct IdxImages {
  size_t count = 0, rows = 0, cols = 0;
  std::vector<uint8_t> pixels;  // count * rows * cols, row-major
};

// Reads an images file (magic 0x803). Throws DataError.
IdxImages read_idx_images(const std::string& path);
// Reads a labels file (magic 0x801). Throws DataError.
std::vector<uint8_t> read_idx_labels(const std::string& path);

// Reads an images file and its labels file into a Dataset (pixels / 255, image shape 1 x rows x
// cols); labels must be < num_classes and as many as the images. Throws DataError.
Dataset load_idx_pair(const std::string& images_path, const std::string& labels_path,
                      size_t num_classes, std::string name);

// Loads Fashion-MNIST from `dir`: train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,
// t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz (each may also be present without .gz).
// A missing directory or file is a DataError that names it and the package
// dataset-fashion-mnist; images must be 28 x 28.
DataSplit load_fashion_mnist(const std::string& dir = kFashionMnistDir);

}  // namespace qgrad
