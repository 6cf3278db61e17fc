#include "jit/ops/block_map.h"

#include <algorithm>

#include "../../kernel_src/block_map_params.h"
#include "jit/jit_runtime.h"
#include "jit/launch.h"
#include "jit/ops/forward_params.h"

namespace jitattn::jit::ops {

void block_map(const BlockMapPlan& p, CUstream stream) {
  if (p.batch == 0 || p.heads == 0 || p.mq == 0 || p.mkv == 0) return;
  auto& rt = JitRuntime::get();
  const ContextInfo& ctx = rt.context(p.device);
  Signature sig;
  sig.op = Op::block_map;
  sig.dtype = sig.out_dtype = DType::f32;
  sig.head_dim = sig.head_dim_v = 8;  // unused: the kernel reads no rows
  sig.arch_sm = ctx.arch.sm;
  sig.arch_specific = ctx.arch.specific;
  sig.align = 4;
  sig.variant = p.variant.id;
  const LoadedKernel& kernel = rt.kernel(sig, ctx);
  BlockMapParams bp{};
  user_args(p.variant, bp.user);
  bp.cells = p.cells;
  bp.cell_stride_b = p.cell_stride_b, bp.cell_stride_h = p.cell_stride_h, bp.cell_stride_r = p.cell_stride_r;
  bp.dense = p.dense;
  bp.dense_stride_b = p.dense_stride_b, bp.dense_stride_h = p.dense_stride_h, bp.dense_stride_m = p.dense_stride_m;
  bp.batch = p.batch, bp.heads = p.heads, bp.mq = p.mq, bp.mkv = p.mkv;
  bp.rows = p.rows, bp.cols = p.cols, bp.log2_cell = p.log2_cell;
  if (p.cells) {  // one block per cell, then one warp per row for the spans
    launch(kernel, &bp, int64_t(p.batch) * p.heads * p.rows * p.cols, stream);
    if (p.spans) {
      bp.spans = p.spans, bp.span_stride_b = p.span_stride_b, bp.span_stride_h = p.span_stride_h;
      bp.spans_pass = 1;
      launch(kernel, &bp, ceil_div(int64_t(p.batch) * p.heads * p.mq, int64_t(kernel.spec.threads() / 32)), stream);
    }
  } else {  // one thread per element, a grid-stride loop past a few waves
    const int64_t elements = int64_t(p.batch) * p.heads * p.mq * p.mkv;
    launch(kernel, &bp, std::min<int64_t>(ceil_div(elements, kernel.spec.threads()), int64_t(ctx.sm_count) * 16), stream);
  }
}

}  // namespace jitattn::jit::ops
