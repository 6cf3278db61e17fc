// Kernel arguments, shared byte for byte by the host (jit/) and the generated kernels.
// Everything that may change from call to call lives here, never in the cache key.
#pragma once
#if defined(__CUDACC_RTC__) || defined(__HIPCC_RTC__)  // hiprtc: its own int64_t, not <cstdint>'s
typedef long long int64_t;
typedef int int32_t;
#else
#include <cstdint>
#endif

namespace jitattn {

// The captures of a user variant (jit/variant.h): tensor slot t is ptr[t] with size[t][d] and
// stride[t][d] (elements) for its rank's dimensions; scalars are f[] and i[] in capture order.
constexpr int kUserTensors = 8, kUserScalars = 8, kUserRank = 4;
struct UserArgs {
  const void* ptr[kUserTensors];
  int64_t stride[kUserTensors][kUserRank];
  int32_t size[kUserTensors][kUserRank];
  float f[kUserScalars];
  int32_t i[kUserScalars];
};

// A block map: which tiles of (sequence b, head h) a mask leaves empty, full or partial. Cell
// (r, c) covers queries [r << log2_m, (r + 1) << log2_m) and keys [c << log2_n, ...) of the
// sequence, its state at cells[b·stride_b + h·stride_h + r·stride_r + c] (strides 0 broadcast):
//   ternary (a user mask_mod's map, built by the block_map op): 0 no element visible, 1 some,
//     2 every one;
//   binary (BlockSparseMask's layout [H or 1, rows, cols]): nonzero every element visible, 0 none.
// Cells past rows/cols count as partial. cells null: no map.
// spans (a user map's, or null): query row i of (b, h) sees, under mask_mod, exactly keys
// [lo, hi) = (spans[b·span_stride_b + h·span_stride_h + 2i], [... + 1]) when hi >= 0; hi = -1 says
// the row's visible keys are not one interval (mask_mod decides each).
struct BlockMapArgs {
  const unsigned char* cells;
  int64_t stride_b, stride_h, stride_r;
  int32_t rows, cols;
  int32_t log2_m, log2_n;
  const int32_t* spans;
  int64_t span_stride_b, span_stride_h;
};

// Forward attention. Strides are in elements; query/key/value/out are [B, M, H, D] viewed
// through (batch, row, head) strides with the last stride 1.
struct FwdParams {
  const void* q;
  const void* k;
  const void* v;
  void* out;
  float* lse;          // [B, H, Mq] through lse_stride_*, or null when the LSE is not wanted
  const void* bias;    // dense additive bias [B, H, Mq, Mkv], or null

  int64_t q_stride_b, q_stride_m, q_stride_h;
  int64_t k_stride_b, k_stride_m, k_stride_h;
  int64_t v_stride_b, v_stride_m, v_stride_h;
  int64_t o_stride_b, o_stride_m, o_stride_h;
  int64_t lse_stride_b, lse_stride_h;
  int64_t bias_stride_b, bias_stride_h, bias_stride_m;

  // Dense layout: batch sequences of mq queries and mkv keys. Varlen layout (block-diagonal
  // biases): `batch` sequences concatenated along M of a B = 1 tensor, sequence b's queries at
  // q_seqstart[b]..q_seqstart[b+1], its keys at k_seqstart[b] with k_seqlen[b] rows (or up to
  // k_seqstart[b+1] when k_seqlen is null); mq is then the longest query sequence.
  int32_t batch, heads, mq, mkv;
  const int32_t* q_seqstart;
  const int32_t* k_seqstart;
  const int32_t* k_seqlen;
  // Paged keys/values (pbd_ kinds): sequence b's logical key x is physical row
  // block_tables[b * block_tables_stride + x / page_size] * page_size + x % page_size of batch
  // row 0; its keys are logical [k_seqstart[b], + k_seqlen[b]), or from 0 when k_seqstart is null.
  const int32_t* block_tables;
  int32_t block_tables_stride;
  int32_t page_size;
  const float* alibi_slopes;  // ALiBi kinds: one slope per query head
  int32_t kv_group;         // query heads per key/value head (GQA/MQA); 1 otherwise
  int32_t window_left;      // band masks: key j is visible to query i iff
  int32_t window_right;     //   -window_left <= j - i - shift <= window_right
  int32_t pairs_per_chunk;  // block order: see block_coords() in common.cuh
  float scale_log2;    // softmax scale * log2(e): the kernels work in base 2

  // Dropout (Cfg::kDropout): element (b, h, i, j) of the [B, H, mq_rows, mkv_rows] probability
  // matrix (i, j counted in the query/key tensors, so varlen sequences use their global rows) is
  // kept iff philox4x32_10({e/4 lo, e/4 hi, offset lo, offset hi}, {seed lo, seed hi})[e % 4] >=
  // dropout_threshold, e = ((b·H + h)·mq_rows + i)·mkv_rows + j; kept values are scaled by
  // dropout_scale = 1 / (1 - p). tests/philox.h documents the same layout.
  unsigned long long dropout_seed, dropout_offset;
  unsigned dropout_threshold;
  float dropout_scale;
  int32_t batch_rows, mq_rows, mkv_rows;  // B and M of the query tensor, M of the key tensor
  UserArgs user;     // a user variant's captures (its code is in the kernel), else unused
  BlockMapArgs map;     // a user variant's block map (ternary), else cells = null
  BlockMapArgs layout;  // BlockSparseMask's layout (binary), else cells = null
};

// The forward of the tma family (kernel_src/fwd_tma.cuh): FwdParams and Q, K and V as 4-D tensor
// maps (CUtensorMap), dimension 0 the columns; tma_dim[t] (t = 0 Q, 1 K, 2 V) names, for the
// row, the head and the batch index, the map dimension (1..3) it addresses, or 0 where the map
// leaves the index out (stride 0, or extent 1). A box is 64 columns by kBlockM (Q) or kBlockN
// (K, V) rows, fewer for a shorter tensor; tma_bytes[t] counts one tile's boxes, every box in
// full. jit/ops/forward.cpp encodes them per call.
struct FwdTmaParams {
  FwdParams f;
  alignas(64) unsigned char q_map[128];
  alignas(64) unsigned char k_map[128];
  alignas(64) unsigned char v_map[128];
  int32_t tma_dim[3][3];
  int32_t tma_bytes[3];
  // The persistent blocks' work counters (fwd_tma.cuh FwdTmaSchedule): work items handed out past
  // the first one of each block, and blocks done. Zero before a launch and left zero after it
  // (jit/ops/scratch.h). Null: each block takes a fixed sequence of items.
  int32_t* work;
};

// Backward. The forward's arguments (f: q, k, v, out = O, lse, bias, geometry, windows) plus the
// gradients. delta = rowsum(dO ∘ O) and dq_accum (fp32, dQ before the softmax scale) are
// workspace rows laid out [B, H, mq_rows] and [B, H, mq_rows, head_dim].
struct BwdParams {
  FwdParams f;
  const void* dout;
  void* dq;
  void* dk;
  void* dv;
  void* dbias;         // [B, H, Mq, Mkv] like the bias, or null
  float* delta;
  float* dq_accum;
  int64_t do_stride_b, do_stride_m, do_stride_h;
  int64_t dq_stride_b, dq_stride_m, dq_stride_h;
  int64_t dk_stride_b, dk_stride_m, dk_stride_h;
  int64_t dv_stride_b, dv_stride_m, dv_stride_h;
  int64_t dbias_stride_b, dbias_stride_h, dbias_stride_m;
  int32_t kv_heads;    // key/value heads (f.heads / f.kv_group)
  int32_t max_mkv;     // the longest key sequence (the grid's key blocks)
  float scale;         // softmax scale
  // When set, bwd/bwd_kv add dK (· scale) and dV (· dropout scale) into these fp32 rows, laid
  // out [B_k, kv_heads, mkv_rows, head_dim] (and head_dim_v), instead of storing them; a
  // bwd_post launch then writes dK and dV. The host sets them when several sequences share key
  // rows (overlapping gappy keys) or dK/dV cannot be zeroed with one memset.
  float* dk_accum;
  float* dv_accum;
  // bwd on the wgmma family (bwd_wgmma.cuh) with dq_accum set: a tensor map (CUtensorMap) of
  // dq_accum as [rows, head_dim] fp32, boxes of 32 columns × kBlockM rows, 128-byte swizzle,
  // through which the copy engine adds each query block's dQ.
  alignas(64) unsigned char dq_map[128];
  // bwd on the tma family (bwd_wgmma.cuh, Cfg::kTma): tensor maps of Q and dO (jit/ops/tensor_map.h:
  // boxes of 64 columns × kBlockM rows, 128-byte swizzle), the map dimension of their row, head and
  // batch index, and the bytes of a box.
  alignas(64) unsigned char q_map[128];
  alignas(64) unsigned char do_map[128];
  int32_t tma_dim[2][3];
  int32_t tma_bytes[2];
};

// Decode (decode.cuh): few queries per sequence. Block (b, hk, split, row chunk) packs the
// (query, head) pairs of sequence b whose heads share key/value head hk — packed row
// r = query · kv_group + (head − hk · kv_group) — kBlockM rows at a time, and attends them to
// split `split` of the keys they see (num_splits per sequence, cut on the device from its
// length, so a graph captured once stays right while lengths grow).
// With num_splits > 1 each block writes its normalized rows and their LSE to o_partial /
// lse_partial, [B, kv_heads, row_chunks, num_splits, kBlockM] (× head_dim_v), and the last block
// of a (b, hk, row chunk) to arrive (counters, zero before the launch and back to zero after it)
// merges them into out and lse.
// Most splits per (b, hk, row chunk): the merge's weights take kBlockM × kDecodeMaxSplits floats of
// shared memory, and the host never chooses more (jit/ops/decode.cpp).
constexpr int kDecodeMaxSplits = 128;

struct DecodeParams {
  FwdParams f;
  int32_t kv_heads;
  int32_t row_chunks;  // ceil(f.mq · f.kv_group / kBlockM)
  int32_t num_splits;
  float* o_partial;
  float* lse_partial;
  int32_t* counters;  // [B, kv_heads, row_chunks]
  // Cfg::kTma (kernel_src/decode.cuh): K and V as 4-D tensor maps (CUtensorMap), dimension 0
  // the columns; tma_dim[0] (keys) and [1] (values) name, for the key row, the key/value head and
  // the batch index, the map dimension (1..3) it addresses, or 0 where the map leaves the index
  // out (its stride is 0, or its extent 1). jit/ops/decode.cpp encodes them per call.
  // A map's box spans kBlockN rows (or all rows of a shorter tensor), tma_box_rows when paged; a
  // stage counts tma_stage_bytes, every box in full.
  alignas(64) unsigned char k_map[128];
  alignas(64) unsigned char v_map[128];
  int32_t tma_dim[2][3];
  int32_t tma_stage_bytes;
  // Paged keys: the boxes' rows, gcd(page size, kBlockN) (a multiple of 8: whole swizzle periods).
  int32_t tma_box_rows;
};

}  // namespace jitattn
