// merge_attentions: combines attention computed over S slices of the keys into attention over
// all of them (https://arxiv.org/abs/2402.05099). For each row (b, m, g, h), in fp32:
//   mx  = max_s lse_s,   w_s = exp(lse_s − mx),   W = Σ_s w_s
//   out = Σ_s w_s · out_s / W,   lse = mx + log W
// A split whose lse is −inf (no visible key) contributes nothing and its partial output is not
// read; when every split is −inf the row is out = 0, lse = −inf.
//
// One thread per kVec consecutive elements of one output row (16 bytes of partial output when
// kAlign16); the K/kVec threads of a row read the same lse values (served from L1), and the
// first of them writes the merged lse.
// Cfg: kDType (partial outputs), kOutDType (merged output), kHeadDimV (K), kWarps, kAlign16
// (every pointer and b/m/g/h/split stride of the partial outputs and of out is 16-byte aligned),
// kWriteLse.
#pragma once
#include "common.cuh"
#include "merge_params.h"

namespace jitattn {

namespace merge_detail {
struct __align__(16) Bytes16 { unsigned w[4]; };
struct __align__(8) Bytes8 { unsigned w[2]; };

// kN elements from `src` as floats (one 16-byte load when kVector).
template <int DT, int kN, bool kVector>
__device__ __forceinline__ void load(const typename DType<DT>::T* src, float (&x)[kN]) {
  using T = typename DType<DT>::T;
  if constexpr (kVector && kN * DType<DT>::kBytes == 16) {
    const Bytes16 raw = *reinterpret_cast<const Bytes16*>(src);
    if constexpr (DT == kF32) {
#pragma unroll
      for (int i = 0; i < kN; ++i) x[i] = __int_as_float(int(raw.w[i]));
    } else {
#pragma unroll
      for (int i = 0; i < kN; ++i) {
        T t;
        t.x = (unsigned short)(raw.w[i / 2] >> (16 * (i % 2)));
        x[i] = to_float(t);
      }
    }
  } else {
#pragma unroll
    for (int i = 0; i < kN; ++i) x[i] = to_float(src[i]);
  }
}

// kN floats to `dst` in dtype DT (16- or 8-byte stores when kVector).
template <int DT, int kN, bool kVector>
__device__ __forceinline__ void store(typename DType<DT>::T* dst, const float (&x)[kN]) {
  constexpr int kBytes = kN * DType<DT>::kBytes;
  if constexpr (kVector && kBytes % 8 == 0) {
    unsigned w[kBytes / 4];
    if constexpr (DT == kF32) {
#pragma unroll
      for (int i = 0; i < kN; ++i) w[i] = unsigned(__float_as_int(x[i]));
    } else {
#pragma unroll
      for (int i = 0; i < kN / 2; ++i) w[i] = pack2<DT>(x[2 * i], x[2 * i + 1]);
    }
    if constexpr (kBytes % 16 == 0) {
#pragma unroll
      for (int i = 0; i < kBytes / 16; ++i) {
        Bytes16 b;
#pragma unroll
        for (int j = 0; j < 4; ++j) b.w[j] = w[4 * i + j];
        reinterpret_cast<Bytes16*>(dst)[i] = b;
      }
    } else {
#pragma unroll
      for (int i = 0; i < kBytes / 8; ++i) {
        Bytes8 b;
        b.w[0] = w[2 * i], b.w[1] = w[2 * i + 1];
        reinterpret_cast<Bytes8*>(dst)[i] = b;
      }
    }
  } else {
#pragma unroll
    for (int i = 0; i < kN; ++i) dst[i] = from_float<DT>(x[i]);
  }
}
}  // namespace merge_detail

template <class Cfg>
__device__ __forceinline__ void merge_attentions(const MergeParams& p) {
  using T = typename DType<Cfg::kDType>::T;
  using TO = typename DType<Cfg::kOutDType>::T;
  constexpr int kK = Cfg::kHeadDimV;
  constexpr int kVec = 16 / DType<Cfg::kDType>::kBytes;  // 8 (f16/bf16) or 4 (f32) elements
  static_assert(kK % kVec == 0, "the head dim must be a multiple of 8");
  constexpr int kChunks = kK / kVec;

  const int64_t rows = int64_t(p.batch) * p.m * p.groups * p.heads;
  const int64_t x = int64_t(blockIdx.x) * (Cfg::kWarps * 32) + threadIdx.x;
  if (x >= rows * kChunks) return;
  const int c0 = int(x % kChunks) * kVec;
  int64_t r = x / kChunks;
  const int64_t h = r % p.heads;
  r /= p.heads;
  const int64_t g = r % p.groups;
  r /= p.groups;
  const int64_t m = r % p.m, b = r / p.m;

  // The largest lse of the row (NaN if any is NaN: fmaxf alone would drop it).
  float mx = neg_inf();
  bool nan = false;
  for (int s = 0; s < p.num_splits; ++s) {
    const MergeSplit& sp = p.split[p.stacked ? 0 : s];
    const int64_t so = p.stacked ? int64_t(s) * p.lse_stride_s : 0;
    const float l = sp.lse[so + b * sp.lse_stride_b + g * sp.lse_stride_g + h * sp.lse_stride_h + m];
    mx = fmaxf(mx, l);
    nan |= l != l;
  }
  if (nan) mx = __int_as_float(0x7fffffff);

  float acc[kVec];
#pragma unroll
  for (int i = 0; i < kVec; ++i) acc[i] = 0.f;
  float sum = 0.f;
  if (mx != neg_inf()) {
    for (int s = 0; s < p.num_splits; ++s) {
      const MergeSplit& sp = p.split[p.stacked ? 0 : s];
      const int64_t so = p.stacked ? int64_t(s) * p.lse_stride_s : 0;
      const float l = sp.lse[so + b * sp.lse_stride_b + g * sp.lse_stride_g + h * sp.lse_stride_h + m];
      if (l == neg_inf()) continue;  // no visible key in this split: its output is not read
      const float w = fast_exp2((l - mx) * kLog2e);
      sum += w;
      const T* src = static_cast<const T*>(sp.out) + (p.stacked ? int64_t(s) * p.o_stride_s : 0) +
                     b * sp.o_stride_b + m * sp.o_stride_m + g * sp.o_stride_g + h * sp.o_stride_h + c0;
      float v[kVec];
      merge_detail::load<Cfg::kDType, kVec, Cfg::kAlign16>(src, v);
#pragma unroll
      for (int i = 0; i < kVec; ++i) acc[i] = fmaf(w, v[i], acc[i]);
    }
    const float inv = 1.f / sum;  // sum >= 1: the largest split has weight 1
#pragma unroll
    for (int i = 0; i < kVec; ++i) acc[i] *= inv;
  }
  TO* dst = static_cast<TO*>(p.out) + b * p.out_stride_b + m * p.out_stride_m + g * p.out_stride_g +
            h * p.out_stride_h + c0;
  merge_detail::store<Cfg::kOutDType, kVec, Cfg::kAlign16>(dst, acc);

  if constexpr (Cfg::kWriteLse) {
    if (c0 == 0)
      p.lse[b * p.lse_out_stride_b + g * p.lse_out_stride_g + h * p.lse_out_stride_h + m] =
          mx == neg_inf() ? mx : mx + logf(sum);
  }
}

}  // namespace jitattn
