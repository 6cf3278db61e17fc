// The backward: validate (the forward's plan plus the gradients), then queue
//   default:        bwd_pre (delta, zeroed dQ accumulator) → bwd (dK, dV, dQ atomics) → bwd_post (dQ)
//   deterministic:  bwd_pre (delta) → bwd_kv (dK, dV) → bwd_dq (dQ, no atomics)
// each a JIT kernel of its own (jit/signature.h Op), all on the caller's stream.
#include <algorithm>
#include <cmath>

#include "jit/cuda_driver.h"
#include "jit/jit_runtime.h"
#include "jit/launch.h"
#include "jitattn/attention.h"
#include "plan.h"

namespace jitattn {

namespace {

constexpr size_t kAlign = 256;
size_t round_up(size_t x) { return (x + kAlign - 1) / kAlign * kAlign; }

AttentionOptions forward_options(const BackwardOptions& o, const TensorView& out) {
  AttentionOptions f;
  f.scale = o.scale;
  f.output_dtype = out.dtype;  // the forward's output may have any dtype the forward allows
  f.p = o.p, f.seed = o.seed, f.offset = o.offset;
  return f;
}

struct Workspace {
  size_t delta_bytes = 0, accum_bytes = 0;
  size_t total() const { return delta_bytes + accum_bytes; }
};
Workspace workspace_of(const detail::Plan& p, bool deterministic) {
  Workspace w;
  const size_t rows = size_t(p.q.b) * size_t(p.q.h) * size_t(p.q.m);
  w.delta_bytes = round_up(rows * sizeof(float));
  if (!deterministic) w.accum_bytes = round_up(rows * size_t(p.q.d) * sizeof(float));
  return w;
}

bool contiguous(const TensorView& t) {
  int64_t expect = 1;
  for (int i = t.ndim - 1; i >= 0; --i) {
    if (t.shape[i] != 1 && t.stride[i] != expect) return false;
    expect *= t.shape[i];
  }
  return true;
}

// A gradient tensor must be readable as the same [B, M, H, K] as its input.
void check_like(std::vector<std::string>& R, const TensorView& g, const char* name, const detail::Bmhk& want,
                bool may_share, DType dtype, int device) {
  if (!g.defined() && !(want.b * want.m * want.h * want.d == 0)) {
    R.push_back(std::string(name) + " is undefined");
    return;
  }
  if (g.ndim < 3 || g.ndim > 5) {
    R.push_back(std::string(name) + " must be 3-D, 4-D or 5-D like its input, got " + std::to_string(g.ndim) + "-D");
    return;
  }
  detail::Bmhk x;
  std::string why;
  if (!detail::as_bmhk(g, may_share, x, &why)) {
    R.push_back(std::string(name) + "." + why);
    return;
  }
  if (x.b != want.b || x.m != want.m || x.h != want.h || x.d != want.d)
    R.push_back(std::string(name) + ".shape=" + g.shape_string() + " must match its input ([B, M, H, K] = [" +
                std::to_string(want.b) + ", " + std::to_string(want.m) + ", " + std::to_string(want.h) + ", " +
                std::to_string(want.d) + "])");
  if (g.stride[g.ndim - 1] != 1 && g.shape[g.ndim - 1] > 1) R.push_back(std::string(name) + ".stride[-1] must be 1");
  if (g.dtype != dtype)
    R.push_back(std::string(name) + ".dtype=" + to_string(g.dtype) + " must be " + to_string(dtype) + " (query's dtype)");
  if (g.device != device) R.push_back(std::string(name) + " must be on the query's device");
}

struct BwdPlan {
  detail::Plan fwd;
  detail::Bmhk grad, dq, dk, dv;
  const TensorView* dbias_of = nullptr;  // the bias tensor dbias mirrors
  int align = 16;
};

BwdPlan plan_backward(const TensorView& grad, const TensorView& out, const TensorView& lse, const TensorView& q,
                      const TensorView& k, const TensorView& v, const AttnBias& bias, const TensorView& dq,
                      const TensorView& dk, const TensorView& dv, const TensorView& dbias, const BackwardOptions& o) {
  BwdPlan b;
  b.fwd = detail::plan(q, k, v, bias, out, lse, forward_options(o, out));
  auto& R = b.fwd.reasons;
  if (!lse.defined()) R.push_back("lse is undefined: the backward needs the forward's lse");
  if (!R.empty()) return b;
  const detail::Plan& p = b.fwd;
  if (jit::is_paged(p.bias.kind))
    R.push_back(std::string("the backward does not support ") + bias_name(bias) + " (paged keys are for inference)");
  check_like(R, grad, "grad", p.o, false, q.dtype, q.device);
  check_like(R, dq, "dq", p.q, false, q.dtype, q.device);
  check_like(R, dk, "dk", p.k, true, q.dtype, q.device);
  check_like(R, dv, "dv", p.v, true, q.dtype, q.device);
  if (!R.empty()) return b;
  detail::as_bmhk(grad, false, b.grad, nullptr);
  detail::as_bmhk(dq, false, b.dq, nullptr);
  detail::as_bmhk(dk, true, b.dk, nullptr);
  detail::as_bmhk(dv, true, b.dv, nullptr);
  if (dbias.defined()) {
    const TensorView* t = p.bias.tensor;
    if (!t) {
      R.push_back(std::string("dbias needs a dense tensor bias (TensorBias or LowerTriangularMaskWithTensorBias), not ") +
                  bias_name(bias));
    } else {
      bool same = dbias.ndim == t->ndim;
      for (int i = 0; same && i < t->ndim; ++i) same = dbias.shape[i] == t->shape[i];
      if (!same) R.push_back("dbias.shape=" + dbias.shape_string() + " must equal attn_bias.shape=" + t->shape_string());
      bool broadcast = false;
      for (int i = 0; i < t->ndim - 2; ++i) broadcast |= t->stride[i] == 0 && t->shape[i] > 1;
      const int64_t heads = t->ndim == 5 ? t->shape[1] * t->shape[2] : t->shape[1];
      if (broadcast || t->shape[0] != p.q.b || heads != p.q.h)
        R.push_back("dbias needs attn_bias of full shape [B, H, Mq, Mkv] without broadcast (got " + t->shape_string() +
                    "): a broadcast bias's gradient is a sum the backward does not compute");
      if (!contiguous(dbias)) R.push_back("dbias must be contiguous");
      if (dbias.dtype != q.dtype) R.push_back(std::string("dbias.dtype=") + to_string(dbias.dtype) + " must be " + to_string(q.dtype));
      if (dbias.device != q.device) R.push_back("dbias must be on the query's device");
      b.dbias_of = t;
    }
  }
  // Key rows of no sequence (padded/gappy layouts) get zero gradients by a memset of dk/dv.
  if (p.bias.k_seqlen && (!contiguous(dk) || !contiguous(dv)))
    R.push_back(std::string("dk and dv must be contiguous with ") + bias_name(bias) + " (rows outside every sequence are zeroed)");
  b.align = p.align;
  if (q.dtype != DType::f32 && b.align == 16) {
    const bool a16 = detail::aligned16(grad, b.grad) && detail::aligned16(dq, b.dq) && detail::aligned16(dk, b.dk) &&
                     detail::aligned16(dv, b.dv);
    if (!a16) b.align = 2;
  }
  return b;
}

void memset_async(void* ptr, size_t bytes, CUstream stream) {
  if (bytes == 0) return;
  jit::check_cuda(jit::CudaDriver::get().cuMemsetD8Async(reinterpret_cast<CUdeviceptr>(ptr), 0, bytes, stream),
                  "cuMemsetD8Async");
}

}  // namespace

void memory_efficient_attention_backward(const TensorView& grad, const TensorView& out, const TensorView& lse,
                                         const TensorView& q, const TensorView& k, const TensorView& v,
                                         const AttnBias& bias, const TensorView& dq, const TensorView& dk,
                                         const TensorView& dv, const TensorView& dbias, const BackwardOptions& o,
                                         void* stream_ptr) {
  const BwdPlan b = plan_backward(grad, out, lse, q, k, v, bias, dq, dk, dv, dbias, o);
  if (!b.fwd.reasons.empty()) throw Error(b.fwd.reasons);
  const detail::Plan& p = b.fwd;
  const CUstream stream = static_cast<CUstream>(stream_ptr);
  auto& rt = jit::JitRuntime::get();
  const jit::CudaDriver& d = jit::CudaDriver::require();
  const jit::ContextInfo& ctx = rt.context(q.device);

  const size_t elem = element_size(q.dtype);
  if (p.bias.k_seqlen) {
    memset_async(dk.data, size_t(dk.numel()) * elem, stream);
    memset_async(dv.data, size_t(dv.numel()) * elem, stream);
  }
  if (dbias.defined()) memset_async(dbias.data, size_t(dbias.numel()) * elem, stream);
  if (p.q.b == 0 || p.q.h == 0 || p.q.m == 0) {  // no queries: every gradient of K and V is 0
    memset_async(dk.data, size_t(dk.numel()) * elem, stream);
    memset_async(dv.data, size_t(dv.numel()) * elem, stream);
    return;
  }

  jit::Signature sig = detail::signature(p, q, out, true, ctx.arch);
  sig.align = uint8_t(b.align);
  sig.dropout = o.p > 0;
  auto kernel = [&](jit::Op op, bool with_bias) -> const jit::LoadedKernel& {
    jit::Signature s = sig;
    s.op = op;
    if (!with_bias) s.bias = jit::BiasKind::none, s.dropout = 0;
    if (op != jit::Op::bwd_pre) s.out_dtype = q.dtype;  // only bwd_pre reads out
    s.dbias = op == jit::Op::bwd || op == jit::Op::bwd_kv ? dbias.defined() : 0;
    return rt.kernel(s, ctx);
  };
  // Fetch (compile) every kernel before queueing anything, so a compile error leaves nothing half done.
  const jit::LoadedKernel& pre = kernel(jit::Op::bwd_pre, false);
  const jit::LoadedKernel& main = kernel(o.deterministic ? jit::Op::bwd_kv : jit::Op::bwd, true);
  const jit::LoadedKernel& last = o.deterministic ? kernel(jit::Op::bwd_dq, true) : kernel(jit::Op::bwd_post, false);

  BwdParams bp{};
  AttentionOptions fo = forward_options(o, out);
  if (!detail::forward_params(p, q, k, v, out, lse, fo, bp.f)) {
    memset_async(dq.data, size_t(dq.numel()) * elem, stream);  // only empty sequences: no query sees a key
    memset_async(dk.data, size_t(dk.numel()) * elem, stream);
    memset_async(dv.data, size_t(dv.numel()) * elem, stream);
    return;
  }
  bp.dout = grad.data;
  bp.dq = dq.data, bp.dk = dk.data, bp.dv = dv.data;
  bp.do_stride_b = b.grad.sb, bp.do_stride_m = b.grad.sm, bp.do_stride_h = b.grad.sh;
  bp.dq_stride_b = b.dq.sb, bp.dq_stride_m = b.dq.sm, bp.dq_stride_h = b.dq.sh;
  bp.dk_stride_b = b.dk.sb, bp.dk_stride_m = b.dk.sm, bp.dk_stride_h = b.dk.sh;
  bp.dv_stride_b = b.dv.sb, bp.dv_stride_m = b.dv.sm, bp.dv_stride_h = b.dv.sh;
  if (dbias.defined()) {
    bp.dbias = dbias.data;  // contiguous [B, H, Mq, Mkv] (or [B, G, H, Mq, Mkv])
    bp.dbias_stride_m = p.k.m;
    bp.dbias_stride_h = p.q.m * p.k.m;
    bp.dbias_stride_b = p.q.h * bp.dbias_stride_h;
  }
  bp.kv_heads = int32_t(p.k.h);
  bp.max_mkv = p.bias.q_seqinfo ? p.bias.k_max_seqlen : int32_t(p.k.m);
  bp.scale = float(p.scale);

  const Workspace w = workspace_of(p, o.deterministic);
  CUdeviceptr scratch = reinterpret_cast<CUdeviceptr>(o.workspace);
  const bool own = scratch == 0;
  if (own) jit::check_cuda(d.cuMemAllocAsync(&scratch, w.total(), stream), "cuMemAllocAsync (backward workspace)");
  bp.delta = reinterpret_cast<float*>(scratch);
  bp.dq_accum = o.deterministic ? nullptr : reinterpret_cast<float*>(scratch + w.delta_bytes);
  try {
    jit::launch_backward(pre, bp, stream);
    jit::launch_backward(main, bp, stream);
    jit::launch_backward(last, bp, stream);
  } catch (...) {
    if (own) (void)d.cuMemFreeAsync(scratch, stream);
    throw;
  }
  if (own) jit::check_cuda(d.cuMemFreeAsync(scratch, stream), "cuMemFreeAsync (backward workspace)");
}

size_t memory_efficient_attention_backward_workspace_bytes(const TensorView& q, const TensorView& k,
                                                           const TensorView& v, const AttnBias& bias,
                                                           const BackwardOptions& o) {
  // Shapes only: an out/lse of the right shape is implied.
  if (q.ndim < 3 || q.ndim > 5) throw Error("query must be 3-D, 4-D or 5-D, got " + std::to_string(q.ndim) + "-D");
  detail::Bmhk x;
  std::string why;
  if (!detail::as_bmhk(q, false, x, &why)) throw Error("query." + why);
  detail::Plan p;
  p.q = x;
  (void)k, (void)v, (void)bias;
  return workspace_of(p, o.deterministic).total();
}

std::vector<std::string> backward_not_supported_reasons(const TensorView& grad, const TensorView& out,
                                                        const TensorView& lse, const TensorView& q,
                                                        const TensorView& k, const TensorView& v,
                                                        const AttnBias& bias, const TensorView& dq,
                                                        const TensorView& dk, const TensorView& dv,
                                                        const TensorView& dbias, const BackwardOptions& options) {
  try {
    return plan_backward(grad, out, lse, q, k, v, bias, dq, dk, dv, dbias, options).fwd.reasons;
  } catch (const std::exception& e) {
    return {e.what()};
  }
}

}  // namespace jitattn
