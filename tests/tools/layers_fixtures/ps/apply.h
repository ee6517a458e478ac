// Violation (with ps/round.h): an include cycle.
#include "optim/step_api.h"
#include "ps/round.h"
