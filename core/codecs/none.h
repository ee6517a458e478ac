// `none`: the fp32 baseline. The body is the input, little-endian float32.
#pragma once

#include <memory>

#include "core/codec.h"

namespace qgrad {

std::unique_ptr<Codec> make_none_codec(const CodecSpec& spec);

}  // namespace qgrad
