// facefill landmark core: dlib's 68-point shape predictor evaluated batch-major.
//
// Plain C++ on dlib; no Python here (bindings.cpp is the pybind11 module).
// Images: uint8, C-contiguous, (N, H, W, C) with C = 3 (RGB) or 1 (gray).
// Points: float (N, P, 2), (x, y) in pixels.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <dlib/image_processing/shape_predictor.h>

#include "kernels.h"

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

// Which code adds the leaves. kAuto: the widest instruction set this CPU (and OS) supports.
// kReference: image by image with dlib's own feature extraction and dlib matrix additions, the
// plain algorithm the batch paths are tested against.
enum class Isa { kAuto, kReference, kSse2, kAvx2, kAvx512 };

// "auto", "reference", "sse2", "avx2", "avx512" -> Isa; std::invalid_argument on other names.
Isa parse_isa(const std::string& name);
std::string isa_name(Isa isa);
// Whether this CPU and OS can run `isa` (kAuto and kReference: always).
bool isa_supported(Isa isa);
// The batch paths this machine can run, widest first ("avx512", "avx2", "sse2").
std::vector<std::string> supported_isas();
// The kernels for `isa` (kAuto, kReference: the widest supported); std::invalid_argument naming
// the supported ones when this CPU cannot run it.
const Kernels& kernels_for(Isa isa);

// 64-byte aligned floats, zero-filled.
struct FreeDeleter {
    void operator()(void* p) const { std::free(p); }
};
using AlignedFloats = std::unique_ptr<float[], FreeDeleter>;
AlignedFloats aligned_floats(size_t count);

// Threads that run one function together and meet at barriers (run_team).
class Team {
   public:
    explicit Team(int size) : size_(size) {}
    int size() const { return size_; }
    // Waits until every member arrived (spinning briefly, then yielding the core). Throws
    // Team::Aborted when another member failed, so that no member waits forever.
    void barrier();
    struct Aborted {};

   private:
    friend void run_team(int, long, const std::function<void(Team&, int)>&);
    const int size_;
    std::atomic<int> arrived_{0};
    std::atomic<unsigned> generation_{0};
    std::atomic<bool> failed_{false};
};

// Runs fn(team, rank) for rank = 0 .. members - 1, rank 0 on the calling thread; members =
// min(num_threads (<= 0: the CPUs this process may use), max_members): a member has barriers to
// pass even with no work. The first exception thrown by a member is rethrown after all joined.
// Built with OpenMP (Linux), the members are an OpenMP team: in a process with torch, torch's
// own thread pool, so the batch does not compete with torch's spinning workers for the cores;
// the team is as large as the runtime grants. Otherwise std::threads.
void run_team(int num_threads, long max_members, const std::function<void(Team&, int)>& fn);


// One cascade level, packed for batch-major evaluation (layout in kernels.h).
struct Cascade {
    std::vector<unsigned long> anchor_idx;       // (F,)
    std::vector<dlib::vector<float, 2>> deltas;  // (F,)
    long num_trees = 0, num_splits = 0, num_leaves = 0;
    std::vector<Split> splits;  // (T * S,)
    AlignedFloats leaves;       // (T * L * leaf_stride,)
    std::vector<int32_t> anchor2;   // (F,) 2 * anchor_idx
    std::vector<float> dx, dy;      // (F,) deltas
    ForestView forest_view(long dim, long leaf_stride) const;
    FeatureView feature_view() const;
};

class ShapeModel {
   public:
    // Loads dlib's serialized shape_predictor with dlib's own deserializers, packing it one
    // cascade at a time (model_load.cpp). Throws std::runtime_error naming the path on a missing
    // or corrupt file.
    explicit ShapeModel(const std::string& path);
    ShapeModel(const ShapeModel&) = delete;
    ShapeModel& operator=(const ShapeModel&) = delete;

    long num_parts() const { return static_cast<long>(initial_shape_.size() / 2); }
    long dim() const { return static_cast<long>(initial_shape_.size()); }
    long leaf_stride() const { return leaf_stride_; }
    const dlib::matrix<float, 0, 1>& initial_shape() const { return initial_shape_; }
    const std::vector<Cascade>& cascades() const { return cascades_; }

    // Batch-major prediction. out: (N, P, 2) floats. If rounded, points are rounded to whole
    // pixels exactly as dlib's full_object_detection does; otherwise the float positions.
    // boxes: one per image, or a single box shared by all. num_threads <= 0: all cores.
    // isa: which code adds the leaves (all give the same bits); std::invalid_argument when this
    // CPU cannot run it.
    void predict(const ImageBatch& images, const std::vector<Box>& boxes, bool rounded,
                 int num_threads, Isa isa, float* out) const;

    // dlib's own per-image call (dlib::shape_predictor::operator()), rounded points.
    // The reference implementation for tests and the no-batching benchmark line. The first call
    // loads dlib's own copy of the model from the file (about 100 MB for the 68-point model).
    void predict_dlib(const ImageBatch& images, const std::vector<Box>& boxes, int num_threads,
                      float* out) const;

   private:
    // Buffers a team shares in predict.
    struct BatchBuffers {
        long chunks = 0;
        size_t max_features = 0;
        AlignedFloats shapes, features;
        std::unique_ptr<uint16_t[], FreeDeleter> leaf_idx;
    };
    template <typename Pixel>
    void predict_member(const ImageBatch& images, const std::vector<Box>& boxes, bool rounded,
                        const Kernels& kernels, const BatchBuffers& buf, Team& team, int rank,
                        float* out) const;
    template <typename Pixel>
    void predict_reference_range(const ImageBatch& images, const std::vector<Box>& boxes,
                                 bool rounded, long begin, long end, float* out) const;
    template <typename Pixel>
    void predict_dlib_range(const ImageBatch& images, const std::vector<Box>& boxes, long begin,
                            long end, float* out) const;

    // dlib's shape_predictor, read from path_ on first use (thread-safe): only predict_dlib
    // needs it, and it would double the memory the model takes.
    const dlib::shape_predictor& dlib_model() const;

    std::string path_;
    mutable std::once_flag dlib_once_;
    mutable std::unique_ptr<dlib::shape_predictor> dlib_sp_;
    dlib::matrix<float, 0, 1> initial_shape_;
    std::vector<dlib::vector<float, 2>> initial_points_;  // initial_shape_ as points
    long leaf_stride_ = 0;
    std::vector<Cascade> cascades_;
};

// The thesis's landmark penalty (eq. 17-18): for each point, `step` when |x - x_ref| > margin
// and another `step` when |y - y_ref| > margin. pred: (N, P, 2), ref: (P, 2); out: (N,).
// dlib's grey intensity of the uint8 RGB form of float images in [-1, 1], (N, 3, H, W) planes:
// per channel rint((x + 1) * 127.5) (half to even) clipped to [0, 255], as
// facefill_core.imaging.to_uint8_nhwc; then (r + g + b) / 3 as dlib's get_pixel_intensity.
// holes (N, H, W) or null: where > 0.5 the pixel is the damaged input's fill, x = 0 (128).
// out: (N, H, W).
void intensity_u8(const float* images, const float* holes, long n, long hw, uint8_t* out);

void landmark_penalty(const float* pred, long n, long num_parts, const float* ref,
                      float margin_px, float step, double* out);

// dlib's HOG frontal face detector on each image (no upsampling; upscale the images first).
// out: (N, 4) boxes (left, top, right, bottom) of the largest detection; found[i] = 0 when none.
void detect_faces(const ImageBatch& images, long* out, uint8_t* found);

// The similarity transform the batch computes between two point sets (dlib_own = false) or
// dlib's find_similarity_transform (true); for the bit-for-bit test of the two.
dlib::point_transform_affine similarity_transform_for_tests(
    const std::vector<dlib::vector<float, 2>>& from_points,
    const std::vector<dlib::vector<float, 2>>& to_points, bool dlib_own);

// Runs fn(begin, end) over [0, n) split in contiguous chunks on up to num_threads threads.
// The first exception thrown by a worker is rethrown after all threads joined.
void parallel_for(long n, int num_threads, const std::function<void(long, long)>& fn);

}  // namespace facefill
