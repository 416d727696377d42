// The kernels for x86-64's baseline (SSE2): the portable path, always available.
#include "kernels.h"
#define FF_TABLE kKernelsSse2
#define FF_WIDTH 4
#define FF_REGS 12
#include "kernels_impl.h"
