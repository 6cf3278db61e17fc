// Tensor maps (CUtensorMap) of the views the TMA kernels read: kernel_src/decode.cuh (kTma: K and
// V, DecodeParams), kernel_src/fwd_tma.cuh (Q, K and V, FwdTmaParams) and kernel_src/bwd_wgmma.cuh
// (kTma: Q and dO, BwdParams). Each op encodes its maps per call; a view no map can address
// takes an element-aligned kernel.
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include "jit/ops/plans.h"

namespace jitattn::jit::ops {

// A [B, M, H, D] view as a 4-D tensor map: dimension 0 the columns, then the row, head and
// batch dimensions that move through memory, in increasing stride order; an index whose extent
// is 1 or whose stride is 0 addresses nothing and is left out (its coordinate is 0). Boxes are
// 64 columns by box_rows rows (fewer for a shorter tensor). nullopt where TMA cannot address the
// view: a stride that is not a multiple of 16 bytes or reaches 2^40, rows of stride 0,
// dimensions that overlap, an extent past 2^32.
struct TensorMapGeometry {
  uint64_t dim[4] = {1, 1, 1, 1};
  uint64_t stride[3] = {16, 16, 16};  // bytes, of dimensions 1..3
  uint32_t box[4] = {64, 1, 1, 1};
  int32_t dim_of[3] = {0, 0, 0};  // of the row, head and batch index: the params' tma_dim
};
std::optional<TensorMapGeometry> tensor_map_geometry(const Bmhk& t, int64_t heads, int64_t elem_bytes, int box_rows);

// One box's bytes as the copy engine counts them: every box in full, 64 columns of 2 bytes by its
// rows; `cols` columns take ceil(cols / 64) boxes (those past the tensor's columns read as zeros).
int32_t tensor_map_box_bytes(const TensorMapGeometry& g, int64_t cols);

// Encodes the f16/bf16 map of `g` over `data` into `out` (128 bytes, 64-byte aligned): 128-byte
// swizzle, rows promoted to L2 in 256-byte lines. Throws with `what` if the driver refuses it.
void encode_tensor_map(unsigned char* out, const void* data, DType dtype, const TensorMapGeometry& g, const std::string& what);

}  // namespace jitattn::jit::ops
