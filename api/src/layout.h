// Where a tensor's elements are, as far as validation needs to know: whether its shape and
// strides can be addressed without overflow, whether an output has two elements at one address,
// and whether two tensors share memory. The kernels write outputs with plain stores, so an
// output that overlaps itself or an input would give a result that depends on block order.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "jitattn/tensor.h"

namespace jitattn::detail {

// A strided block of memory: base address, element size, and up to kMaxDims (size, stride)
// pairs in elements. Dimensions of size 1 are dropped; a stride 0 with size > 1 is kept.
struct Strided {
  uintptr_t base = 0;
  int64_t elem = 1;
  int n = 0;
  int64_t size[kMaxDims] = {}, stride[kMaxDims] = {};

  static Strided of(const TensorView& t);
  // A [B, M, H, D] reading of a tensor (the last stride 1).
  static Strided of(const void* data, DType dtype, std::initializer_list<std::pair<int64_t, int64_t>> dims);
  bool empty() const;  // no elements
};

// Appends a reason unless every shape entry is >= 0, every stride >= 0, ndim is in [0, kMaxDims]
// and the byte offset of the last element fits in int64 (so that no index computed from the
// shape and strides overflows), and the data pointer is aligned to the element size.
void check_layout(const TensorView& t, const std::string& name, std::vector<std::string>& reasons);

// Whether `d` is an attention tensor's dtype (f16, bf16, f32), not bytes of masks (u8) or a
// block map's spans (i32).
inline bool attention_dtype(DType d) { return d == DType::f16 || d == DType::bf16 || d == DType::f32; }

// Whether `t` is row-major contiguous (size-1 dimensions may have any stride).
bool contiguous(const TensorView& t);

// Two elements at one address (a stride 0 over a dimension of size > 1, or dimensions whose
// strides interleave). Conservative: a layout this cannot prove free of overlap counts as one.
bool self_overlaps(const Strided& x);
// Whether a and b may share a byte. Exact when both have the same element size, sizes and
// strides (the slices of one packed tensor); otherwise true whenever their byte ranges meet.
bool overlaps(const Strided& a, const Strided& b);

// Reasons for outputs that overlap themselves, each other, or an input: outputs are written,
// inputs read. Empty tensors are ignored. Allocates nothing unless it has a reason to report
// (this runs on every call: docs/design.md decision 8).
struct Named {
  Strided mem;
  const char* name;
};
void check_no_overlap(const Named* outputs, int n_outputs, const Named* inputs, int n_inputs,
                      std::vector<std::string>& reasons);

}  // namespace jitattn::detail
