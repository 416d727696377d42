// pybind11 module facefill_core._landmarks: numpy checks, then the GIL is released for the
// C++ work in landmarks.cpp. Only facefill_core/landmarks.py imports this module.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <sstream>
#include <stdexcept>

#include "landmarks.h"

namespace py = pybind11;
using facefill::Box;
using facefill::ImageBatch;
using facefill::ShapeModel;

namespace {

using U8Array = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>;
using I64Array = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;
using F32Array = py::array_t<float, py::array::c_style | py::array::forcecast>;

std::string shape_str(const py::array& a) {
    std::ostringstream s;
    s << "(";
    for (py::ssize_t i = 0; i < a.ndim(); ++i) s << (i ? ", " : "") << a.shape(i);
    if (a.ndim() == 1) s << ",";
    s << ")";
    return s.str();
}

ImageBatch check_images(const U8Array& images) {
    ImageBatch b;
    if (images.ndim() == 4) {
        b.channels = images.shape(3);
        if (b.channels != 3 && b.channels != 1)
            throw std::invalid_argument("images must be (N, H, W, 3) RGB or (N, H, W) gray, got " +
                                        shape_str(images));
    } else if (images.ndim() == 3) {
        b.channels = 1;
    } else {
        throw std::invalid_argument("images must be (N, H, W, 3) RGB or (N, H, W) gray, got " +
                                    shape_str(images));
    }
    b.n = images.shape(0);
    b.height = images.shape(1);
    b.width = images.shape(2);
    if (b.n > 0 && (b.height < 8 || b.width < 8))
        throw std::invalid_argument("images must be at least 8x8 pixels, got " +
                                    shape_str(images));
    b.data = images.data();
    return b;
}

std::vector<Box> check_boxes(const I64Array& boxes, long n) {
    std::vector<Box> out;
    if (boxes.ndim() == 1 && boxes.shape(0) == 4) {
        out.push_back({static_cast<long>(boxes.at(0)), static_cast<long>(boxes.at(1)),
                       static_cast<long>(boxes.at(2)), static_cast<long>(boxes.at(3))});
    } else if (boxes.ndim() == 2 && boxes.shape(1) == 4 && boxes.shape(0) == n) {
        auto r = boxes.unchecked<2>();
        for (py::ssize_t i = 0; i < n; ++i)
            out.push_back({static_cast<long>(r(i, 0)), static_cast<long>(r(i, 1)),
                           static_cast<long>(r(i, 2)), static_cast<long>(r(i, 3))});
    } else {
        throw std::invalid_argument("boxes must be (4,) or (N, 4) with N = " + std::to_string(n) +
                                    " images, got " + shape_str(boxes));
    }
    for (const Box& b : out)
        if (b.right <= b.left || b.bottom <= b.top)
            throw std::invalid_argument(
                "boxes must have right > left and bottom > top, got (" + std::to_string(b.left) +
                ", " + std::to_string(b.top) + ", " + std::to_string(b.right) + ", " +
                std::to_string(b.bottom) + ")");
    return out;
}

class PyPredictor {
   public:
    explicit PyPredictor(const std::string& path) : model_(path) {}

    py::array_t<float> predict(const U8Array& images, const I64Array& boxes, bool rounded,
                               int num_threads, const std::string& isa) const {
        const facefill::Isa which = facefill::parse_isa(isa);
        const ImageBatch b = check_images(images);
        const std::vector<Box> bx = check_boxes(boxes, b.n);
        py::array_t<float> out({b.n, model_.num_parts(), 2L});
        float* o = out.mutable_data();
        {
            py::gil_scoped_release release;
            model_.predict(b, bx, rounded, num_threads, which, o);
        }
        return out;
    }

    py::array_t<float> predict_dlib(const U8Array& images, const I64Array& boxes,
                                    int num_threads) const {
        const ImageBatch b = check_images(images);
        const std::vector<Box> bx = check_boxes(boxes, b.n);
        py::array_t<float> out({b.n, model_.num_parts(), 2L});
        float* o = out.mutable_data();
        {
            py::gil_scoped_release release;
            model_.predict_dlib(b, bx, num_threads, o);
        }
        return out;
    }

    py::tuple predict_penalty(const U8Array& images, const I64Array& boxes,
                              const F32Array& reference, float margin_px, float step,
                              bool rounded, int num_threads, const std::string& isa) const {
        const facefill::Isa which = facefill::parse_isa(isa);
        const ImageBatch b = check_images(images);
        const std::vector<Box> bx = check_boxes(boxes, b.n);
        const long parts = model_.num_parts();
        if (reference.ndim() != 2 || reference.shape(0) != parts || reference.shape(1) != 2)
            throw std::invalid_argument("reference must be (" + std::to_string(parts) +
                                        ", 2), got " + shape_str(reference));
        py::array_t<float> points({b.n, parts, 2L});
        py::array_t<double> penalty(b.n);
        float* p = points.mutable_data();
        double* pen = penalty.mutable_data();
        const float* ref = reference.data();
        {
            py::gil_scoped_release release;
            model_.predict(b, bx, rounded, num_threads, which, p);
            facefill::landmark_penalty(p, b.n, parts, ref, margin_px, step, pen);
        }
        return py::make_tuple(points, penalty);
    }

    py::dict export_model() const {
        py::dict d;
        const auto& init = model_.initial_shape();
        py::array_t<float> initial({model_.num_parts(), 2L});
        std::copy(init.begin(), init.end(), initial.mutable_data());
        d["initial_shape"] = initial;
        py::list anchors, deltas, idx1, idx2, thresh, leaves;
        const long dim = 2 * model_.num_parts();
        for (const auto& c : model_.cascades()) {
            const long F = static_cast<long>(c.anchor_idx.size());
            py::array_t<int64_t> a(F);
            py::array_t<float> dl({F, 2L});
            for (long i = 0; i < F; ++i) {
                a.mutable_at(i) = static_cast<int64_t>(c.anchor_idx[i]);
                dl.mutable_at(i, 0) = c.deltas[i].x();
                dl.mutable_at(i, 1) = c.deltas[i].y();
            }
            anchors.append(a);
            deltas.append(dl);
            py::array_t<int64_t> s1({c.num_trees, c.num_splits}), s2({c.num_trees, c.num_splits});
            py::array_t<float> th({c.num_trees, c.num_splits});
            for (long k = 0; k < c.num_trees * c.num_splits; ++k) {
                s1.mutable_data()[k] = c.splits[k].idx1;
                s2.mutable_data()[k] = c.splits[k].idx2;
                th.mutable_data()[k] = c.splits[k].thresh;
            }
            idx1.append(s1);
            idx2.append(s2);
            thresh.append(th);
            py::array_t<float> lv({c.num_trees, c.num_leaves, dim});
            for (long k = 0; k < c.num_trees * c.num_leaves; ++k)
                std::copy(c.leaves.get() + k * model_.leaf_stride(),
                          c.leaves.get() + k * model_.leaf_stride() + dim, lv.mutable_data() + k * dim);
            leaves.append(lv);
        }
        d["anchor_idx"] = anchors;
        d["deltas"] = deltas;
        d["split_idx1"] = idx1;
        d["split_idx2"] = idx2;
        d["split_thresh"] = thresh;
        d["leaf_values"] = leaves;
        return d;
    }

    long num_parts() const { return model_.num_parts(); }
    long num_cascades() const { return static_cast<long>(model_.cascades().size()); }

   private:
    ShapeModel model_;
};

}  // namespace

PYBIND11_MODULE(_landmarks, m) {
    m.doc() = "dlib's shape predictor evaluated batch-major over a batch of images (C++ core).";
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const dlib::serialization_error& e) {
            PyErr_SetString(PyExc_ValueError, e.what());
        }
    });

    py::class_<PyPredictor>(m, "ShapePredictor")
        .def(py::init<const std::string&>(), py::arg("model_path"),
             "Load dlib's serialized shape predictor (e.g. shape_predictor_68_face_landmarks.dat).")
        .def("predict", &PyPredictor::predict, py::arg("images"), py::arg("boxes"),
             py::arg("rounded") = true, py::arg("num_threads") = 0, py::arg("isa") = "auto",
             "Batch-major prediction. images: uint8 (N, H, W, 3) RGB or (N, H, W) gray; boxes: "
             "int64 (4,) shared or (N, 4) (left, top, right, bottom). isa: auto (widest this CPU "
             "has), avx512, avx2, sse2, or reference (image by image); the same bits on each. "
             "Returns float32 (N, P, 2).")
        .def("predict_dlib", &PyPredictor::predict_dlib, py::arg("images"), py::arg("boxes"),
             py::arg("num_threads") = 0,
             "dlib's own per-image shape_predictor call (reference / benchmark path).")
        .def("predict_penalty", &PyPredictor::predict_penalty, py::arg("images"),
             py::arg("boxes"), py::arg("reference"), py::arg("margin_px") = 3.0f,
             py::arg("step") = 0.5f, py::arg("rounded") = true, py::arg("num_threads") = 0,
             py::arg("isa") = "auto",
             "Predict and score a batch in one GIL-free call. Returns (points (N, P, 2) float32, "
             "penalty (N,) float64).")
        .def("export", &PyPredictor::export_model,
             "The model's parameters as numpy arrays (per cascade lists).")
        .def_property_readonly("num_parts", &PyPredictor::num_parts)
        .def_property_readonly("num_cascades", &PyPredictor::num_cascades);

    m.def("supported_isas", &facefill::supported_isas,
          "The batch kernels this CPU can run, widest first, e.g. ['avx2', 'sse2'].");

    m.def(
        "detect_faces",
        [](const U8Array& images) {
            const ImageBatch b = check_images(images);
            py::array_t<int64_t> boxes({b.n, 4L});
            py::array_t<uint8_t> found(b.n);
            std::vector<long> tmp(static_cast<size_t>(4 * b.n));
            uint8_t* f = found.mutable_data();
            {
                py::gil_scoped_release release;
                facefill::detect_faces(b, tmp.data(), f);
            }
            std::copy(tmp.begin(), tmp.end(), boxes.mutable_data());
            return py::make_tuple(boxes, found);
        },
        py::arg("images"),
        "dlib's frontal face detector per image: (boxes (N, 4) int64, found (N,) uint8).");

    m.def(
        "intensity_u8",
        [](const F32Array& images, std::optional<F32Array> holes) {
            if (images.ndim() != 4 || images.shape(1) != 3)
                throw std::invalid_argument("images must be (N, 3, H, W) in [-1, 1], got " +
                                            shape_str(images));
            const long n = images.shape(0), h = images.shape(2), w = images.shape(3);
            if (holes && (holes->ndim() != 4 || holes->shape(0) != n || holes->shape(1) != 1 ||
                          holes->shape(2) != h || holes->shape(3) != w))
                throw std::invalid_argument("holes must be (" + std::to_string(n) + ", 1, " +
                                            std::to_string(h) + ", " + std::to_string(w) +
                                            ") like the images, got " + shape_str(*holes));
            py::array_t<uint8_t> out({n, h, w});
            uint8_t* o = out.mutable_data();
            const float* x = images.data();
            const float* m = holes ? holes->data() : nullptr;
            {
                py::gil_scoped_release release;
                facefill::intensity_u8(x, m, n, h * w, o);
            }
            return out;
        },
        py::arg("images"), py::arg("holes") = py::none(),
        "dlib's grey intensity of float images in [-1, 1] (N, 3, H, W), hole pixels (holes > 0.5, "
        "(N, 1, H, W)) as the damaged input's fill: uint8 (N, H, W).");

    m.def(
        "_similarity_transform",
        [](const F32Array& from, const F32Array& to, bool dlib_own) {
            if (from.ndim() != 2 || from.shape(1) != 2 || to.ndim() != 2 || to.shape(1) != 2 ||
                to.shape(0) != from.shape(0) || from.shape(0) < 2)
                throw std::invalid_argument("from and to must be (P, 2) with the same P >= 2, got " +
                                            shape_str(from) + " and " + shape_str(to));
            const long n = from.shape(0);
            std::vector<dlib::vector<float, 2>> a(static_cast<size_t>(n)), b(static_cast<size_t>(n));
            for (long i = 0; i < n; ++i) {
                a[static_cast<size_t>(i)] = dlib::vector<float, 2>(from.at(i, 0), from.at(i, 1));
                b[static_cast<size_t>(i)] = dlib::vector<float, 2>(to.at(i, 0), to.at(i, 1));
            }
            const dlib::point_transform_affine t = facefill::similarity_transform_for_tests(a, b, dlib_own);
            py::array_t<double> out({2L, 3L});
            auto o = out.mutable_unchecked<2>();
            for (long r = 0; r < 2; ++r) {
                o(r, 0) = t.get_m()(r, 0);
                o(r, 1) = t.get_m()(r, 1);
                o(r, 2) = t.get_b()(r);
            }
            return out;
        },
        py::arg("from_points"), py::arg("to_points"), py::arg("dlib_own") = false,
        "For tests: the batch's similarity transform between two (P, 2) point sets, or dlib's "
        "find_similarity_transform (dlib_own=True), as a (2, 3) [M | b] float64 array.");

    m.def(
        "landmark_penalty",
        [](const F32Array& pred, const F32Array& ref, float margin_px, float step) {
            if (pred.ndim() != 3 || pred.shape(2) != 2)
                throw std::invalid_argument("predicted must be (N, P, 2), got " + shape_str(pred));
            if (ref.ndim() != 2 || ref.shape(0) != pred.shape(1) || ref.shape(1) != 2)
                throw std::invalid_argument("reference must be (" + std::to_string(pred.shape(1)) +
                                            ", 2), got " + shape_str(ref));
            const long n = pred.shape(0), parts = pred.shape(1);
            py::array_t<double> out(n);
            double* o = out.mutable_data();
            const float* p = pred.data();
            const float* r = ref.data();
            {
                py::gil_scoped_release release;
                facefill::landmark_penalty(p, n, parts, r, margin_px, step, o);
            }
            return out;
        },
        py::arg("predicted"), py::arg("reference"), py::arg("margin_px") = 3.0f,
        py::arg("step") = 0.5f,
        "The thesis's count penalty per sample: (N,) float64.");
}
