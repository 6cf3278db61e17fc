// The backward's row-wise kernels, around bwd_mma / bwd_dq_mma:
//   bwd_pre:  delta[b, h, i] = Σ_c dO[b, i, h, c] · O[b, i, h, c], and (when dq_accum is set) the
//             dq_accum row zeroed for bwd_mma's atomics; one warp per (b, i, h) row.
//   bwd_post: dQ = dq_accum · scale in the query dtype; one thread per element.
// Cfg: kDType (dO, dQ), kOutDType (O), kHeadDim, kHeadDimV, kWarps.
#pragma once
#include "common.cuh"

namespace jitattn {

template <class Cfg>
__device__ __forceinline__ void bwd_pre(const BwdParams& bp) {
  const FwdParams& p = bp.f;
  using T = typename DType<Cfg::kDType>::T;
  using TO = typename DType<Cfg::kOutDType>::T;
  const int64_t rows = int64_t(p.batch_rows) * p.mq_rows * p.heads;
  const int64_t r = int64_t(blockIdx.x) * Cfg::kWarps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (r >= rows) return;
  const int h = int(r % p.heads);
  const int64_t i = (r / p.heads) % p.mq_rows, b = r / (int64_t(p.heads) * p.mq_rows);
  const T* dout = static_cast<const T*>(bp.dout) + b * bp.do_stride_b + i * bp.do_stride_m + h * bp.do_stride_h;
  const TO* out = static_cast<const TO*>(p.out) + b * p.o_stride_b + i * p.o_stride_m + h * p.o_stride_h;
  float sum = 0.f;
  for (int c = lane; c < Cfg::kHeadDimV; c += 32) sum += to_float(dout[c]) * to_float(out[c]);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) sum += port::shfl_xor32(sum, o);
  const int64_t row = (b * p.heads + h) * p.mq_rows + i;
  if (lane == 0) bp.delta[row] = sum;
  if (bp.dq_accum)
    for (int c = lane; c < Cfg::kHeadDim; c += 32) bp.dq_accum[row * Cfg::kHeadDim + c] = 0.f;
}

template <class Cfg>
__device__ __forceinline__ void bwd_post(const BwdParams& bp) {
  const FwdParams& p = bp.f;
  using T = typename DType<Cfg::kDType>::T;
  const int64_t n = int64_t(p.batch_rows) * p.mq_rows * p.heads * Cfg::kHeadDim;
  const int64_t x = int64_t(blockIdx.x) * (Cfg::kWarps * 32) + threadIdx.x;
  if (x >= n) return;
  const int c = int(x % Cfg::kHeadDim);
  const int64_t row = x / Cfg::kHeadDim;  // (b·H + h)·mq_rows + i
  const int64_t i = row % p.mq_rows, h = (row / p.mq_rows) % p.heads, b = row / (int64_t(p.mq_rows) * p.heads);
  T* dq = static_cast<T*>(bp.dq) + b * bp.dq_stride_b + i * bp.dq_stride_m + h * bp.dq_stride_h;
  dq[c] = from_float<Cfg::kDType>(bp.dq_accum[x] * bp.scale);
}

}  // namespace jitattn
