// Core types shared by the cells and the scans. Pure C++/Eigen: nothing here knows Python.
//
// Every matrix is row-major, so a C-order NumPy array of shape (B, T, D) *is* a (B*T) x D
// matrix and a Keras kernel (D, G*H) is used verbatim, with no repacking.
#pragma once

#include <Eigen/Core>

#include <cstdint>
#include <stdexcept>
#include <vector>

namespace rnncore {

using Index = Eigen::Index;

template <class T>
using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using RowVec = Eigen::Matrix<T, 1, Eigen::Dynamic>;

// A rows x cols window into a larger row-major buffer whose rows are `stride` apart: how a
// time step's rows are seen inside a (B, T, cols) array (stride T*cols), or a shard of a
// (B, cols) state (stride cols).
template <class T>
using View = Eigen::Map<RowMat<T>, Eigen::Unaligned, Eigen::OuterStride<>>;
template <class T>
using ConstView = Eigen::Map<const RowMat<T>, Eigen::Unaligned, Eigen::OuterStride<>>;
template <class T>
using ConstRowVecView = Eigen::Map<const RowVec<T>>;

// Internal buffers are aligned like Eigen's own, so that vectorised loops take the same
// path (and give the same bits) on every call.
template <class T>
using Buffer = std::vector<T, Eigen::aligned_allocator<T>>;

template <class T>
View<T> view(T* data, Index rows, Index cols, Index stride) {
  return View<T>(data, rows, cols, Eigen::OuterStride<>(stride));
}
template <class T>
ConstView<T> cview(const T* data, Index rows, Index cols, Index stride) {
  return ConstView<T>(data, rows, cols, Eigen::OuterStride<>(stride));
}

// Raised for a request the core cannot honour (bad sizes that slipped past the bindings).
struct InvalidArgument : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

}  // namespace rnncore
