// The kernels for AVX-512F (512-bit vectors, 32 registers), chosen at run time when the
// CPU and the OS support it. Same rounding as SSE2: IEEE float/double operations, none fused
// (-ffp-contract=off).
//
// kernels.h comes before the target pragma (any inline function a header defines must keep the
// baseline instruction set: the linker may pick that copy for the portable code).

#include "kernels.h"
#if defined(__x86_64__) || defined(__i386__)
#pragma GCC target("avx512f")
#endif
#define FF_TABLE kKernelsAvx512
#define FF_WIDTH 16
#define FF_REGS 24
#include "kernels_impl.h"
