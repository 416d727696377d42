// facefill landmark core: dlib's 68-point shape predictor evaluated batch-major.
//
// Plain C++ on dlib; no Python here (bindings.cpp is the pybind11 module).
// Images: uint8, C-contiguous, (N, H, W, C) with C = 3 (RGB) or 1 (gray).
// Points: float (N, P, 2), (x, y) in pixels.
#pragma once

#include <cstdint>
#include <string>
#include <functional>
#include <vector>

#include <dlib/image_processing/shape_predictor.h>

namespace facefill {

// One face rectangle, inclusive corners as dlib's rectangle(left, top, right, bottom).
struct Box {
    long left, top, right, bottom;
};

// A read-only batch of images in caller memory.
struct ImageBatch {
    const uint8_t* data = nullptr;
    long n = 0, height = 0, width = 0, channels = 3;
};

// One cascade level, packed for batch-major evaluation.
struct Cascade {
    std::vector<unsigned long> anchor_idx;         // (F,)
    std::vector<dlib::vector<float, 2>> deltas;    // (F,)
    long num_trees = 0, num_splits = 0, num_leaves = 0;
    std::vector<uint32_t> split_idx1, split_idx2;  // (T * S,)
    std::vector<float> split_thresh;               // (T * S,)
    std::vector<float> leaves;                     // (T * L * D,), D = 2 * num_parts
};

class ShapeModel {
   public:
    // Loads dlib's serialized shape_predictor with dlib's own deserializers.
    // Throws std::runtime_error naming the path on a missing or corrupt file.
    explicit ShapeModel(const std::string& path);

    long num_parts() const { return static_cast<long>(initial_shape_.size() / 2); }
    const dlib::matrix<float, 0, 1>& initial_shape() const { return initial_shape_; }
    const std::vector<Cascade>& cascades() const { return cascades_; }

    // Batch-major prediction. out: (N, P, 2) floats. If rounded, points are rounded to whole
    // pixels exactly as dlib's full_object_detection does; otherwise the float positions.
    // boxes: one per image, or a single box shared by all. num_threads <= 0: all cores.
    void predict(const ImageBatch& images, const std::vector<Box>& boxes, bool rounded,
                 int num_threads, float* out) const;

    // dlib's own per-image call (dlib::shape_predictor::operator()), rounded points.
    // The reference implementation for tests and the no-batching benchmark line.
    void predict_dlib(const ImageBatch& images, const std::vector<Box>& boxes, int num_threads,
                      float* out) const;

   private:
    template <typename Pixel>
    void predict_range(const ImageBatch& images, const std::vector<Box>& boxes, bool rounded,
                       long begin, long end, float* out) const;
    template <typename Pixel>
    void predict_dlib_range(const ImageBatch& images, const std::vector<Box>& boxes, long begin,
                            long end, float* out) const;

    dlib::shape_predictor sp_;
    dlib::matrix<float, 0, 1> initial_shape_;
    std::vector<Cascade> cascades_;
};

// The thesis's landmark penalty (eq. 17-18): for each point, `step` when |x - x_ref| > margin
// and another `step` when |y - y_ref| > margin. pred: (N, P, 2), ref: (P, 2); out: (N,).
void landmark_penalty(const float* pred, long n, long num_parts, const float* ref,
                      float margin_px, float step, double* out);

// dlib's HOG frontal face detector on each image (no upsampling; upscale the images first).
// out: (N, 4) boxes (left, top, right, bottom) of the largest detection; found[i] = 0 when none.
void detect_faces(const ImageBatch& images, long* out, uint8_t* found);

// Runs fn(begin, end) over [0, n) split in contiguous chunks on up to num_threads threads.
// The first exception thrown by a worker is rethrown after all threads joined.
void parallel_for(long n, int num_threads, const std::function<void(long, long)>& fn);

}  // namespace facefill
