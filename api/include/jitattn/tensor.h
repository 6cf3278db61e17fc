// Non-owning tensor views (docs/design.md decision 3): pointer, dtype, shape, strides in elements.
#pragma once
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>

namespace jitattn {

// u8: bytes of masks only (BlockSparseMask's layout, a BlockMap's cells); i32: a BlockMap's row
// spans only; attention's tensors are f16, bf16 or f32.
enum class DType : uint8_t { f16, bf16, f32, u8, i32 };

const char* to_string(DType dtype);
size_t element_size(DType dtype);

// 6: merge_attentions takes stacked [S, B, M, G, H, K] partial outputs (xFormers BMGHK).
constexpr int kMaxDims = 6;

// Like a DLPack tensor without ownership. Only the last dimension needs stride 1.
// `device` is the CUDA device ordinal, or kHost for host memory (used by materialize()/tests).
struct TensorView {
  static constexpr int kHost = -1;

  void* data = nullptr;
  DType dtype = DType::f16;
  int ndim = 0;
  int64_t shape[kMaxDims] = {};
  int64_t stride[kMaxDims] = {};
  int device = 0;

  // Contiguous (row-major) strides when `strides` is empty.
  static TensorView make(void* data, DType dtype, std::initializer_list<int64_t> shape,
                         std::initializer_list<int64_t> strides = {}, int device = 0);

  // Throws jitattn::Error when ndim is not in [0, kMaxDims], a size is negative, or the product
  // overflows int64.
  int64_t numel() const;
  bool defined() const { return data != nullptr; }
  std::string shape_string() const;  // "[2, 128, 8, 64]"
};

}  // namespace jitattn
