#include "jit/ops/decode.h"

#include <algorithm>
#include <cstdio>
#include <numeric>
#include <optional>
#include <string>
#include <utility>

#include "jit/cuda_driver.h"
#include "jit/env.h"
#include "jit/jit_runtime.h"
#include "jit/launch.h"
#include "jit/ops/forward.h"
#include "jit/ops/forward_params.h"
#include "jit/ops/scratch.h"
#include "jit/ops/tensor_map.h"
#include "jitattn/error.h"

namespace jitattn::jit::ops {

namespace {

constexpr int kRows = 16;  // packed rows per block (DecodeLayout: kBlockM)

int64_t queries_per_sequence(const ForwardPlan& p) { return p.bias.q_seqinfo ? p.bias.q_seqinfo->max_seqlen : p.q.m; }

// Key/value heads as the kernels read them: heads expanded by stride 0 are one head.
int64_t kv_heads(const ForwardPlan& p) { return p.k.h > 1 && p.k.sh == 0 && p.v.sh == 0 ? 1 : p.k.h; }

// The most keys one query row can see: the longest key sequence, or a local window.
int64_t visible_keys(const ForwardPlan& p) {
  const int64_t keys = p.bias.q_seqinfo ? p.bias.k_max_seqlen : p.k.m;
  if (!has_left_window(p.bias.kind)) return keys;
  return std::min<int64_t>(keys, int64_t(p.bias.window_left) + p.bias.window_right + queries_per_sequence(p));
}

}  // namespace

bool decode_applies(const ForwardPlan& p) {
  // BlockSparseMask's short queries take the prefill path (its layout is for long sequences).
  // JITATTN_FAMILY=portable runs what AMD runs, and AMD has no decode kernel (mma.sync).
  return Env::get().decode && !Env::get().portable && p.dtype != DType::f32 && p.p == 0 &&
         queries_per_sequence(p) <= kDecodeMaxQueries && !p.layout.cells;
}

Signature decode_signature(const ForwardPlan& p, const Arch& arch) {
  Signature sig = forward_signature(p, arch);
  sig.op = Op::decode;
  // The tma kernel reads paged keys in boxes of gcd(page size, block_n) rows, which must be whole
  // swizzle periods (8 rows of 128 bytes): other page sizes take the cp.async kernel.
  if (p.bias.block_tables && p.bias.page_size % 8 != 0) sig.odd_pages = 1;
  // Tensors a tensor map cannot address take the kernel for element-aligned rows instead (whether
  // one can does not depend on the box's rows).
  if (decode_tma(sig) && (!tensor_map_geometry(p.k, kv_heads(p), 2, 1) || !tensor_map_geometry(p.v, kv_heads(p), 2, 1)))
    sig.align = 2;
  return sig;
}

int decode_splits(int64_t chunks, int64_t keys, int64_t slots, int block_n) {
  if (const int forced = Env::get().decode_splits) return std::min(forced, kDecodeMaxSplits);
  if (chunks <= 0 || slots <= 0) return 1;
  const int64_t most = std::clamp<int64_t>(keys / (2 * int64_t(block_n)), 1, kDecodeMaxSplits);
  // Wave efficiency: the share of the slots busy over the waves the blocks take.
  auto efficiency = [&](int64_t s) {
    const int64_t blocks = chunks * s;
    return double(blocks) / double((blocks + slots - 1) / slots * slots);
  };
  double best = 0;
  for (int64_t s = 1; s <= most; ++s) best = std::max(best, efficiency(s));
  for (int64_t s = 1; s <= most; ++s)
    if (efficiency(s) >= 0.95 * best) return int(s);  // 0.85 left 15% of the SMs idle at B = 1 (docs/design.md)
  return 1;
}

void decode(const ForwardPlan& p, CUstream stream) {
  if (p.q.b == 0 || p.q.h == 0 || p.q.m == 0) return;  // nothing to compute or write
  auto& rt = JitRuntime::get();
  const ContextInfo& ctx = rt.context(p.device);
  const LoadedKernel& kernel = rt.kernel(decode_signature(p, ctx.arch), ctx);
  DecodeParams dp{};
  if (!forward_params(p, dp.f)) return;
  const int64_t kvh = kv_heads(p);
  dp.f.kv_group = int32_t(p.q.h / kvh);
  dp.kv_heads = int32_t(kvh);
  dp.row_chunks = int32_t(ceil_div(int64_t(dp.f.mq) * dp.f.kv_group, kRows));
  const int64_t chunks = int64_t(dp.f.batch) * kvh * dp.row_chunks;
  const int64_t slots = int64_t(ctx.sm_count) * std::max(1, kernel.blocks_per_sm);
  dp.num_splits = decode_splits(chunks, visible_keys(p), slots, kernel.spec.tile.block_n);
  const int64_t blocks = chunks * dp.num_splits;
  dp.tma_box_rows = kernel.spec.tile.block_n;  // read by the paged tma kernel even with no key rows (then no tile)
  if (kernel.spec.family == Family::tma && p.k.m > 0) {  // decode_signature checked that both map
    const int block_n = kernel.spec.tile.block_n;
    // Paged: boxes of gcd(page size, block_n) rows, each inside one page (decode.cuh).
    const int box_rows = p.bias.block_tables ? std::gcd(p.bias.page_size, block_n) : block_n;
    const TensorMapGeometry gk = *tensor_map_geometry(p.k, kvh, 2, box_rows), gv = *tensor_map_geometry(p.v, kvh, 2, box_rows);
    encode_tensor_map(dp.k_map, p.k_data, p.dtype, gk, "decode keys");
    encode_tensor_map(dp.v_map, p.v_data, p.dtype, gv, "decode values");
    for (int i = 0; i < 3; ++i) dp.tma_dim[0][i] = gk.dim_of[i], dp.tma_dim[1][i] = gv.dim_of[i];
    dp.tma_box_rows = box_rows;
    dp.tma_stage_bytes = (block_n / box_rows) * (tensor_map_box_bytes(gk, p.k.d) + tensor_map_box_bytes(gv, p.v.d));
  }
  if (rt.env().verbose) {  // once per kernel and geometry in a row, not once per call
    thread_local const LoadedKernel* last_kernel = nullptr;
    thread_local int64_t last_chunks = -1, last_splits = -1;
    if (&kernel != last_kernel || chunks != last_chunks || dp.num_splits != last_splits) {
      std::fprintf(stderr, "jitattn: %s: %lld chunks x %d splits, %lld blocks on %lld slots\n", kernel.spec.name().c_str(),
                   (long long)chunks, int(dp.num_splits), (long long)blocks, (long long)slots);
      last_kernel = &kernel, last_chunks = chunks, last_splits = dp.num_splits;
    }
  }
  if (blocks > INT32_MAX) throw Error(kernel.spec.name() + ": " + std::to_string(blocks) + " blocks exceed 2^31 - 1");
  if (dp.num_splits == 1) {
    launch(kernel, &dp, blocks, stream);
    return;
  }
  const size_t rows = size_t(blocks) * kRows;
  const size_t partial_bytes = rows * (size_t(p.v.d) + 1) * sizeof(float);
  const size_t counter_bytes = size_t(chunks) * sizeof(int32_t);
  bool captured = false;
  const ScratchBuffers buf = stream_scratch(ctx, stream, partial_bytes, counter_bytes, captured);
  dp.o_partial = buf.partial;
  dp.lse_partial = buf.partial + rows * size_t(p.v.d);
  dp.counters = buf.counters;
  launch(kernel, &dp, blocks, stream);
  if (captured) release_scratch(buf, stream);
}

}  // namespace jitattn::jit::ops
