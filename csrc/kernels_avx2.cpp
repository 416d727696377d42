// The kernels for AVX2 (256-bit vectors), chosen at run time when the CPU has it.
// Same rounding as SSE2: IEEE float/double operations, none fused (-ffp-contract=off).
//
// kernels.h comes before the target pragma (any inline function a header defines must keep the
// baseline instruction set: the linker may pick that copy for the portable code).

#include "kernels.h"
#if defined(__x86_64__) || defined(__i386__)
#pragma GCC target("avx2")
#endif
#define FF_TABLE kKernelsAvx2
#define FF_WIDTH 8
#define FF_REGS 12
#include "kernels_impl.h"
