// Loading dlib's serialized shape_predictor into ShapeModel's packed cascades, one cascade at a
// time (the model is held once: dlib's own shape_predictor is only loaded, lazily, for
// ShapeModel::predict_dlib).
#include <fstream>
#include <stdexcept>

#include <dlib/serialize.h>

#include "landmarks.h"

namespace facefill {

namespace {

// Packs one cascade's trees (dlib's regression_tree) into cas; checks that they are full trees
// of equal shape with leaves of `dim` values.
void pack_trees(const std::vector<dlib::impl::regression_tree>& trees, long dim, long leaf_stride,
                const std::string& path, Cascade& cas) {
    const auto corrupt = [&](const std::string& what) {
        return std::runtime_error("corrupt shape predictor model file " + path + ": " + what);
    };
    cas.num_trees = static_cast<long>(trees.size());
    cas.num_splits = trees.empty() ? 0 : static_cast<long>(trees[0].splits.size());
    cas.num_leaves = trees.empty() ? 0 : static_cast<long>(trees[0].leaf_values.size());
    cas.leaves = aligned_floats(static_cast<size_t>(cas.num_trees * cas.num_leaves * leaf_stride));
    cas.splits.reserve(static_cast<size_t>(cas.num_trees * cas.num_splits));
    float* leaf_out = cas.leaves.get();
    for (const auto& t : trees) {
        if (static_cast<long>(t.splits.size()) != cas.num_splits ||
            static_cast<long>(t.leaf_values.size()) != cas.num_leaves ||
            cas.num_leaves != cas.num_splits + 1 || cas.num_leaves > 65536)
            throw corrupt("trees of unequal shape");
        for (const auto& s : t.splits) {
            if (s.idx1 > 65535 || s.idx2 > 65535)
                throw corrupt("split feature index out of range");
            cas.splits.push_back(
                {static_cast<uint16_t>(s.idx1), static_cast<uint16_t>(s.idx2), s.thresh});
        }
        for (const auto& leaf : t.leaf_values) {
            if (leaf.size() != dim) throw corrupt("leaf of wrong length");
            std::copy(leaf.begin(), leaf.end(), leaf_out);
            leaf_out += leaf_stride;
        }
    }
}

}  // namespace

ShapeModel::ShapeModel(const std::string& path) : path_(path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("cannot open shape predictor model file: " + path);
    const auto corrupt = [&](const std::string& what) {
        return std::runtime_error("corrupt shape predictor model file " + path + ": " + what);
    };
    // dlib's shape_predictor serialization: version, initial_shape, forests, anchor_idx, deltas.
    // A std::vector is its size, then its items: the forests are read one cascade at a time and
    // packed at once, so dlib's form of the model (about as large as the packed one) is never
    // held whole.
    std::vector<std::vector<unsigned long>> anchor_idx;
    std::vector<std::vector<dlib::vector<float, 2>>> deltas;
    try {
        int version = 0;
        dlib::deserialize(version, in);
        if (version != 1)
            throw std::runtime_error("corrupt or unsupported shape predictor model file " +
                                     path + ": unexpected version " + std::to_string(version));
        dlib::deserialize(initial_shape_, in);
        const long dim = static_cast<long>(initial_shape_.size());
        if (dim == 0 || dim % 2 != 0) throw corrupt("initial shape of odd or zero length");
        leaf_stride_ = (dim + kLeafAlign - 1) / kLeafAlign * kLeafAlign;
        unsigned long num_cascades = 0;
        dlib::deserialize(num_cascades, in);
        if (num_cascades > 4096) throw corrupt("implausible number of cascades");
        cascades_.resize(num_cascades);
        for (Cascade& cas : cascades_) {
            std::vector<dlib::impl::regression_tree> trees;
            dlib::deserialize(trees, in);
            pack_trees(trees, dim, leaf_stride_, path, cas);
        }
        dlib::deserialize(anchor_idx, in);
        dlib::deserialize(deltas, in);
    } catch (const std::runtime_error&) {
        throw;  // ours, naming the path already
    } catch (const std::exception& e) {  // dlib's serialization_error, bad_alloc on huge sizes
        throw std::runtime_error("corrupt or unsupported shape predictor model file " + path +
                                 ": " + e.what());
    }
    const long dim = static_cast<long>(initial_shape_.size());
    if (cascades_.size() != anchor_idx.size() || cascades_.size() != deltas.size())
        throw corrupt("inconsistent sizes");
    for (long p = 0; p < dim / 2; ++p)
        initial_points_.push_back(dlib::impl::location(initial_shape_, p));
    for (size_t c = 0; c < cascades_.size(); ++c) {
        Cascade& cas = cascades_[c];
        cas.anchor_idx = std::move(anchor_idx[c]);
        cas.deltas = std::move(deltas[c]);
        if (cas.anchor_idx.size() != cas.deltas.size())
            throw corrupt("anchor/delta size mismatch");
        if (cas.deltas.size() > 65536)
            throw std::runtime_error("unsupported shape predictor model file " + path +
                                     ": more than 65536 feature pixels per level");
        for (unsigned long a : cas.anchor_idx) {
            if (static_cast<long>(a) >= dim / 2) throw corrupt("anchor index out of range");
            cas.anchor2.push_back(static_cast<int32_t>(2 * a));
        }
        for (const auto& d : cas.deltas) {
            cas.dx.push_back(d.x());
            cas.dy.push_back(d.y());
        }
        for (const Split& s : cas.splits)
            if (s.idx1 >= cas.deltas.size() || s.idx2 >= cas.deltas.size())
                throw corrupt("split feature index out of range");
    }
}

const dlib::shape_predictor& ShapeModel::dlib_model() const {
    std::call_once(dlib_once_, [this] {
        auto sp = std::make_unique<dlib::shape_predictor>();
        std::ifstream in(path_, std::ios::binary);
        if (!in) throw std::runtime_error("cannot open shape predictor model file: " + path_);
        dlib::deserialize(*sp, in);
        dlib_sp_ = std::move(sp);
    });
    return *dlib_sp_;
}

FeatureView Cascade::feature_view() const {
    FeatureView v;
    v.anchor2 = anchor2.data();
    v.dx = dx.data();
    v.dy = dy.data();
    v.num = static_cast<long>(anchor2.size());
    return v;
}

ForestView Cascade::forest_view(long dim, long leaf_stride) const {
    ForestView v;
    v.splits = splits.data();
    v.leaves = leaves.get();
    v.num_trees = num_trees;
    v.num_splits = num_splits;
    v.num_leaves = num_leaves;
    v.dim = dim;
    v.leaf_stride = leaf_stride;
    return v;
}

}  // namespace facefill
