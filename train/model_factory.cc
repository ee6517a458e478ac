#include "train/model_factory.h"

#include "core/error.h"
#include "train/backends/models.h"
#include "train/linear/data_quantizer.h"
#include "train/linear/linear_model.h"

namespace qgrad {

bool have_torch_models() { return have_torch_family(); }

bool is_linear_model(std::string_view name) {
  return name == "linear" || name == "logistic" || name == "svm";
}

bool is_model_name(std::string_view name) {
  return is_linear_model(name) || name == "mlp" || name == "cnn";
}

std::string model_names() {
  return have_torch_models() ? "linear, logistic, svm, mlp, cnn" : "linear, logistic, svm";
}

std::unique_ptr<Model> make_model(std::string_view name, const ModelOptions& options,
                                  const Dataset& train) {
  if (is_linear_model(name)) {
    LinearModelOptions linear;
    linear.loss = parse_linear_loss(name);
    linear.init_scale = options.init_scale;
    linear.init_seed = options.seed;
    linear.data_bits = options.data_bits;
    linear.double_sampling = options.double_sampling;
    linear.data_seed = options.seed;
    linear.rank = options.rank;
    if (options.data_bits > 0) linear.grid = fit_feature_grid(train);
    return make_linear_model(name, train, std::move(linear));
  }
  if (name == "mlp" || name == "cnn") {
    QGRAD_CHECK(options.data_bits == 0 && !options.double_sampling, "--data-bits and ",
                "--double-sampling (ZipML) apply to the linear models only (linear, logistic, "
                "svm), not to ",
                name);
    return make_torch_family_model(name, options, train);
  }
  throw InvalidArgument(detail::concat("unknown model '", name, "' (valid: ", model_names(), ")"));
}

}  // namespace qgrad
