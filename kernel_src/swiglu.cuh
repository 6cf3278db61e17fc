// SwiGLU's gate (xFormers' swiglu: out = W3·(silu(W1·x + b1) ⊙ (W2·x + b2)) + b3), the part that is
// not a GEMM: the GEMMs stay in cuBLAS (through torch), packed as x12 = x·[W1; W2]ᵀ + [b1; b2]:
//   forward:   h = silu(x1) ⊙ x2,                     x1 = x12[:, :H], x2 = x12[:, H:]
//   backward:  dx1 = dh ⊙ x2 ⊙ silu'(x1),  dx2 = dh ⊙ silu(x1),
//              silu(x) = x·σ(x),  silu'(x) = σ(x)·(1 + x·(1 − σ(x))),
// in fp32 per element, each thread kVec = 8 consecutive columns of one row (one pass over memory:
// the gate is bandwidth-bound), element by element. Cfg: kDType, kWarps.
#pragma once
#include "common.cuh"
#include "swiglu_params.h"

namespace jitattn {


namespace swiglu_detail {
constexpr int kVec = 8;

__device__ __forceinline__ float sigmoid(float x) { return 1.f / (1.f + expf(-x)); }

template <class Cfg, class Fn>
__device__ __forceinline__ void for_each_vector(const SwigluParams& p, Fn&& fn) {
  const int64_t per_row = (p.cols + kVec - 1) / kVec;
  const int64_t total = p.rows * per_row;
  for (int64_t v = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; v < total; v += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = v / per_row, c0 = (v % per_row) * kVec;
    fn(r, c0, int(c0 + kVec <= p.cols ? kVec : p.cols - c0));
  }
}
}  // namespace swiglu_detail

template <class Cfg>
__device__ __forceinline__ void swiglu_fwd(const SwigluParams& p) {
  using T = typename DType<Cfg::kDType>::T;
  const T* x = static_cast<const T*>(p.x12);
  T* h = static_cast<T*>(p.h);
  swiglu_detail::for_each_vector<Cfg>(p, [&](int64_t r, int64_t c0, int n) {
    const T* x1 = x + r * p.x_stride + c0;
    const T* x2 = x1 + p.cols;
    T* out = h + r * p.h_stride + c0;
#pragma unroll
    for (int e = 0; e < swiglu_detail::kVec; ++e)
      if (e < n) {
        const float a = to_float(x1[e]), b = to_float(x2[e]);
        out[e] = from_float<Cfg::kDType>(a * swiglu_detail::sigmoid(a) * b);
      }
  });
}

template <class Cfg>
__device__ __forceinline__ void swiglu_bwd(const SwigluParams& p) {
  using T = typename DType<Cfg::kDType>::T;
  const T* x = static_cast<const T*>(p.x12);
  const T* dh = static_cast<const T*>(p.dh);
  T* dx = static_cast<T*>(p.dx12);
  swiglu_detail::for_each_vector<Cfg>(p, [&](int64_t r, int64_t c0, int n) {
    const T* x1 = x + r * p.x_stride + c0;
    const T* x2 = x1 + p.cols;
    const T* g = dh + r * p.dh_stride + c0;
    T* d1 = dx + r * p.dx_stride + c0;
    T* d2 = d1 + p.cols;
#pragma unroll
    for (int e = 0; e < swiglu_detail::kVec; ++e)
      if (e < n) {
        const float a = to_float(x1[e]), b = to_float(x2[e]), gr = to_float(g[e]);
        const float s = swiglu_detail::sigmoid(a);
        d1[e] = from_float<Cfg::kDType>(gr * b * s * (1.f + a * (1.f - s)));
        d2[e] = from_float<Cfg::kDType>(gr * a * s);
      }
  });
}

}  // namespace jitattn
