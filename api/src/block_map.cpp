// A user variant's block map and its materialization: validate (every reason, naming the
// argument), then run the block_map op (jit/ops/block_map.cpp).
#include <climits>
#include <cstdio>

#include "jit/ops/block_map.h"
#include "jitattn/error.h"
#include "jitattn/variant.h"
#include "layout.h"
#include "plan.h"

namespace jitattn {

namespace {
using detail::log2_of;
using detail::power_of_two_cell;
std::string S(int64_t x) { return std::to_string(x); }

// A 4-D device tensor of `dtype` with the last stride 1 and every size below 2^31.
void check_4d(const TensorView& t, DType dtype, const char* name, std::vector<std::string>& R) {
  const std::string n = name;
  if (t.ndim != 4) {
    R.push_back(n + ".ndim=" + S(t.ndim) + " must be 4");
    return;
  }
  if (t.dtype != dtype) R.push_back(n + ".dtype=" + to_string(t.dtype) + " must be " + to_string(dtype));
  if (t.device < 0) R.push_back(n + " must be in CUDA device memory (device >= 0)");
  detail::check_layout(t, name, R);
  for (int d = 0; d < 4; ++d)
    if (t.shape[d] > INT32_MAX) R.push_back(n + ".shape[" + S(d) + "]=" + S(t.shape[d]) + " must be below 2^31");
  if (t.shape[3] > 1 && t.stride[3] != 1) R.push_back(n + ".stride[3]=" + S(t.stride[3]) + " must be 1");
  if (!t.data && t.numel() > 0) R.push_back(n + ".data is null");
}
}  // namespace

std::vector<int64_t> block_map_shape(int64_t B, int64_t H, int64_t mq, int64_t mkv, int32_t cell_size) {
  std::vector<std::string> R;
  if (!power_of_two_cell(cell_size)) R.push_back("cell_size=" + S(cell_size) + " must be a power of two in [16, 256]");
  if (B < 1 || H < 1) R.push_back("B=" + S(B) + " and H=" + S(H) + " must be >= 1");
  if (mq < 1 || mkv < 1 || mq > INT32_MAX || mkv > INT32_MAX) R.push_back("mq=" + S(mq) + " and mkv=" + S(mkv) + " must be in [1, 2^31)");
  if (!R.empty()) throw Error(ErrorKind::invalid_argument, R);
  return {B, H, (mq + cell_size - 1) / cell_size, (mkv + cell_size - 1) / cell_size};
}

std::vector<int64_t> block_map_spans_shape(int64_t B, int64_t H, int64_t mq) {
  std::vector<std::string> R;
  if (B < 1 || H < 1) R.push_back("B=" + S(B) + " and H=" + S(H) + " must be >= 1");
  if (mq < 1 || mq > INT32_MAX) R.push_back("mq=" + S(mq) + " must be in [1, 2^31)");
  if (!R.empty()) throw Error(ErrorKind::invalid_argument, R);
  return {B, H, mq, 2};
}

BlockMap build_block_map(const Variant& variant, int64_t mq, int64_t mkv, const TensorView& cells, int32_t cell_size,
                         void* stream) {
  return build_block_map(variant, mq, mkv, cells, TensorView{}, cell_size, stream);
}

BlockMap build_block_map(const Variant& variant, int64_t mq, int64_t mkv, const TensorView& cells, const TensorView& spans,
                         int32_t cell_size, void* stream) {
  std::vector<std::string> R;
  jit::ops::BlockMapPlan p;
  detail::plan_variant(variant, p.variant, R);
  if (variant.mask_code().empty()) R.push_back("variant: build_block_map needs a mask_mod (the map describes it)");
  if (!power_of_two_cell(cell_size)) R.push_back("cell_size=" + S(cell_size) + " must be a power of two in [16, 256]");
  if (mq < 1 || mkv < 1 || mq > INT32_MAX || mkv > INT32_MAX) R.push_back("mq=" + S(mq) + " and mkv=" + S(mkv) + " must be in [1, 2^31)");
  check_4d(cells, DType::u8, "cells", R);
  if (R.empty()) {
    const int64_t rows = (mq + cell_size - 1) / cell_size, cols = (mkv + cell_size - 1) / cell_size;
    if (cells.shape[0] < 1 || cells.shape[1] < 1 || cells.shape[2] != rows || cells.shape[3] != cols)
      R.push_back("cells.shape=" + cells.shape_string() + " must be [B or 1, H or 1, " + S(rows) + ", " + S(cols) +
                  "] (block_map_shape)");
    else if (cells.numel() > INT32_MAX)
      R.push_back("cells has " + S(cells.numel()) + " cells; at most 2^31 - 1 (a larger cell_size has fewer)");
    if (spans.defined()) detail::check_spans(spans, cells, mq, "spans", R);
  }
  if (!R.empty()) throw Error(ErrorKind::invalid_argument, R);
  p.device = cells.device;
  p.batch = int32_t(cells.shape[0]), p.heads = int32_t(cells.shape[1]), p.mq = int32_t(mq), p.mkv = int32_t(mkv);
  p.cells = static_cast<uint8_t*>(cells.data);
  p.cell_stride_b = cells.stride[0], p.cell_stride_h = cells.stride[1], p.cell_stride_r = cells.stride[2];
  p.rows = int32_t(cells.shape[2]), p.cols = int32_t(cells.shape[3]), p.log2_cell = log2_of(cell_size);
  if (spans.defined()) {
    p.spans = static_cast<int32_t*>(spans.data);
    p.span_stride_b = spans.stride[0], p.span_stride_h = spans.stride[1];
  }
  jit::ops::block_map(p, static_cast<CUstream>(stream));
  BlockMap m;
  m.cells = cells, m.spans = spans, m.cell_size = cell_size, m.mq = mq, m.mkv = mkv, m.variant = variant.code_id();
  return m;
}

void materialize(const Variant& variant, const TensorView& out, void* stream) {
  std::vector<std::string> R;
  jit::ops::BlockMapPlan p;
  detail::plan_variant(variant, p.variant, R);
  if (!variant.score_code().empty() && !variant.additive())
    R.push_back("variant: its score_mod is not additive_score(), so it is no additive bias and cannot be materialized");
  check_4d(out, DType::f32, "out", R);
  if (!R.empty()) throw Error(ErrorKind::invalid_argument, R);
  p.device = out.device;
  p.batch = int32_t(out.shape[0]), p.heads = int32_t(out.shape[1]), p.mq = int32_t(out.shape[2]), p.mkv = int32_t(out.shape[3]);
  p.dense = static_cast<float*>(out.data);
  p.dense_stride_b = out.stride[0], p.dense_stride_h = out.stride[1], p.dense_stride_m = out.stride[2];
  jit::ops::block_map(p, static_cast<CUstream>(stream));
}

}  // namespace jitattn
