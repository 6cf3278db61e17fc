// Kernel arguments of merge_attentions (merge.cuh), shared byte for byte by the host
// (jit/launch.h, api/src/merge.cpp) and the generated kernels. Passed by value.
#pragma once
#if defined(__CUDACC_RTC__) || defined(__HIPCC_RTC__)  // hiprtc: its own int64_t, not <cstdint>'s
typedef long long int64_t;
typedef int int32_t;
#else
#include <cstdint>
#endif

namespace jitattn {

// Most splits a list of separate tensors may hold (a stacked tensor has no limit: its splits are
// addressed through one pointer and a split stride).
constexpr int kMaxMergeSplits = 32;

// One split's partial output [B, M, G, H, K] and its lse [B, G, H, M] (fp32), strides in
// elements, the last dimension (K, M) contiguous. 4-D tensors are G = 1.
struct MergeSplit {
  const void* out;
  const float* lse;
  int64_t o_stride_b, o_stride_m, o_stride_g, o_stride_h;
  int64_t lse_stride_b, lse_stride_g, lse_stride_h;
};

struct MergeParams {
  // List form: split[s] for s < num_splits (num_splits <= kMaxMergeSplits).
  // Stacked form (stacked != 0): split s is split[0] shifted by s·o_stride_s / s·lse_stride_s.
  MergeSplit split[kMaxMergeSplits];
  int64_t o_stride_s, lse_stride_s;

  void* out;    // merged [B, M, G, H, K] in the output dtype
  float* lse;   // merged [B, G, H, M], or null (Cfg::kWriteLse is false)
  int64_t out_stride_b, out_stride_m, out_stride_g, out_stride_h;
  int64_t lse_out_stride_b, lse_out_stride_g, lse_out_stride_h;

  int32_t num_splits, stacked;
  int32_t batch, m, groups, heads;  // K is Cfg::kHeadDimV
};
static_assert(sizeof(MergeParams) <= 4096, "kernel arguments are limited to 4 KiB");

}  // namespace jitattn
