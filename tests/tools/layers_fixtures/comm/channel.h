// Allowed: comm/ includes core/.
#include <vector>

#include "core/wire.h"
