// The backward's entry points: validate (the forward's plan plus the gradients: shapes, sharing,
// overlap), then run the backward op (jit/ops/backward.cpp).
#include <algorithm>
#include <cmath>
#include <tuple>

#include "jit/ops/backward.h"
#include "jitattn/attention.h"
#include "layout.h"
#include "plan.h"

namespace jitattn {

namespace {

AttentionOptions forward_options(const BackwardOptions& o, const TensorView& out) {
  AttentionOptions f;
  f.scale = o.scale;
  f.output_dtype = out.dtype;  // the forward's output may have any dtype the forward allows
  f.p = o.p, f.seed = o.seed, f.offset = o.offset;
  f.variant = o.variant;
  f.block_map = o.block_map;
  return f;
}

using detail::contiguous;

// A gradient tensor must be readable as the same [B, M, H, K] as its input. dk/dv (`kv`): with
// `share`, a view expanded over all heads by stride 0 is one head's gradient (share_heads).
void check_like(std::vector<std::string>& R, const TensorView& g, const char* name, const detail::Bmhk& want, bool kv,
                bool share, DType dtype, int device) {
  if (!g.defined() && g.ndim == 0) {
    R.push_back(std::string(name) + " is undefined");
    return;
  }
  if (g.ndim < 3 || g.ndim > 5) {
    R.push_back(std::string(name) + " must be 3-D, 4-D or 5-D like its input, got " + std::to_string(g.ndim) + "-D");
    return;
  }
  const size_t before = R.size();
  detail::check_layout(g, name, R);
  if (R.size() != before) return;
  if (!g.defined() && g.numel() > 0) {
    R.push_back(std::string(name) + " is undefined");
    return;
  }
  detail::Bmhk x;
  std::string why;
  if (!detail::as_bmhk(g, kv, x, &why)) {
    R.push_back(std::string(name) + "." + why);
    return;
  }
  if (share) detail::share_heads(x);
  if (x.b == want.b && x.m == want.m && x.d == want.d && x.h != want.h && kv) {
    if (x.h == 1 && share)
      R.push_back(std::string(name) + " is expanded over its heads by stride 0 (one gradient for all of them) but its "
                  "input has " + std::to_string(want.h) + " distinct heads: pass a " + name + " with a head stride");
    else
      R.push_back(std::string(name) + " has " + std::to_string(x.h) + " heads of its own but its input is expanded over "
                  "them by stride 0 (" + std::to_string(want.h) + " head(s) in memory): pass " + name +
                  " expanded the same way, which receives the sum over the heads that share it");
  } else if (x.b != want.b || x.m != want.m || x.h != want.h || x.d != want.d) {
    R.push_back(std::string(name) + ".shape=" + g.shape_string() + " must match its input ([B, M, H, K] = [" +
                std::to_string(want.b) + ", " + std::to_string(want.m) + ", " + std::to_string(want.h) + ", " +
                std::to_string(want.d) + "])");
  }
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

// dK and dV given as key/value expanded over all their heads by stride 0 (xFormers' MQA form,
// 5-D with G = 1 or 4-D) are the gradient of that one head's memory: the sum over the query
// heads that share it, computed as MQA.
bool gradients_share_heads(const TensorView& dk, const TensorView& dv) {
  for (const TensorView* g : {&dk, &dv}) {
    std::vector<std::string> bad;
    if (g->ndim < 3 || g->ndim > 5) return false;
    detail::check_layout(*g, "", bad);
    detail::Bmhk x;
    if (!bad.empty() || !detail::as_bmhk(*g, true, x, nullptr) || !detail::shares_heads(x)) return false;
  }
  return true;
}

BwdPlan plan_backward(const TensorView& grad, const TensorView& out, const TensorView& lse, const TensorView& q,
                      const TensorView& k, const TensorView& v, const AttnBias& bias, const TensorView& dq,
                      const TensorView& dk, const TensorView& dv, const TensorView& dbias, const BackwardOptions& o) {
  BwdPlan b;
  const bool share = gradients_share_heads(dk, dv);
  b.fwd = detail::plan(q, k, v, bias, out, lse, forward_options(o, out), share);
  auto& R = b.fwd.reasons;
  if (o.workspace && reinterpret_cast<uintptr_t>(o.workspace) % 16 != 0)
    R.push_back("workspace must be 16-byte aligned (the fp32 accumulators are copied 16 bytes at a time; "
                "cuMemAlloc and torch's allocator give 256)");
  if (!lse.defined()) R.push_back("lse is undefined: the backward needs the forward's lse");
  if (!R.empty()) return b;
  const detail::Plan& p = b.fwd;
  if (!jit::has_backward(p.bias.kind))
    R.push_back(std::string("the backward does not support ") + bias_name(bias) + " (paged keys are for inference)");
  if (o.variant && !o.variant->score_code().empty() && o.variant->score_grad_code().empty() && !o.variant->additive())
    R.push_back("options.variant: the backward of a score_mod needs its derivative score_grad (score_mod(code, grad)) or "
                "additive_score()");
  check_like(R, grad, "grad", p.o, false, false, q.dtype, q.device);
  check_like(R, dq, "dq", p.q, false, false, q.dtype, q.device);
  check_like(R, dk, "dk", p.k, true, share, q.dtype, q.device);
  check_like(R, dv, "dv", p.v, true, share, q.dtype, q.device);
  if (!R.empty()) return b;
  detail::as_bmhk(grad, false, b.grad, nullptr);
  detail::as_bmhk(dq, false, b.dq, nullptr);
  detail::as_bmhk(dk, true, b.dk, nullptr);
  detail::as_bmhk(dv, true, b.dv, nullptr);
  if (share) detail::share_heads(b.dk), detail::share_heads(b.dv);
  if (dbias.defined()) {
    const TensorView* t = p.bias.tensor;
    if (!t) {
      R.push_back(std::string("dbias needs a dense tensor bias (TensorBias or LowerTriangularMaskWithTensorBias), not ") +
                  bias_name(bias));
    } else {
      const size_t before = R.size();
      detail::check_layout(dbias, "dbias", R);
      if (R.size() != before) return b;
      bool same = dbias.ndim == t->ndim;
      for (int i = 0; same && i < t->ndim; ++i) same = dbias.shape[i] == t->shape[i];
      if (!same) R.push_back("dbias.shape=" + dbias.shape_string() + " must equal attn_bias.shape=" + t->shape_string());
      bool broadcast = false;  // an empty bias has nothing to sum (its strides may be 0 anywhere)
      for (int i = 0; i < t->ndim - 2 && t->numel() > 0; ++i) broadcast |= t->stride[i] == 0 && t->shape[i] > 1;
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
  if (!R.empty()) return b;
  using detail::Strided;
  const detail::Named outputs[] = {
      {Strided::of(dq), "dq"},
      {Strided::of(dk.data, dk.dtype, {{b.dk.b, b.dk.sb}, {b.dk.m, b.dk.sm}, {b.dk.h, b.dk.sh}, {b.dk.d, 1}}), "dk"},
      {Strided::of(dv.data, dv.dtype, {{b.dv.b, b.dv.sb}, {b.dv.m, b.dv.sm}, {b.dv.h, b.dv.sh}, {b.dv.d, 1}}), "dv"},
      {Strided::of(dbias), "dbias"}};
  const detail::Named inputs[] = {{Strided::of(grad), "grad"}, {Strided::of(out), "out"}, {Strided::of(lse), "lse"},
                                  {Strided::of(q), "query"},   {Strided::of(k), "key"},     {Strided::of(v), "value"},
                                  {p.bias.tensor ? Strided::of(*p.bias.tensor) : Strided{}, "attn_bias"}};
  detail::check_no_overlap(outputs, dbias.defined() ? 4 : 3, inputs, p.bias.tensor ? 7 : 6, R);
  b.align = p.align;
  if (q.dtype != DType::f32 && b.align == 16) {
    const bool a16 = detail::aligned16(grad, b.grad) && detail::aligned16(dq, b.dq) && detail::aligned16(dk, b.dk) &&
                     detail::aligned16(dv, b.dv);
    if (!a16) b.align = 2;
  }
  return b;
}

}  // namespace

void memory_efficient_attention_backward(const TensorView& grad, const TensorView& out, const TensorView& lse,
                                         const TensorView& q, const TensorView& k, const TensorView& v,
                                         const AttnBias& bias, const TensorView& dq, const TensorView& dk,
                                         const TensorView& dv, const TensorView& dbias, const BackwardOptions& o,
                                         void* stream_ptr) {
  const BwdPlan b = plan_backward(grad, out, lse, q, k, v, bias, dq, dk, dv, dbias, o);
  if (!b.fwd.reasons.empty()) throw Error(b.fwd.reasons);
  jit::ops::BackwardPlan op;
  op.fwd = b.fwd;
  op.grad = b.grad, op.dq = b.dq, op.dk = b.dk, op.dv = b.dv;
  op.grad_data = grad.data, op.dq_data = dq.data, op.dk_data = dk.data, op.dv_data = dv.data;
  if (dbias.defined()) op.dbias = dbias.data, op.dbias_bytes = size_t(dbias.numel()) * element_size(dbias.dtype);
  op.align = b.align;
  op.deterministic = o.deterministic;
  op.workspace = o.workspace;
  jit::ops::backward(op, static_cast<CUstream>(stream_ptr));
}

size_t memory_efficient_attention_backward_workspace_bytes(const TensorView& q, const TensorView& k,
                                                           const TensorView& v, const AttnBias& bias,
                                                           const BackwardOptions& o) {
  // Shapes only: an out/lse of the right shape is implied. An upper bound over every dK/dV layout.
  detail::Plan p;
  std::vector<std::string> R;
  for (auto [t, x, name] : {std::tuple<const TensorView*, detail::Bmhk*, const char*>{&q, &p.q, "query"},
                            {&k, &p.k, "key"}, {&v, &p.v, "value"}}) {
    if (t->ndim < 3 || t->ndim > 5) {
      R.push_back(std::string(name) + " must be 3-D, 4-D or 5-D, got " + std::to_string(t->ndim) + "-D");
      continue;
    }
    const size_t before = R.size();
    detail::check_layout(*t, name, R);
    std::string why;
    if (R.size() == before && !detail::as_bmhk(*t, t != &q, *x, &why)) R.push_back(std::string(name) + "." + why);
  }
  if (!R.empty()) throw Error(R);
  p.bias = detail::describe(bias);
  return jit::ops::backward_workspace_bytes(p, o.deterministic);
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
