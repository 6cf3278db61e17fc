// What the two tensor-core backwards (bwd_mma.cuh on mma.sync, bwd_wgmma.cuh on Hopper's
// warpgroup MMA) share once Sᵀ = K·Qᵀ and dPᵀ = V·dOᵀ are in registers.
//
// Both hold a warp's products in the m16n8 accumulator layout (which wgmma's m64nN accumulator
// repeats per warp, wgmma.cuh): x[kt][nt][e] is key j0 + 16·kt + g + 8·(e/2) and query
// m0 + 8·nt + 2·t + e%2, with g = lane/4 and t = lane%4. That layout is also the A-fragment
// layout, so Pᵀ and dSᵀ feed dV += Pᵀ·dO and dK += dSᵀ·Q where they are.
#pragma once
#include "bias_policies.cuh"
#include "common.cuh"

namespace jitattn {

// Row i of a [rows, cols] fp32 matrix: rows ≥ `rows` are zero-filled.
template <int kN, int kThreads>
__device__ __forceinline__ void load_floats(float* smem, const float* g, int row0, int rows) {
  for (int i = threadIdx.x; i < kN; i += kThreads) {
    const bool valid = row0 + i < rows;
    cp_async_4(smem_addr(smem + i), valid ? g + row0 + i : g, valid);
  }
}

// Which of a thread's four elements of a 16-key, 8-query step survive dropout: queries i and i + 1
// (i = m0 + 8·nt + 2t), keys jk + g and jk + g + 8 (jk = j0 + 16·kt); bit 2·e2 + c is query i + c,
// key jk + g + 8·e2. Element e of the index space is kept when word e % 4 of Philox draw e / 4
// clears the threshold (dropout_keep1, as the forward draws it). A row's 16 keys jk.. are four
// whole draws when their first index is a multiple of 4: jk always is, so that holds when
// mkv_rows and the sequence's first key are (checked at run time). Then lane g of each t draws
// group g % 4 of query i + g / 4 and every lane takes its four bits from the lanes that drew them,
// one draw per thread where dropout_keep1 makes four. Else each element is drawn alone. The
// choice is the same for the whole warp (jk is per warp).
template <class Seq>
__device__ __forceinline__ unsigned bwd_dropout_bits(const FwdParams& p, const Seq& seq, int h, int i, int jk, int g, int t) {
  const unsigned long long row = (unsigned long long)(seq.batch * p.heads + h) * p.mq_rows + seq.q_start;
  const unsigned long long e0 = (row + i) * p.mkv_rows + seq.k_start + jk;  // element (i, jk)
  if (p.mkv_rows % 4 == 0 && (seq.k_start + jk) % 4 == 0) {
    const unsigned long long grp = ((e0 + (g / 4) * (unsigned long long)p.mkv_rows) >> 2) + (g % 4);
    unsigned c[4] = {unsigned(grp), unsigned(grp >> 32), unsigned(p.dropout_offset), unsigned(p.dropout_offset >> 32)};
    philox4x32_10(c, unsigned(p.dropout_seed), unsigned(p.dropout_seed >> 32));
    const unsigned drawn = unsigned(c[0] >= p.dropout_threshold) | unsigned(c[1] >= p.dropout_threshold) << 1 |
                           unsigned(c[2] >= p.dropout_threshold) << 2 | unsigned(c[3] >= p.dropout_threshold) << 3;
    unsigned bits = 0;
#pragma unroll
    for (int e2 = 0; e2 < 2; ++e2)
#pragma unroll
      for (int c2 = 0; c2 < 2; ++c2) {  // key jk + g + 8·e2 is word g % 4 of group g / 4 + 2·e2
        const int src = 4 * (4 * c2 + g / 4 + 2 * e2) + t;
        bits |= ((port::shfl32(drawn, src) >> (g % 4)) & 1u) << (2 * e2 + c2);
      }
    return bits;
  }
  unsigned bits = 0;
#pragma unroll
  for (int e2 = 0; e2 < 2; ++e2)
#pragma unroll
    for (int c2 = 0; c2 < 2; ++c2)  // (i + c2, jk + g + 8·e2) is a row of the index space per c2
      bits |= unsigned(dropout_keep1(p, e0 + g + 8 * e2 + c2 * (unsigned long long)p.mkv_rows)) << (2 * e2 + c2);
  return bits;
}

// Pᵀ into s, the kept probabilities into pd (under dropout; s otherwise), and dSᵀ into dp, with
// P recomputed from the saved LSE: Pᵀ = exp(Sᵀ·scale − lse), dSᵀ = Pᵀ ∘ (dPᵀ − delta).
// lse_row/delta_row: the query block's kBM values (shared memory).
template <class Cfg, bool kMasked, class Policy, class Seq, int kKT, int kNT>
__device__ __forceinline__ void bwd_probs(float (&s)[kKT][kNT][4], float (&dp)[kKT][kNT][4], float (&pd)[kKT][kNT][4],
                                          const FwdParams& p, const Policy& policy, const Seq& seq, int h, int m0,
                                          int j0, int g, int t, const float* lse_row, const float* delta_row) {
  const int mq = seq.mq, mkv = seq.mkv;
  struct alignas(8) Pair { float x, y; };
#pragma unroll
  for (int nt = 0; nt < kNT; ++nt) {
    // This thread's two queries: their lse (base 2; a query that saw no key has lse = -inf and
    // P = 0, which exp2(x - inf) gives) and delta.
    const Pair l = *reinterpret_cast<const Pair*>(lse_row + nt * 8 + 2 * t);
    const Pair dl = *reinterpret_cast<const Pair*>(delta_row + nt * 8 + 2 * t);
    const float inf = __int_as_float(0x7f800000);
    const float lse2[2] = {l.x == neg_inf() ? inf : l.x * kLog2e, l.y == neg_inf() ? inf : l.y * kLog2e};
    const float delta[2] = {dl.x, dl.y};
#pragma unroll
    for (int kt = 0; kt < kKT; ++kt) {
      const unsigned kept = Cfg::kDropout ? bwd_dropout_bits(p, seq, h, m0 + nt * 8 + 2 * t, j0 + kt * 16, g, t) : 0xfu;
#pragma unroll
      for (int e2 = 0; e2 < 2; ++e2) {  // the two key rows g and g + 8
        const int j = j0 + kt * 16 + g + e2 * 8;
        const bool keep[2] = {bool((kept >> (2 * e2)) & 1u), bool((kept >> (2 * e2 + 1)) & 1u)};
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          const int e = e2 * 2 + c;
          const float raw = s[kt][nt][e] * p.scale_log2;
          const int i = m0 + nt * 8 + 2 * t + c;
          float x = raw;
          if constexpr (kMasked && Policy::kLogitAnywhere) {
            const float y = policy.logit(x, imin(i, mq - 1), imin(j, mkv - 1));
            x = j < mkv && i < mq ? y : neg_inf();
          } else if constexpr (kMasked) {
            x = j >= mkv || i >= mq ? neg_inf() : policy.logit(x, i, j);
          } else if constexpr (Policy::kScore) {
            x = policy.score(x, i, j);
          }
          const float pv = fast_exp2(x - lse2[c]);
          s[kt][nt][e] = pv;
          const float dpv = keep[c] ? dp[kt][nt][e] * p.dropout_scale : 0.f;
          pd[kt][nt][e] = keep[c] ? pv : 0.f;
          float ds = pv * (dpv - delta[c]);
          if constexpr (Policy::kScoreGrad) {  // through a user score_mod: dS · d score_mod / d score
            const float sg = policy.score_grad(raw, imin(i, mq - 1), imin(j, mkv - 1));
            ds = pv != 0.f ? ds * sg : ds;
          }
          dp[kt][nt][e] = ds;
        }
      }
    }
  }
}

// bwd_probs in two halves for the wgmma backward at d = 64 (bwd_wgmma.cuh kSplitWait):
// bwd_wgmma_p runs while dPᵀ = V·dOᵀ is still in flight, bwd_wgmma_ds once it has landed. A
// thread's tiles are one 16-key row (x[nt][e] as above with kt = 0). The per-element mask and
// exp repeat bwd_probs's masked path; a shared helper is left for a session that can time both paths.
// bwd_wgmma_p: Pᵀ from Sᵀ, and in s the weight dSᵀ needs: P, times d score_mod / d score through
// a user score_mod (0 where P is, so that a gradient of a masked score stays 0). Under dropout or a
// score_grad, where s is not what dV multiplies, Pᵀ (the kept P under dropout) is packed as dV's A
// fragments pa here; otherwise s is Pᵀ and the caller packs pa from it (bwd_a_fragment) once
// dSᵀ is done, which keeps 16 registers free meanwhile. kept: the dropout bits, 4 per query
// tile nt at bit 4·(nt % 8) + e of word nt / 8.
template <class Cfg, class Policy, class Seq, int kNT>
__device__ __forceinline__ void bwd_wgmma_p(float (&s)[kNT][4], unsigned (&pa)[kNT / 2][4],
                                            unsigned (&kept)[(kNT + 7) / 8], const FwdParams& p, const Policy& policy,
                                            const Seq& seq, int h, int m0, int j0, int g, int t, const float* lse_row) {
  const int mq = seq.mq, mkv = seq.mkv;
  struct alignas(8) Pair { float x, y; };
#pragma unroll
  for (int w = 0; w < (kNT + 7) / 8; ++w) kept[w] = 0u;
#pragma unroll
  for (int nt = 0; nt < kNT; ++nt) {
    const Pair l = *reinterpret_cast<const Pair*>(lse_row + nt * 8 + 2 * t);
    const float inf = __int_as_float(0x7f800000);
    const float lse2[2] = {l.x == neg_inf() ? inf : l.x * kLog2e, l.y == neg_inf() ? inf : l.y * kLog2e};
    const unsigned bits = Cfg::kDropout ? bwd_dropout_bits(p, seq, h, m0 + nt * 8 + 2 * t, j0, g, t) : 0xfu;
    if constexpr (Cfg::kDropout) kept[nt / 8] |= bits << (4 * (nt % 8));
#pragma unroll
    for (int e2 = 0; e2 < 2; ++e2) {  // the two key rows g and g + 8
      const int j = j0 + g + e2 * 8;
      float kp[2];  // what dV multiplies: P, or the kept P under dropout
#pragma unroll
      for (int c = 0; c < 2; ++c) {
        const int e = e2 * 2 + c;
        const float raw = s[nt][e] * p.scale_log2;
        const int i = m0 + nt * 8 + 2 * t + c;
        float x = raw;
        if constexpr (Policy::kLogitAnywhere) {
          const float y = policy.logit(x, imin(i, mq - 1), imin(j, mkv - 1));
          x = j < mkv && i < mq ? y : neg_inf();
        } else {
          x = j >= mkv || i >= mq ? neg_inf() : policy.logit(x, i, j);
        }
        const float pv = fast_exp2(x - lse2[c]);
        kp[c] = (bits >> e) & 1u ? pv : 0.f;
        float wv = pv;
        if constexpr (Policy::kScoreGrad) {
          const float sg = policy.score_grad(raw, imin(i, mq - 1), imin(j, mkv - 1));
          wv = pv != 0.f ? pv * sg : pv;
        }
        s[nt][e] = wv;
      }
      if constexpr (Cfg::kDropout || Policy::kScoreGrad)
        pa[nt / 2][(nt % 2) * 2 + e2] = pack2<Cfg::kDType>(kp[0], kp[1]);  // bwd_a_fragment's order
    }
  }
}

// dSᵀ = w ∘ (dPᵀ − delta) into dp, dPᵀ scaled by 1/(1-p) where kept and 0 where dropped; w and
// kept from bwd_wgmma_p.
template <class Cfg, int kNT>
__device__ __forceinline__ void bwd_wgmma_ds(float (&dp)[kNT][4], const float (&w)[kNT][4],
                                             const unsigned (&kept)[(kNT + 7) / 8], const FwdParams& p, int t,
                                             const float* delta_row) {
  struct alignas(8) Pair { float x, y; };
#pragma unroll
  for (int nt = 0; nt < kNT; ++nt) {
    const Pair dl = *reinterpret_cast<const Pair*>(delta_row + nt * 8 + 2 * t);
    const float delta[2] = {dl.x, dl.y};
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      float dpv = dp[nt][e];
      if constexpr (Cfg::kDropout) dpv = (kept[nt / 8] >> (4 * (nt % 8) + e)) & 1u ? dpv * p.dropout_scale : 0.f;
      dp[nt][e] = w[nt][e] * (dpv - delta[e & 1]);
    }
  }
}

// dbias = dS, unscaled, for query head h.
template <class Cfg, class Seq, int kKT, int kNT>
__device__ __forceinline__ void bwd_store_dbias(const float (&ds)[kKT][kNT][4], const BwdParams& bp, const Seq& seq,
                                                int h, int m0, int j0, int g, int t) {
  using T = typename DType<Cfg::kDType>::T;
  T* db = static_cast<T*>(bp.dbias) + seq.batch * bp.dbias_stride_b + h * bp.dbias_stride_h;
#pragma unroll
  for (int kt = 0; kt < kKT; ++kt)
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int i = m0 + nt * 8 + 2 * t + (e & 1), j = j0 + kt * 16 + g + (e >= 2 ? 8 : 0);
        if (i < seq.mq && j < seq.mkv)
          db[int64_t(seq.q_start + i) * bp.dbias_stride_m + seq.k_start + j] = from_float<Cfg::kDType>(ds[kt][nt][e]);
      }
}

// The A fragments of one 16-query step kp of x[kt] (Pᵀ or dSᵀ) in the input type.
template <int DT, int kNT>
__device__ __forceinline__ void bwd_a_fragment(unsigned (&a)[4], const float (&x)[kNT][4], int kp) {
  a[0] = pack2<DT>(x[2 * kp][0], x[2 * kp][1]);
  a[1] = pack2<DT>(x[2 * kp][2], x[2 * kp][3]);
  a[2] = pack2<DT>(x[2 * kp + 1][0], x[2 * kp + 1][1]);
  a[3] = pack2<DT>(x[2 * kp + 1][2], x[2 * kp + 1][3]);
}

// dQ partials of rows row0 + 16·mt + g (+8), columns col0 + 8·c + 2·t (+1) into the fp32
// accumulator `acc` (rows of kHeadDim floats): rows ≥ mq and columns ≥ kHeadDim are skipped.
template <int kHeadDim, int kMT, int kCT>
__device__ __forceinline__ void bwd_add_dq(float* acc, const float (&dq)[kMT][kCT][4], int row0, int col0, int mq,
                                           int g, int t) {
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int c = 0; c < kCT; ++c) {
      const int col = col0 + c * 8 + 2 * t;
      if (col >= kHeadDim) continue;
#pragma unroll
      for (int e2 = 0; e2 < 2; ++e2) {
        const int i = row0 + mt * 16 + g + e2 * 8;
        if (i >= mq) continue;
        atomic_add_f32x2(acc + int64_t(i) * kHeadDim + col, dq[mt][c][2 * e2], dq[mt][c][2 * e2 + 1]);
      }
    }
}

// The block's dK · scale and dV (· 1/(1-p) under dropout) of keys j0 + 16·kt + g (+8) of
// key/value head hk, columns from dk_col0 / dv_col0 on (its slice of the head dims), rows past the
// sequence end skipped; summed into the fp32 accumulators instead
// when the host set them (see BwdParams::dk_accum).
template <class Cfg, class Seq, int kKT, int kDKT, int kDVT>
__device__ __forceinline__ void bwd_store_dkdv(const float (&dk)[kKT][kDKT][4], const float (&dv)[kKT][kDVT][4],
                                               const BwdParams& bp, const Seq& seq, int hk, int j0, int g, int t,
                                               int dk_col0 = 0, int dv_col0 = 0) {
  using T = typename DType<Cfg::kDType>::T;
  const FwdParams& p = bp.f;
  T* dkp = static_cast<T*>(bp.dk) + seq.batch * bp.dk_stride_b + hk * bp.dk_stride_h + int64_t(seq.k_start) * bp.dk_stride_m;
  T* dvp = static_cast<T*>(bp.dv) + seq.batch * bp.dv_stride_b + hk * bp.dv_stride_h + int64_t(seq.k_start) * bp.dv_stride_m;
  const float dv_scale = Cfg::kDropout ? p.dropout_scale : 1.f;
  float* ak = dkv_accum_rows(bp, bp.dk_accum, seq.batch, hk, seq.k_start, Cfg::kHeadDim);
  float* av = dkv_accum_rows(bp, bp.dv_accum, seq.batch, hk, seq.k_start, Cfg::kHeadDimV);
#pragma unroll
  for (int kt = 0; kt < kKT; ++kt)
#pragma unroll
    for (int e2 = 0; e2 < 2; ++e2) {
      const int j = j0 + kt * 16 + g + e2 * 8;
      if (j >= seq.mkv) continue;
#pragma unroll
      for (int c = 0; c < kDKT; ++c) {
        const int col = dk_col0 + c * 8 + 2 * t;
        if (col >= Cfg::kHeadDim) continue;
        const float x0 = dk[kt][c][2 * e2] * bp.scale, x1 = dk[kt][c][2 * e2 + 1] * bp.scale;
        if (ak) {
          atomic_add_f32(ak + int64_t(j) * Cfg::kHeadDim + col, x0);
          atomic_add_f32(ak + int64_t(j) * Cfg::kHeadDim + col + 1, x1);
          continue;
        }
        T* row = dkp + int64_t(j) * bp.dk_stride_m + col;
        if constexpr (Cfg::kAlign16) *reinterpret_cast<unsigned*>(row) = pack2<Cfg::kDType>(x0, x1);
        else row[0] = from_float<Cfg::kDType>(x0), row[1] = from_float<Cfg::kDType>(x1);
      }
#pragma unroll
      for (int c = 0; c < kDVT; ++c) {
        const int col = dv_col0 + c * 8 + 2 * t;
        if (col >= Cfg::kHeadDimV) continue;
        const float x0 = dv[kt][c][2 * e2] * dv_scale, x1 = dv[kt][c][2 * e2 + 1] * dv_scale;
        if (av) {
          atomic_add_f32(av + int64_t(j) * Cfg::kHeadDimV + col, x0);
          atomic_add_f32(av + int64_t(j) * Cfg::kHeadDimV + col + 1, x1);
          continue;
        }
        T* row = dvp + int64_t(j) * bp.dv_stride_m + col;
        if constexpr (Cfg::kAlign16) *reinterpret_cast<unsigned*>(row) = pack2<Cfg::kDType>(x0, x1);
        else row[0] = from_float<Cfg::kDType>(x0), row[1] = from_float<Cfg::kDType>(x1);
      }
    }
}

}  // namespace jitattn
