// Violation: core/ includes a higher layer.
#include "comm/channel.h"
#include "core/config.h"  // generated, allowed
