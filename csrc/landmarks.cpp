#include "landmarks.h"

#include <algorithm>
#include <cmath>
#include <exception>
#include <fstream>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <thread>

#include <dlib/image_processing/frontal_face_detector.h>
#include <dlib/image_transforms/assign_image.h>
#include <dlib/serialize.h>

namespace facefill {

// A non-owning view of caller memory that implements dlib's generic image interface.
template <typename Pixel>
struct RawImage {
    const uint8_t* data;
    long rows, cols;
};

template <typename Pixel>
long num_rows(const RawImage<Pixel>& img) { return img.rows; }
template <typename Pixel>
long num_columns(const RawImage<Pixel>& img) { return img.cols; }
template <typename Pixel>
const void* image_data(const RawImage<Pixel>& img) { return img.data; }
template <typename Pixel>
long width_step(const RawImage<Pixel>& img) { return img.cols * static_cast<long>(sizeof(Pixel)); }

}  // namespace facefill

namespace dlib {
template <typename Pixel>
struct image_traits<facefill::RawImage<Pixel>> {
    typedef Pixel pixel_type;
};
}  // namespace dlib

namespace facefill {

namespace {

template <typename Pixel>
RawImage<Pixel> image_at(const ImageBatch& b, long i) {
    const long stride = b.height * b.width * b.channels;
    return RawImage<Pixel>{b.data + i * stride, b.height, b.width};
}

dlib::rectangle to_rect(const std::vector<Box>& boxes, long i) {
    const Box& b = boxes.size() == 1 ? boxes[0] : boxes[static_cast<size_t>(i)];
    return dlib::rectangle(b.left, b.top, b.right, b.bottom);
}

int resolve_threads(int num_threads) {
    if (num_threads > 0) return num_threads;
    const unsigned hw = std::thread::hardware_concurrency();
    return hw == 0 ? 1 : static_cast<int>(hw);
}

constexpr long kTreeBlock = 8;

// shape += leaf[0]; shape += leaf[1]; ... element by element, in tree order: the same float
// additions, in the same order, as dlib's `current_shape += leaf` per tree, so the result is
// bit-identical; the running sum of 8 elements stays in registers across the block.
inline void add_leaves(float* __restrict shape, const float* const* __restrict leaves, long count,
                       long dim) {
    long j = 0;
    for (; j + 8 <= dim; j += 8) {
        float acc[8];
        for (int e = 0; e < 8; ++e) acc[e] = shape[j + e];
        for (long k = 0; k < count; ++k) {
            const float* __restrict l = leaves[k] + j;
            for (int e = 0; e < 8; ++e) acc[e] += l[e];
        }
        for (int e = 0; e < 8; ++e) shape[j + e] = acc[e];
    }
    for (; j < dim; ++j)
        for (long k = 0; k < count; ++k) shape[j] += leaves[k][j];
}

}  // namespace

void parallel_for(long n, int num_threads, const std::function<void(long, long)>& fn) {
    if (n <= 0) return;
    const long workers = std::min<long>(resolve_threads(num_threads), n);
    if (workers == 1) {
        fn(0, n);
        return;
    }
    std::exception_ptr first_error;
    std::mutex error_mutex;
    std::vector<std::thread> threads;
    threads.reserve(static_cast<size_t>(workers));
    const long chunk = (n + workers - 1) / workers;
    for (long w = 0; w < workers; ++w) {
        const long begin = w * chunk, end = std::min(n, begin + chunk);
        if (begin >= end) break;
        threads.emplace_back([&, begin, end] {
            try {
                fn(begin, end);
            } catch (...) {
                std::lock_guard<std::mutex> lock(error_mutex);
                if (!first_error) first_error = std::current_exception();
            }
        });
    }
    for (auto& t : threads) t.join();
    if (first_error) std::rethrow_exception(first_error);
}

ShapeModel::ShapeModel(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("cannot open shape predictor model file: " + path);
    // dlib's shape_predictor serialization: version, initial_shape, forests, anchor_idx, deltas.
    int version = 0;
    std::vector<std::vector<dlib::impl::regression_tree>> forests;
    std::vector<std::vector<unsigned long>> anchor_idx;
    std::vector<std::vector<dlib::vector<float, 2>>> deltas;
    try {
        dlib::deserialize(version, in);
        if (version != 1)
            throw std::runtime_error("unexpected shape_predictor version " +
                                     std::to_string(version));
        dlib::deserialize(initial_shape_, in);
        dlib::deserialize(forests, in);
        dlib::deserialize(anchor_idx, in);
        dlib::deserialize(deltas, in);
        in.clear();
        in.seekg(0);
        dlib::deserialize(sp_, in);
    } catch (const std::exception& e) {
        throw std::runtime_error("corrupt or unsupported shape predictor model file " + path +
                                 ": " + e.what());
    }
    const long dim = static_cast<long>(initial_shape_.size());
    if (dim == 0 || dim % 2 != 0 || forests.size() != anchor_idx.size() ||
        forests.size() != deltas.size())
        throw std::runtime_error("corrupt shape predictor model file " + path +
                                 ": inconsistent sizes");
    cascades_.resize(forests.size());
    for (size_t c = 0; c < forests.size(); ++c) {
        Cascade& cas = cascades_[c];
        cas.anchor_idx = anchor_idx[c];
        cas.deltas = deltas[c];
        const auto& trees = forests[c];
        if (cas.anchor_idx.size() != cas.deltas.size())
            throw std::runtime_error("corrupt shape predictor model file " + path +
                                     ": anchor/delta size mismatch");
        for (unsigned long a : cas.anchor_idx)
            if (static_cast<long>(a) >= dim / 2)
                throw std::runtime_error("corrupt shape predictor model file " + path +
                                         ": anchor index out of range");
        cas.num_trees = static_cast<long>(trees.size());
        cas.num_splits = trees.empty() ? 0 : static_cast<long>(trees[0].splits.size());
        cas.num_leaves = trees.empty() ? 0 : static_cast<long>(trees[0].leaf_values.size());
        for (const auto& t : trees) {
            if (static_cast<long>(t.splits.size()) != cas.num_splits ||
                static_cast<long>(t.leaf_values.size()) != cas.num_leaves ||
                cas.num_leaves != cas.num_splits + 1)
                throw std::runtime_error("corrupt shape predictor model file " + path +
                                         ": trees of unequal shape");
            for (const auto& s : t.splits) {
                if (s.idx1 >= cas.deltas.size() || s.idx2 >= cas.deltas.size())
                    throw std::runtime_error("corrupt shape predictor model file " + path +
                                             ": split feature index out of range");
                cas.split_idx1.push_back(static_cast<uint32_t>(s.idx1));
                cas.split_idx2.push_back(static_cast<uint32_t>(s.idx2));
                cas.split_thresh.push_back(s.thresh);
            }
            for (const auto& leaf : t.leaf_values) {
                if (leaf.size() != dim)
                    throw std::runtime_error("corrupt shape predictor model file " + path +
                                             ": leaf of wrong length");
                cas.leaves.insert(cas.leaves.end(), leaf.begin(), leaf.end());
            }
        }
    }
}

template <typename Pixel>
void ShapeModel::predict_range(const ImageBatch& images, const std::vector<Box>& boxes,
                               bool rounded, long begin, long end, float* out) const {
    const long n = end - begin;
    const long dim = static_cast<long>(initial_shape_.size());
    std::vector<dlib::matrix<float, 0, 1>> shapes(static_cast<size_t>(n), initial_shape_);
    std::vector<std::vector<float>> features(static_cast<size_t>(n));
    std::vector<const float*> leaf_ptr(static_cast<size_t>(n * kTreeBlock));
    std::vector<RawImage<Pixel>> views;
    std::vector<dlib::rectangle> rects;
    for (long i = begin; i < end; ++i) {
        views.push_back(image_at<Pixel>(images, i));
        rects.push_back(to_rect(boxes, i));
    }
    for (const Cascade& cas : cascades_) {
        // 1. Feature pixels of every image at this level (dlib's own routine).
        for (long b = 0; b < n; ++b)
            dlib::impl::extract_feature_pixel_values(views[b], rects[b], shapes[b], initial_shape_,
                                                     cas.anchor_idx, cas.deltas, features[b]);
        // 2. Trees in dlib's order; each tree updates every image while its leaves are in cache.
        //    Per image the leaves are added in dlib's order, so sums are bit-identical.
        //    Blocks of kTreeBlock trees: the block's leaves stay in cache for the whole batch,
        //    and each image's shape is read and written once per block instead of once per tree.
        const long S = cas.num_splits, L = cas.num_leaves;
        for (long t0 = 0; t0 < cas.num_trees; t0 += kTreeBlock) {
            const long tb = std::min(kTreeBlock, cas.num_trees - t0);
            for (long b = 0; b < n; ++b) {
                const float* f = features[b].data();
                for (long k = 0; k < tb; ++k) {
                    const long t = t0 + k;
                    const uint32_t* i1 = cas.split_idx1.data() + t * S;
                    const uint32_t* i2 = cas.split_idx2.data() + t * S;
                    const float* th = cas.split_thresh.data() + t * S;
                    long node = 0;
                    while (node < S) node = 2 * node + 2 - (f[i1[node]] - f[i2[node]] > th[node]);
                    leaf_ptr[b * kTreeBlock + k] = cas.leaves.data() + (t * L + node - S) * dim;
                }
            }
            for (long b = 0; b < n; ++b)
                add_leaves(&shapes[b](0), &leaf_ptr[b * kTreeBlock], tb, dim);
        }
    }
    const long parts = dim / 2;
    for (long b = 0; b < n; ++b) {
        const dlib::point_transform_affine tform_to_img = dlib::impl::unnormalizing_tform(rects[b]);
        float* o = out + (begin + b) * parts * 2;
        for (long p = 0; p < parts; ++p) {
            const dlib::vector<double, 2> q = tform_to_img(dlib::impl::location(shapes[b], p));
            if (rounded) {
                const dlib::point r = q;  // dlib rounds with floor(v + 0.5)
                o[2 * p] = static_cast<float>(r.x());
                o[2 * p + 1] = static_cast<float>(r.y());
            } else {
                o[2 * p] = static_cast<float>(q.x());
                o[2 * p + 1] = static_cast<float>(q.y());
            }
        }
    }
}

template <typename Pixel>
void ShapeModel::predict_dlib_range(const ImageBatch& images, const std::vector<Box>& boxes,
                                    long begin, long end, float* out) const {
    const long parts = num_parts();
    for (long i = begin; i < end; ++i) {
        const dlib::full_object_detection det = sp_(image_at<Pixel>(images, i), to_rect(boxes, i));
        float* o = out + i * parts * 2;
        for (long p = 0; p < parts; ++p) {
            o[2 * p] = static_cast<float>(det.part(p).x());
            o[2 * p + 1] = static_cast<float>(det.part(p).y());
        }
    }
}

void ShapeModel::predict(const ImageBatch& images, const std::vector<Box>& boxes, bool rounded,
                         int num_threads, float* out) const {
    parallel_for(images.n, num_threads, [&](long begin, long end) {
        if (images.channels == 3)
            predict_range<dlib::rgb_pixel>(images, boxes, rounded, begin, end, out);
        else
            predict_range<unsigned char>(images, boxes, rounded, begin, end, out);
    });
}

void ShapeModel::predict_dlib(const ImageBatch& images, const std::vector<Box>& boxes,
                              int num_threads, float* out) const {
    parallel_for(images.n, num_threads, [&](long begin, long end) {
        if (images.channels == 3)
            predict_dlib_range<dlib::rgb_pixel>(images, boxes, begin, end, out);
        else
            predict_dlib_range<unsigned char>(images, boxes, begin, end, out);
    });
}

void landmark_penalty(const float* pred, long n, long num_parts, const float* ref,
                      float margin_px, float step, double* out) {
    for (long i = 0; i < n; ++i) {
        const float* p = pred + i * num_parts * 2;
        double total = 0.0;
        for (long k = 0; k < 2 * num_parts; ++k)
            if (std::fabs(p[k] - ref[k]) > margin_px) total += step;
        out[i] = total;
    }
}

void detect_faces(const ImageBatch& images, long* out, uint8_t* found) {
    dlib::frontal_face_detector detector = dlib::get_frontal_face_detector();
    for (long i = 0; i < images.n; ++i) {
        std::vector<dlib::rectangle> dets;
        if (images.channels == 3)
            dets = detector(image_at<dlib::rgb_pixel>(images, i));
        else
            dets = detector(image_at<unsigned char>(images, i));
        found[i] = dets.empty() ? 0 : 1;
        dlib::rectangle best;
        for (const auto& d : dets)
            if (d.area() > best.area()) best = d;
        out[4 * i] = best.left();
        out[4 * i + 1] = best.top();
        out[4 * i + 2] = best.right();
        out[4 * i + 3] = best.bottom();
    }
}

}  // namespace facefill
