// Argument checks shared by the binding files: every failure is a Python exception that names
// the argument and gives the expected and actual shape or dtype.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <cstdlib>
#include <limits>
#include <new>
#include <optional>
#include <string>
#include <vector>

namespace rnncore::bind {

namespace py = pybind11;
using Index = py::ssize_t;

inline std::string shape_str(const std::vector<Index>& s) {
  std::string out = "(";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(s[i]);
  }
  if (s.size() == 1) out += ",";
  return out + ")";
}

inline std::vector<Index> shape_of(const py::array& a) {
  return std::vector<Index>(a.shape(), a.shape() + a.ndim());
}

inline std::string dtype_str(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

// Whether a's dtype is T's: NumPy's equivalence (type and byte order), not object identity,
// since an array unpickled in another process carries an equal but distinct dtype object,
// while a byte-swapped array must still be refused.
template <class T>
bool has_dtype(const py::array& a) {
  return py::detail::npy_api::get().PyArray_EquivTypes_(a.dtype().ptr(), py::dtype::of<T>().ptr());
}

// The floating type of a call is x's: float32 or float64. Anything else is a TypeError.
inline bool is_float64(const py::array& x, const char* name) {
  if (has_dtype<float>(x)) return false;
  if (has_dtype<double>(x)) return true;
  throw py::type_error(std::string(name) + ": expected dtype float32 or float64, got " +
                       dtype_str(x));
}

template <class T>
void check_dtype(const py::array& a, const char* name, const char* ref_name) {
  if (!has_dtype<T>(a))
    throw py::type_error(std::string(name) + ": expected dtype " +
                         py::str(py::dtype::of<T>()).cast<std::string>() + " (the dtype of " +
                         ref_name + "), got " + dtype_str(a) + "; mixed dtypes are not converted");
}

inline void check_contiguous(const py::array& a, const char* name) {
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(std::string(name) +
                          ": expected a C-contiguous array (use numpy.ascontiguousarray)");
}

inline void check_shape(const py::array& a, const char* name, const std::vector<Index>& expected) {
  if (shape_of(a) != expected)
    throw py::value_error(std::string(name) + ": expected shape " + shape_str(expected) + ", got " +
                          shape_str(shape_of(a)));
}

inline void check_ndim(const py::array& a, const char* name, int ndim, const char* what) {
  if (a.ndim() != ndim)
    throw py::value_error(std::string(name) + ": expected a " + std::to_string(ndim) + "-D array " +
                          what + ", got shape " + shape_str(shape_of(a)));
}

// A float array of dtype T, C-contiguous, of exactly this shape.
template <class T>
const T* float_input(const py::array& a, const char* name, const std::vector<Index>& shape,
                     const char* ref_name = "x") {
  check_dtype<T>(a, name, ref_name);
  check_shape(a, name, shape);
  check_contiguous(a, name);
  return static_cast<const T*>(a.data());
}

// Product of sizes, refusing overflow and anything beyond what could ever be allocated, so
// an absurd request is a MemoryError before any allocation.
inline Index checked_elements(std::initializer_list<Index> dims, const char* what) {
  constexpr Index limit = std::numeric_limits<Index>::max() / 16;
  Index n = 1;
  for (Index d : dims) {
    if (d < 0) throw py::value_error(std::string(what) + ": negative size");
    if (d != 0 && n > limit / d) {
      PyErr_SetString(PyExc_MemoryError, (std::string(what) + ": size overflows").c_str());
      throw py::error_already_set();
    }
    n *= d;
  }
  return n;
}

// A new array whose buffer is 64-byte aligned. The core's vectorised loops peel a scalar
// head up to the first aligned element, so a buffer's alignment decides which elements take
// the scalar path; fixing it makes every call with the same inputs give the same bits.
template <class T>
py::array_t<T> new_array(const std::vector<Index>& shape) {
  constexpr size_t align = 64;
  Index n = 1;
  for (Index d : shape) n *= d;
  const size_t bytes = ((static_cast<size_t>(n) * sizeof(T) + align - 1) / align + 1) * align;
  void* data = std::aligned_alloc(align, bytes);
  if (!data) throw std::bad_alloc();
  py::capsule owner(data, [](void* p) { std::free(p); });
  return py::array_t<T>(shape, static_cast<T*>(data), owner);
}

}  // namespace rnncore::bind
