#include "jit/ops/swiglu.h"

#include <algorithm>

#include "../../kernel_src/swiglu_params.h"
#include "jit/jit_runtime.h"
#include "jit/launch.h"

namespace jitattn::jit::ops {

void swiglu(const SwigluPlan& p, CUstream stream) {
  if (p.rows == 0 || p.cols == 0) return;
  auto& rt = JitRuntime::get();
  const ContextInfo& ctx = rt.context(p.device);
  Signature sig;
  sig.op = p.backward ? Op::swiglu_bwd : Op::swiglu_fwd;
  sig.dtype = sig.out_dtype = p.dtype;
  sig.head_dim = sig.head_dim_v = 8;  // elements per thread (kernel_src/swiglu.cuh kVec)
  sig.set_arch(ctx.arch);
  sig.align = 16;  // one alignment class: the kernel loads element by element
  const LoadedKernel& kernel = rt.kernel(sig, ctx);
  SwigluParams sp{};
  sp.x12 = p.x12, sp.dh = p.dh, sp.h = p.h, sp.dx12 = p.dx12;
  sp.rows = p.rows, sp.cols = p.cols;
  sp.x_stride = p.x_stride, sp.dh_stride = p.dh_stride, sp.h_stride = p.h_stride, sp.dx_stride = p.dx_stride;
  // One thread per 8 columns of a row; a grid-stride loop past a few waves.
  const int64_t vectors = p.rows * ceil_div(p.cols, 8);
  const int64_t cap = int64_t(ctx.sm_count) * 16;
  launch(kernel, &sp, std::min<int64_t>(ceil_div(vectors, kernel.spec.threads()), cap), stream);
}

}  // namespace jitattn::jit::ops
