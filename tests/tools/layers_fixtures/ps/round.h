// Violation (with ps/apply.h): an include cycle.
#include "ps/apply.h"
#include "ps/ps.pb.h"  // generated, allowed
