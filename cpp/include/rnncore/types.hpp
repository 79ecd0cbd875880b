// Core types shared by the cells and the scans. Pure C++/Eigen: nothing here knows Python.
//
// Every matrix is row-major, so a C-order NumPy array of shape (B, T, D) *is* a (B*T) x D
// matrix and a Keras kernel (D, G*H) is used verbatim, with no repacking.
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <cstdint>
#include <memory>
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

// A workspace buffer: aligned like Eigen's own, so that vectorised loops take the same path
// (and give the same bits) on every call, and left uninitialised, since every element is
// written before it is read (zeroing a workspace cost ~4% of a forward pass).
template <class T>
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(size_t n) { resize(n); }
  Buffer(const T* first, const T* last) : Buffer(static_cast<size_t>(last - first)) {
    std::copy(first, last, data());
  }
  void resize(size_t n) {
    data_.reset(n ? static_cast<T*>(Eigen::internal::aligned_malloc(n * sizeof(T))) : nullptr);
    size_ = capacity_ = n;
  }
  // resize, keeping the memory when it is large enough (contents are not kept).
  void reserve_resize(size_t n) {
    if (n > capacity_) resize(n);
    size_ = n;
  }
  T* data() { return data_.get(); }
  const T* data() const { return data_.get(); }
  size_t size() const { return size_; }
  T& operator[](size_t i) { return data_.get()[i]; }

 private:
  struct Free {
    void operator()(T* p) const { Eigen::internal::aligned_free(p); }
  };
  std::unique_ptr<T[], Free> data_;
  size_t size_ = 0, capacity_ = 0;
};

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
