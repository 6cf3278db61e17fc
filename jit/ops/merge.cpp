#include "jit/ops/merge.h"

#include "../../kernel_src/merge_params.h"
#include "jit/jit_runtime.h"
#include "jit/launch.h"
#include "jitattn/error.h"
#include "jitattn/merge.h"

namespace jitattn::jit::ops {

static_assert(kMaxMergeSplitsList == kMaxMergeSplits, "jitattn/merge.h and kernel_src/merge_params.h disagree");

void merge(const MergePlan& p, CUstream stream) {
  if (p.b == 0 || p.m == 0 || p.g == 0 || p.h == 0) return;  // nothing to write
  if (p.splits.empty() || p.splits.size() > size_t(kMaxMergeSplits) || (p.stacked && p.splits.size() != 1))
    throw Error("merge: a plan holds 1 to " + std::to_string(kMaxMergeSplits) + " split views, one when stacked");

  auto& rt = JitRuntime::get();
  const ContextInfo& ctx = rt.context(p.device);
  Signature sig;
  sig.op = Op::merge;
  sig.bias = BiasKind::none;
  sig.dtype = p.in_dtype;
  sig.out_dtype = p.out_dtype;
  sig.head_dim = sig.head_dim_v = uint16_t(p.k);
  sig.set_arch(ctx.arch);
  sig.lse = p.lse != nullptr;
  sig.align = uint8_t(p.align16 ? 16 : element_size(p.in_dtype));
  const LoadedKernel& kernel = rt.kernel(sig, ctx);

  MergeParams mp{};
  for (size_t s = 0; s < p.splits.size(); ++s) {
    const MergeSplitView& v = p.splits[s];
    MergeSplit& sp = mp.split[s];
    sp.out = v.out, sp.lse = v.lse;
    sp.o_stride_b = v.o_stride_b, sp.o_stride_m = v.o_stride_m, sp.o_stride_g = v.o_stride_g, sp.o_stride_h = v.o_stride_h;
    sp.lse_stride_b = v.lse_stride_b, sp.lse_stride_g = v.lse_stride_g, sp.lse_stride_h = v.lse_stride_h;
  }
  mp.stacked = p.stacked ? 1 : 0;
  mp.num_splits = int32_t(p.num_splits);
  mp.o_stride_s = p.o_stride_s, mp.lse_stride_s = p.lse_stride_s;
  mp.out = p.out;
  mp.out_stride_b = p.out_stride_b, mp.out_stride_m = p.out_stride_m, mp.out_stride_g = p.out_stride_g,
  mp.out_stride_h = p.out_stride_h;
  mp.lse = p.lse;
  mp.lse_out_stride_b = p.lse_out_stride_b, mp.lse_out_stride_g = p.lse_out_stride_g,
  mp.lse_out_stride_h = p.lse_out_stride_h;
  mp.batch = int32_t(p.b), mp.m = int32_t(p.m), mp.groups = int32_t(p.g), mp.heads = int32_t(p.h);

  // kernel_src/merge.cuh: 16 bytes of partial output (8 f16/bf16 or 4 f32 elements) per thread.
  const int64_t vec = p.in_dtype == DType::f32 ? 4 : 8;
  const int64_t rows = p.b * p.m * p.g * p.h;
  launch(kernel, &mp, ceil_div(rows * (p.k / vec), kernel.spec.threads()), stream);
}

}  // namespace jitattn::jit::ops
