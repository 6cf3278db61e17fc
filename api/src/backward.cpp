// The backward: validate (the forward's plan plus the gradients), then queue
//   default:        bwd_pre (delta, zeroed dQ accumulator) → bwd (dK, dV, dQ atomics) → bwd_post (dQ)
//   deterministic:  bwd_pre (delta) → bwd_kv (dK, dV) → bwd_dq (dQ, no atomics)
// each a JIT kernel of its own (jit/signature.h Op), all on the caller's stream.
#include <algorithm>
#include <cmath>
#include <map>
#include <tuple>

#include "jit/cuda_driver.h"
#include "jit/jit_runtime.h"
#include "jit/launch.h"
#include "jitattn/attention.h"
#include "layout.h"
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

// Every key row in at most one sequence? xFormers' gappy keys allow sequences whose key ranges
// overlap; a shared row's dK/dV is the sum over the sequences that see it.
bool keys_overlap(const detail::BiasPlan& b) {
  if (!b.k_seqlen || !b.k_seqstart || b.block_tables) return false;
  const auto& start = b.k_seqstart->host();
  const auto& len = b.k_seqlen->host();
  std::vector<std::pair<int64_t, int64_t>> ranges;
  for (size_t i = 0; i < len.size() && i < start.size(); ++i)
    if (len[i] > 0) ranges.push_back({start[i], int64_t(start[i]) + len[i]});
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i)
    if (ranges[i].first < ranges[i - 1].second) return true;
  return false;
}

// Consecutive sequences [first, last) of which no two share a key row, covering 0..batch: the
// deterministic mode sums shared rows one such run after the other, without races.
std::vector<std::pair<int32_t, int32_t>> disjoint_runs(const detail::BiasPlan& b) {
  const auto& start = b.k_seqstart->host();
  const auto& len = b.k_seqlen->host();
  std::vector<std::pair<int32_t, int32_t>> runs;
  std::map<int64_t, int64_t> taken;  // start → end of the run's key ranges
  int32_t first = 0;
  for (int32_t i = 0; i < int32_t(len.size()); ++i) {
    if (len[size_t(i)] <= 0) continue;
    const int64_t lo = start[size_t(i)], hi = lo + len[size_t(i)];
    auto next = taken.lower_bound(lo);
    const bool clash = (next != taken.end() && next->first < hi) || (next != taken.begin() && std::prev(next)->second > lo);
    if (clash) {
      runs.push_back({first, i});
      first = i;
      taken.clear();
    }
    taken[lo] = hi;
  }
  runs.push_back({first, int32_t(len.size())});
  return runs;
}

// Nothing to compute: no query row (every gradient of K and V is then 0).
bool no_queries(const detail::Plan& p) {
  if (p.q.b == 0 || p.q.h == 0 || p.q.m == 0) return true;
  const SeqLenInfo* q = p.bias.q_seqinfo;
  return q && (q->batch() == 0 || q->max_seqlen == 0);
}

// Calls that may sum dK/dV in fp32 accumulators (see BwdParams::dk_accum): key rows outside
// every sequence must read 0, or no query touches them at all.
bool may_accumulate(const detail::Plan& p) { return p.bias.k_seqlen || no_queries(p); }

struct Workspace {
  size_t delta_bytes = 0, accum_bytes = 0, dk_bytes = 0, dv_bytes = 0;
  size_t total() const { return delta_bytes + accum_bytes + dk_bytes + dv_bytes; }
};
Workspace workspace_of(const detail::Plan& p, bool deterministic) {
  Workspace w;
  const size_t rows = size_t(p.q.b) * size_t(p.q.h) * size_t(p.q.m);
  w.delta_bytes = round_up(rows * sizeof(float));
  if (!deterministic) w.accum_bytes = round_up(rows * size_t(p.q.d) * sizeof(float));
  if (may_accumulate(p)) {
    const size_t kv_rows = size_t(p.k.b) * size_t(p.k.h) * size_t(p.k.m);
    w.dk_bytes = round_up(kv_rows * size_t(p.k.d) * sizeof(float));
    w.dv_bytes = round_up(kv_rows * size_t(p.v.d) * sizeof(float));
  }
  return w;
}

// The view covers one dense block (so one memset zeroes exactly its elements).
bool packed(const detail::Bmhk& x) {
  return (x.h <= 1 || x.sh == x.d) && (x.m <= 1 || x.sm == x.h * x.d) && (x.b <= 1 || x.sb == x.m * x.h * x.d);
}
size_t bytes_of(const detail::Bmhk& x, DType dt) { return size_t(x.b * x.m * x.h * x.d) * element_size(dt); }

bool contiguous(const TensorView& t) {
  int64_t expect = 1;
  for (int i = t.ndim - 1; i >= 0; --i) {
    if (t.shape[i] != 1 && t.stride[i] != expect) return false;
    expect *= t.shape[i];
  }
  return true;
}

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
  if (!lse.defined()) R.push_back("lse is undefined: the backward needs the forward's lse");
  if (!R.empty()) return b;
  const detail::Plan& p = b.fwd;
  if (jit::is_paged(p.bias.kind))
    R.push_back(std::string("the backward does not support ") + bias_name(bias) + " (paged keys are for inference)");
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
  if (!R.empty()) return b;
  using detail::Strided;
  std::vector<detail::Named> outputs{
      {Strided::of(dq), "dq"},
      {Strided::of(dk.data, dk.dtype, {{b.dk.b, b.dk.sb}, {b.dk.m, b.dk.sm}, {b.dk.h, b.dk.sh}, {b.dk.d, 1}}), "dk"},
      {Strided::of(dv.data, dv.dtype, {{b.dv.b, b.dv.sb}, {b.dv.m, b.dv.sm}, {b.dv.h, b.dv.sh}, {b.dv.d, 1}}), "dv"}};
  if (dbias.defined()) outputs.push_back({Strided::of(dbias), "dbias"});
  std::vector<detail::Named> inputs{{Strided::of(grad), "grad"}, {Strided::of(out), "out"}, {Strided::of(lse), "lse"},
                                    {Strided::of(q), "query"},   {Strided::of(k), "key"},     {Strided::of(v), "value"}};
  if (p.bias.tensor) inputs.push_back({Strided::of(*p.bias.tensor), "attn_bias"});
  detail::check_no_overlap(outputs, inputs, R);
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

// bwd_post over a dK or dV accumulator: the gradient in the input dtype through the caller's strides.
void write_accumulated(const jit::LoadedKernel& post, const BwdParams& bp, float* accum, void* grad,
                       const detail::Bmhk& x, CUstream stream) {
  BwdParams cv = bp;
  cv.f.batch_rows = int32_t(x.b), cv.f.mq_rows = int32_t(x.m), cv.f.heads = int32_t(x.h);
  cv.dq = grad, cv.dq_accum = accum;
  cv.dq_stride_b = x.sb, cv.dq_stride_m = x.sm, cv.dq_stride_h = x.sh;
  cv.scale = 1.f;  // the main kernel scaled dK and dV before summing them
  jit::launch_backward(post, cv, stream);
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

  // dK/dV are stored by the main kernel, or summed in fp32 (BwdParams::dk_accum) and written by
  // bwd_post: when sequences share key rows, or rows no sequence sees must read 0 and one memset
  // cannot zero exactly the gradients' elements.
  const bool nothing = no_queries(p);
  const bool overlap = keys_overlap(p.bias);
  const bool accumulate = overlap || (may_accumulate(p) && !(packed(b.dk) && packed(b.dv)));

  jit::Signature sig = detail::signature(p, q, out, true, ctx.arch);
  sig.align = uint8_t(b.align);
  sig.dropout = o.p > 0;
  auto kernel = [&](jit::Op op, bool with_bias, int head_dim = 0) -> const jit::LoadedKernel& {
    jit::Signature s = sig;
    s.op = op;
    if (!with_bias) s.bias = jit::BiasKind::none, s.dropout = 0;
    if (op != jit::Op::bwd_pre) s.out_dtype = q.dtype;  // only bwd_pre reads out
    s.dbias = op == jit::Op::bwd || op == jit::Op::bwd_kv ? dbias.defined() : 0;
    if (head_dim) s.head_dim = s.head_dim_v = uint16_t(head_dim);  // bwd_post over dK or dV
    return rt.kernel(s, ctx);
  };
  // Fetch (compile) every kernel before queueing anything, so a compile error leaves nothing half done.
  const jit::LoadedKernel* post_k = accumulate ? &kernel(jit::Op::bwd_post, false, int(p.k.d)) : nullptr;
  const jit::LoadedKernel* post_v = accumulate ? &kernel(jit::Op::bwd_post, false, int(p.v.d)) : nullptr;
  const jit::LoadedKernel* pre = nothing ? nullptr : &kernel(jit::Op::bwd_pre, false);
  const jit::LoadedKernel* main = nothing ? nullptr : &kernel(o.deterministic ? jit::Op::bwd_kv : jit::Op::bwd, true);
  const jit::LoadedKernel* last =
      nothing ? nullptr : o.deterministic ? &kernel(jit::Op::bwd_dq, true) : &kernel(jit::Op::bwd_post, false);

  const size_t elem = element_size(q.dtype);
  if (!accumulate && (p.bias.k_seqlen || nothing)) {  // rows outside every sequence are 0
    memset_async(dk.data, bytes_of(b.dk, q.dtype), stream);
    memset_async(dv.data, bytes_of(b.dv, q.dtype), stream);
  }
  if (dbias.defined()) memset_async(dbias.data, size_t(dbias.numel()) * elem, stream);
  if (nothing && (!accumulate || bytes_of(b.dk, q.dtype) + bytes_of(b.dv, q.dtype) == 0)) return;

  BwdParams bp{};
  AttentionOptions fo = forward_options(o, out);
  detail::forward_params(p, q, k, v, out, lse, fo, bp.f);
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
  if (accumulate) {
    bp.dk_accum = reinterpret_cast<float*>(scratch + w.delta_bytes + w.accum_bytes);
    bp.dv_accum = reinterpret_cast<float*>(scratch + w.delta_bytes + w.accum_bytes + w.dk_bytes);
  }
  try {
    if (accumulate) memset_async(bp.dk_accum, w.dk_bytes + w.dv_bytes, stream);
    if (!nothing) {
      jit::launch_backward(*pre, bp, stream);
      if (o.deterministic && overlap) {
        // Sequences that share key rows go in separate launches, so no two blocks add to one
        // accumulator row concurrently and the sums are the same on every run.
        for (auto [first, last_seq] : disjoint_runs(p.bias)) {
          BwdParams run = bp;
          run.f.batch = last_seq - first;
          run.f.q_seqstart += first, run.f.k_seqstart += first, run.f.k_seqlen += first;
          jit::launch_backward(*main, run, stream);
        }
      } else {
        jit::launch_backward(*main, bp, stream);
      }
      jit::launch_backward(*last, bp, stream);
    }
    if (accumulate) {
      write_accumulated(*post_k, bp, bp.dk_accum, dk.data, b.dk, stream);
      write_accumulated(*post_v, bp, bp.dv_accum, dv.data, b.dv, stream);
    }
  } catch (...) {
    if (own) (void)d.cuMemFreeAsync(scratch, stream);
    throw;
  }
  if (own) jit::check_cuda(d.cuMemFreeAsync(scratch, stream), "cuMemFreeAsync (backward workspace)");
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
