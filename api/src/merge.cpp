// merge_attentions and memory_efficient_attention_partial: validate (every reason, naming the
// argument and the rule) into a jit::ops::MergePlan, then run the merge op (jit/ops/merge.cpp).
#include "jitattn/merge.h"

#include <cstdint>
#include <string>

#include "jit/ops/merge.h"
#include "layout.h"
#include "plan.h"

namespace jitattn {

namespace {

using Reasons = std::vector<std::string>;
std::string S(int64_t x) { return std::to_string(x); }

// The merge's geometry: outputs [B, M, G, H, K], lses [B, G, H, M]; G = 1 for 4-D tensors.
struct Geo {
  int64_t b = 0, m = 0, g = 1, h = 0, k = 0;
};

// Strides of a [B, M, (G,) H, K] tensor whose first dimension is at `first` (1 when stacked).
// Strides of size-1 dimensions are 0: they are never multiplied by a nonzero index, so they
// neither move the pointer nor count against alignment.
struct OutStrides {
  int64_t b = 0, m = 0, g = 0, h = 0;
};
OutStrides out_strides(const TensorView& t, int first) {
  const int n = t.ndim - first;  // 4 or 5
  auto st = [&](int d) { return t.shape[first + d] == 1 ? 0 : t.stride[first + d]; };
  OutStrides s;
  s.b = st(0), s.m = st(1);
  if (n == 5) s.g = st(2), s.h = st(3);
  else s.h = st(2);
  return s;
}
struct LseStrides {
  int64_t b = 0, g = 0, h = 0;
};
LseStrides lse_strides(const TensorView& t, int first) {
  const int n = t.ndim - first;  // 3 or 4
  auto st = [&](int d) { return t.shape[first + d] == 1 ? 0 : t.stride[first + d]; };
  LseStrides s;
  s.b = st(0);
  if (n == 4) s.g = st(1), s.h = st(2);
  else s.h = st(1);
  return s;
}

std::string want_out_shape(const Geo& g, int ndim) {
  return ndim == 5 ? "[B, M, G, H, K] = [" + S(g.b) + ", " + S(g.m) + ", " + S(g.g) + ", " + S(g.h) + ", " + S(g.k) + "]"
                   : "[B, M, H, K] = [" + S(g.b) + ", " + S(g.m) + ", " + S(g.h) + ", " + S(g.k) + "]";
}
std::string want_lse_shape(const Geo& g, int ndim) {
  return ndim == 5 ? "[B, G, H, M] = [" + S(g.b) + ", " + S(g.g) + ", " + S(g.h) + ", " + S(g.m) + "]"
                   : "[B, H, M] = [" + S(g.b) + ", " + S(g.h) + ", " + S(g.m) + "]";
}

// The generic rules of one tensor: no negative size or stride, offsets that fit, data aligned to
// its element, last stride 1 (when that dimension has more
// than one element), device memory, data where there are elements.
// Attention outputs are floating point: u8 and i32 are masks' and block maps' bytes only.
void check_float(const TensorView& t, const std::string& name, Reasons& R) {
  if (!detail::attention_dtype(t.dtype))
    R.push_back(name + ".dtype=" + to_string(t.dtype) + " must be f16, bf16 or f32");
}

void check_basics(const TensorView& t, const std::string& name, Reasons& R) {
  detail::check_layout(t, name, R);  // no negative size or stride, every offset in int64, element-aligned data
  if (t.ndim > 0 && t.shape[t.ndim - 1] > 1 && t.stride[t.ndim - 1] != 1)
    R.push_back(name + ".stride[-1]=" + S(t.stride[t.ndim - 1]) + " must be 1");
  if (t.device < 0) R.push_back(name + " must be in CUDA device memory (device >= 0)");
  if (!t.data && t.numel() > 0) R.push_back(name + ".data is null");
}

// `t` from dimension `first` on must be [B, M, (G,) H, K] as `out` (ndim = out.ndim).
void check_out_shape(const TensorView& t, int first, const std::string& name, const Geo& g, int ndim, Reasons& R) {
  bool same = t.ndim - first == ndim;
  const int64_t want[5] = {g.b, g.m, ndim == 5 ? g.g : g.h, ndim == 5 ? g.h : g.k, g.k};
  for (int d = 0; same && d < ndim; ++d) same = t.shape[first + d] == want[d];
  if (!same)
    R.push_back(name + ".shape=" + t.shape_string() + " must be " + (first ? "[S] + " : "") + want_out_shape(g, ndim) +
                " (the shape of out)");
}
// `t` from dimension `first` on must be [B, (G,) H, M] (the lse of a [B, M, (G,) H, K] output).
void check_lse_shape(const TensorView& t, int first, const std::string& name, const Geo& g, int ndim, Reasons& R) {
  bool same = t.ndim - first == ndim - 1;
  const int64_t want[4] = {g.b, ndim == 5 ? g.g : g.h, ndim == 5 ? g.h : g.m, g.m};
  for (int d = 0; same && d < ndim - 1; ++d) same = t.shape[first + d] == want[d];
  if (!same)
    R.push_back(name + ".shape=" + t.shape_string() + " must be " + (first ? "[S] + " : "") + want_lse_shape(g, ndim));
  if (t.dtype != DType::f32) R.push_back(name + ".dtype=" + to_string(t.dtype) + " must be f32");
}

// Outputs of the merge: no two elements may share memory.
void check_no_broadcast(const TensorView& t, const std::string& name, Reasons& R) {
  for (int i = 0; i < t.ndim; ++i)
    if (t.shape[i] > 1 && t.stride[i] == 0)
      R.push_back(name + ".stride[" + S(i) + "]=0 with shape[" + S(i) + "]=" + S(t.shape[i]) +
                  ": an output must not be broadcast");
}

bool aligned16(const void* p, std::initializer_list<int64_t> strides, DType dt) {
  const int64_t es = int64_t(element_size(dt));
  if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  for (int64_t s : strides)
    if ((s * es) % 16 != 0) return false;
  return true;
}

// A validated merge: every reason it cannot run (empty when it can), and its kernel arguments.
struct MergePlan {
  Reasons reasons;
  jit::ops::MergePlan op;
  Geo geo;
  DType in_dtype = DType::f32;
  bool align16 = true;
};

// One partial output or lse as validated: the tensor, the dimension where its [B, M, ...] or
// [B, ..., M] part starts (1 for the stacked form, whose dimension 0 is S), and its name.
struct Part {
  const TensorView* t;
  int first;
  std::string name;
};

// Checks out and lse, and derives the geometry from out. False if the shapes cannot be read.
bool plan_out(MergePlan& p, const TensorView& out, const TensorView& lse) {
  Reasons& R = p.reasons;
  if (out.ndim != 4 && out.ndim != 5) {
    R.push_back("out must be 4-D [B, M, H, K] or 5-D [B, M, G, H, K], got " + S(out.ndim) + "-D");
    return false;
  }
  check_basics(out, "out", R);
  check_float(out, "out", R);
  check_no_broadcast(out, "out", R);
  Geo& g = p.geo;
  g.b = out.shape[0], g.m = out.shape[1];
  if (out.ndim == 5) g.g = out.shape[2], g.h = out.shape[3], g.k = out.shape[4];
  else g.g = 1, g.h = out.shape[2], g.k = out.shape[3];
  if (g.k % 8 != 0 || g.k < 8 || g.k > 256)
    R.push_back("out.shape[-1]=" + S(g.k) + " (K) must be a multiple of 8 in [8, 256]");
  for (auto [what, v] : {std::pair<const char*, int64_t>{"B", g.b}, {"M", g.m}, {"G", g.g}, {"H", g.h}})
    if (v > INT32_MAX) R.push_back(std::string("out: ") + what + "=" + S(v) + " must be below 2^31");
  if (lse.defined()) {
    check_basics(lse, "lse", R);
    check_no_broadcast(lse, "lse", R);
    check_lse_shape(lse, 0, "lse", g, out.ndim, R);
    if (lse.device != out.device) R.push_back("lse must be on out's device (" + S(out.device) + ")");
  }
  return true;
}

void plan_parts(MergePlan& p, const TensorView& out, const TensorView& lse, int64_t num_splits,
                const std::vector<Part>& outs, const std::vector<Part>& lses) {
  Reasons& R = p.reasons;
  const int ndim = out.ndim;
  p.in_dtype = outs.empty() ? DType::f32 : outs[0].t->dtype;
  if (!outs.empty()) check_float(*outs[0].t, outs[0].name, R);
  for (const Part& x : outs) {
    check_basics(*x.t, x.name, R);
    check_out_shape(*x.t, x.first, x.name, p.geo, ndim, R);
    if (x.t->dtype != p.in_dtype)
      R.push_back(x.name + ".dtype=" + to_string(x.t->dtype) + " must equal " + outs[0].name + ".dtype=" +
                  to_string(p.in_dtype) + ": all partial outputs have one dtype");
    if (x.t->device != out.device) R.push_back(x.name + " must be on out's device (" + S(out.device) + ")");
  }
  for (const Part& x : lses) {
    check_basics(*x.t, x.name, R);
    check_lse_shape(*x.t, x.first, x.name, p.geo, ndim, R);
    if (x.t->device != out.device) R.push_back(x.name + " must be on out's device (" + S(out.device) + ")");
  }
  if (R.empty()) {  // the layouts are valid: out and lse may not overlap themselves, each other or a partial
    std::vector<detail::Named> written = {{detail::Strided::of(out), "out"}}, read;
    if (lse.defined()) written.push_back({detail::Strided::of(lse), "lse"});
    for (const Part& x : outs) read.push_back({detail::Strided::of(*x.t), x.name.c_str()});
    for (const Part& x : lses) read.push_back({detail::Strided::of(*x.t), x.name.c_str()});
    detail::check_no_overlap(written.data(), int(written.size()), read.data(), int(read.size()), R);
  }
  if (!R.empty()) return;

  jit::ops::MergePlan& mp = p.op;
  mp.num_splits = num_splits;
  for (size_t s = 0; s < outs.size(); ++s) {
    const OutStrides o = out_strides(*outs[s].t, outs[s].first);
    const LseStrides l = lse_strides(*lses[s].t, lses[s].first);
    jit::ops::MergeSplitView& sp = mp.splits.emplace_back();
    sp.out = outs[s].t->data;
    sp.lse = static_cast<const float*>(lses[s].t->data);
    sp.o_stride_b = o.b, sp.o_stride_m = o.m, sp.o_stride_g = o.g, sp.o_stride_h = o.h;
    sp.lse_stride_b = l.b, sp.lse_stride_g = l.g, sp.lse_stride_h = l.h;
    p.align16 = p.align16 && aligned16(sp.out, {o.b, o.m, o.g, o.h}, p.in_dtype);
  }
  const OutStrides o = out_strides(out, 0);
  mp.out = out.data;
  mp.out_stride_b = o.b, mp.out_stride_m = o.m, mp.out_stride_g = o.g, mp.out_stride_h = o.h;
  p.align16 = p.align16 && aligned16(out.data, {o.b, o.m, o.g, o.h}, out.dtype);
  mp.b = p.geo.b, mp.m = p.geo.m, mp.g = p.geo.g, mp.h = p.geo.h, mp.k = p.geo.k;
  mp.in_dtype = p.in_dtype, mp.out_dtype = out.dtype, mp.device = out.device;
}

void plan_lse_out(MergePlan& p, const TensorView& lse) {
  if (!lse.defined() || !p.reasons.empty()) return;
  const LseStrides l = lse_strides(lse, 0);
  p.op.lse = static_cast<float*>(lse.data);
  p.op.lse_out_stride_b = l.b, p.op.lse_out_stride_g = l.g, p.op.lse_out_stride_h = l.h;
}

MergePlan plan_stacked(const TensorView& outputs, const TensorView& lses, const TensorView& out, const TensorView& lse) {
  MergePlan p;
  Reasons& R = p.reasons;
  if (!plan_out(p, out, lse)) return p;
  const size_t structural = R.size();  // reasons so far are about out and lse
  if (outputs.ndim != out.ndim + 1) {
    R.push_back("outputs must be " + S(out.ndim + 1) + "-D [S, " + (out.ndim == 5 ? "B, M, G, H, K" : "B, M, H, K") +
                "] (out is " + S(out.ndim) + "-D), got " + S(outputs.ndim) + "-D" +
                (outputs.ndim == out.ndim ? "; for a list of partial outputs pass std::vector<TensorView>" : ""));
  }
  if (lses.ndim != out.ndim) {
    R.push_back("lses must be " + S(out.ndim) + "-D [S, " + (out.ndim == 5 ? "B, G, H, M" : "B, H, M") + "], got " +
                S(lses.ndim) + "-D");
  }
  if (R.size() != structural) return p;
  const int64_t S_ = outputs.shape[0];
  if (S_ < 1) R.push_back("outputs.shape[0]=" + S(S_) + " (S, the number of splits) must be >= 1");
  if (S_ > INT32_MAX) R.push_back("outputs.shape[0]=" + S(S_) + " (S) must be below 2^31");
  if (lses.shape[0] != S_)
    R.push_back("lses.shape[0]=" + S(lses.shape[0]) + " must equal outputs.shape[0]=" + S(S_) + " (S)");
  plan_parts(p, out, lse, S_, {Part{&outputs, 1, "outputs"}}, {Part{&lses, 1, "lses"}});
  if (!R.empty()) return p;
  jit::ops::MergePlan& mp = p.op;
  mp.stacked = true;
  mp.o_stride_s = S_ > 1 ? outputs.stride[0] : 0;
  mp.lse_stride_s = S_ > 1 ? lses.stride[0] : 0;
  p.align16 = p.align16 && (mp.o_stride_s * int64_t(element_size(p.in_dtype))) % 16 == 0;
  plan_lse_out(p, lse);
  return p;
}

MergePlan plan_list(const std::vector<TensorView>& outputs, const std::vector<TensorView>& lses, const TensorView& out,
                    const TensorView& lse) {
  MergePlan p;
  Reasons& R = p.reasons;
  if (!plan_out(p, out, lse)) return p;
  const size_t structural = R.size();  // reasons so far are about out and lse
  if (outputs.size() != lses.size())
    R.push_back("len(outputs)=" + S(int64_t(outputs.size())) + " must equal len(lses)=" + S(int64_t(lses.size())));
  if (outputs.empty()) R.push_back("outputs is empty: merge_attentions needs at least one partial output");
  if (outputs.size() > size_t(kMaxMergeSplitsList))
    R.push_back("len(outputs)=" + S(int64_t(outputs.size())) + " exceeds " + S(kMaxMergeSplitsList) +
                ", the most the list form takes (stack them into one [S, ...] tensor for more)");
  if (R.size() != structural) return p;
  std::vector<Part> outs, ls;
  for (size_t s = 0; s < outputs.size(); ++s) {
    outs.push_back({&outputs[s], 0, "outputs[" + S(int64_t(s)) + "]"});
    ls.push_back({&lses[s], 0, "lses[" + S(int64_t(s)) + "]"});
  }
  plan_parts(p, out, lse, int64_t(outputs.size()), outs, ls);
  if (!R.empty()) return p;
  p.op.stacked = false;
  plan_lse_out(p, lse);
  return p;
}

void run(MergePlan p, void* stream) {
  if (!p.reasons.empty()) throw Error(p.reasons);
  p.op.align16 = p.align16;
  jit::ops::merge(p.op, static_cast<CUstream>(stream));
}

template <class F>
Reasons never_throws(F&& f) {
  try {
    return f().reasons;
  } catch (const std::exception& e) {
    return {e.what()};
  }
}

}  // namespace

void memory_efficient_attention_partial(const TensorView& q, const TensorView& k, const TensorView& v,
                                        const AttnBias& bias, const TensorView& out, const TensorView& lse,
                                        const AttentionOptions& options, void* stream) {
  Reasons R;
  if (!lse.defined())
    R.push_back("lse must be given: memory_efficient_attention_partial writes the log-sum-exp ([B, H, Mq] or "
                "[B, G, H, Mq] f32) that merge_attentions needs");
  if (options.p != 0.0)
    R.push_back("options.p=" + std::to_string(options.p) + ": dropout is not supported by memory_efficient_attention_partial");
  if (!R.empty()) {
    // Report the forward's reasons too, so that one call names everything wrong.
    for (auto& r : not_supported_reasons(q, k, v, bias, out, lse, options)) R.push_back(std::move(r));
    throw Error(R);
  }
  detail::forward(q, k, v, bias, out, lse, options, stream, false);  // no backward follows: nothing to prefetch
}

void merge_attentions(const TensorView& outputs, const TensorView& lses, const TensorView& out, const TensorView& lse,
                      void* stream) {
  run(plan_stacked(outputs, lses, out, lse), stream);
}

void merge_attentions(const std::vector<TensorView>& outputs, const std::vector<TensorView>& lses,
                      const TensorView& out, const TensorView& lse, void* stream) {
  run(plan_list(outputs, lses, out, lse), stream);
}

std::vector<std::string> merge_not_supported_reasons(const TensorView& outputs, const TensorView& lses,
                                                     const TensorView& out, const TensorView& lse) {
  return never_throws([&] { return plan_stacked(outputs, lses, out, lse); });
}

std::vector<std::string> merge_not_supported_reasons(const std::vector<TensorView>& outputs,
                                                     const std::vector<TensorView>& lses, const TensorView& out,
                                                     const TensorView& lse) {
  return never_throws([&] { return plan_list(outputs, lses, out, lse); });
}

}  // namespace jitattn
