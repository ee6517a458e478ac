/* An include quoted in a block comment is not an include:
#include "train/loop.h"
*/
#include "core/wire.h"
