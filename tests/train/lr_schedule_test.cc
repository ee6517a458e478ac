#include "train/lr_schedule.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include "core/error.h"

namespace qgrad {
namespace {

TEST(LrSchedule, ConstantStepCosineAndWarmupByHand) {
  EXPECT_DOUBLE_EQ(parse_lr_schedule("constant").at(0.1, 57, 10, 100), 0.1);
  const LrSchedule step = parse_lr_schedule("step:every=2,gamma=0.5");
  EXPECT_DOUBLE_EQ(step.at(1.0, 19, 10, 100), 1.0);   // epoch 1
  EXPECT_DOUBLE_EQ(step.at(1.0, 20, 10, 100), 0.5);   // epoch 2
  EXPECT_DOUBLE_EQ(step.at(1.0, 45, 10, 100), 0.25);  // epoch 4
  const LrSchedule cos = parse_lr_schedule("cosine:min=0.1");
  EXPECT_DOUBLE_EQ(cos.at(1.0, 0, 10, 100), 1.0);
  EXPECT_NEAR(cos.at(1.0, 50, 10, 100), 0.1 + 0.9 * 0.5, 1e-12);
  EXPECT_NEAR(cos.at(1.0, 100, 10, 100), 0.1, 1e-12);
  const LrSchedule warm = parse_lr_schedule("cosine:warmup=4");
  EXPECT_NEAR(warm.at(1.0, 0, 10, 100), 0.25 * 1.0, 1e-12);
  EXPECT_NEAR(warm.at(1.0, 3, 10, 100), 0.5 * (1 + std::cos(std::numbers::pi * 0.03)), 1e-12);
  EXPECT_NEAR(warm.at(1.0, 4, 10, 100), 0.5 * (1 + std::cos(std::numbers::pi * 0.04)), 1e-12);
}

TEST(LrSchedule, CanonicalTextReadsBackEqual) {
  for (const char* text :
       {"constant", "constant:warmup=5", "step:every=3,gamma=0.2", "cosine:min=0.05,warmup=10"}) {
    const LrSchedule s = parse_lr_schedule(text);
    EXPECT_EQ(to_string(parse_lr_schedule(to_string(s))), to_string(s)) << text;
  }
}

TEST(LrSchedule, BadSpecsNameTheProblem) {
  for (const char* text : {"exponential", "step", "step:gamma=0.5", "step:every=0", "cosine:min=2",
                           "constant:every=1", "cosine:warmup=x", "cosine:min"}) {
    EXPECT_THROW(parse_lr_schedule(text), InvalidArgument) << text;
  }
}

}  // namespace
}  // namespace qgrad
