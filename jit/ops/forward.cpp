#include "jit/ops/forward.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <optional>
#include <string>

#include "jit/env.h"
#include "jit/jit_runtime.h"
#include "jit/launch.h"
#include "jit/ops/decode.h"
#include "jit/ops/forward_params.h"
#include "jit/ops/scratch.h"
#include "jit/ops/tensor_map.h"
#include "jitattn/error.h"

namespace jitattn::jit::ops {

Signature forward_signature(const ForwardPlan& p, const Arch& arch) {
  Signature sig;
  sig.op = Op::fwd;
  sig.bias = p.bias.kind;
  sig.dtype = p.dtype;
  sig.out_dtype = p.out_dtype;
  sig.head_dim = uint16_t(p.q.d);
  sig.head_dim_v = uint16_t(p.v.d);
  sig.set_arch(arch);
  sig.lse = p.lse != nullptr;
  sig.align = uint8_t(p.align);
  sig.dropout = p.p > 0;
  sig.variant = p.variant.id;
  return sig;
}

void user_args(const VariantPlan& v, UserArgs& a) {
  static_assert(VariantPlan::kTensors == kUserTensors && VariantPlan::kScalars == kUserScalars &&
                VariantPlan::kRank == kUserRank, "jit/ops/plans.h and kernel_src/params.h disagree on UserArgs");
  for (int t = 0; t < kUserTensors; ++t) {
    a.ptr[t] = v.ptr[t];
    for (int d = 0; d < kUserRank; ++d) a.stride[t][d] = v.stride[t][d], a.size[t][d] = v.size[t][d];
  }
  for (int s = 0; s < kUserScalars; ++s) a.f[s] = v.f[s], a.i[s] = v.i[s];
}

bool forward_params(const ForwardPlan& p, FwdParams& fp) {
  fp = FwdParams{};
  fp.q = p.q_data, fp.k = p.k_data, fp.v = p.v_data, fp.out = p.out_data;
  fp.lse = p.lse;
  fp.q_stride_b = p.q.sb, fp.q_stride_m = p.q.sm, fp.q_stride_h = p.q.sh;
  fp.k_stride_b = p.k.sb, fp.k_stride_m = p.k.sm, fp.k_stride_h = p.k.sh;
  fp.v_stride_b = p.v.sb, fp.v_stride_m = p.v.sm, fp.v_stride_h = p.v.sh;
  fp.o_stride_b = p.o.sb, fp.o_stride_m = p.o.sm, fp.o_stride_h = p.o.sh;
  fp.lse_stride_b = p.lse_stride_b, fp.lse_stride_h = p.lse_stride_h;
  if (p.bias.tensor) {
    const TensorView& t = *p.bias.tensor;
    fp.bias = t.data;
    fp.bias_stride_b = t.shape[0] == 1 ? 0 : t.stride[0];
    if (t.ndim == 5) {  // [B, G, H, Mq, Mkv] as G·H heads (bias_reasons checked it flattens)
      fp.bias_stride_h = t.shape[2] > 1 ? t.stride[2] : t.shape[1] > 1 ? t.stride[1] : 0;
      fp.bias_stride_m = t.stride[3];
    } else {
      fp.bias_stride_h = t.shape[1] == 1 ? 0 : t.stride[1];
      fp.bias_stride_m = t.stride[2];
    }
  }
  if (p.bias.alibi_slopes) fp.alibi_slopes = p.bias.alibi_slopes->device(p.device);
  fp.batch = int32_t(p.q.b), fp.heads = int32_t(p.q.h), fp.mq = int32_t(p.q.m), fp.mkv = int32_t(p.k.m);
  fp.batch_rows = int32_t(p.q.b), fp.mq_rows = int32_t(p.q.m), fp.mkv_rows = int32_t(p.k.m);
  fp.kv_group = int32_t(p.q.h / p.k.h);
  fp.window_left = p.bias.window_left, fp.window_right = p.bias.window_right;
  if (p.bias.q_seqinfo) {  // block-diagonal: one "batch" entry per sequence, grid by the longest
    fp.batch = int32_t(p.bias.q_seqinfo->batch());
    fp.mq = p.bias.q_seqinfo->max_seqlen;
    if (fp.batch == 0 || fp.mq == 0) return false;
    fp.q_seqstart = p.bias.q_seqinfo->seqstart.device(p.device);
    fp.k_seqstart = p.bias.k_seqstart ? p.bias.k_seqstart->device(p.device) : nullptr;
    fp.k_seqlen = p.bias.k_seqlen ? p.bias.k_seqlen->device(p.device) : nullptr;
    if (p.bias.block_tables) {
      fp.block_tables = p.bias.block_tables->table.device(p.device);
      fp.block_tables_stride = p.bias.block_tables->max_pages;
      fp.page_size = p.bias.page_size;
    }
  }
  if (p.variant.id) user_args(p.variant, fp.user);  // the captures' values (their code is in the kernel)
  auto cells = [](const CellMapPlan& m, BlockMapArgs& a) {
    a.cells = m.cells;
    a.stride_b = m.stride_b, a.stride_h = m.stride_h, a.stride_r = m.stride_r;
    a.rows = m.rows, a.cols = m.cols, a.log2_m = a.log2_n = m.log2_cell;
    a.spans = m.spans, a.span_stride_b = m.span_stride_b, a.span_stride_h = m.span_stride_h;
  };
  cells(p.map, fp.map);
  cells(p.layout, fp.layout);
  fp.scale_log2 = float(p.scale * 1.4426950408889634);
  fp.dropout_scale = 1.f;  // the backward scales by it unconditionally
  if (p.p > 0) {
    fp.dropout_seed = p.seed, fp.dropout_offset = p.offset;
    fp.dropout_threshold = uint32_t(std::ceil(p.p * 4294967296.0));  // validation keeps it below 2^32
    fp.dropout_scale = float(1.0 / (1.0 - p.p));
  }
  return p.q.b > 0 && p.q.h > 0 && p.q.m > 0;
}

// Block order (kernel_src/common.cuh block_coords). Measured on the H100: blocks of equal
// length run best one (head, batch) pair at a time, whose keys and values then stay in L2;
// under a causal mask the longest blocks of all pairs first run best, which keeps the tail short.
int32_t pairs_per_chunk(const KernelSpec& spec, const FwdParams& p) {
  const int64_t pairs = int64_t(p.heads) * p.batch;
  if (const int forced = Env::get().pairs_per_chunk) return int32_t(std::min<int64_t>(forced, pairs));
  return has_uneven_blocks(spec.sig.bias) ? int32_t(pairs) : 1;
}

namespace {

// The views of Q, K and V as tensor maps of the tma forward's boxes (kernel_src/fwd_tma.cuh):
// kBlockM query rows, kBlockN key rows.
struct ForwardMaps {
  std::optional<TensorMapGeometry> q, k, v;
  bool ok() const { return q && k && v; }
};
ForwardMaps forward_maps(const ForwardPlan& p, const TileConfig& tile) {
  return {tensor_map_geometry(p.q, p.q.h, 2, tile.block_m), tensor_map_geometry(p.k, p.k.h, 2, tile.block_n),
          tensor_map_geometry(p.v, p.v.h, 2, tile.block_n)};
}

// The kernel signature of a plan and, where the tma family serves it, its maps.
Signature kernel_signature(const ForwardPlan& p, const Arch& arch, ForwardMaps& maps) {
  Signature sig = forward_signature(p, arch);
  const KernelSpec spec = make_spec(sig);
  if (spec.family != Family::tma) return sig;
  maps = forward_maps(p, spec.tile);
  if (!maps.ok()) sig.align = 4;
  return sig;
}

}  // namespace

Signature forward_kernel_signature(const ForwardPlan& p, const Arch& arch) {
  ForwardMaps maps;
  return kernel_signature(p, arch, maps);
}

void forward(const ForwardPlan& p, CUstream stream) {
  if (p.q.b == 0 || p.q.h == 0 || p.q.m == 0) return;  // nothing to compute or write
  auto& rt = JitRuntime::get();
  const ContextInfo& ctx = rt.context(p.device);
  // Few queries per sequence: jit/ops/decode.cpp (CUDA only; AMD runs them as any forward).
  if (ctx.backend == Backend::cuda && decode_applies(p)) return decode(p, stream);
  ForwardMaps maps;
  const LoadedKernel& kernel = rt.kernel(kernel_signature(p, ctx.arch, maps), ctx);
  FwdTmaParams tp{};
  FwdParams& fp = tp.f;
  if (!forward_params(p, fp)) return;
  // One block per (query block, head, batch); block_coords() decodes it.
  fp.pairs_per_chunk = pairs_per_chunk(kernel.spec, fp);
  const int64_t blocks = ceil_div(fp.mq, kernel.spec.tile.block_m) * fp.heads * fp.batch;
  if (kernel.spec.family != Family::tma) return launch(kernel, &fp, blocks, stream);
  // kernel_signature made the three maps' geometry for make_spec's tile, which kernel.spec is
  // (JitRuntime::kernel makes it from the same signature); align 16 says all three map.
  const TensorMapGeometry* g[3] = {&*maps.q, &*maps.k, &*maps.v};
  const void* data[3] = {p.q_data, p.k_data, p.v_data};
  unsigned char* out[3] = {tp.q_map, tp.k_map, tp.v_map};
  const int64_t cols[3] = {p.q.d, p.k.d, p.v.d};
  const char* what[3] = {"forward queries", "forward keys", "forward values"};
  for (int t = 0; t < 3; ++t) {
    if (t > 0 && p.k.m == 0) break;  // no keys: no block loads a key tile
    encode_tensor_map(out[t], data[t], p.dtype, *g[t], what[t]);
    for (int i = 0; i < 3; ++i) tp.tma_dim[t][i] = g[t]->dim_of[i];
    tp.tma_bytes[t] = tensor_map_box_bytes(*g[t], cols[t]);
  }
  // Persistent (fwd_tma.cuh FwdTmaSchedule): one block per SM at most, each drawing items from
  // the stream's work counters until none is left.
  const int64_t grid = std::min<int64_t>(blocks, Env::get().fwd_blocks ? Env::get().fwd_blocks : ctx.sm_count);
  // The kernel counts items in int32, past the end by less than two grids (one draw past the end
  // per block; the schedule without a counter overshoots by up to a round more).
  if (blocks > INT32_MAX - 2 * grid)
    throw Error(kernel.spec.name() + ": " + std::to_string(blocks) + " work items exceed 2^31 - 1 less two grids");
  bool captured = false;
  const ScratchBuffers buf = stream_scratch(ctx, stream, 0, 2 * sizeof(int32_t), captured);
  tp.work = buf.counters;
  launch(kernel, &tp, grid, stream);
  if (captured) release_scratch(buf, stream);
}

}  // namespace jitattn::jit::ops
