// Bias/mask policies. A policy answers three questions for one (batch, head):
//   kv_range(q_lo, q_hi)          which keys rows [q_lo, q_hi) can see at all — tiles outside
//                                 are never loaded, so a mask costs what its visible part costs;
//   tile_full(q_lo, q_hi, k_lo, k_hi)  whether every element of a tile is visible, so the
//                                 per-element pass is skipped;
//   logit(x, i, j)                the base-2 logit of query i and key j after masking/bias
//                                 (x = q·k · scale · log2 e), or -inf where masked.
// Kernels call these hooks and never branch on the bias kind themselves; adding a bias kind is
// adding a struct here and a line in jit/codegen.cpp.
#pragma once
#include "common.cuh"

namespace jitattn {

struct NoBias {
  static constexpr bool kElementwise = false;  // logit() must run on every tile
  __device__ NoBias(const FwdParams&, int, int) {}
  __device__ void kv_range(int, int, int mkv, int& lo, int& hi) const { lo = 0; hi = mkv; }
  __device__ bool tile_full(int, int, int, int) const { return true; }
  __device__ float logit(float x, int, int) const { return x; }
};

// Causal: key j is visible to query i iff j <= i + offset. LowerTriangularMask has offset 0;
// LowerTriangularFromBottomRightMask has offset Mkv - Mq (the last query sees every key).
template <bool kBottomRight>
struct CausalMask {
  static constexpr bool kElementwise = false;
  int offset;
  __device__ CausalMask(const FwdParams& p, int, int) : offset(kBottomRight ? p.mkv - p.mq : 0) {}
  __device__ void kv_range(int, int q_hi, int mkv, int& lo, int& hi) const {
    lo = 0;
    hi = imax(0, imin(mkv, q_hi + offset));
  }
  __device__ bool tile_full(int q_lo, int, int, int k_hi) const { return k_hi - 1 <= q_lo + offset; }
  __device__ float logit(float x, int i, int j) const { return j <= i + offset ? x : neg_inf(); }
};

// A dense additive bias tensor [B, H, Mq, Mkv] (B and H may be broadcast with stride 0).
template <int kBiasDType>
struct TensorBiasPolicy {
  static constexpr bool kElementwise = true;
  using T = typename DType<kBiasDType>::T;
  const T* row0;
  int64_t stride_m;
  __device__ TensorBiasPolicy(const FwdParams& p, int b, int h)
      : row0(static_cast<const T*>(p.bias) + b * p.bias_stride_b + h * p.bias_stride_h),
        stride_m(p.bias_stride_m) {}
  __device__ void kv_range(int, int, int mkv, int& lo, int& hi) const { lo = 0; hi = mkv; }
  __device__ bool tile_full(int, int, int, int) const { return true; }
  __device__ float logit(float x, int i, int j) const {
    return x + to_float(row0[i * stride_m + j]) * kLog2e;
  }
};

}  // namespace jitattn
