#include "train/train_options.h"

#include <cmath>

#include "core/error.h"

namespace qgrad {

void validate(const TrainOptions& o, int world) {
  QGRAD_CHECK(world >= 1, "world size must be >= 1, got ", world);
  QGRAD_CHECK(o.batch >= 1, "--batch must be >= 1, got ", o.batch);
  QGRAD_CHECK(o.epochs >= 1, "--epochs must be >= 1, got ", o.epochs);
  QGRAD_CHECK(std::isfinite(o.lr) && o.lr >= 0, "--lr must be a finite number >= 0, got ", o.lr);
  QGRAD_CHECK(o.log_every >= 1, "--log-every must be >= 1, got ", o.log_every);
  QGRAD_CHECK(o.adversarial >= 0 && o.adversarial <= world, "--adversarial ", o.adversarial,
              " needs between 0 and the world size (", world, ") ranks");
  QGRAD_CHECK(!o.resume || !o.checkpoint_dir.empty(), "--resume needs --checkpoint-dir");
  QGRAD_CHECK(o.progress_seconds >= 0, "progress interval must be >= 0");
}

}  // namespace qgrad
