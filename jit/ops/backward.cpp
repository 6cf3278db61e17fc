#include "jit/ops/backward.h"

#include <algorithm>
#include <map>
#include <optional>
#include <utility>
#include <vector>

#include "jit/cuda_driver.h"
#include "jit/jit_runtime.h"
#include "jit/launch.h"
#include "jit/ops/forward.h"
#include "jit/ops/forward_params.h"
#include "jit/ops/tensor_map.h"
#include "jitattn/error.h"

namespace jitattn::jit::ops {

namespace {

constexpr size_t kAlign = 256;
size_t round_up(size_t x) { return (x + kAlign - 1) / kAlign * kAlign; }

// bwd_wgmma.cuh adds each query block's dQ into dq_accum through a tensor map: dq_accum as
// [rows, head_dim] fp32 from params.dq_accum, boxes of 32 columns × block_m rows, 128-byte swizzle.
void encode_dq_map(BwdParams& params, int64_t rows, int head_dim, int block_m) {
  const CudaDriver& d = CudaDriver::require();
  const uint64_t dim[2] = {uint64_t(head_dim), uint64_t(rows)};
  const uint64_t stride[1] = {uint64_t(head_dim) * 4};
  const uint32_t box[2] = {32, uint32_t(block_m)}, element_strides[2] = {1, 1};
  check_cuda(d.cuTensorMapEncodeTiled(reinterpret_cast<CUtensorMap*>(params.dq_map), CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 2,
                                      params.dq_accum, dim, stride, box, element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
                                      CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                                      CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE),
             "cuTensorMapEncodeTiled (backward dq_accum)");
}

// The tma family's views of Q and dO as tensor maps (kernel_src/bwd_wgmma.cuh, Cfg::kTma): boxes
// of block_m rows.
struct BackwardMaps {
  std::optional<TensorMapGeometry> q, dout;
  bool ok() const { return q && dout; }
};
BackwardMaps backward_maps(const ForwardPlan& p, const Bmhk& grad, int block_m) {
  return {tensor_map_geometry(p.q, p.q.h, 2, block_m), tensor_map_geometry(grad, p.q.h, 2, block_m)};
}

int backward_align(const ForwardPlan& p, const Bmhk& grad, int align, bool deterministic) {
  return backward_kernel_align(p, grad, align, deterministic, JitRuntime::get().context(p.device).arch);
}

// The tma family's maps into params, for the dK/dV kernel `kernel` (nothing for another family).
void encode_backward_maps(BwdParams& params, const LoadedKernel& kernel, const ForwardPlan& p, const Bmhk& grad,
                          const void* grad_data) {
  if (kernel.spec.family != Family::tma || p.q.m == 0) return;
  const BackwardMaps maps = backward_maps(p, grad, kernel.spec.tile.block_m);
  if (!maps.ok()) throw Error(ErrorKind::internal, kernel.spec.name() + ": Q or dO cannot be mapped (backward_align chose this kernel)");
  const TensorMapGeometry* g[2] = {&*maps.q, &*maps.dout};
  const void* data[2] = {p.q_data, grad_data};
  unsigned char* out[2] = {params.q_map, params.do_map};
  const int64_t cols[2] = {p.q.d, grad.d};
  const char* what[2] = {"backward queries", "backward output gradient"};
  for (int t = 0; t < 2; ++t) {
    encode_tensor_map(out[t], data[t], p.dtype, *g[t], what[t]);
    for (int i = 0; i < 3; ++i) params.tma_dim[t][i] = g[t]->dim_of[i];
    params.tma_bytes[t] = tensor_map_box_bytes(*g[t], cols[t]);
  }
}

// The grid of each backward kernel, by its op. dq_rows: the rows of dq_accum from params.dq_accum
// on (-1: batch_rows · heads · mq_rows), for the wgmma family's tensor map.
void launch_backward(const LoadedKernel& kernel, BwdParams& params, CUstream stream, int64_t dq_rows = -1) {
  const FwdParams& f = params.f;
  const TileConfig& tile = kernel.spec.tile;
  int64_t blocks = 0;
  switch (kernel.spec.sig.op) {
    case Op::bwd_pre:  // one warp per (b, i, h) row of the query tensor
      blocks = ceil_div(int64_t(f.batch_rows) * f.mq_rows * f.heads, tile.warps);
      break;
    case Op::bwd_post:  // one thread per dQ element
      blocks = ceil_div(int64_t(f.batch_rows) * f.mq_rows * f.heads * kernel.spec.sig.head_dim, kernel.spec.threads());
      break;
    case Op::bwd: case Op::bwd_kv:  // one block per (key block, key/value head, sequence)
      blocks = ceil_div(params.max_mkv, tile.block_n) * params.kv_heads * f.batch;
      // bwd_mma.cuh: bwd_mma_slices blocks per key block, each over a slice of the head dims
      if (kernel.spec.family == Family::mma) blocks *= bwd_mma_slices(kernel.spec.sig.head_dim, kernel.spec.sig.head_dim_v);
      if (kernel.spec.sig.op == Op::bwd && (kernel.spec.family == Family::wgmma || kernel.spec.family == Family::tma) &&
          params.dq_accum) {
        const int64_t rows = dq_rows >= 0 ? dq_rows : int64_t(f.batch_rows) * f.heads * f.mq_rows;
        if (rows > 0) encode_dq_map(params, rows, kernel.spec.sig.head_dim, tile.block_m);
      }
      break;
    case Op::bwd_dq:  // the forward's grid
      params.f.pairs_per_chunk = pairs_per_chunk(kernel.spec, f);
      blocks = ceil_div(f.mq, tile.block_m) * f.heads * f.batch;
      break;
    default:
      throw Error(kernel.spec.name() + " is not a backward kernel");
  }
  launch(kernel, &params, blocks, stream);
}

// Every key row in at most one sequence? xFormers' gappy keys allow sequences whose key ranges
// overlap; a shared row's dK/dV is the sum over the sequences that see it.
bool keys_overlap(const BiasPlan& b) {
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
std::vector<std::pair<int32_t, int32_t>> disjoint_runs(const BiasPlan& b) {
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
bool no_queries(const ForwardPlan& p) {
  if (p.q.b == 0 || p.q.h == 0 || p.q.m == 0) return true;
  const SeqLenInfo* q = p.bias.q_seqinfo;
  return q && (q->batch() == 0 || q->max_seqlen == 0);
}

// Calls that may sum dK/dV in fp32 accumulators (see BwdParams::dk_accum): key rows outside
// every sequence must read 0, or no query touches them at all.
bool may_accumulate(const ForwardPlan& p) { return p.bias.k_seqlen || no_queries(p); }

struct Workspace {
  size_t delta_bytes = 0, accum_bytes = 0, dk_bytes = 0, dv_bytes = 0;
  size_t total() const { return delta_bytes + accum_bytes + dk_bytes + dv_bytes; }
};
Workspace workspace_of(const ForwardPlan& p, bool deterministic) {
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
bool packed(const Bmhk& x) {
  return (x.h <= 1 || x.sh == x.d) && (x.m <= 1 || x.sm == x.h * x.d) && (x.b <= 1 || x.sb == x.m * x.h * x.d);
}
size_t bytes_of(const Bmhk& x, DType dt) { return size_t(x.b * x.m * x.h * x.d) * element_size(dt); }

void memset_async(void* ptr, size_t bytes, CUstream stream) {
  if (bytes == 0) return;
  check_cuda(CudaDriver::get().cuMemsetD8Async(reinterpret_cast<CUdeviceptr>(ptr), 0, bytes, stream),
                  "cuMemsetD8Async");
}

// bwd_post over a dK or dV accumulator: the gradient in the input dtype through the caller's strides.
void write_accumulated(const LoadedKernel& post, const BwdParams& bp, float* accum, void* grad,
                       const Bmhk& x, CUstream stream) {
  BwdParams cv = bp;
  cv.f.batch_rows = int32_t(x.b), cv.f.mq_rows = int32_t(x.m), cv.f.heads = int32_t(x.h);
  cv.dq = grad, cv.dq_accum = accum;
  cv.dq_stride_b = x.sb, cv.dq_stride_m = x.sm, cv.dq_stride_h = x.sh;
  cv.scale = 1.f;  // the main kernel scaled dK and dV before summing them
  launch_backward(post, cv, stream);
}

}  // namespace

int backward_kernel_align(const ForwardPlan& p, const Bmhk& grad, int align, bool deterministic, const Arch& arch) {
  Signature s = forward_signature(p, arch);
  s.align = uint8_t(align);
  s.op = deterministic ? Op::bwd_kv : Op::bwd;
  const KernelSpec spec = make_spec(s);
  if (spec.family == Family::tma && !backward_maps(p, grad, spec.tile.block_m).ok()) return 4;
  return align;
}

size_t backward_workspace_bytes(const ForwardPlan& p, bool deterministic) { return workspace_of(p, deterministic).total(); }

namespace {

// The backward's kernels for `b` on `arch`: what backward() loads, and what prefetch_backward()
// compiles ahead from a forward's plan.
struct BackwardKernels {
  bool nothing = false;     // no query row: only the accumulated dK/dV (if any) are written
  bool overlap = false;     // sequences share key rows
  bool accumulate = false;  // dK/dV summed in fp32 and written by post_k / post_v
  std::optional<Signature> post_k, post_v, pre, main, last;
  std::vector<Signature> all() const {
    std::vector<Signature> v;
    for (const auto* s : {&pre, &main, &last, &post_k, &post_v})
      if (*s) v.push_back(**s);
    return v;
  }
};

BackwardKernels backward_kernels(const BackwardPlan& b, const Arch& arch) {
  const ForwardPlan& p = b.fwd;
  const bool deterministic = b.deterministic;
  BackwardKernels ks;
  // dK/dV are stored by the main kernel, or summed in fp32 (BwdParams::dk_accum) and written by
  // bwd_post: when sequences share key rows, or rows no sequence sees must read 0 and one memset
  // cannot zero exactly the gradients' elements.
  ks.nothing = no_queries(p);
  ks.overlap = keys_overlap(p.bias);
  ks.accumulate = ks.overlap || (may_accumulate(p) && !(packed(b.dk) && packed(b.dv)));

  Signature sig = forward_signature(p, arch);
  sig.align = uint8_t(ks.nothing ? b.align : backward_kernel_align(p, b.grad, b.align, deterministic, arch));
  auto signature = [&](Op op, bool with_bias, int head_dim = 0) {
    Signature s = sig;
    s.op = op;
    if (!with_bias) s.bias = BiasKind::none, s.dropout = 0, s.variant = 0;
    if (op != Op::bwd_pre) s.out_dtype = p.dtype;  // only bwd_pre reads out
    s.dbias = op == Op::bwd || op == Op::bwd_kv ? b.dbias != nullptr : 0;
    if (head_dim) s.head_dim = s.head_dim_v = uint16_t(head_dim);  // bwd_post over dK or dV
    return s;
  };
  if (ks.accumulate) ks.post_k = signature(Op::bwd_post, false, int(p.k.d)), ks.post_v = signature(Op::bwd_post, false, int(p.v.d));
  if (!ks.nothing) {
    ks.pre = signature(Op::bwd_pre, false);
    ks.main = signature(deterministic ? Op::bwd_kv : Op::bwd, true);
    ks.last = deterministic ? signature(Op::bwd_dq, true) : signature(Op::bwd_post, false);
  }
  return ks;
}

// A dense [B, M, H, D] view of x's sizes.
Bmhk packed_like(const Bmhk& x) { return {x.b, x.m, x.h, x.d, x.m * x.h * x.d, x.h * x.d, x.d}; }

}  // namespace

void prefetch_backward(const ForwardPlan& p) {
  try {
    if (!has_backward(p.bias.kind)) return;
    auto& rt = JitRuntime::get();
    if (rt.env().jit != JitPolicy::on) return;
    // The gradients as autograd and most callers make them: dense, of the forward's alignment.
    BackwardPlan b;
    b.fwd = p;
    b.grad = packed_like(p.o), b.dq = packed_like(p.q), b.dk = packed_like(p.k), b.dv = packed_like(p.v);
    b.align = p.align;
    const ContextInfo& ctx = rt.context(p.device);
    rt.prefetch_async(backward_kernels(b, ctx.arch).all(), ctx);
  } catch (...) {  // a guess: the backward itself reports what is wrong with its call
  }
}

void backward(const BackwardPlan& b, CUstream stream) {
  const ForwardPlan& p = b.fwd;
  auto& rt = JitRuntime::get();
  const CudaDriver& d = CudaDriver::require();
  const ContextInfo& ctx = rt.context(p.device);
  const DType dt = p.dtype;
  const bool deterministic = b.deterministic;
  const BackwardKernels ks = backward_kernels(b, ctx.arch);
  const bool nothing = ks.nothing, overlap = ks.overlap, accumulate = ks.accumulate;
  // A never-seen backward compiles its kernels side by side (JitRuntime::prefetch), then fetches
  // every kernel before queueing anything, so a compile error leaves nothing half done.
  if (!nothing) rt.prefetch(ks.all(), ctx);
  auto load = [&](const std::optional<Signature>& s) { return s ? &rt.kernel(*s, ctx) : nullptr; };
  const LoadedKernel* post_k = load(ks.post_k);
  const LoadedKernel* post_v = load(ks.post_v);
  const LoadedKernel* pre = load(ks.pre);
  const LoadedKernel* main = load(ks.main);
  const LoadedKernel* last = load(ks.last);

  if (!accumulate && (p.bias.k_seqlen || nothing)) {  // rows outside every sequence are 0
    memset_async(b.dk_data, bytes_of(b.dk, dt), stream);
    memset_async(b.dv_data, bytes_of(b.dv, dt), stream);
  }
  if (b.dbias) memset_async(b.dbias, b.dbias_bytes, stream);
  if (nothing && (!accumulate || bytes_of(b.dk, dt) + bytes_of(b.dv, dt) == 0)) return;

  BwdParams bp{};
  forward_params(p, bp.f);
  bp.dout = b.grad_data;
  bp.dq = b.dq_data, bp.dk = b.dk_data, bp.dv = b.dv_data;
  bp.do_stride_b = b.grad.sb, bp.do_stride_m = b.grad.sm, bp.do_stride_h = b.grad.sh;
  bp.dq_stride_b = b.dq.sb, bp.dq_stride_m = b.dq.sm, bp.dq_stride_h = b.dq.sh;
  bp.dk_stride_b = b.dk.sb, bp.dk_stride_m = b.dk.sm, bp.dk_stride_h = b.dk.sh;
  bp.dv_stride_b = b.dv.sb, bp.dv_stride_m = b.dv.sm, bp.dv_stride_h = b.dv.sh;
  if (b.dbias) {
    bp.dbias = b.dbias;  // contiguous [B, H, Mq, Mkv] (or [B, G, H, Mq, Mkv])
    bp.dbias_stride_m = p.k.m;
    bp.dbias_stride_h = p.q.m * p.k.m;
    bp.dbias_stride_b = p.q.h * bp.dbias_stride_h;
  }
  bp.kv_heads = int32_t(p.k.h);
  bp.max_mkv = p.bias.q_seqinfo ? p.bias.k_max_seqlen : int32_t(p.k.m);
  bp.scale = float(p.scale);
  if (main) encode_backward_maps(bp, *main, p, b.grad, b.grad_data);

  const Workspace w = workspace_of(p, deterministic);
  CUdeviceptr scratch = reinterpret_cast<CUdeviceptr>(b.workspace);
  const bool own = scratch == 0;
  if (own) check_cuda(d.cuMemAllocAsync(&scratch, w.total(), stream), "cuMemAllocAsync (backward workspace)");
  bp.delta = reinterpret_cast<float*>(scratch);
  bp.dq_accum = deterministic ? nullptr : reinterpret_cast<float*>(scratch + w.delta_bytes);
  if (accumulate) {
    bp.dk_accum = reinterpret_cast<float*>(scratch + w.delta_bytes + w.accum_bytes);
    bp.dv_accum = reinterpret_cast<float*>(scratch + w.delta_bytes + w.accum_bytes + w.dk_bytes);
  }
  try {
    if (accumulate) memset_async(bp.dk_accum, w.dk_bytes + w.dv_bytes, stream);
    if (!nothing) {
      launch_backward(*pre, bp, stream);
      if (deterministic && overlap) {
        // Sequences that share key rows go in separate launches, so no two blocks add to one
        // accumulator row concurrently and the sums are the same on every run.
        for (auto [first, last_seq] : disjoint_runs(p.bias)) {
          BwdParams run = bp;
          run.f.batch = last_seq - first;
          run.f.q_seqstart += first, run.f.k_seqstart += first, run.f.k_seqlen += first;
          launch_backward(*main, run, stream);
        }
      } else {
        launch_backward(*main, bp, stream);
      }
      launch_backward(*last, bp, stream);
    }
    if (accumulate) {
      write_accumulated(*post_k, bp, bp.dk_accum, b.dk_data, b.dk, stream);
      write_accumulated(*post_v, bp, bp.dv_accum, b.dv_data, b.dv, stream);
    }
  } catch (...) {
    if (own) (void)d.cuMemFreeAsync(scratch, stream);
    throw;
  }
  if (own) check_cuda(d.cuMemFreeAsync(scratch, stream), "cuMemFreeAsync (backward workspace)");
}

// ---- gradients summed over several key blocks ---------------------------------------------------

namespace {

// The kernel of `op` for this plan on the current context (as backward() fetches them).
const LoadedKernel& accumulating_kernel(const ForwardPlan& p, int align, Op op, bool with_bias, int head_dim = 0) {
  auto& rt = JitRuntime::get();
  Signature s = forward_signature(p, rt.context(p.device).arch);
  s.align = uint8_t(align);
  s.op = op;
  if (!with_bias) s.bias = BiasKind::none, s.dropout = 0, s.variant = 0;
  if (op != Op::bwd_pre) s.out_dtype = p.dtype;
  s.dbias = 0;
  if (head_dim) s.head_dim = s.head_dim_v = uint16_t(head_dim);
  return rt.kernel(s, rt.context(p.device));
}

BwdParams accumulating_params(const BackwardPlan& b) {
  BwdParams bp{};
  forward_params(b.fwd, bp.f);
  bp.dout = b.grad_data;
  bp.do_stride_b = b.grad.sb, bp.do_stride_m = b.grad.sm, bp.do_stride_h = b.grad.sh;
  bp.kv_heads = int32_t(b.fwd.k.h);
  bp.max_mkv = b.fwd.bias.q_seqinfo ? b.fwd.bias.k_max_seqlen : int32_t(b.fwd.k.m);
  bp.scale = float(b.fwd.scale);
  return bp;
}

}  // namespace

void backward_begin(const BackwardPlan& full, float* delta, float* dq_accum, CUstream stream) {
  if (no_queries(full.fwd)) return;
  const LoadedKernel& pre = accumulating_kernel(full.fwd, full.align, Op::bwd_pre, false);
  BwdParams bp = accumulating_params(full);
  bp.delta = delta, bp.dq_accum = dq_accum;
  launch_backward(pre, bp, stream);
}

void backward_add(const BackwardPlan& part, int64_t q_rows, int64_t q_row, float* delta, float* dq_accum,
                  int64_t k_rows, int64_t k_row, float* dk_accum, float* dv_accum, CUstream stream) {
  const ForwardPlan& p = part.fwd;
  if (no_queries(p) || p.k.m == 0) return;
  const LoadedKernel& main = accumulating_kernel(p, backward_align(p, part.grad, part.align, false), Op::bwd, true);
  BwdParams bp = accumulating_params(part);
  encode_backward_maps(bp, main, p, part.grad, part.grad_data);
  // The accumulators are laid out over the whole blocks: rows are counted in them, and the
  // pointers start at this call's first query and key row.
  bp.f.mq_rows = int32_t(q_rows), bp.f.mkv_rows = int32_t(k_rows);
  bp.delta = delta + q_row;
  bp.dq_accum = dq_accum + q_row * p.q.d;
  bp.dk_accum = dk_accum + k_row * p.k.d;
  bp.dv_accum = dv_accum + k_row * p.v.d;
  bp.dq = bp.dk = bp.dv = nullptr;  // never written with the accumulators set
  launch_backward(main, bp, stream, int64_t(bp.f.batch_rows) * bp.f.heads * q_rows - q_row);
}

void backward_write(const ForwardPlan& like, const Bmhk& x, const float* accum, void* grad, float scale,
                    CUstream stream) {
  if (x.b == 0 || x.m == 0 || x.h == 0) return;
  const LoadedKernel& post = accumulating_kernel(like, like.align, Op::bwd_post, false, int(x.d));
  BwdParams cv{};
  forward_params(like, cv.f);
  cv.f.batch_rows = int32_t(x.b), cv.f.mq_rows = int32_t(x.m), cv.f.heads = int32_t(x.h);
  cv.dq = grad, cv.dq_accum = const_cast<float*>(accum);
  cv.dq_stride_b = x.sb, cv.dq_stride_m = x.sm, cv.dq_stride_h = x.sh;
  cv.scale = scale;
  launch_backward(post, cv, stream);
}

}  // namespace jitattn::jit::ops

