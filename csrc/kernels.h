// The batch's hot loops, compiled once per instruction set (kernels_sse2.cpp, kernels_avx2.cpp,
// kernels_avx512.cpp from kernels_impl.h) and picked at run time (dispatch.cpp).
//
// No dlib and no standard-library templates here: the per-ISA translation units are compiled for
// wider instruction sets than the rest of the module, so they must not emit inline functions
// that the linker could pick for the portable code.
#pragma once

#include <cstdint>

namespace facefill {

// One split node: go left when features[idx1] - features[idx2] > thresh (dlib's test).
struct Split {
    uint16_t idx1, idx2;
    float thresh;
};

// Leaf rows and shapes are padded to a multiple of kLeafAlign floats and start on 64-byte
// boundaries, so a vector of any width up to 16 floats loads whole and aligned; the padding
// holds zeros, and adding it changes no real coordinate.
constexpr long kLeafAlign = 16;

// One cascade level's trees, read-only. Tree t's splits: splits[t * num_splits, ...) in dlib's
// heap order (children of node i are 2i + 1 and 2i + 2); leaf l of tree t starts at
// leaves[(t * num_leaves + l) * leaf_stride].
struct ForestView {
    const Split* splits = nullptr;
    const float* leaves = nullptr;
    long num_trees = 0, num_splits = 0, num_leaves = 0;
    long dim = 0;          // 2 * points
    long leaf_stride = 0;  // dim rounded up to kLeafAlign
};

// Most trees added per image at a time (Kernels::add's tree_block).
constexpr long kMaxTreeBlock = 32;
// The batch's feature rows are padded to a multiple of this many images (the widest vector).
constexpr long kBatchAlign = 16;

// The batch at one level: n images; their feature values, batch-major (feature i of image b at
// features[i * feature_stride + b], feature_stride >= n rounded up to 16, the padding finite);
// their running shapes (shape b at shapes[b * shape_stride], 64-byte aligned, padding zero);
// and the leaf each tree reaches for each image: leaf_idx[t * idx_stride + b], idx_stride >=
// feature_stride.
struct BatchView {
    const float* features = nullptr;
    long feature_stride = 0;
    float* shapes = nullptr;
    long shape_stride = 0;
    long n = 0;
    uint16_t* leaf_idx = nullptr;
    long idx_stride = 0;
};

// One cascade level's feature pixels, as arrays: feature i sits at delta (dx[i], dy[i]) from
// shape point anchor2[i] / 2 (anchor2 = 2 * dlib's anchor index).
struct FeatureView {
    const int32_t* anchor2 = nullptr;
    const float* dx = nullptr;
    const float* dy = nullptr;
    long num = 0;
};

// One image at one level: dlib's shape-to-shape similarity (as float, dlib's matrix_cast) and
// its normalized-to-image affine transform (double), and the image size.
struct PixelMap {
    float t00 = 1, t01 = 0, t10 = 0, t11 = 1;
    double m00 = 1, m01 = 0, m10 = 0, m11 = 1, b0 = 0, b1 = 0;
    double cols = 0, rows = 0;
};

// A cascade level runs in two steps that threads can share: walk (trees split between
// threads: leaf indices depend only on the level's features), then add (coordinates split
// between threads: each adds its slice of every leaf, so the leaves stream from memory once
// per batch whatever the thread count).
struct Kernels {
    // leaf_idx[t * idx_stride + b] = the leaf dlib's walk of tree t reaches for image b, for
    // t in [t0, t1) and every image (padding lanes up to feature_stride may be written too).
    void (*walk)(const ForestView& forest, const BatchView& batch, long t0, long t1);
    // shape_b[c] += leaf(tree t, image b)[c] for t = 0, 1, ..., num_trees - 1 in that order, for
    // every image b and coordinate c in [c0, c1) (c0 a multiple of kLeafAlign, c1 <=
    // leaf_stride): per coordinate the same float additions in the same order as dlib's
    // `current_shape += tree(features)`, so the result is bit-identical on every instruction set
    // and for any split of the coordinates. tree_block trees are added per image at a time (the
    // running slice stays in registers across the block; the block's leaves stay in cache across
    // the batch).
    void (*add)(const ForestView& forest, const BatchView& batch, long c0, long c1,
                long tree_block);
    // The pixel of each feature, as dlib's extract_feature_pixel_values computes it:
    // p = tform_to_img(tform * delta + shape point), rounded with floor(v + 0.5); x[i], y[i] =
    // p when it lies in the image, else x[i] = -1. Same float and double operations, same order.
    void (*pixels)(const FeatureView& features, const PixelMap& map, const float* shape,
                   int32_t* x, int32_t* y);
};

extern const Kernels kKernelsSse2, kKernelsAvx2, kKernelsAvx512;

}  // namespace facefill
