// Kernel arguments of the block-map builder (block_map.cuh), shared byte for byte by the host
// (jit/ops/block_map.cpp) and the generated kernels.
#pragma once
#include "params.h"

namespace jitattn {

// Evaluates a user variant's mask_mod over queries [0, mq) × keys [0, mkv) of sequences
// b < batch and heads h < heads (batch or heads 1: the map broadcasts over them), and writes
//   cells (when not null): cell (b, h, r, c) of 2^log2_cell × 2^log2_cell elements gets 0 (no
//     element visible), 1 (some) or 2 (every one) at cells[b·cell_stride_b + h·cell_stride_h +
//     r·cell_stride_r + c], r < ceil(mq / 2^log2_cell), c < ceil(mkv / ...);
//   spans (when not null; a second launch, spans_pass = 1, after the cells): row i of (b, h) gets
//     (lo, hi) at spans[b·span_stride_b + h·span_stride_h + 2i] when the keys j < mkv it sees are
//     exactly [lo, hi) ((0, 0) when it sees none), else (0, -1) (BlockMapArgs::spans);
//   dense (when not null): element (b, h, i, j) at dense[b·dense_stride_b + h·dense_stride_h +
//     i·dense_stride_m + j] gets -inf where mask_mod is false, else score_mod(0, b, h, i, j) for an
//     additive score_mod or 0 (materialize(): the variant as an additive bias, f32).
struct BlockMapParams {
  UserArgs user;
  unsigned char* cells;
  int64_t cell_stride_b, cell_stride_h, cell_stride_r;
  float* dense;
  int64_t dense_stride_b, dense_stride_h, dense_stride_m;
  int32_t batch, heads, mq, mkv;
  int32_t rows, cols, log2_cell;
  int32_t* spans;
  int64_t span_stride_b, span_stride_h;
  int32_t spans_pass;
};

}  // namespace jitattn
