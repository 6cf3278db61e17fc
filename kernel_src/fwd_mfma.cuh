// The CDNA matrix-core forward (gfx90a, gfx942): f16/bf16 inputs, fp32 accumulation on
// v_mfma_f32_16x16x16{f16,bf16_1k}, wave64. Compiled by hiprtc in CI and disassembled there
// (tests/amd_compile_test.cpp finds its v_mfma instructions); it has NEVER RUN on an AMD GPU, so
// it stays behind JITATTN_AMD_MFMA=on (docs/amd.md) and the default AMD forward is fwd_simt.cuh.
//
// One block of kWarps waves computes kBlockM = 16·kWarps query rows of one (sequence, head); wave
// w owns rows 16w..16w+15. Per key tile of kBlockN keys, all through LDS:
//   Q, K, V staged as 16-bit rows (padded by 8 elements),
//   S = Q·Kᵀ on MFMA → scaled, masked by the policy (the same hooks as every family) → LDS fp32,
//   an online-softmax pass per row (one lane per row, as fwd_simt.cuh) → P (16-bit) and alpha,
//   O = O·alpha + P·V on MFMA, O kept in registers in the MFMA accumulator layout.
// Operand layouts of v_mfma_f32_16x16x16 (lane l of 64, v = 0..3; AMD's matrix instruction
// tables): A[i][k] with i = l % 16, k = 4·(l / 16) + v; B[k][j] with k = 4·(l / 16) + v,
// j = l % 16; D[i][j] with i = 4·(l / 16) + v, j = l % 16.
#pragma once
#include "bias_policies.cuh"
#include "common.cuh"

namespace jitattn {

template <class Cfg>
struct FwdMfmaLayout {
  static constexpr int kThreads = Cfg::kWarps * 64;
  static constexpr int kQkStride = Cfg::kHeadDim + 8, kVStride = Cfg::kHeadDimV + 8, kPStride = Cfg::kBlockN + 8;
  static constexpr int kQBytes = 2 * Cfg::kBlockM * kQkStride;
  static constexpr int kKBytes = 2 * Cfg::kBlockN * kQkStride;
  static constexpr int kVBytes = 2 * Cfg::kBlockN * kVStride;
  static constexpr int kSBytes = 4 * Cfg::kBlockM * Cfg::kBlockN;
  static constexpr int kPBytes = 2 * Cfg::kBlockM * kPStride;
  static constexpr int kSmemBytes = kQBytes + kKBytes + kVBytes + kSBytes + kPBytes + 12 * Cfg::kBlockM;
  static_assert(Cfg::kBlockM == 16 * Cfg::kWarps, "one wave64 per 16 query rows");
  static_assert(Cfg::kBlockN % 16 == 0 && Cfg::kHeadDim % 16 == 0 && Cfg::kHeadDimV % 16 == 0,
                "tiles and head dims are multiples of 16");
};

#if JITATTN_HIP
namespace mfma_detail {
typedef float f32x4 __attribute__((ext_vector_type(4)));
typedef _Float16 f16x4 __attribute__((ext_vector_type(4)));
typedef short i16x4 __attribute__((ext_vector_type(4)));

// d += a·b for one 16x16x16 step; a and b are four 16-bit values each (8 bytes of LDS).
template <int DT>
__device__ __forceinline__ f32x4 mfma16(const unsigned short* a, const unsigned short* b, f32x4 d) {
  if constexpr (DT == kF16)
    return __builtin_amdgcn_mfma_f32_16x16x16f16(*reinterpret_cast<const f16x4*>(a), *reinterpret_cast<const f16x4*>(b), d, 0, 0, 0);
  else
    return __builtin_amdgcn_mfma_f32_16x16x16bf16_1k(*reinterpret_cast<const i16x4*>(a), *reinterpret_cast<const i16x4*>(b), d, 0,
                                                     0, 0);
}
}  // namespace mfma_detail

template <class Cfg, class Policy>
__device__ __forceinline__ void fwd_mfma(const FwdParams& p) {
  using namespace mfma_detail;
  using L = FwdMfmaLayout<Cfg>;
  using T = typename DType<Cfg::kDType>::T;
  using TO = typename DType<Cfg::kOutDType>::T;
  constexpr int kBM = Cfg::kBlockM, kBN = Cfg::kBlockN, kD = Cfg::kHeadDim, kDv = Cfg::kHeadDimV;
  constexpr int kQk = L::kQkStride, kVs = L::kVStride, kPs = L::kPStride;
  constexpr int kTilesN = kBN / 16, kTilesV = kDv / 16;
  static_assert(Cfg::kDType != kF32, "the mfma family takes f16/bf16 inputs");

  extern __shared__ __align__(16) unsigned char smem_raw[];
  unsigned short* sQ = reinterpret_cast<unsigned short*>(smem_raw);
  unsigned short* sK = reinterpret_cast<unsigned short*>(smem_raw + L::kQBytes);
  unsigned short* sV = reinterpret_cast<unsigned short*>(smem_raw + L::kQBytes + L::kKBytes);
  float* sS = reinterpret_cast<float*>(smem_raw + L::kQBytes + L::kKBytes + L::kVBytes);
  unsigned short* sP = reinterpret_cast<unsigned short*>(smem_raw + L::kQBytes + L::kKBytes + L::kVBytes + L::kSBytes);
  float* sMax = reinterpret_cast<float*>(smem_raw + L::kQBytes + L::kKBytes + L::kVBytes + L::kSBytes + L::kPBytes);
  float* sSum = sMax + kBM;
  float* sAlpha = sSum + kBM;

  int m_block, h, b;
  block_coords(p, kBM, m_block, h, b);
  const SeqGeometry<Cfg::kVarlen, Cfg::kPaged> seq(p, b);
  const int mq = seq.mq, mkv = seq.mkv;
  const int q_lo = m_block * kBM;
  if (q_lo >= mq) return;
  const int hk = h / p.kv_group;
  const int tid = threadIdx.x, wave = tid / 64, lane = tid % 64;
  const int lr = lane % 16, lq = lane / 16;  // the operand layouts' row/column and k quarter

  const T* q = static_cast<const T*>(p.q) + seq.batch * p.q_stride_b + h * p.q_stride_h + int64_t(seq.q_start) * p.q_stride_m;
  const Rows<T, Cfg::kPaged> k = kv_rows<T, Cfg::kPaged>(p, p.k, p.k_stride_b, p.k_stride_h, p.k_stride_m, seq, hk, b);
  const Rows<T, Cfg::kPaged> v = kv_rows<T, Cfg::kPaged>(p, p.v, p.v_stride_b, p.v_stride_h, p.v_stride_m, seq, hk, b);

  const Policy policy(p, b, h, mq, mkv);
  int kv_lo, kv_hi;
  policy.kv_range(q_lo, imin(q_lo + kBM, mq), mkv, kv_lo, kv_hi);

  for (int e = tid; e < kBM * kD; e += L::kThreads) {
    const int r = e / kD, c = e % kD;
    sQ[r * kQk + c] = q_lo + r < mq ? q[int64_t(q_lo + r) * p.q_stride_m + c].x : 0;
  }
  for (int r = tid; r < kBM; r += L::kThreads) {
    sMax[r] = neg_inf();
    sSum[r] = 0.f;
  }
  f32x4 acc_o[kTilesV];
#pragma unroll
  for (int c = 0; c < kTilesV; ++c) acc_o[c] = f32x4{0.f, 0.f, 0.f, 0.f};

  const unsigned short* qa = sQ + (wave * 16 + lr) * kQk + 4 * lq;
  for (int n0 = kv_lo; n0 < kv_hi; n0 += kBN) {
    __syncthreads();  // the previous tile's readers of K, V, S and P are done
    for (int e = tid; e < kBN * kD; e += L::kThreads) {
      const int r = e / kD, c = e % kD;
      sK[r * kQk + c] = n0 + r < mkv ? k(n0 + r)[c].x : 0;
    }
    for (int e = tid; e < kBN * kDv; e += L::kThreads) {
      const int r = e / kDv, c = e % kDv;
      sV[r * kVs + c] = n0 + r < mkv ? v(n0 + r)[c].x : 0;
    }
    __syncthreads();

    // S = Q·Kᵀ for this wave's 16 rows: B[k][j] = K[j][k], so a key row is read like an A row.
#pragma unroll
    for (int t = 0; t < kTilesN; ++t) {
      f32x4 s = {0.f, 0.f, 0.f, 0.f};
      const unsigned short* kb = sK + (t * 16 + lr) * kQk + 4 * lq;
#pragma unroll
      for (int kc = 0; kc < kD / 16; ++kc) s = mfma16<Cfg::kDType>(qa + kc * 16, kb + kc * 16, s);
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const int r = wave * 16 + 4 * lq + u, c = t * 16 + lr, i = q_lo + r, j = n0 + c;
        const float x = s[u] * p.scale_log2;
        sS[r * kBN + c] = j >= mkv ? neg_inf() : i >= mq ? x : policy.logit(x, i, j);
      }
    }
    __syncthreads();

    for (int r = tid; r < kBM; r += L::kThreads) {  // the online softmax, one lane per row
      float mx = sMax[r];
      for (int c = 0; c < kBN; ++c) mx = fmaxf(mx, sS[r * kBN + c]);
      const float base = mx == neg_inf() ? 0.f : mx;
      float sum = 0.f;
      for (int c = 0; c < kBN; ++c) {
        float e = exp2f(sS[r * kBN + c] - base);
        sum += e;  // before dropout: the LSE is that of the undropped softmax
        if constexpr (Cfg::kDropout) {
          const unsigned long long row =
              ((unsigned long long)(seq.batch * p.heads + h) * p.mq_rows + seq.q_start + q_lo + r) * p.mkv_rows + seq.k_start;
          if (n0 + c < mkv && !dropout_keep1(p, row + n0 + c)) e = 0.f;
        }
        sP[r * kPs + c] = from_float<Cfg::kDType>(e).x;
      }
      const float alpha = exp2f(sMax[r] - base);
      sAlpha[r] = alpha;
      sSum[r] = sSum[r] * alpha + sum;
      sMax[r] = mx;
    }
    __syncthreads();

    // O = O·alpha + P·V: A[i][k] = P[i][k]; B[k][j] = V[k][j], four rows of one column.
    float alpha[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) alpha[u] = sAlpha[wave * 16 + 4 * lq + u];
    const unsigned short* pa = sP + (wave * 16 + lr) * kPs + 4 * lq;
#pragma unroll
    for (int c = 0; c < kTilesV; ++c) {
#pragma unroll
      for (int u = 0; u < 4; ++u) acc_o[c][u] *= alpha[u];
#pragma unroll
      for (int kc = 0; kc < kBN / 16; ++kc) {
        __align__(8) unsigned short vb[4];
#pragma unroll
        for (int u = 0; u < 4; ++u) vb[u] = sV[(kc * 16 + 4 * lq + u) * kVs + c * 16 + lr];
        acc_o[c] = mfma16<Cfg::kDType>(pa + kc * 16, vb, acc_o[c]);
      }
    }
  }
  __syncthreads();

  TO* out = static_cast<TO*>(p.out) + seq.batch * p.o_stride_b + h * p.o_stride_h + int64_t(seq.q_start) * p.o_stride_m;
  const float drop = Cfg::kDropout ? p.dropout_scale : 1.f;
#pragma unroll
  for (int u = 0; u < 4; ++u) {
    const int r = wave * 16 + 4 * lq + u, i = q_lo + r;
    if (i >= mq) continue;
    const float l = sSum[r];
#pragma unroll
    for (int c = 0; c < kTilesV; ++c)
      out[int64_t(i) * p.o_stride_m + c * 16 + lr] = from_float<Cfg::kOutDType>(l > 0.f ? acc_o[c][u] * drop / l : 0.f);
  }
  if constexpr (Cfg::kWriteLse) {
    for (int r = tid; r < kBM; r += L::kThreads) {
      const int i = q_lo + r;
      if (i >= mq) continue;
      const float l = sSum[r];
      p.lse[seq.batch * p.lse_stride_b + h * p.lse_stride_h + seq.q_start + i] = l > 0.f ? (sMax[r] + log2f(l)) * kLn2 : neg_inf();
    }
  }
}
#endif  // JITATTN_HIP

}  // namespace jitattn
