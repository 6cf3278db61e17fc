// Kernel arguments, shared byte for byte by the host (jit/) and the generated kernels.
// Everything that may change from call to call lives here, never in the cache key.
#pragma once
#ifdef __CUDACC_RTC__
typedef long long int64_t;
typedef int int32_t;
#else
#include <cstdint>
#endif

namespace jitattn {

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
};

}  // namespace jitattn
