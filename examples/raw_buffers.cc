// The codec API on raw float buffers, with no framework: what a worker does with a gradient
// before and after the exchange. Build: part of the project (build/bin/example-raw-buffers).
//
//   1. pick a codec by its spec string,
//   2. encode the gradient plus the error memory (error feedback),
//   3. ship the bytes (here: keep them), 4. decode and apply them.
#include <cmath>
#include <cstdio>
#include <vector>

#include "core/codec_registry.h"
#include "core/error_feedback.h"
#include "core/synthetic.h"

int main() {
  const size_t n = 1 << 20;
  const float lr = 0.1f;
  const auto codec = qgrad::make_codec("qsgd:bits=4,bucket=512");
  std::printf("codec %s, unbiased=%d\n", codec->spec().str().c_str(), codec->unbiased());

  std::vector<float> grad(n), applied(n, 0.0f), wanted(n, 0.0f);
  std::vector<std::byte> payload(codec->max_encoded_bytes(n));
  qgrad::ErrorFeedback ef(n);
  size_t bytes = 0;
  for (uint64_t step = 0; step < 10; ++step) {
    qgrad::fill_synthetic(grad, qgrad::SyntheticDistribution::kGradient, /*seed=*/step);
    const qgrad::RngKey key{.seed = 42, .step = step};
    bytes = ef.encode(*codec, grad, lr, key, payload);
    // ... send payload[0, bytes) to the other workers; each of them decodes it:
    codec->decode_add({payload.data(), bytes}, applied, 1.0f);
    for (size_t i = 0; i < n; ++i) wanted[i] += lr * grad[i];
  }
  // Nothing is lost: what was applied plus what the memory still holds is what SGD wanted.
  double worst = 0, scale = 0;
  for (size_t i = 0; i < n; ++i) {
    worst = std::fmax(worst, std::fabs(applied[i] + ef.memory()[i] - wanted[i]));
    scale = std::fmax(scale, std::fabs(wanted[i]));
  }
  std::printf("payload %zu bytes for %zu floats (%.2fx smaller than fp32)\n", bytes, n,
              4.0 * n / bytes);
  std::printf("max |applied + memory - sum(lr*g)| = %.3g (max |sum(lr*g)| = %.3g)\n", worst, scale);
  return worst <= 1e-5 * scale ? 0 : 1;
}
