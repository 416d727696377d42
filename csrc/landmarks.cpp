#include "landmarks.h"

#include <algorithm>
#include <optional>
#include <stdexcept>

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

// Trees walked and added per image at a time (kernels.h): the running shape stays in registers
// across the block, the block's leaves (12 x 16 leaves x 576 bytes = 110 KB) in L2 across the
// batch, and so do the next block's as they stream in. Measured on Zen 3 (512 KB L2), 64 and
// 256 faces, 1 and 2 threads, blocks of 8 to 32: 12 is within a few percent of the best in
// each case (8 on one thread at 64 faces, 16 on two).
constexpr long kTreeBlock = 12;

// Images per batch-major pass: 256 faces' features (500 x 256 floats) and shapes stay in L2;
// each pass streams the leaves (65 MB for the 68-point model) once, about 250 KB per face.
constexpr long kChunk = 256;
constexpr long kImagesPerMember = 8;  // smaller batches use fewer threads (a member per 8 images)

// [begin, end) of `total` items for member `rank` of `members`: contiguous shares of whole
// groups of `align` items, as equal as the groups allow.
struct Range {
    long begin, end;
};
Range share(long total, int members, int rank, long align) {
    const long groups = (total + align - 1) / align;
    return {std::min(total, groups * rank / members * align),
            std::min(total, groups * (rank + 1) / members * align)};
}

#ifdef DLIB_USE_LAPACK
// dlib's svd(cov, u, d, v) of a 2 x 2 matrix where dlib uses LAPACK (Debian's dlib does):
// svd3 -> svd4(SVD_SKINNY_U) -> lapack::gesvd('S', 'A') on a row-major copy, which calls
// dgesvd('A', 'S') on its transpose twice: a workspace query, then the decomposition with a
// workspace of the queried size. The query's answer depends only on the sizes, so it is asked
// once; the decomposition is the same call with the same arguments, hence the same bits. Half
// of dlib's LAPACK calls and all of its heap allocations go (they were about a sixth of a
// face's time).
dlib::lapack::integer gesvd_2x2_lwork() {
    static const dlib::lapack::integer lwork = [] {
        double a[4] = {1, 0, 0, 1}, s[2], u[4], vt[4], size = 1;
        dlib::lapack::binding::gesvd('A', 'S', 2, 2, a, 2, s, u, 2, vt, 2, &size, -1);
        return static_cast<dlib::lapack::integer>(static_cast<long>(size));
    }();
    return lwork;
}

void svd_2x2(const dlib::matrix<double, 2, 2>& cov, dlib::matrix<double, 2, 2>& u,
             dlib::matrix<double, 2, 2>& d, dlib::matrix<double, 2, 2>& v) {
    const dlib::lapack::integer lwork = gesvd_2x2_lwork();
    thread_local std::vector<double> work;
    if (work.size() < static_cast<size_t>(lwork)) work.resize(static_cast<size_t>(lwork));
    double a[4] = {cov(0, 0), cov(0, 1), cov(1, 0), cov(1, 1)};  // the copy's row-major memory
    double s[2] = {0, 0}, ul[4] = {0, 0, 0, 0}, vtl[4] = {0, 0, 0, 0};
    dlib::lapack::binding::gesvd('A', 'S', 2, 2, a, 2, s, ul, 2, vtl, 2, work.data(), lwork);
    for (long r = 0; r < 2; ++r)
        for (long c = 0; c < 2; ++c) {
            u(r, c) = vtl[2 * r + c];  // dlib's u holds LAPACK's VT, row-major
            v(r, c) = ul[2 * c + r];   // v = trans(vtemp), vtemp holding LAPACK's U
            d(r, c) = r == c ? s[r] : 0.0;
        }
}

// dlib's find_similarity_transform (geometry/point_transforms.h, Umeyama's equations 34 to 43)
// line for line, with svd_2x2 for its svd call.
dlib::point_transform_affine similarity_transform(const std::vector<dlib::vector<float, 2>>& from_points,
                                                  const std::vector<dlib::vector<float, 2>>& to_points) {
    using dlib::matrix;
    dlib::vector<double, 2> mean_from, mean_to;
    double sigma_from = 0, sigma_to = 0;
    matrix<double, 2, 2> cov;
    cov = 0;
    for (unsigned long i = 0; i < from_points.size(); ++i) {
        mean_from += from_points[i];
        mean_to += to_points[i];
    }
    mean_from /= from_points.size();
    mean_to /= from_points.size();
    for (unsigned long i = 0; i < from_points.size(); ++i) {
        sigma_from += dlib::length_squared(from_points[i] - mean_from);
        sigma_to += dlib::length_squared(to_points[i] - mean_to);
        cov += (to_points[i] - mean_to) * dlib::trans(from_points[i] - mean_from);
    }
    sigma_from /= from_points.size();
    sigma_to /= from_points.size();
    cov /= from_points.size();
    matrix<double, 2, 2> u, v, s, d;
    svd_2x2(cov, u, d, v);
    s = dlib::identity_matrix(cov);
    if (dlib::det(cov) < 0 || (dlib::det(cov) == 0 && dlib::det(u) * dlib::det(v) < 0)) {
        if (d(1, 1) < d(0, 0))
            s(1, 1) = -1;
        else
            s(0, 0) = -1;
    }
    matrix<double, 2, 2> r = u * s * dlib::trans(v);
    double c = 1;
    if (sigma_from != 0) c = 1.0 / sigma_from * dlib::trace(d * s);
    dlib::vector<double, 2> t = mean_to - c * r * mean_from;
    return dlib::point_transform_affine(c * r, t);
}
#else
dlib::point_transform_affine similarity_transform(const std::vector<dlib::vector<float, 2>>& from_points,
                                                  const std::vector<dlib::vector<float, 2>>& to_points) {
    return dlib::find_similarity_transform(from_points, to_points);  // dlib's own 2 x 2 SVD
}
#endif

}  // namespace

dlib::point_transform_affine similarity_transform_for_tests(
    const std::vector<dlib::vector<float, 2>>& from_points,
    const std::vector<dlib::vector<float, 2>>& to_points, bool dlib_own) {
    return dlib_own ? dlib::find_similarity_transform(from_points, to_points)
                    : similarity_transform(from_points, to_points);
}

namespace {

// dlib's find_tform_between_shapes(reference_shape, current_shape) (identity for a single
// point), with the point buffers kept by the caller.
dlib::point_transform_affine shape_tform(const float* shape, long parts,
                                         const std::vector<dlib::vector<float, 2>>& from_points,
                                         std::vector<dlib::vector<float, 2>>& to_points) {
    if (parts <= 1) return dlib::point_transform_affine();
    for (long p = 0; p < parts; ++p)
        to_points[static_cast<size_t>(p)] = dlib::vector<float, 2>(shape[2 * p], shape[2 * p + 1]);
    return similarity_transform(from_points, to_points);
}

// The feature pixels of one image at one cascade level: dlib's extract_feature_pixel_values
// (kernels.h says how the positions are computed bit for bit), with the shape transform
// `to_shape` and the image transform given (computed once where dlib recomputes them), no
// per-call allocations. tests/test_landmarks_ext.py checks the results bit for bit against
// dlib's own routine (isa="reference"). out[i * out_stride] = feature i.
template <typename Pixel>
void feature_pixels(const Kernels& kernels, const RawImage<Pixel>& img,
                    const dlib::point_transform_affine& tform_to_img,
                    const dlib::point_transform_affine& to_shape, const float* shape,
                    const Cascade& cas, int32_t* xs, int32_t* ys, float* out, long out_stride) {
    const dlib::matrix<float, 2, 2> tform = dlib::matrix_cast<float>(to_shape.get_m());
    const dlib::matrix<double, 2, 2>& m = tform_to_img.get_m();
    PixelMap map;
    map.t00 = tform(0, 0), map.t01 = tform(0, 1), map.t10 = tform(1, 0), map.t11 = tform(1, 1);
    map.m00 = m(0, 0), map.m01 = m(0, 1), map.m10 = m(1, 0), map.m11 = m(1, 1);
    map.b0 = tform_to_img.get_b().x(), map.b1 = tform_to_img.get_b().y();
    map.cols = static_cast<double>(img.cols), map.rows = static_cast<double>(img.rows);
    const FeatureView fv = cas.feature_view();
    kernels.pixels(fv, map, shape, xs, ys);
    // Locals and a branch-free read (an outside feature, x = -1 and y = 0, reads pixel 0 and
    // keeps 0): the stores cannot alias the image's size, and no branch mispredicts.
    const Pixel* __restrict pix = reinterpret_cast<const Pixel*>(img.data);
    const int32_t* __restrict x = xs;
    const int32_t* __restrict y = ys;
    const long cols = img.cols, num = fv.num;
    for (long i = 0; i < num; ++i) {
        const long at = static_cast<long>(y[i]) * cols + x[i];
        const float v = dlib::get_pixel_intensity(pix[at < 0 ? 0 : at]);
        out[i * out_stride] = x[i] < 0 ? 0.0f : v;
    }
}

// dlib's tree walk (regression_tree::operator()).
long walk_tree(const Split* splits, long num_splits, const float* f) {
    long node = 0;
    while (node < num_splits) {
        const Split& s = splits[node];
        node = f[s.idx1] - f[s.idx2] > s.thresh ? 2 * node + 1 : 2 * node + 2;
    }
    return node - num_splits;
}

void write_points(const dlib::point_transform_affine& tform_to_img, const float* shape, long parts,
                  bool rounded, float* o) {
    for (long p = 0; p < parts; ++p) {
        const dlib::vector<double, 2> q =
            tform_to_img(dlib::vector<float, 2>(shape[2 * p], shape[2 * p + 1]));
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

}  // namespace

// Member `rank` of `team` predicts images [0, images.n) together with the others, chunk by chunk
// (at most kChunk images, sizes as in `chunks`). Per cascade level: (1) feature pixels of the
// member's own images; (2) walk of its share of the trees for every image; (3) additions of its
// share of the coordinates for every image, all trees in order; a barrier after each step. The
// leaves thus stream from memory once per chunk whatever the number of threads, and each
// coordinate gets dlib's additions in dlib's order.
template <typename Pixel>
void ShapeModel::predict_member(const ImageBatch& images, const std::vector<Box>& boxes,
                                bool rounded, const Kernels& kernels, const BatchBuffers& buf,
                                Team& team, int rank, float* out) const {
    const long dim = this->dim(), parts = num_parts(), stride = leaf_stride_;
    const int members = team.size();
    std::vector<int32_t> xs(buf.max_features), ys(buf.max_features);
    std::vector<dlib::vector<float, 2>> to_points(static_cast<size_t>(parts));
    std::vector<RawImage<Pixel>> views;
    std::vector<dlib::point_transform_affine> to_img;
    const Range coords = share(dim, members, rank, kLeafAlign);
    // dlib recomputes the box's transform for every image (a 3 x 3 pseudo-inverse through
    // LAPACK, about 10 us: 15% of a face's time when every face shares one box); the same
    // function of the same box gives the same transform, so a shared box's is computed once.
    std::optional<dlib::point_transform_affine> shared_to_img;
    if (boxes.size() == 1) shared_to_img = dlib::impl::unnormalizing_tform(to_rect(boxes, 0));
    for (long c = 0; c < buf.chunks; ++c) {
        const long begin = images.n * c / buf.chunks, end = images.n * (c + 1) / buf.chunks;
        const long n = end - begin;
        if (c > 0) team.barrier();  // the last chunk's points are written: reuse the buffers
        BatchView batch;
        batch.features = buf.features.get();
        batch.feature_stride = (n + kBatchAlign - 1) / kBatchAlign * kBatchAlign;
        batch.shapes = buf.shapes.get();
        batch.shape_stride = stride;
        batch.n = n;
        batch.leaf_idx = buf.leaf_idx.get();
        batch.idx_stride = (n + 31) / 32 * 32;  // whole 64-byte rows per tree
        // Whole cache lines of feature values per member.
        const Range own = share(n, members, rank, kBatchAlign);
        views.clear();
        to_img.clear();
        for (long b = own.begin; b < own.end; ++b) {
            views.push_back(image_at<Pixel>(images, begin + b));
            to_img.push_back(shared_to_img ? *shared_to_img
                                           : dlib::impl::unnormalizing_tform(to_rect(boxes, begin + b)));
            std::copy(initial_shape_.begin(), initial_shape_.end(), batch.shapes + b * stride);
        }
        for (size_t level = 0; level < cascades_.size(); ++level) {
            const Cascade& cas = cascades_[level];
            // 1. At the first level every shape is the initial shape, so the shape transform is
            //    the same for all (and computed once).
            const dlib::point_transform_affine first =
                level == 0 ? shape_tform(&initial_shape_(0), parts, initial_points_, to_points)
                           : dlib::point_transform_affine();
            for (long b = own.begin; b < own.end; ++b) {
                const float* shape = batch.shapes + b * stride;
                feature_pixels(kernels, views[b - own.begin], to_img[b - own.begin],
                               level == 0 ? first
                                          : shape_tform(shape, parts, initial_points_, to_points),
                               shape, cas, xs.data(), ys.data(), buf.features.get() + b,
                               batch.feature_stride);
            }
            team.barrier();
            // 2. and 3. The level's trees over the batch, in dlib's order per image (kernels.h).
            const ForestView forest = cas.forest_view(dim, stride);
            const Range trees = share(cas.num_trees, members, rank, 1);
            kernels.walk(forest, batch, trees.begin, trees.end);
            team.barrier();
            if (coords.begin < coords.end)
                kernels.add(forest, batch, coords.begin, coords.end, kTreeBlock);
            team.barrier();
        }
        for (long b = own.begin; b < own.end; ++b)
            write_points(to_img[b - own.begin], batch.shapes + b * stride, parts, rounded,
                         out + (begin + b) * parts * 2);
    }
}

template <typename Pixel>
void ShapeModel::predict_reference_range(const ImageBatch& images, const std::vector<Box>& boxes,
                                         bool rounded, long begin, long end, float* out) const {
    const long dim = this->dim(), parts = num_parts();
    std::vector<float> features;
    for (long i = begin; i < end; ++i) {
        // dlib's shape_predictor::operator(), with this model's packed trees.
        const RawImage<Pixel> img = image_at<Pixel>(images, i);
        const dlib::rectangle rect = to_rect(boxes, i);
        dlib::matrix<float, 0, 1> shape = initial_shape_;
        for (const Cascade& cas : cascades_) {
            dlib::impl::extract_feature_pixel_values(img, rect, shape, initial_shape_,
                                                     cas.anchor_idx, cas.deltas, features);
            for (long t = 0; t < cas.num_trees; ++t) {
                const long l = walk_tree(cas.splits.data() + t * cas.num_splits, cas.num_splits,
                                         features.data());
                shape += dlib::mat(cas.leaves.get() + (t * cas.num_leaves + l) * leaf_stride_, dim);
            }
        }
        write_points(dlib::impl::unnormalizing_tform(rect), &shape(0), parts, rounded,
                     out + i * parts * 2);
    }
}

template <typename Pixel>
void ShapeModel::predict_dlib_range(const ImageBatch& images, const std::vector<Box>& boxes,
                                    long begin, long end, float* out) const {
    const long parts = num_parts();
    const dlib::shape_predictor& sp = dlib_model();
    for (long i = begin; i < end; ++i) {
        const dlib::full_object_detection det = sp(image_at<Pixel>(images, i), to_rect(boxes, i));
        float* o = out + i * parts * 2;
        for (long p = 0; p < parts; ++p) {
            o[2 * p] = static_cast<float>(det.part(p).x());
            o[2 * p + 1] = static_cast<float>(det.part(p).y());
        }
    }
}

void ShapeModel::predict(const ImageBatch& images, const std::vector<Box>& boxes, bool rounded,
                         int num_threads, Isa isa, float* out) const {
    kernels_for(isa);  // unsupported: throw before any thread starts
    if (isa == Isa::kReference) {
        parallel_for(images.n, num_threads, [&](long begin, long end) {
            if (images.channels == 3)
                predict_reference_range<dlib::rgb_pixel>(images, boxes, rounded, begin, end, out);
            else
                predict_reference_range<unsigned char>(images, boxes, rounded, begin, end, out);
        });
        return;
    }
    if (images.n <= 0) return;
    const Kernels& kernels = kernels_for(isa);
    // Shared by the team: chunks of at most kChunk images, their features and shapes in L2.
    BatchBuffers buf;
    buf.chunks = (images.n + kChunk - 1) / kChunk;
    const long max_n = (images.n + buf.chunks - 1) / buf.chunks;
    long max_trees = 0;
    for (const Cascade& cas : cascades_) {
        buf.max_features = std::max(buf.max_features, cas.deltas.size());
        max_trees = std::max(max_trees, cas.num_trees);
    }
    buf.shapes = aligned_floats(static_cast<size_t>(max_n * leaf_stride_));
    buf.features = aligned_floats(buf.max_features * static_cast<size_t>(max_n + kBatchAlign));
    buf.leaf_idx.reset(static_cast<uint16_t*>(std::aligned_alloc(
        64, static_cast<size_t>(std::max(1L, max_trees) * ((max_n + 31) / 32 * 32)) * 2)));
    if (!buf.leaf_idx) throw std::bad_alloc();
    run_team(num_threads, (images.n + kImagesPerMember - 1) / kImagesPerMember, [&](Team& team, int rank) {
        if (images.channels == 3)
            predict_member<dlib::rgb_pixel>(images, boxes, rounded, kernels, buf, team, rank, out);
        else
            predict_member<unsigned char>(images, boxes, rounded, kernels, buf, team, rank, out);
    });
}

void ShapeModel::predict_dlib(const ImageBatch& images, const std::vector<Box>& boxes,
                              int num_threads, float* out) const {
    dlib_model();  // load once, before the threads start (a missing file throws here)
    parallel_for(images.n, num_threads, [&](long begin, long end) {
        if (images.channels == 3)
            predict_dlib_range<dlib::rgb_pixel>(images, boxes, begin, end, out);
        else
            predict_dlib_range<unsigned char>(images, boxes, begin, end, out);
    });
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
