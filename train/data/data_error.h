// The error type of qgrad's data loaders: a data file that is missing, unreadable, truncated,
// corrupt or malformed. Every message names the file (and the line, for text formats) and what
// was wrong; a missing Fashion-MNIST file also names the Debian package that installs it. Spec
// strings the caller got wrong (unknown source, key or value) are InvalidArgument instead.
// Thread-safety: a plain exception type.
#pragma once

#include "core/error.h"

namespace qgrad {

struct DataError : Error {
  using Error::Error;
};

}  // namespace qgrad
