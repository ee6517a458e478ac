// Allowed: tests/ may include any layer.
#include "train/loop_helper.h"
