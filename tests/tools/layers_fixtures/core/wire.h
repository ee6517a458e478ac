// A leaf of the graph.
#include <cstdint>
