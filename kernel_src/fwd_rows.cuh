// The forward's row math on one warp's 16 rows of a score tile, shared by fwd_mma.cuh
// (mma.sync) and fwd_wgmma.cuh (wgmma). Both keep S in the m16n8 accumulator layout:
// s[nt][e] is row i0 + 8·(e/2) and key j0 + 8·nt + e%2, where i0 = the warp's first row + lane/4
// and j0 = the tile's first key + 2·(lane%4). Each thread owns two rows ("halves"), shared with
// the other three lanes of its quad.
#pragma once
#include "bias_policies.cuh"
#include "common.cuh"

namespace jitattn {

// Logits in base 2, masked where the policy or the sequence end says so. A mask that is one
// interval of keys per row (Policy::kRowMask) costs one unsigned compare per element: key j is
// visible iff j - lo < hi - lo, for this row's [lo, hi). Unmasked tiles still go through a
// score function (Policy::kScore). A user mask_mod masks by its block map's row spans where the
// warp's rows all have one (Policy::kSpans), else calls mask_mod on each element.
template <bool kMasked, int kNT, class Policy>
__device__ __forceinline__ void fwd_logits(float (&s)[kNT][4], const Policy& policy, float scale_log2, int i0, int j0,
                                           int mq, int mkv) {
  if constexpr (kMasked && Policy::kRowMask) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int i = i0 + half * 8;
      int lo = 0, hi = mkv;  // rows past the sequence end are never written: keys < mkv
      if (i < mq) policy.row_range(i, mkv, lo, hi);
      const int base = j0 - lo;
      const unsigned span = hi > lo ? unsigned(hi - lo) : 0u;
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          const float x = s[nt][2 * half + c] * scale_log2;
          s[nt][2 * half + c] = unsigned(base + nt * 8 + c) < span ? x : neg_inf();
        }
    }
  } else {
    if constexpr (kMasked && Policy::kSpans) {
      // A user mask_mod whose map gives this warp's rows as key intervals: one compare per
      // element instead of the call (rows past mq take the last row's, as below).
      int lo[2], hi[2];
      bool spans = true;
#pragma unroll
      for (int half = 0; half < 2; ++half) spans &= policy.span(imin(i0 + half * 8, mq - 1), lo[half], hi[half]);
      if (port::ballot32(spans) == 0xffffffffu) {
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int half = e / 2, i = imin(i0 + half * 8, mq - 1), j = j0 + nt * 8 + (e & 1);
            const bool seen = unsigned(j - lo[half]) < unsigned(hi[half] - lo[half]);
            const float y = policy.logit_if(s[nt][e] * scale_log2, i, imin(j, mkv - 1), seen);
            s[nt][e] = j < mkv ? y : neg_inf();
          }
        return;
      }
    }
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float x = s[nt][e] * scale_log2;
        const int i = i0 + (e >= 2 ? 8 : 0), j = j0 + nt * 8 + (e & 1);
        if constexpr (kMasked && Policy::kLogitAnywhere) {  // rows past mq are never stored
          const float y = policy.logit(x, imin(i, mq - 1), imin(j, mkv - 1));
          x = j < mkv ? y : neg_inf();
        } else if constexpr (kMasked) {
          x = j >= mkv ? neg_inf() : i >= mq ? x : policy.logit(x, i, j);
        } else if constexpr (Policy::kScore) {
          x = policy.score(x, imin(i, mq - 1), j);  // the last query block's rows past mq
        }
        s[nt][e] = x;
      }
  }
}

// Online softmax: s becomes 2^(s - new max), and alpha = 2^(old max - new max) is what the
// output accumulated so far must be scaled by (fwd_rescale). row_sum holds this thread's partial
// sums (quad_sum gives the row's).
template <int kNT>
__device__ __forceinline__ void fwd_softmax(float (&s)[kNT][4], float (&row_max)[2], float (&row_sum)[2], float (&alpha)[2]) {
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    float mx = row_max[half];
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt) mx = fmaxf(mx, fmaxf(s[nt][2 * half], s[nt][2 * half + 1]));
    mx = quad_max(mx);
    // A row that has seen only masked keys keeps max -inf; subtract 0 instead so that exp2
    // gives 0, not NaN.
    const float base = mx == neg_inf() ? 0.f : mx;
    alpha[half] = fast_exp2(row_max[half] - base);
    row_max[half] = mx;
    float sum = 0.f;
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt) {
      s[nt][2 * half] = fast_exp2(s[nt][2 * half] - base);
      s[nt][2 * half + 1] = fast_exp2(s[nt][2 * half + 1] - base);
      sum += s[nt][2 * half] + s[nt][2 * half + 1];
    }
    row_sum[half] = row_sum[half] * alpha[half] + sum;
  }
}

template <int kDT>
__device__ __forceinline__ void fwd_rescale(float (&acc)[kDT][4], const float (&alpha)[2]) {
#pragma unroll
  for (int dt = 0; dt < kDT; ++dt) {
    acc[dt][0] *= alpha[0];
    acc[dt][1] *= alpha[0];
    acc[dt][2] *= alpha[1];
    acc[dt][3] *= alpha[1];
  }
}

// Dropout on the probabilities (after the row sums: the LSE is that of the undropped softmax).
template <int kNT, class Seq>
__device__ __forceinline__ void fwd_dropout(float (&s)[kNT][4], const FwdParams& p, const Seq& seq, int h, int i0, int j0) {
#pragma unroll
  for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int i = i0 + half * 8, j = j0 + nt * 8;
      const unsigned long long e0 =
          ((unsigned long long)(seq.batch * p.heads + h) * p.mq_rows + seq.q_start + i) * p.mkv_rows + seq.k_start + j;
      bool keep0, keep1;
      dropout_keep2(p, e0, keep0, keep1);
      if (!keep0) s[nt][2 * half] = 0.f;
      if (!keep1) s[nt][2 * half + 1] = 0.f;
    }
}

// Keys 16·kp..16·kp+15 of the probabilities as an m16n8k16 A fragment (P never leaves registers).
template <int DT, int kNT>
__device__ __forceinline__ void fwd_p_fragment(unsigned (&a)[4], const float (&s)[kNT][4], int kp) {
  a[0] = pack2<DT>(s[2 * kp][0], s[2 * kp][1]);
  a[1] = pack2<DT>(s[2 * kp][2], s[2 * kp][3]);
  a[2] = pack2<DT>(s[2 * kp + 1][0], s[2 * kp + 1][1]);
  a[3] = pack2<DT>(s[2 * kp + 1][2], s[2 * kp + 1][3]);
}

// Epilogue for the thread's two rows: O / l, and LSE = (max + log2 l) · ln 2. A row with no
// visible key gives 0 / -inf. t = lane % 4.
template <class Cfg, int kDT, class Seq>
__device__ __forceinline__ void fwd_store_rows(const float (&acc)[kDT][4], const float (&row_max)[2], const float (&row_sum)[2],
                                               const FwdParams& p, const Seq& seq, int h, int i0, int t) {
  using TO = typename DType<Cfg::kOutDType>::T;
  TO* out = static_cast<TO*>(p.out) + seq.batch * p.o_stride_b + h * p.o_stride_h + int64_t(seq.q_start) * p.o_stride_m;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int i = i0 + half * 8;
    const float l = quad_sum(row_sum[half]);
    const float inv = l > 0.f ? (Cfg::kDropout ? p.dropout_scale : 1.f) / l : 0.f;
    if (i >= seq.mq) continue;
    TO* row = out + (int64_t)i * p.o_stride_m;
#pragma unroll
    for (int dt = 0; dt < kDT; ++dt) {
      const int c = dt * 8 + 2 * t;
      if (c >= Cfg::kHeadDimV) continue;
      const float o0 = acc[dt][2 * half] * inv, o1 = acc[dt][2 * half + 1] * inv;
      if constexpr (Cfg::kOutDType != kF32 && Cfg::kAlign16) {
        *reinterpret_cast<unsigned*>(row + c) = pack2<Cfg::kOutDType>(o0, o1);
      } else {
        row[c] = from_float<Cfg::kOutDType>(o0);
        row[c + 1] = from_float<Cfg::kOutDType>(o1);
      }
    }
    if constexpr (Cfg::kWriteLse) {
      if (t == 0) {
        const float lse = l > 0.f ? (row_max[half] + __log2f(l)) * kLn2 : neg_inf();
        p.lse[seq.batch * p.lse_stride_b + h * p.lse_stride_h + seq.q_start + i] = lse;
      }
    }
  }
}

}  // namespace jitattn
