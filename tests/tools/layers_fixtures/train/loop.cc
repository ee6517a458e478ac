// Violation: an include not written from the repository root.
#include "loop_helper.h"
#include "ps/round.h"
