// Counts every heap allocation of the process it is linked into (malloc, calloc, realloc and
// the aligned forms), by defining them in the executable, where they take precedence over the
// C library's. Linked only into TwillDatapathBench, to show the packet path allocates nothing.
#ifndef TWILL_CALLOCATIONCOUNTER_H
#define TWILL_CALLOCATIONCOUNTER_H
#include <stdint.h>

/// Allocations so far.
uint64_t twill_allocation_count(void);
#endif
