// A user variant's mask_mod over a whole (sequence, head): the block map the attention kernels
// skip tiles by (FlexAttention's create_block_mask), or every element as an additive bias
// (materialize()). BlockMapParams says what is written. Cfg: kWarps.
//   cells: one block per cell, blockIdx.x = ((b·heads + h)·rows + r)·cols + c; each thread tests
//     a few of the cell's elements and the block's verdict is __syncthreads_or/and.
//   spans (spans_pass): one warp per query row, after the cells (it reads them).
//   dense: a grid-stride loop over the elements, one thread each.
#pragma once
#include "bias_policies.cuh"
#include "block_map_params.h"
#include "common.cuh"

namespace jitattn {

template <class Cfg, class V>
__device__ __forceinline__ void block_map(const BlockMapParams& p) {
  const V v(p.user);
  auto seen = [&](int b, int h, int i, int j) {
    if constexpr (V::kMask) return v.mask_mod(b, h, i, j);
    else return true;
  };
  if (p.spans_pass) {
    // One warp per row (b, h, i): the cells say which keys to test (full ones need no call).
    const int lane = threadIdx.x % 32;
    const int64_t row = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
    if (row >= int64_t(p.batch) * p.heads * p.mq) return;
    const int i = int(row % p.mq), bh = int(row / p.mq), b = bh / p.heads, h = bh % p.heads;
    const unsigned char* cells = p.cells + b * p.cell_stride_b + h * p.cell_stride_h + (i >> p.log2_cell) * p.cell_stride_r;
    int lo = p.mkv, hi = 0, count = 0;  // this lane's
    for (int c = 0; c < p.cols; ++c) {
      const int state = cells[c], j0 = c << p.log2_cell, n = imin(1 << p.log2_cell, p.mkv - j0);
      if (state == 0) continue;
      if (state == 2) {
        lo = imin(lo, j0), hi = imax(hi, j0 + n), count += lane == 0 ? n : 0;
        continue;
      }
      for (int j = j0 + lane; j < j0 + n; j += 32)
        if (seen(b, h, i, j)) lo = imin(lo, j), hi = imax(hi, j + 1), ++count;
    }
    for (int m = 16; m > 0; m /= 2) {
      lo = imin(lo, port::shfl_xor32(lo, m));
      hi = imax(hi, port::shfl_xor32(hi, m));
      count += port::shfl_xor32(count, m);
    }
    if (lane == 0) {
      int32_t* out = p.spans + b * p.span_stride_b + h * p.span_stride_h + 2 * int64_t(i);
      const bool one = count == 0 || count == hi - lo;
      out[0] = count == 0 || !one ? 0 : lo;
      out[1] = count == 0 ? 0 : one ? hi : -1;
    }
    return;
  }
  if (p.cells) {
    const int c = blockIdx.x % p.cols, r = blockIdx.x / p.cols % p.rows, bh = blockIdx.x / p.cols / p.rows;
    const int b = bh / p.heads, h = bh % p.heads;
    const int size = 1 << p.log2_cell, i0 = r << p.log2_cell, j0 = c << p.log2_cell;
    const int rows = imin(size, p.mq - i0), cols = imin(size, p.mkv - j0);
    bool any = false, all = true;
    for (int e = threadIdx.x; e < rows * cols; e += blockDim.x) {
      const bool vis = seen(b, h, i0 + e / cols, j0 + e % cols);
      any |= vis;
      all &= vis;
    }
    any = __syncthreads_or(any);
    all = __syncthreads_and(all);
    if (threadIdx.x == 0)
      p.cells[b * p.cell_stride_b + h * p.cell_stride_h + r * p.cell_stride_r + c] = !any ? 0 : all ? 2 : 1;
    return;
  }
  const int64_t per_head = int64_t(p.mq) * p.mkv, total = per_head * p.batch * p.heads;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int bh = int(e / per_head), b = bh / p.heads, h = bh % p.heads;
    const int i = int(e % per_head / p.mkv), j = int(e % p.mkv);
    float x = neg_inf();
    if (seen(b, h, i, j)) {
      x = 0.f;
      if constexpr (V::kScore) x = v.score_mod(0.f, b, h, i, j);
    }
    p.dense[b * p.dense_stride_b + h * p.dense_stride_h + int64_t(i) * p.dense_stride_m + j] = x;
  }
}

}  // namespace jitattn
