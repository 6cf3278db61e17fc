#include "jitattn/tensor.h"

#include "jitattn/error.h"

namespace jitattn {

const char* to_string(DType dtype) {
  switch (dtype) {
    case DType::f16: return "f16";
    case DType::bf16: return "bf16";
    case DType::f32: return "f32";
    case DType::u8: return "u8";
    case DType::i32: return "i32";
  }
  return "?";
}

size_t element_size(DType dtype) { return dtype == DType::f32 || dtype == DType::i32 ? 4 : dtype == DType::u8 ? 1 : 2; }

TensorView TensorView::make(void* data, DType dtype, std::initializer_list<int64_t> shape,
                            std::initializer_list<int64_t> strides, int device) {
  if (shape.size() > size_t(kMaxDims)) throw Error(ErrorKind::invalid_argument, "a tensor has at most " + std::to_string(kMaxDims) + " dimensions");
  if (strides.size() != 0 && strides.size() != shape.size())
    throw Error(ErrorKind::invalid_argument, "strides must be empty or have one entry per dimension");
  TensorView t;
  t.data = data;
  t.dtype = dtype;
  t.ndim = int(shape.size());
  t.device = device;
  int i = 0;
  for (int64_t s : shape) t.shape[i++] = s;
  if (strides.size() == 0) {
    int64_t s = 1;
    for (int d = t.ndim - 1; d >= 0; --d) {
      t.stride[d] = s;
      // Contiguous strides of a negative or overflowing shape are meaningless; validation reports
      // the shape, so keep them defined instead.
      if (t.shape[d] < 0 || __builtin_mul_overflow(s, t.shape[d], &s))
        throw Error(ErrorKind::invalid_argument, "shape " + t.shape_string() + " has no contiguous strides (a negative size or more than 2^63 elements)");
    }
  } else {
    i = 0;
    for (int64_t s : strides) t.stride[i++] = s;
  }
  return t;
}

int64_t TensorView::numel() const {
  if (ndim < 0 || ndim > kMaxDims) throw Error(ErrorKind::invalid_argument, "TensorView.ndim=" + std::to_string(ndim) + " is not in [0, 6]");
  for (int d = 0; d < ndim; ++d)
    if (shape[d] == 0) return 0;
  int64_t n = 1;
  for (int d = 0; d < ndim; ++d) {
    if (shape[d] < 0) throw Error(ErrorKind::invalid_argument, "shape " + shape_string() + " has a negative size");
    if (__builtin_mul_overflow(n, shape[d], &n)) throw Error(ErrorKind::invalid_argument, "shape " + shape_string() + " has more than 2^63 elements");
  }
  return n;
}

std::string TensorView::shape_string() const {
  if (ndim < 0 || ndim > kMaxDims) return "[invalid: ndim=" + std::to_string(ndim) + "]";
  std::string s = "[";
  for (int d = 0; d < ndim; ++d) s += (d ? ", " : "") + std::to_string(shape[d]);
  return s + "]";
}

}  // namespace jitattn
