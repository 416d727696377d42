// The kernels (kernels.h), included once by each per-ISA translation unit after it set its target:
//   FF_TABLE  the Kernels table to define (kKernelsSse2, ...)
//   FF_WIDTH  floats per vector register (4, 8, 16): also the images walked at once
//   FF_REGS   most vector accumulators per pass over a shape (the ISA's registers, less a few)
// Plain C++ with GCC vector extensions, no intrinsics: the compiler emits each ISA's vectors.
// Everything but FF_TABLE has internal linkage, so the three copies never meet in the linker.
// The build passes -ffp-contract=off: no multiply-add is ever fused, so each float and double
// operation below rounds exactly as the scalar code in dlib does.
#include "kernels.h"

namespace facefill {
namespace {

constexpr int kWidth = FF_WIDTH;
constexpr int kRegs = FF_REGS;

// GCC vectors of kWidth floats / int32 lanes, and may_alias twins for float array access.
typedef float Vec __attribute__((vector_size(kWidth * sizeof(float))));
typedef int32_t VecInt __attribute__((vector_size(kWidth * sizeof(int32_t))));
typedef float VecMem __attribute__((vector_size(kWidth * sizeof(float)), may_alias));
typedef float VecMemU __attribute__((vector_size(kWidth * sizeof(float)), may_alias, aligned(4)));
typedef uint16_t VecU16 __attribute__((vector_size(kWidth * sizeof(uint16_t))));
typedef uint16_t VecU16MemU __attribute__((vector_size(kWidth * sizeof(uint16_t)), may_alias, aligned(2)));

inline Vec load(const float* p) { return *reinterpret_cast<const VecMem*>(p); }
inline Vec load_unaligned(const float* p) { return *reinterpret_cast<const VecMemU*>(p); }
inline void store(float* p, Vec v) { *reinterpret_cast<VecMem*>(p) = v; }
inline Vec splat(float x) { return x - Vec{}; }  // x - 0 == x exactly, -0 and NaN included

// ---- leaf additions ------------------------------------------------------------------------

// acc = shape[0 : R vectors]; acc += leaf_k[same range] for k = 0, 1, ...; shape = acc.
// Per coordinate this is shape + leaf_0 + leaf_1 + ... left to right, dlib's order.
template <int R>
inline void add_pass(float* __restrict shape, const float* const* __restrict leaves, long count,
                     long offset) {
    // Unrolled, so that acc lives in registers, not on the stack.
    Vec acc[R];
#pragma GCC unroll 32
    for (int r = 0; r < R; ++r) acc[r] = load(shape + r * kWidth);
    for (long k = 0; k < count; ++k) {
        const float* leaf = leaves[k] + offset;
        // Keep `leaf` a base register (loads at constant displacements) instead of letting GCC
        // hoist one index register per vector, which spills for R > 9.
        __asm__("" : "+r"(leaf));
#pragma GCC unroll 32
        for (int r = 0; r < R; ++r) acc[r] += load(leaf + r * kWidth);
    }
#pragma GCC unroll 32
    for (int r = 0; r < R; ++r) store(shape + r * kWidth, acc[r]);
}

template <int R>
inline void add_pass_n(int regs, float* shape, const float* const* leaves, long count,
                       long offset) {
    if (regs == R)
        add_pass<R>(shape, leaves, count, offset);
    else if constexpr (R > 1)
        add_pass_n<R - 1>(regs, shape, leaves, count, offset);
}

// Prefetches the lines of a block's leaves (rows [0, rows), columns [c0, c1)) a few at a time,
// so that the next block streams in from memory while the current one is added. A burst of
// prefetches at the start of a block (the earlier way) filled the miss buffers and stalled the
// additions until the whole block had arrived: memory time and addition time added up.
struct Prefetcher {
    const float* row = nullptr;
    long rows = 0, stride = 0, c0 = 0, c1 = 0, c = 0;
    Prefetcher() = default;
    Prefetcher(const float* first, long num_rows, long row_stride, long col0, long col1)
        : row(first), rows(num_rows), stride(row_stride), c0(col0), c1(col1), c(col0) {}
    long lines() const { return rows * ((c1 - c0 + 15) / 16); }
    inline void step(long lines) {
        constexpr long kLine = 64 / static_cast<long>(sizeof(float));
        for (; lines > 0 && rows > 0; --lines) {
            __builtin_prefetch(row + c, 0, 2);
            c += kLine;
            if (c >= c1) c = c0, row += stride, --rows;
        }
    }
};

// shape_b[c0, c1) += the leaves of trees [t0, t0 + count) for every image b, in tree order; in
// passes of at most kRegs vectors of about equal size, each pass's running sums in registers
// across the block's trees. `pf` advances by per_image lines before each image.
inline void add_block(const ForestView& fv, const BatchView& bv, long t0, long count, long c0,
                      long c1, Prefetcher& pf, long per_image) {
    const long num_vec = (c1 - c0 + kWidth - 1) / kWidth;
    const long passes = (num_vec + kRegs - 1) / kRegs;
    const float* ptrs[kMaxTreeBlock];
    for (long b = 0; b < bv.n; ++b) {
        pf.step(per_image);
        for (long k = 0; k < count; ++k) {
            const long leaf = bv.leaf_idx[(t0 + k) * bv.idx_stride + b];
            ptrs[k] = fv.leaves + ((t0 + k) * fv.num_leaves + leaf) * fv.leaf_stride;
        }
        long v = 0;
        for (long p = 0; p < passes; ++p) {
            const int r = static_cast<int>((num_vec - v) / (passes - p));
            const long offset = c0 + v * kWidth;
            add_pass_n<kRegs>(r, bv.shapes + b * bv.shape_stride + offset, ptrs, count, offset);
            v += r;
        }
    }
}

// ---- tree walks ----------------------------------------------------------------------------

// dlib's regression_tree walk for one image: left (2i + 1) when f[idx1] - f[idx2] > thresh,
// else right (2i + 2). Features are batch-major: feature i of this image is f[i * stride].
inline long walk_one(const Split* splits, long num_splits, const float* f, long stride) {
    long node = 0;
    while (node < num_splits) {
        const Split s = splits[node];
        node = 2 * node + 2 - (f[s.idx1 * stride] - f[s.idx2 * stride] > s.thresh);
    }
    return node - num_splits;
}

void walk_scalar(const ForestView& fv, const BatchView& bv, long t0, long t1) {
    const long S = fv.num_splits;
    for (long t = t0; t < t1; ++t)
        for (long b = 0; b < bv.n; ++b)
            bv.leaf_idx[t * bv.idx_stride + b] = static_cast<uint16_t>(
                walk_one(fv.splits + t * S, S, bv.features + b, bv.feature_stride));
}

// The same walk for kWidth images at once, without gathers: feature i of images g .. g + kWidth
// is one vector load (features are batch-major), so every split of the tree is tested for all
// lanes (2^Depth - 1 tests instead of Depth, but independent loads instead of a chain of
// dependent ones); then each lane's path is read off the test masks level by level: at level d
// the lane's node is 2^d - 1 + local, and its mask is selected from the level's 2^d masks by the
// bits of local. The test is dlib's float `f[idx1] - f[idx2] > thresh` (false on NaN).
template <int Depth>
void walk_vector(const ForestView& fv, const BatchView& bv, long t0, long t1) {
    constexpr int S = (1 << Depth) - 1;
    const long stride = bv.feature_stride;
    for (long t = t0; t < t1; ++t) {
        const Split* sp = fv.splits + t * S;
        const float* row1[S];
        const float* row2[S];
        Vec thresh[S];
        for (int s = 0; s < S; ++s) {
            row1[s] = bv.features + sp[s].idx1 * stride;
            row2[s] = bv.features + sp[s].idx2 * stride;
            thresh[s] = splat(sp[s].thresh);
        }
        uint16_t* idx = bv.leaf_idx + t * bv.idx_stride;
        for (long g = 0; g < bv.n; g += kWidth) {
            VecInt left[S];  // -1 where the split sends the lane left
#pragma GCC unroll 64
            for (int s = 0; s < S; ++s)
                left[s] = load_unaligned(row1[s] + g) - load_unaligned(row2[s] + g) > thresh[s];
            VecInt local = {};
#pragma GCC unroll 8
            for (int d = 0; d < Depth; ++d) {
                VecInt sel[1 << (Depth - 1)];
#pragma GCC unroll 64
                for (int j = 0; j < (1 << d); ++j) sel[j] = left[(1 << d) - 1 + j];
#pragma GCC unroll 8
                for (int bit = 0; bit < d; ++bit) {
                    const VecInt odd = (local >> bit & 1) != 0;
#pragma GCC unroll 64
                    for (int j = 0; j < (1 << (d - bit - 1)); ++j)
                        sel[j] = odd ? sel[2 * j + 1] : sel[2 * j];
                }
                local = local + local + 1 + sel[0];  // right: 2 local + 1, left: 2 local
            }
            // g + kWidth <= feature_stride <= idx_stride: the padding lanes are written too.
            *reinterpret_cast<VecU16MemU*>(idx + g) = __builtin_convertvector(local, VecU16);
        }
    }
}

// Each block's leaves (slice [c0, c1)) are prefetched towards L2 while the block before it is
// added, spread evenly over its images: a batch of 16 faces or more touches nearly every leaf,
// and the 65 MB model does not fit in cache.
void add(const ForestView& fv, const BatchView& bv, long c0, long c1, long tree_block) {
    const long block = tree_block < 1 ? 1 : (tree_block > kMaxTreeBlock ? kMaxTreeBlock : tree_block);
    const long L = fv.num_leaves, stride = fv.leaf_stride;
    for (long t0 = 0; t0 < fv.num_trees; t0 += block) {
        const long count = fv.num_trees - t0 < block ? fv.num_trees - t0 : block;
        const long next = fv.num_trees - t0 - count < block ? fv.num_trees - t0 - count : block;
        Prefetcher pf;
        long per_image = 0;
        if (bv.n >= 16 && next > 0) {
            pf = Prefetcher(fv.leaves + (t0 + count) * L * stride, next * L, stride, c0, c1);
            per_image = (pf.lines() + bv.n - 1) / bv.n;
        }
        add_block(fv, bv, t0, count, c0, c1, pf, per_image);
    }
}

void walk(const ForestView& fv, const BatchView& bv, long t0, long t1) {
    // Full trees of up to 32 leaves (dlib's default depth is 4: 16 leaves) walk kWidth images
    // at a time; anything else one image at a time.
    switch (fv.num_leaves) {
        case 2: return walk_vector<1>(fv, bv, t0, t1);
        case 4: return walk_vector<2>(fv, bv, t0, t1);
        case 8: return walk_vector<3>(fv, bv, t0, t1);
        case 16: return walk_vector<4>(fv, bv, t0, t1);
        case 32: return walk_vector<5>(fv, bv, t0, t1);
        default: return walk_scalar(fv, bv, t0, t1);
    }
}

// ---- feature pixels ---------------------------------------------------------------------

constexpr int kLanes = kWidth / 2;  // doubles per vector
typedef float FloatHalf __attribute__((vector_size(kLanes * sizeof(float))));
typedef float FloatHalfMem __attribute__((vector_size(kLanes * sizeof(float)), may_alias, aligned(4)));
typedef double Double __attribute__((vector_size(kLanes * sizeof(double))));
typedef int64_t Mask __attribute__((vector_size(kLanes * sizeof(int64_t))));
typedef int32_t IntHalf __attribute__((vector_size(kLanes * sizeof(int32_t))));
typedef int32_t IntHalfMem __attribute__((vector_size(kLanes * sizeof(int32_t)), may_alias, aligned(4)));

// dlib: point p = tform_to_img(tform * delta + location(shape, anchor)), i.e. in float
// x = (t00 dx + t01 dy) + ax, then in double X = (m00 x + m01 y) + b0, then p.x =
// long(floor(X + 0.5)); the pixel is used when 0 <= p.x <= cols - 1 (and likewise for y).
// floor(X + 0.5) lies in [0, cols - 1] exactly when 0 <= X + 0.5 < cols, and there it equals
// the truncation, so no floor is needed (NaN and out-of-range values fail the test, as in dlib).
void pixels(const FeatureView& fv, const PixelMap& pm, const float* shape, int32_t* xs,
            int32_t* ys) {
    // Everything in locals: the may_alias stores below could otherwise alias them.
    const int32_t* __restrict anchor2 = fv.anchor2;
    const float* __restrict fdx = fv.dx;
    const float* __restrict fdy = fv.dy;
    const long num = fv.num;
    const float t00 = pm.t00, t01 = pm.t01, t10 = pm.t10, t11 = pm.t11;
    const double m00 = pm.m00, m01 = pm.m01, m10 = pm.m10, m11 = pm.m11, b0 = pm.b0, b1 = pm.b1;
    const double cols = pm.cols, rows = pm.rows;
    long i = 0;
    for (; i + kLanes <= num; i += kLanes) {
        FloatHalf ax, ay;
        for (int l = 0; l < kLanes; ++l) {
            const float* p = shape + anchor2[i + l];
            ax[l] = p[0];
            ay[l] = p[1];
        }
        const FloatHalf dx = *reinterpret_cast<const FloatHalfMem*>(fdx + i);
        const FloatHalf dy = *reinterpret_cast<const FloatHalfMem*>(fdy + i);
        const FloatHalf x = (t00 * dx + t01 * dy) + ax;
        const FloatHalf y = (t10 * dx + t11 * dy) + ay;
        const Double xd = __builtin_convertvector(x, Double);
        const Double yd = __builtin_convertvector(y, Double);
        Double X = (m00 * xd + m01 * yd) + b0 + 0.5;
        Double Y = (m10 * xd + m11 * yd) + b1 + 0.5;
        const Mask in = (X >= 0.0) & (X < cols) & (Y >= 0.0) & (Y < rows);
        const Double zero = {};
        X = in ? X : zero;
        Y = in ? Y : zero;
        const IntHalf in32 = __builtin_convertvector(in, IntHalf);  // -1 inside, 0 outside
        const IntHalf px = __builtin_convertvector(X, IntHalf);
        const IntHalf py = __builtin_convertvector(Y, IntHalf);
        *reinterpret_cast<IntHalfMem*>(xs + i) = (px & in32) | ~in32;  // -1 outside
        *reinterpret_cast<IntHalfMem*>(ys + i) = py & in32;
    }
    for (; i < num; ++i) {
        const float dx = fdx[i], dy = fdy[i];
        const float x = (t00 * dx + t01 * dy) + shape[anchor2[i]];
        const float y = (t10 * dx + t11 * dy) + shape[anchor2[i] + 1];
        const double xd = x, yd = y;
        const double X = (m00 * xd + m01 * yd) + b0 + 0.5;
        const double Y = (m10 * xd + m11 * yd) + b1 + 0.5;
        const bool in = X >= 0.0 && X < cols && Y >= 0.0 && Y < rows;
        xs[i] = in ? static_cast<int32_t>(X) : -1;
        ys[i] = in ? static_cast<int32_t>(Y) : 0;
    }
}

}  // namespace

extern const Kernels FF_TABLE = {walk, add, pixels};

}  // namespace facefill
