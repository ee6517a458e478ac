// The LibTorch models behind qgrad::Model: a multilayer perceptron ("mlp") and a small
// convolutional network ("cnn") for image rows, both trained with softmax cross-entropy. This
// header is all the rest of qgrad sees: no LibTorch include leaks out of train/torch/, so only
// torch_model.cc pays LibTorch's compile time.
//
// Architectures (B = batch, D = data.dim, K = data.num_classes):
//   mlp: x[B, D] -> (Linear(h_i) -> ReLU) for each hidden width h_i -> Linear(K) -> logits.
//        Default hidden = {256}: the 784-256-10 network of the Fashion-MNIST experiments.
//        hidden = {} is multinomial logistic regression.
//   cnn: x[B, C, H, W] (the row read as channels x height x width) ->
//        for each width c_i of `channels`: Conv2d(c_i, 5x5, stride 1, padding 2) -> ReLU ->
//        MaxPool(2x2, stride 2) -> flatten (channel-major, as torch's view) -> Linear(K).
//        Default channels = {16, 32}: on 1x28x28, 16x28x28 -> 16x14x14 -> 32x14x14 -> 32x7x7
//        -> 1568 -> 10 (28,938 parameters). Needs H, W >= 2^len(channels).
//   loss = mean over the batch of -log softmax(logits)[target].
//
// Parameters, in the order params() returns them: layer by layer from the input, weight then
// bias: "fc1.weight" [h1, D], "fc1.bias" [h1], ..., or "conv1.weight" [c1, C, 5, 5],
// "conv1.bias", ..., "fc.weight" [K, C_last*H'*W'], "fc.bias". Each ParamView's value and grad
// alias the contiguous fp32 storage of the torch parameter and of its .grad, which are allocated
// once in the constructor; backward accumulates into that same .grad storage in place (the model
// zeroes it first), so the spans never move.
//
// Initialization: PyTorch's default for Linear and Conv2d, U(-1/sqrt(fan_in), +1/sqrt(fan_in))
// for weights and biases, drawn from Philox (core/philox.h) with key {seed, step 0, rank 0,
// tensor = parameter index, bucket kInitStream}: the same seed gives bit-identical parameters on
// every rank, thread and run, without touching torch's global generator.
//
// grad_ready: forward_backward calls it from an autograd post-hook on each parameter's gradient
// accumulator (torch's AccumulateGrad node, as DistributedDataParallel does), that is right after
// that node has added the parameter's complete gradient into its .grad buffer. Autograd runs that
// node exactly once per backward for a leaf (every use of a parameter is summed before it), so the
// buffer is final when grad_ready(i) runs. (A tensor hook on the parameter, register_hook, runs
// before AccumulateGrad, while .grad still holds zeros: too early.) On the CPU, torch runs backward
// on the calling thread, so grad_ready runs on the thread that called forward_backward, while the
// earlier layers are still being differentiated: the last layer's parameters come first (the order
// within a layer is autograd's). grad_ready runs inside backward, which waits for it: hand long
// work (encoding, sending) to another thread to overlap it with the rest of backward. If grad_ready
// throws, later calls are skipped, backward finishes, and forward_backward rethrows the exception.
//
// Threads: torch's intra-op pool and OpenBLAS's pool are process-wide. Each model sets both to
// options.threads (default 1, so that several ranks on few cores do not oversubscribe) when it is
// built and, if another thread changed them, again before each forward pass; 0 leaves them as
// they are. Models built with different thread counts in one process fight over the setting.
// Thread-safety: one thread at a time per model; different models may run on different threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "train/dataset.h"
#include "train/model.h"

namespace qgrad {

struct TorchModelOptions {
  std::vector<size_t> hidden = {256};       // mlp: hidden layer widths, from the input side
  std::vector<size_t> channels = {16, 32};  // cnn: output channels of each conv block
  uint64_t seed = 0;                        // initialization
  int threads = 1;                          // torch intra-op + OpenBLAS threads; 0: leave alone
};

// RngKey.bucket of the initialization streams (tensor = parameter index).
inline constexpr uint32_t kInitStream = 0x1A170000u;

// Builds "mlp" or "cnn" for the shape of `data` (dim, num_classes >= 2 and, for "cnn", the image
// shape channels x height x width == dim). Only the shape of `data` is read. Throws
// InvalidArgument for an unknown name (listing the valid ones), a regression data set, a missing
// or inconsistent image shape, a zero width, or threads < 0.
std::unique_ptr<Model> make_torch_model(std::string_view name, const TorchModelOptions& options,
                                        const Dataset& data);

// The names make_torch_model accepts.
std::vector<std::string_view> torch_model_names();

// The process's current thread counts, for logs: torch's intra-op threads as the calling thread
// sees them, and OpenBLAS's (-1 when the BLAS in use is not OpenBLAS).
struct TorchThreads {
  int intra_op = 0;
  int blas = -1;
};
TorchThreads torch_threads();

}  // namespace qgrad
