#include "jit/ops/tensor_map.h"

#include <algorithm>
#include <string>
#include <utility>

#include "jit/cuda_driver.h"

namespace jitattn::jit::ops {

std::optional<TensorMapGeometry> tensor_map_geometry(const Bmhk& t, int64_t heads, int64_t elem_bytes, int box_rows) {
  struct Axis {
    int which;  // 0 row, 1 head, 2 batch
    int64_t extent, stride;
  };
  Axis axes[3] = {{0, t.m, t.sm}, {1, heads, t.sh}, {2, t.b, t.sb}};
  if (t.m == 0 || t.d == 0) return TensorMapGeometry{};  // no rows: no block reads a tile (nothing is encoded)
  Axis kept[3];
  size_t n = 0;
  for (const Axis& a : axes)
    if (a.which == 0 || (a.extent > 1 && a.stride != 0)) kept[n++] = a;
  if (t.m > 1 && t.sm <= 0) return std::nullopt;
  for (size_t i = 1; i < n; ++i)  // by stride, at most three
    for (size_t j = i; j > 0 && kept[j].stride < kept[j - 1].stride; --j) std::swap(kept[j], kept[j - 1]);
  TensorMapGeometry g;
  g.dim[0] = uint64_t(t.d);
  uint64_t covered = uint64_t(t.d) * uint64_t(elem_bytes);  // bytes the lower dimensions span
  for (size_t i = 0; i < n; ++i) {
    const Axis& a = kept[i];
    uint64_t bytes = uint64_t(a.stride) * uint64_t(elem_bytes);
    if (a.extent == 1 && a.stride <= 0) bytes = (covered + 15) / 16 * 16;  // a lone row: any valid stride
    if (bytes % 16 != 0 || bytes >= (uint64_t(1) << 40) || bytes < covered) return std::nullopt;
    if (uint64_t(a.extent) > (uint64_t(1) << 32)) return std::nullopt;
    g.dim[i + 1] = uint64_t(a.extent);
    g.stride[i] = bytes;
    g.dim_of[a.which] = int32_t(i + 1);
    if (a.which == 0) g.box[i + 1] = uint32_t(std::min<int64_t>(box_rows, a.extent));  // a box fits in its tensor
    covered = bytes * uint64_t(a.extent);
  }
  for (size_t i = n; i < 3; ++i) g.stride[i] = (covered + 15) / 16 * 16;  // extent 1: never stepped
  for (uint64_t st : g.stride)
    if (st >= (uint64_t(1) << 40)) return std::nullopt;
  return g;
}

int32_t tensor_map_box_bytes(const TensorMapGeometry& g, int64_t cols) {
  return int32_t(int64_t(g.box[g.dim_of[0]]) * 128 * ((cols + 63) / 64));
}

void encode_tensor_map(unsigned char* out, const void* data, DType dtype, const TensorMapGeometry& g, const std::string& what) {
  const CudaDriver& d = CudaDriver::require();
  const uint32_t element_strides[4] = {1, 1, 1, 1};
  const CUresult rc = d.cuTensorMapEncodeTiled(
      reinterpret_cast<CUtensorMap*>(out), dtype == DType::bf16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
      4, const_cast<void*>(data), g.dim, g.stride, g.box, element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
      CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  check_cuda(rc, ("cuTensorMapEncodeTiled (" + what + ")").c_str());
}


}  // namespace jitattn::jit::ops
