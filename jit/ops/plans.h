// What api/ hands to an op once a call is validated: the tensors read as [B, M, H, D] views,
// the bias as the kernels see it, pointers and options. The ops (jit/ops/*.cpp) turn a plan into
// Signatures, kernel arguments (kernel_src/params.h, which only they include), grids and
// launches; api/ never sees a kernel's argument struct.
#pragma once
#include <cstdint>
#include <vector>

#include "jit/signature.h"
#include "jitattn/bias.h"
#include "jitattn/tensor.h"

namespace jitattn::jit::ops {

// A [B, M, H, D] view of a 3-D, 4-D or 5-D tensor (api/src/plan.cpp as_bmhk): strides in
// elements, the last one 1.
struct Bmhk {
  int64_t b = 0, m = 0, h = 0, d = 0;
  int64_t sb = 0, sm = 0, sh = 0;
};

// What the kernels need from a bias: its kind, its windows, and where its numbers live.
struct BiasPlan {
  BiasKind kind = BiasKind::none;
  int32_t window_left = 0, window_right = 0;  // band masks, see kernel_src/bias_policies.cuh
  const TensorView* tensor = nullptr;         // dense additive bias
  const SeqLenInfo* q_seqinfo = nullptr;      // block-diagonal layouts
  const DeviceInts* k_seqstart = nullptr;     // null: paged padded keys start at position 0
  int32_t k_max_seqlen = 0;                   // the longest key sequence
  const DeviceInts* k_seqlen = nullptr;       // padded and gappy keys
  const BlockTables* block_tables = nullptr;  // paged keys
  int32_t page_size = 0;
  const DeviceFloats* alibi_slopes = nullptr;
  const TensorView* layout = nullptr;         // BlockSparseMask [H or 1, rows, cols] u8
  int32_t block_size = 0;
};

// A map of cells (kernel_src/params.h BlockMapArgs): a user variant's block map (ternary) or
// BlockSparseMask's layout (binary); cells null when there is none.
struct CellMapPlan {
  const uint8_t* cells = nullptr;
  int64_t stride_b = 0, stride_h = 0, stride_r = 0;  // elements; 0 broadcasts
  int32_t rows = 0, cols = 0, log2_cell = 0;
  const int32_t* spans = nullptr;                 // a user map's row spans, or null
  int64_t span_stride_b = 0, span_stride_h = 0;  // elements; 0 broadcasts
};

// A user variant (jitattn/variant.h) as the kernels see it: its code's id (jit/variant.h) and
// its captures' values, in slot order per kind (kernel_src/params.h UserArgs, same limits).
struct VariantPlan {
  static constexpr int kTensors = 8, kScalars = 8, kRank = 4;
  uint64_t id = 0;  // 0: no variant
  const void* ptr[kTensors] = {};
  int64_t stride[kTensors][kRank] = {};
  int32_t size[kTensors][kRank] = {};
  float f[kScalars] = {};
  int32_t i[kScalars] = {};
};

// A validated forward: out = softmax(q·kᵀ·scale + bias)·v (and lse).
struct ForwardPlan {
  Bmhk q, k, v, o;
  BiasPlan bias;
  double scale = 0;
  int align = 16;  // 16: every pointer and row stride 16-byte aligned; else the element size
  DType dtype = DType::f16, out_dtype = DType::f16;
  int device = 0;
  const void* q_data = nullptr;
  const void* k_data = nullptr;
  const void* v_data = nullptr;
  void* out_data = nullptr;
  float* lse = nullptr;  // [B, H, Mq] (or [B, G, H, Mq]) through lse_stride_b/h, or null
  int64_t lse_stride_b = 0, lse_stride_h = 0;
  double p = 0.0;  // dropout
  uint64_t seed = 0, offset = 0;
  VariantPlan variant;
  CellMapPlan map;     // the variant's block map (AttentionOptions::block_map)
  CellMapPlan layout;  // BlockSparseMask's layout
};

// A validated backward: the forward's plan (out and lse are read) plus the gradients.
struct BackwardPlan {
  ForwardPlan fwd;
  Bmhk grad, dq, dk, dv;  // dk/dv of key/value expanded over their heads are read as one head
  const void* grad_data = nullptr;
  void* dq_data = nullptr;
  void* dk_data = nullptr;
  void* dv_data = nullptr;
  void* dbias = nullptr;  // contiguous [B, H, Mq, Mkv] like the bias tensor, or null
  size_t dbias_bytes = 0;
  int align = 16;  // of the forward's tensors and the gradients together
  bool deterministic = false;
  void* workspace = nullptr;  // at least backward_workspace_bytes(), or null to allocate
};

// A validated merge_attentions: S partial outputs [B, M, G, H, K] with their lse [B, G, H, M]
// (G = 1 for 4-D tensors), merged into out (and lse). Strides in elements; size-1 dimensions 0.
struct MergeSplitView {
  const void* out = nullptr;
  const float* lse = nullptr;
  int64_t o_stride_b = 0, o_stride_m = 0, o_stride_g = 0, o_stride_h = 0;
  int64_t lse_stride_b = 0, lse_stride_g = 0, lse_stride_h = 0;
};
struct MergePlan {
  int64_t b = 0, m = 0, g = 1, h = 0, k = 0;
  DType in_dtype = DType::f32, out_dtype = DType::f32;
  int device = 0;
  bool align16 = true;
  // List form: one view per split. Stacked form: splits[0] is split 0; split s is shifted by
  // s·o_stride_s / s·lse_stride_s elements.
  std::vector<MergeSplitView> splits;
  bool stacked = false;
  int64_t num_splits = 0, o_stride_s = 0, lse_stride_s = 0;
  void* out = nullptr;
  int64_t out_stride_b = 0, out_stride_m = 0, out_stride_g = 0, out_stride_h = 0;
  float* lse = nullptr;  // merged lse, or null
  int64_t lse_out_stride_b = 0, lse_out_stride_g = 0, lse_out_stride_h = 0;
};

// A validated build_block_map (cells set, and spans with them or null) or materialize (dense
// set) of a user variant.
struct BlockMapPlan {
  VariantPlan variant;
  int device = 0;
  int32_t batch = 1, heads = 1, mq = 0, mkv = 0;
  uint8_t* cells = nullptr;
  int64_t cell_stride_b = 0, cell_stride_h = 0, cell_stride_r = 0;
  int32_t rows = 0, cols = 0, log2_cell = 0;
  int32_t* spans = nullptr;
  int64_t span_stride_b = 0, span_stride_h = 0;
  float* dense = nullptr;
  int64_t dense_stride_b = 0, dense_stride_h = 0, dense_stride_m = 0;
};

// A validated SwiGLU gate call (forward: x12 -> h; backward: x12, dh -> dx12). Strides in elements.
struct SwigluPlan {
  bool backward = false;
  DType dtype = DType::bf16;
  int device = 0;
  int64_t rows = 0, cols = 0;  // cols = H
  const void* x12 = nullptr;
  const void* dh = nullptr;
  void* h = nullptr;
  void* dx12 = nullptr;
  int64_t x_stride = 0, dh_stride = 0, h_stride = 0, dx_stride = 0;
};

}  // namespace jitattn::jit::ops
