#include "train/lr_schedule.h"

#include <charconv>
#include <cmath>
#include <numbers>
#include <sstream>
#include <vector>

#include "core/error.h"
#include "core/spec_grammar.h"

namespace qgrad {
namespace {

constexpr std::string_view kForms =
    "constant | step:every=E[,gamma=G] | cosine[:min=F], each with an optional warmup=W "
    "(steps), e.g. cosine:warmup=100";

template <typename T>
T parse_number(std::string_view key, std::string_view value) {
  T out{};
  const char* end = value.data() + value.size();
  const auto [ptr, ec] = std::from_chars(value.data(), end, out);
  QGRAD_CHECK(ec == std::errc() && ptr == end && !value.empty(), "--lr-schedule: bad value '",
              value, "' for ", key);
  return out;
}

}  // namespace

LrSchedule parse_lr_schedule(std::string_view text) {
  LrSchedule s;
  const SpecTokens spec = tokenize_spec(text);
  const std::string_view name = spec.head;
  if (name == "constant") {
    s.kind = LrSchedule::Kind::kConstant;
  } else if (name == "step") {
    s.kind = LrSchedule::Kind::kStep;
  } else if (name == "cosine") {
    s.kind = LrSchedule::Kind::kCosine;
  } else {
    throw InvalidArgument(
        detail::concat("--lr-schedule: unknown schedule '", name, "' (valid: ", kForms, ")"));
  }
  bool have_every = false;
  // A trailing comma (an empty last field, or "name:") is allowed here; a later key overrides
  // an earlier one.
  const size_t n = spec.fields.empty() || !spec.fields.back().text.empty() ? spec.fields.size()
                                                                           : spec.fields.size() - 1;
  for (size_t i = 0; i < n; ++i) {
    const SpecField& f = spec.fields[i];
    QGRAD_CHECK(f.has_value, "--lr-schedule: '", f.text, "' is not key=value (valid: ", kForms,
                ")");
    const std::string_view key = f.key, value = f.value;
    if (key == "warmup") {
      s.warmup_steps = parse_number<uint64_t>(key, value);
    } else if (key == "every" && s.kind == LrSchedule::Kind::kStep) {
      s.every_epochs = parse_number<uint64_t>(key, value);
      QGRAD_CHECK(s.every_epochs >= 1, "--lr-schedule: every must be >= 1 epoch");
      have_every = true;
    } else if (key == "gamma" && s.kind == LrSchedule::Kind::kStep) {
      s.gamma = parse_number<double>(key, value);
      QGRAD_CHECK(std::isfinite(s.gamma) && s.gamma > 0 && s.gamma <= 1,
                  "--lr-schedule: gamma must be in (0, 1], got ", value);
    } else if (key == "min" && s.kind == LrSchedule::Kind::kCosine) {
      s.min_fraction = parse_number<double>(key, value);
      QGRAD_CHECK(std::isfinite(s.min_fraction) && s.min_fraction >= 0 && s.min_fraction <= 1,
                  "--lr-schedule: min must be in [0, 1], got ", value);
    } else {
      throw InvalidArgument(detail::concat("--lr-schedule: key '", key, "' does not apply to '",
                                           name, "' (valid: ", kForms, ")"));
    }
  }
  QGRAD_CHECK(s.kind != LrSchedule::Kind::kStep || have_every,
              "--lr-schedule: step needs every=E (epochs), e.g. step:every=1,gamma=0.5");
  return s;
}

std::string to_string(const LrSchedule& s) {
  std::ostringstream out;
  switch (s.kind) {
    case LrSchedule::Kind::kConstant:
      out << "constant";
      if (s.warmup_steps) out << ":warmup=" << s.warmup_steps;
      return out.str();
    case LrSchedule::Kind::kStep:
      out << "step:every=" << s.every_epochs << ",gamma=" << s.gamma;
      break;
    case LrSchedule::Kind::kCosine:
      out << "cosine:min=" << s.min_fraction;
      break;
  }
  if (s.warmup_steps) out << ",warmup=" << s.warmup_steps;
  return out.str();
}

std::string_view describe_lr_schedules() { return kForms; }

double LrSchedule::at(double lr, uint64_t t, uint64_t steps_per_epoch, uint64_t total_steps) const {
  double rate = lr;
  switch (kind) {
    case Kind::kConstant:
      break;
    case Kind::kStep: {
      const uint64_t epoch = steps_per_epoch ? t / steps_per_epoch : 0;
      rate = lr * std::pow(gamma, static_cast<double>(epoch / every_epochs));
      break;
    }
    case Kind::kCosine: {
      const double frac =
          total_steps ? std::min(1.0, static_cast<double>(t) / static_cast<double>(total_steps))
                      : 0.0;
      rate =
          lr * (min_fraction + (1 - min_fraction) * 0.5 * (1 + std::cos(std::numbers::pi * frac)));
      break;
    }
  }
  if (t < warmup_steps) {
    rate *= static_cast<double>(t + 1) / static_cast<double>(warmup_steps);
  }
  return rate;
}

}  // namespace qgrad
