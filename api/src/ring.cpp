// Ring attention's forward and backward over a RingTransport (jitattn/ring.h, docs/ring.md): per
// step, the partial-attention calls of the schedule (ring_schedule.cpp) against the key/value
// block in hand, while the transport brings the next block on a side stream. The forward merges
// each call into an fp32 (out, lse) accumulator; the backward adds dQ into the rank's fp32
// accumulator and dK/dV into fp32 accumulators that travel with their block
// (jit/ops/backward.h backward_add).
#include <cmath>
#include <algorithm>
#include <functional>
#include <tuple>
#include <string>
#include <variant>
#include <vector>

#include "jit/cuda_driver.h"
#include "jit/ops/backward.h"
#include "jitattn/merge.h"
#include "jitattn/ring.h"
#include "device_scope.h"
#include "layout.h"
#include "plan.h"

namespace jitattn {

namespace {

using jit::check_cuda;
using jit::CudaDriver;
using Reasons = std::vector<std::string>;
std::string S(int64_t x) { return std::to_string(x); }

constexpr uint32_t kNegInfBits = 0xFF800000u;  // -inf as f32

// ---- validation -----------------------------------------------------------------------------

using detail::contiguous;

bool same_shape(const TensorView& a, const TensorView& b) {
  if (a.ndim != b.ndim) return false;
  for (int i = 0; i < a.ndim; ++i)
    if (a.shape[i] != b.shape[i]) return false;
  return true;
}

// What every ring call checks: the transport's ranks against the tensors given, the mask, the
// layout's divisibility, the same shapes on every rank, contiguous K/V (blocks are sent as bytes),
// one device per rank. `per_rank` adds the reasons of one rank's whole local call.
struct RingGeometry {
  Reasons reasons;
  RingMask band;
  int world = 0;
  std::vector<int> ranks, devices;
  int64_t m = 0;
};

template <class Args>
RingGeometry check_ring(const RingTransport& transport, const std::vector<Args>& args, const AttnBias& bias,
                        const RingOptions& o, const std::function<void(const Args&, const std::string&, Reasons&)>& per_rank) {
  RingGeometry g;
  Reasons& R = g.reasons;
  g.world = transport.world_size();
  g.ranks = transport.local_ranks();
  g.devices = transport.local_devices();
  if (g.world < 1) R.push_back("transport.world_size()=" + S(g.world) + " must be >= 1");
  if (g.ranks.size() != g.devices.size())
    R.push_back("transport: local_ranks() and local_devices() have different lengths");
  for (int r : g.ranks)
    if (r < 0 || r >= g.world) R.push_back("transport.local_ranks() has rank " + S(r) + " outside [0, " + S(g.world) + ")");
  if (args.size() != g.ranks.size())
    R.push_back("ranks: " + S(int64_t(args.size())) + " ranks' tensors given, but the transport drives " +
                S(int64_t(g.ranks.size())) + " local rank(s) (transport.local_ranks())");
  std::string why;
  if (!ring_mask(bias, g.band, &why)) R.push_back(why);
  if (!R.empty() || args.empty()) return g;
  const TensorView& q0 = args[0].q;
  g.m = q0.ndim == 4 ? q0.shape[1] : 0;
  for (size_t i = 0; i < args.size(); ++i) {
    const Args& a = args[i];
    const std::string n = "ranks[" + S(int64_t(i)) + "]";
    for (auto [t, name, dims] : {std::tuple<const TensorView*, const char*, int>{&a.q, "q", 4}, {&a.k, "k", 4},
                                 {&a.v, "v", 4}, {&a.out, "out", 4}, {&a.lse, "lse", 3}})
      if (t->ndim != dims) R.push_back(n + "." + name + " must be " + S(dims) + "-D, got " + S(t->ndim) + "-D");
    if (!R.empty()) continue;
    if (a.k.shape[1] != a.q.shape[1])
      R.push_back(n + ".k.shape[1]=" + S(a.k.shape[1]) + " must equal q.shape[1]=" + S(a.q.shape[1]) +
                  ": every rank holds as many keys as queries");
    if (i > 0)
      for (auto [t, t0, name] : {std::tuple<const TensorView*, const TensorView*, const char*>{&a.q, &args[0].q, "q"},
                                 {&a.k, &args[0].k, "k"}, {&a.v, &args[0].v, "v"}, {&a.out, &args[0].out, "out"}}) {
        if (!same_shape(*t, *t0))
          R.push_back(n + "." + name + ".shape=" + t->shape_string() + " must equal ranks[0]." + name +
                      ".shape=" + t0->shape_string() + " (every rank holds an equal slice)");
        if (t->dtype != t0->dtype)
          R.push_back(n + "." + name + ".dtype=" + to_string(t->dtype) + " must equal ranks[0]." + name + ".dtype=" +
                      to_string(t0->dtype));
      }
    if (!contiguous(a.k)) R.push_back(n + ".k must be contiguous: key blocks travel the ring as bytes");
    if (!contiguous(a.v)) R.push_back(n + ".v must be contiguous: value blocks travel the ring as bytes");
    if (i < g.devices.size() && a.q.device != g.devices[i])
      R.push_back(n + ".q is on device " + S(a.q.device) + " but the transport's local rank " + S(g.ranks[i]) +
                  " is on device " + S(g.devices[i]));
    per_rank(a, n, R);
  }
  if (!g.band.doc_start.empty()) {
    if (o.layout == RingLayout::striped)
      R.push_back(std::string("attn_bias=") + bias_name(bias) +
                  ": documents need the contiguous or zigzag layout (a striped rank holds every document's rows)");
    if (q0.ndim == 4 && q0.shape[0] != 1)
      R.push_back("q.shape[0]=" + S(q0.shape[0]) + " must be 1 with documents (block-diagonal masks concatenate them)");
    if (g.band.doc_start.back() != g.m * g.world)
      R.push_back(std::string("attn_bias=") + bias_name(bias) + ": the documents cover " + S(g.band.doc_start.back()) +
                  " positions but the sequence has " + S(g.m * g.world) + " (" + S(g.world) + " ranks of " + S(g.m) + ")");
  }
  if (o.layout == RingLayout::zigzag && g.m % 2 != 0)
    R.push_back("q.shape[1]=" + S(g.m) + " must be even for the zigzag layout (two chunks of M/2 per rank)");
  if (g.m * int64_t(g.world) > INT32_MAX)
    R.push_back("the sequence (M·R = " + S(g.m * g.world) + ") must be below 2^31");
  return g;
}

AttentionOptions partial_options(const RingOptions& o) {
  AttentionOptions a;
  a.scale = o.scale;
  a.output_dtype = DType::f32;
  return a;
}

void prefix(const std::string& n, const Reasons& from, Reasons& to) {
  for (const auto& r : from) to.push_back(n + ": " + r);
}

RingGeometry check_forward(const RingTransport& t, const std::vector<RingForwardArgs>& args, const AttnBias& bias,
                           const RingOptions& o) {
  return check_ring<RingForwardArgs>(t, args, bias, o, [&](const RingForwardArgs& a, const std::string& n, Reasons& R) {
    AttentionOptions fo;
    fo.scale = o.scale;
    fo.output_dtype = a.out.dtype;
    if (a.out.dtype != a.q.dtype && a.out.dtype != DType::f32)
      R.push_back(n + ".out.dtype=" + to_string(a.out.dtype) + " must be q's dtype (" + to_string(a.q.dtype) + ") or f32");
    if (!a.lse.defined()) R.push_back(n + ".lse is undefined: the ring writes the merged lse ([B, H, M] f32)");
    prefix(n, not_supported_reasons(a.q, a.k, a.v, std::monostate{}, a.out, a.lse, fo), R);
  });
}

RingGeometry check_backward(const RingTransport& t, const std::vector<RingBackwardArgs>& args, const AttnBias& bias,
                            const RingOptions& o) {
  return check_ring<RingBackwardArgs>(t, args, bias, o, [&](const RingBackwardArgs& a, const std::string& n, Reasons& R) {
    BackwardOptions bo;
    bo.scale = o.scale;
    prefix(n, backward_not_supported_reasons(a.grad, a.out, a.lse, a.q, a.k, a.v, std::monostate{}, a.dq, a.dk, a.dv, {}, bo),
           R);
    for (auto [g, name] : {std::pair<const TensorView*, const char*>{&a.dq, "dq"}, {&a.dk, "dk"}, {&a.dv, "dv"}})
      if (g->ndim != 4) R.push_back(n + "." + name + " must be 4-D, got " + S(g->ndim) + "-D");
  });
}

// ---- device plumbing ---------------------------------------------------------------------------

// One local rank's streams, events and stream-ordered scratch. The side stream carries the
// transport's work; `computed` marks the main stream's progress for it, `arrived` the side
// stream's for the main one.
struct Rank {
  int rank = 0, device = 0;
  CUstream main = nullptr, side = nullptr;
  CUevent computed = nullptr, arrived = nullptr;
  std::vector<CUdeviceptr> allocations;

  void* alloc(size_t bytes) {
    CUdeviceptr p = 0;
    check_cuda(CudaDriver::get().cuMemAllocAsync(&p, std::max<size_t>(bytes, 256), main), "cuMemAllocAsync (ring)");
    allocations.push_back(p);
    return reinterpret_cast<void*>(p);
  }
  // The side stream waits for what the main stream has queued so far.
  void side_waits_main() {
    const CudaDriver& d = CudaDriver::get();
    check_cuda(d.cuEventRecord(computed, main), "cuEventRecord");
    check_cuda(d.cuStreamWaitEvent(side, computed, 0), "cuStreamWaitEvent");
  }
  void main_waits_side() {
    const CudaDriver& d = CudaDriver::get();
    check_cuda(d.cuEventRecord(arrived, side), "cuEventRecord");
    check_cuda(d.cuStreamWaitEvent(main, arrived, 0), "cuStreamWaitEvent");
  }
};

// Every local rank's Rank, released (scratch freed on the main stream after the side stream's
// work) however the call ends.
class Ranks {
 public:
  Ranks(const RingGeometry& g, const std::vector<void*>& streams) {
    const CudaDriver& d = CudaDriver::require();
    for (size_t i = 0; i < g.ranks.size(); ++i) {
      Rank& r = ranks_.emplace_back();
      r.rank = g.ranks[i], r.device = g.devices[i], r.main = static_cast<CUstream>(streams[i]);
      detail::DeviceScope scope(r.device);
      check_cuda(d.cuStreamCreate(&r.side, CU_STREAM_NON_BLOCKING), "cuStreamCreate (ring side stream)");
      check_cuda(d.cuEventCreate(&r.computed, CU_EVENT_DISABLE_TIMING), "cuEventCreate");
      check_cuda(d.cuEventCreate(&r.arrived, CU_EVENT_DISABLE_TIMING), "cuEventCreate");
    }
  }
  ~Ranks() {
    const CudaDriver& d = CudaDriver::get();
    for (Rank& r : ranks_) {
      try {
        detail::DeviceScope scope(r.device);
        if (r.side && r.arrived && d.cuEventRecord(r.arrived, r.side) == CUDA_SUCCESS)
          (void)d.cuStreamWaitEvent(r.main, r.arrived, 0);
        for (CUdeviceptr p : r.allocations) (void)d.cuMemFreeAsync(p, r.main);
        if (r.computed) (void)d.cuEventDestroy(r.computed);
        if (r.arrived) (void)d.cuEventDestroy(r.arrived);
        if (r.side) (void)d.cuStreamDestroy(r.side);
      } catch (...) {
      }
    }
  }
  Ranks(const Ranks&) = delete;
  Ranks& operator=(const Ranks&) = delete;
  Rank& operator[](size_t i) { return ranks_[i]; }
  size_t size() const { return ranks_.size(); }
  std::vector<void*> side_streams() const {
    std::vector<void*> s;
    for (const Rank& r : ranks_) s.push_back(r.side);
    return s;
  }

 private:
  std::vector<Rank> ranks_;
};

void fill_neg_inf(void* p, size_t floats, CUstream s) {
  if (floats)
    check_cuda(CudaDriver::get().cuMemsetD32Async(reinterpret_cast<CUdeviceptr>(p), kNegInfBits, floats, s),
               "cuMemsetD32Async");
}
void fill_zero(void* p, size_t bytes, CUstream s) {
  if (bytes) check_cuda(CudaDriver::get().cuMemsetD8Async(reinterpret_cast<CUdeviceptr>(p), 0, bytes, s), "cuMemsetD8Async");
}

// ---- views --------------------------------------------------------------------------------------

TensorView rows(const TensorView& t, int64_t begin, int64_t end) {  // [B, M, ...] rows [begin, end)
  TensorView r = t;
  r.data = static_cast<char*>(t.data) + begin * t.stride[1] * int64_t(element_size(t.dtype));
  r.shape[1] = end - begin;
  return r;
}
TensorView lse_rows(const TensorView& t, int64_t begin, int64_t end) {  // [B, H, M] rows [begin, end)
  TensorView r = t;
  r.data = static_cast<char*>(t.data) + begin * t.stride[2] * int64_t(sizeof(float));
  r.shape[2] = end - begin;
  return r;
}
TensorView dense(void* data, DType dt, std::initializer_list<int64_t> shape, int device) {
  return TensorView::make(data, dt, shape, {}, device);
}
TensorView like(void* data, const TensorView& t) {  // contiguous, t's shape and dtype
  TensorView r = t;
  r.data = data;
  int64_t s = 1;
  for (int i = t.ndim - 1; i >= 0; --i) r.stride[i] = s, s *= t.shape[i];
  return r;
}
size_t bytes_of(const TensorView& t) { return size_t(t.numel()) * element_size(t.dtype); }

// The K/V block a rank holds at step t: its own tensors at t = 0, then the ones received.
struct KvBlock {
  TensorView k, v;
};

}  // namespace

// ---- forward ---------------------------------------------------------------------------------------

void ring_attention_forward(RingTransport& transport, const std::vector<RingForwardArgs>& args, const AttnBias& bias,
                            const RingOptions& o) {
  const RingGeometry g = check_forward(transport, args, bias, o);
  if (!g.reasons.empty()) throw Error(g.reasons);
  if (args.empty()) return;
  const int R = g.world;
  const int64_t M = g.m;
  std::vector<void*> streams;
  for (const auto& a : args) streams.push_back(a.stream);
  Ranks ranks(g, streams);
  const size_t n = ranks.size();

  // Per rank: received K/V blocks (two, alternating), the fp32 accumulator (two, alternating:
  // a merge may not write its input) and one partial result.
  struct State {
    KvBlock held, recv[2];
    TensorView acc_out[2], acc_lse[2], part_out, part_lse;
    int cur = 0;
    bool started = false;  // acc[cur] holds a result (else it is all −inf)
  };
  std::vector<State> st(n);
  for (size_t i = 0; i < n; ++i) {
    const RingForwardArgs& a = args[i];
    Rank& r = ranks[i];
    detail::DeviceScope scope(r.device);
    State& s = st[i];
    s.held = {a.k, a.v};
    for (auto& b : s.recv) b = {like(r.alloc(bytes_of(a.k)), a.k), like(r.alloc(bytes_of(a.v)), a.v)};
    const int64_t B = a.out.shape[0], H = a.out.shape[2], Kv = a.out.shape[3];
    for (int j = 0; j < 2; ++j) {
      s.acc_out[j] = dense(r.alloc(size_t(B * M * H * Kv) * 4), DType::f32, {B, M, H, Kv}, r.device);
      s.acc_lse[j] = dense(r.alloc(size_t(B * H * M) * 4), DType::f32, {B, H, M}, r.device);
    }
    s.part_out = dense(r.alloc(size_t(B * M * H * Kv) * 4), DType::f32, {B, M, H, Kv}, r.device);
    s.part_lse = dense(r.alloc(size_t(B * H * M) * 4), DType::f32, {B, H, M}, r.device);
    fill_neg_inf(s.acc_lse[0].data, size_t(B * H * M), r.main);
  }

  const AttentionOptions popt = partial_options(o);
  for (int t = 0; t < R; ++t) {
    if (t + 1 < R) {  // bring the next block while this one is computed
      std::vector<std::vector<RingTransport::Buffer>> bufs(n);
      for (size_t i = 0; i < n; ++i) {
        State& s = st[i];
        detail::DeviceScope scope(ranks[i].device);
        ranks[i].side_waits_main();
        const KvBlock& to = s.recv[t % 2];
        bufs[i] = {{s.held.k.data, to.k.data, bytes_of(to.k)}, {s.held.v.data, to.v.data, bytes_of(to.v)}};
      }
      transport.shift(bufs, ranks.side_streams());
    }
    for (size_t i = 0; i < n; ++i) {
      Rank& r = ranks[i];
      State& s = st[i];
      const RingForwardArgs& a = args[i];
      detail::DeviceScope scope(r.device);
      const int src = (r.rank - t % R + R) % R;
      const std::vector<RingCall> calls = ring_step_calls(o.layout, g.band, R, r.rank, src, M);
      for (const RingCall& c : calls) {
        const TensorView q = rows(a.q, c.q_begin, c.q_end);
        const TensorView k = rows(s.held.k, c.k_begin, c.k_end), v = rows(s.held.v, c.k_begin, c.k_end);
        if (!s.started) {  // the first result goes straight into the accumulator (other rows: −inf)
          memory_efficient_attention_partial(q, k, v, c.bias, rows(s.acc_out[s.cur], c.q_begin, c.q_end),
                                             lse_rows(s.acc_lse[s.cur], c.q_begin, c.q_end), popt, r.main);
          s.started = true;
          continue;
        }
        if (c.q_begin > 0 || c.q_end < M)  // rows the call leaves out merge nothing
          fill_neg_inf(s.part_lse.data, size_t(s.part_lse.numel()), r.main);
        memory_efficient_attention_partial(q, k, v, c.bias, rows(s.part_out, c.q_begin, c.q_end),
                                           lse_rows(s.part_lse, c.q_begin, c.q_end), popt, r.main);
        merge_attentions(std::vector<TensorView>{s.acc_out[s.cur], s.part_out},
                         std::vector<TensorView>{s.acc_lse[s.cur], s.part_lse}, s.acc_out[1 - s.cur],
                         s.acc_lse[1 - s.cur], r.main);
        s.cur = 1 - s.cur;
      }
      if (t + 1 < R) {
        r.main_waits_side();
        s.held = s.recv[t % 2];
      }
    }
  }
  for (size_t i = 0; i < n; ++i) {  // fp32 → out's dtype, with the merged lse
    detail::DeviceScope scope(ranks[i].device);
    merge_attentions(std::vector<TensorView>{st[i].acc_out[st[i].cur]}, std::vector<TensorView>{st[i].acc_lse[st[i].cur]},
                     args[i].out, args[i].lse, ranks[i].main);
  }
}

// ---- backward -------------------------------------------------------------------------------------

namespace {

// The backward op's plan of one call (validated by its full-rank call: these are its slices).
jit::ops::BackwardPlan backward_plan(const TensorView& grad, const TensorView& out, const TensorView& lse,
                                     const TensorView& q, const TensorView& k, const TensorView& v,
                                     const AttnBias& bias, const RingOptions& o) {
  AttentionOptions fo;
  fo.scale = o.scale;
  fo.output_dtype = out.dtype;
  detail::Plan p = detail::plan(q, k, v, bias, out, lse, fo, false);
  if (!p.reasons.empty()) throw Error(ErrorKind::internal, p.reasons);
  jit::ops::BackwardPlan b;
  b.fwd = p;
  detail::as_bmhk(grad, false, b.grad, nullptr);
  b.grad_data = grad.data;
  b.align = p.align;
  if (q.dtype != DType::f32 && b.align == 16 && !detail::aligned16(grad, b.grad)) b.align = 2;
  return b;
}

jit::ops::Bmhk bmhk(const TensorView& t) {
  jit::ops::Bmhk x;
  detail::as_bmhk(t, false, x, nullptr);
  return x;
}

}  // namespace

void ring_attention_backward(RingTransport& transport, const std::vector<RingBackwardArgs>& args, const AttnBias& bias,
                             const RingOptions& o) {
  const RingGeometry g = check_backward(transport, args, bias, o);
  if (!g.reasons.empty()) throw Error(g.reasons);
  if (args.empty()) return;
  const int R = g.world;
  const int64_t M = g.m;
  std::vector<void*> streams;
  for (const auto& a : args) streams.push_back(a.stream);
  Ranks ranks(g, streams);
  const size_t n = ranks.size();

  // Per rank: delta and the dQ accumulator; received K/V blocks (two, alternating); the dK/dV
  // accumulators of the block in hand and of the one arriving (two, alternating).
  struct State {
    KvBlock held, recv[2];
    float *delta = nullptr, *dq_accum = nullptr;
    float *dk_accum[2] = {}, *dv_accum[2] = {};
    size_t dk_bytes = 0, dv_bytes = 0;
    jit::ops::BackwardPlan full;
  };
  std::vector<State> st(n);
  for (size_t i = 0; i < n; ++i) {
    const RingBackwardArgs& a = args[i];
    Rank& r = ranks[i];
    detail::DeviceScope scope(r.device);
    State& s = st[i];
    s.held = {a.k, a.v};
    for (auto& b : s.recv) b = {like(r.alloc(bytes_of(a.k)), a.k), like(r.alloc(bytes_of(a.v)), a.v)};
    const int64_t B = a.q.shape[0], H = a.q.shape[2], K = a.q.shape[3], Hkv = a.k.shape[2], Kv = a.v.shape[3];
    s.delta = static_cast<float*>(r.alloc(size_t(B * H * M) * 4));
    s.dq_accum = static_cast<float*>(r.alloc(size_t(B * H * M * K) * 4));
    s.dk_bytes = size_t(B * Hkv * M * K) * 4, s.dv_bytes = size_t(B * Hkv * M * Kv) * 4;
    for (int j = 0; j < 2; ++j) {
      s.dk_accum[j] = static_cast<float*>(r.alloc(s.dk_bytes));
      s.dv_accum[j] = static_cast<float*>(r.alloc(s.dv_bytes));
    }
    fill_zero(s.dk_accum[0], s.dk_bytes, r.main);
    fill_zero(s.dv_accum[0], s.dv_bytes, r.main);
    s.full = backward_plan(a.grad, a.out, a.lse, a.q, a.k, a.v, std::monostate{}, o);
    jit::ops::backward_begin(s.full, s.delta, s.dq_accum, r.main);
  }

  for (int t = 0; t < R; ++t) {
    if (t + 1 < R) {  // bring the next K/V block while this one is computed
      std::vector<std::vector<RingTransport::Buffer>> bufs(n);
      for (size_t i = 0; i < n; ++i) {
        State& s = st[i];
        detail::DeviceScope scope(ranks[i].device);
        ranks[i].side_waits_main();
        const KvBlock& to = s.recv[t % 2];
        bufs[i] = {{s.held.k.data, to.k.data, bytes_of(to.k)}, {s.held.v.data, to.v.data, bytes_of(to.v)}};
      }
      transport.shift(bufs, ranks.side_streams());
    }
    std::vector<std::vector<RingTransport::Buffer>> accs(n);
    for (size_t i = 0; i < n; ++i) {
      Rank& r = ranks[i];
      State& s = st[i];
      const RingBackwardArgs& a = args[i];
      detail::DeviceScope scope(r.device);
      const int src = (r.rank - t % R + R) % R;
      const int h = t % 2;  // the accumulators of the block in hand
      for (const RingCall& c : ring_step_calls(o.layout, g.band, R, r.rank, src, M)) {
        const jit::ops::BackwardPlan part = backward_plan(
            rows(a.grad, c.q_begin, c.q_end), rows(a.out, c.q_begin, c.q_end), lse_rows(a.lse, c.q_begin, c.q_end),
            rows(a.q, c.q_begin, c.q_end), rows(s.held.k, c.k_begin, c.k_end), rows(s.held.v, c.k_begin, c.k_end),
            c.bias, o);
        jit::ops::backward_add(part, M, c.q_begin, s.delta, s.dq_accum, M, c.k_begin, s.dk_accum[h], s.dv_accum[h],
                               r.main);
      }
      // The accumulators travel once this step's sums are in: to the next rank, or home after the last step.
      r.side_waits_main();
      accs[i] = {{s.dk_accum[h], s.dk_accum[1 - h], s.dk_bytes}, {s.dv_accum[h], s.dv_accum[1 - h], s.dv_bytes}};
    }
    // Every arriving accumulator is a whole copy: the sums of the ranks its block has visited.
    transport.shift(accs, ranks.side_streams());
    for (size_t i = 0; i < n; ++i) {
      detail::DeviceScope scope(ranks[i].device);
      ranks[i].main_waits_side();
      if (t + 1 < R) st[i].held = st[i].recv[t % 2];
    }
  }
  for (size_t i = 0; i < n; ++i) {
    const RingBackwardArgs& a = args[i];
    Rank& r = ranks[i];
    State& s = st[i];
    detail::DeviceScope scope(r.device);
    const int home = R % 2;
    jit::ops::backward_write(s.full.fwd, bmhk(a.dq), s.dq_accum, a.dq.data, float(s.full.fwd.scale), r.main);
    jit::ops::backward_write(s.full.fwd, bmhk(a.dk), s.dk_accum[home], a.dk.data, 1.f, r.main);
    jit::ops::backward_write(s.full.fwd, bmhk(a.dv), s.dv_accum[home], a.dv.data, 1.f, r.main);
  }
}

std::vector<std::string> ring_forward_not_supported_reasons(const RingTransport& transport,
                                                            const std::vector<RingForwardArgs>& ranks,
                                                            const AttnBias& bias, const RingOptions& options) {
  try {
    return check_forward(transport, ranks, bias, options).reasons;
  } catch (const std::exception& e) {
    return {e.what()};
  }
}

std::vector<std::string> ring_backward_not_supported_reasons(const RingTransport& transport,
                                                             const std::vector<RingBackwardArgs>& ranks,
                                                             const AttnBias& bias, const RingOptions& options) {
  try {
    return check_backward(transport, ranks, bias, options).reasons;
  } catch (const std::exception& e) {
    return {e.what()};
  }
}

}  // namespace jitattn
