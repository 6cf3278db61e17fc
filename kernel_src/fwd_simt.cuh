// Exact fp32 forward on CUDA cores (no tf32): the path for float32 inputs.
//
// One block computes kBlockM query rows of one (batch, head) with everything staged in
// shared memory: S = Q·Kᵀ for a key tile, an online-softmax update per row, then O += P·V.
// Same policies and the same masking rules as fwd_mma.cuh.
#pragma once
#include "bias_policies.cuh"
#include "common.cuh"

namespace jitattn {

template <class Cfg>
struct FwdSimtLayout {
  static constexpr int kThreads = Cfg::kWarps * 32;
  static constexpr int kSmemFloats = Cfg::kBlockM * Cfg::kHeadDim + Cfg::kBlockN * Cfg::kHeadDim +
                                     Cfg::kBlockN * Cfg::kHeadDimV + Cfg::kBlockM * Cfg::kBlockN +
                                     Cfg::kBlockM * Cfg::kHeadDimV + 3 * Cfg::kBlockM;
  static constexpr int kSmemBytes = kSmemFloats * 4;
};

template <class Cfg, class Policy>
__device__ __forceinline__ void fwd_simt(const FwdParams& p) {
  using L = FwdSimtLayout<Cfg>;
  using T = typename DType<Cfg::kDType>::T;
  using TO = typename DType<Cfg::kOutDType>::T;
  constexpr int kBM = Cfg::kBlockM, kBN = Cfg::kBlockN, kD = Cfg::kHeadDim, kDv = Cfg::kHeadDimV;

  extern __shared__ __align__(128) unsigned char smem_raw[];
  float* sQ = reinterpret_cast<float*>(smem_raw);
  float* sK = sQ + kBM * kD;
  float* sV = sK + kBN * kD;
  float* sS = sV + kBN * kDv;
  float* sO = sS + kBM * kBN;
  float* sMax = sO + kBM * kDv;
  float* sSum = sMax + kBM;
  float* sAlpha = sSum + kBM;

  int m_block, h, b;
  block_coords(p, kBM, m_block, h, b);
  const SeqGeometry<Cfg::kVarlen, Cfg::kPaged> seq(p, b);
  const int mq = seq.mq, mkv = seq.mkv;
  const int q_lo = m_block * kBM;
  if (q_lo >= mq) return;  // varlen: this sequence is shorter than the longest one
  const int hk = h / p.kv_group;  // GQA/MQA: the key/value head this query head reads

  const T* q = static_cast<const T*>(p.q) + seq.batch * p.q_stride_b + h * p.q_stride_h + int64_t(seq.q_start) * p.q_stride_m;
  const Rows<T, Cfg::kPaged> k = kv_rows<T, Cfg::kPaged>(p, p.k, p.k_stride_b, p.k_stride_h, p.k_stride_m, seq, hk, b);
  const Rows<T, Cfg::kPaged> v = kv_rows<T, Cfg::kPaged>(p, p.v, p.v_stride_b, p.v_stride_h, p.v_stride_m, seq, hk, b);

  const Policy policy(p, b, h, mq, mkv);
  int kv_lo, kv_hi;
  policy.kv_range(q_lo, imin(q_lo + kBM, mq), mkv, kv_lo, kv_hi);

  for (int e = threadIdx.x; e < kBM * kD; e += L::kThreads) {
    const int r = e / kD, c = e % kD;
    sQ[e] = q_lo + r < mq ? to_float(q[(int64_t)(q_lo + r) * p.q_stride_m + c]) : 0.f;
  }
  for (int e = threadIdx.x; e < kBM * kDv; e += L::kThreads) sO[e] = 0.f;
  for (int r = threadIdx.x; r < kBM; r += L::kThreads) {
    sMax[r] = neg_inf();
    sSum[r] = 0.f;
  }

  for (int n0 = kv_lo; n0 < kv_hi; n0 += kBN) {
    __syncthreads();  // the previous tile's readers are done
    for (int e = threadIdx.x; e < kBN * kD; e += L::kThreads) {
      const int r = e / kD, c = e % kD;
      sK[e] = n0 + r < mkv ? to_float(k(n0 + r)[c]) : 0.f;
    }
    for (int e = threadIdx.x; e < kBN * kDv; e += L::kThreads) {
      const int r = e / kDv, c = e % kDv;
      sV[e] = n0 + r < mkv ? to_float(v(n0 + r)[c]) : 0.f;
    }
    __syncthreads();
    for (int e = threadIdx.x; e < kBM * kBN; e += L::kThreads) {
      const int r = e / kBN, c = e % kBN, i = q_lo + r, j = n0 + c;
      float dot = 0.f;
#pragma unroll 8
      for (int d = 0; d < kD; ++d) dot = fmaf(sQ[r * kD + d], sK[c * kD + d], dot);
      float x = dot * p.scale_log2;
      x = j >= mkv ? neg_inf() : i >= mq ? x : policy.logit(x, i, j);
      sS[e] = x;
    }
    __syncthreads();
    for (int r = threadIdx.x; r < kBM; r += L::kThreads) {
      float mx = sMax[r];
      for (int c = 0; c < kBN; ++c) mx = fmaxf(mx, sS[r * kBN + c]);
      const float base = mx == neg_inf() ? 0.f : mx;
      float sum = 0.f;
      for (int c = 0; c < kBN; ++c) {
        const float e = exp2f(sS[r * kBN + c] - base);
        sS[r * kBN + c] = e;
        sum += e;
      }
      if constexpr (Cfg::kDropout) {  // after the row sum: the LSE is that of the undropped softmax
        const unsigned long long row =
            ((unsigned long long)(seq.batch * p.heads + h) * p.mq_rows + seq.q_start + q_lo + r) * p.mkv_rows + seq.k_start;
        for (int c = 0; c < kBN; ++c)
          if (n0 + c < mkv && !dropout_keep1(p, row + n0 + c)) sS[r * kBN + c] = 0.f;
      }
      const float alpha = exp2f(sMax[r] - base);
      sAlpha[r] = alpha;
      sSum[r] = sSum[r] * alpha + sum;
      sMax[r] = mx;
    }
    __syncthreads();
    for (int e = threadIdx.x; e < kBM * kDv; e += L::kThreads) {
      const int r = e / kDv, c = e % kDv;
      float o = sO[e] * sAlpha[r];
      for (int j = 0; j < kBN; ++j) o = fmaf(sS[r * kBN + j], sV[j * kDv + c], o);
      sO[e] = o;
    }
  }
  __syncthreads();

  TO* out = static_cast<TO*>(p.out) + seq.batch * p.o_stride_b + h * p.o_stride_h + int64_t(seq.q_start) * p.o_stride_m;
  for (int e = threadIdx.x; e < kBM * kDv; e += L::kThreads) {
    const int r = e / kDv, c = e % kDv, i = q_lo + r;
    if (i >= mq) continue;
    const float l = sSum[r];
    out[(int64_t)i * p.o_stride_m + c] = from_float<Cfg::kOutDType>(l > 0.f ? sO[e] * (Cfg::kDropout ? p.dropout_scale : 1.f) / l : 0.f);
  }
  if constexpr (Cfg::kWriteLse) {
    for (int r = threadIdx.x; r < kBM; r += L::kThreads) {
      const int i = q_lo + r;
      if (i >= mq) continue;
      const float l = sSum[r];
      p.lse[seq.batch * p.lse_stride_b + h * p.lse_stride_h + seq.q_start + i] = l > 0.f ? (sMax[r] + log2f(l)) * kLn2 : neg_inf();
    }
  }
}

}  // namespace jitattn
