// Violation: an MPI header outside comm/mpi/.
#include <mpi.h>

#include "comm/channel.h"
