// Allowed: comm/mpi/ is the MPI backend's folder.
#include <mpi.h>

#include "comm/channel.h"
