// dQ of the deterministic backward (mma.sync m16n8k16): one block per query block of one
// (sequence, head), walking the key tiles the policy says are visible — the forward's loop —
// and recomputing what it needs:
//   S = Q·Kᵀ,  P = exp(S·scale − lse),  dP = dO·Vᵀ,  dS = P ∘ (dP − delta),  dQ += dS·K.
// Every dQ element is summed by one thread in a fixed order: no atomics, bitwise reproducible.
// Each warp owns 16 query rows; their Q and dO fragments stay in registers.
//
// Cfg: kDType, kHeadDim, kHeadDimV, kBlockM (= 16·kWarps), kBlockN, kWarps, kAlign16, kVarlen,
// kDropout.
#pragma once
#include "bias_policies.cuh"
#include "common.cuh"
#include "fwd_mma.cuh"

namespace jitattn {

template <class Cfg>
struct BwdDqMmaLayout {
  static constexpr int kThreads = Cfg::kWarps * 32;
  static constexpr int kDP = round_up(Cfg::kHeadDim, 16);
  static constexpr int kDvP = round_up(Cfg::kHeadDimV, 16);
  static constexpr int kQKStride = kDP + 8;
  static constexpr int kVStride = kDvP + 8;
  static constexpr int kQElems = Cfg::kBlockM * kQKStride;
  static constexpr int kOElems = Cfg::kBlockM * kVStride;
  static constexpr int kKElems = Cfg::kBlockN * kQKStride;
  static constexpr int kVElems = Cfg::kBlockN * kVStride;
  static constexpr int kSmemBytes = (kQElems + kOElems + 2 * kKElems + 2 * kVElems) * 2;
  static_assert(Cfg::kBlockM == 16 * Cfg::kWarps, "each warp owns 16 query rows");
  static_assert(Cfg::kBlockN % 16 == 0, "key tiles are a multiple of 16");
};

template <class Cfg, class Policy>
__device__ __forceinline__ void bwd_dq_mma(const BwdParams& bp) {
  const FwdParams& p = bp.f;
  using L = BwdDqMmaLayout<Cfg>;
  using T = typename DType<Cfg::kDType>::T;
  constexpr int kBM = Cfg::kBlockM, kBN = Cfg::kBlockN;
  constexpr int kNT = kBN / 8;
  constexpr int kDQT = L::kDP / 8;
  constexpr int kKSd = L::kDP / 16, kKSv = L::kDvP / 16;

  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);
  T* sO = sQ + L::kQElems;
  T* sK0 = sO + L::kOElems;
  T* sK1 = sK0 + L::kKElems;
  T* sV0 = sK1 + L::kKElems;
  T* sV1 = sV0 + L::kVElems;

  int m_block, h, b;
  block_coords(p, kBM, m_block, h, b);
  const SeqGeometry<Cfg::kVarlen> seq(p, b);
  const int mq = seq.mq, mkv = seq.mkv;
  const int q_lo = m_block * kBM;
  if (q_lo >= mq) return;
  const int hk = h / p.kv_group;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;

  const Rows<T, false> q(static_cast<const T*>(p.q) + seq.batch * p.q_stride_b + h * p.q_stride_h + int64_t(seq.q_start) * p.q_stride_m, p.q_stride_m);
  const Rows<T, false> dout(static_cast<const T*>(bp.dout) + seq.batch * bp.do_stride_b + h * bp.do_stride_h + int64_t(seq.q_start) * bp.do_stride_m, bp.do_stride_m);
  const Rows<T, false> k = kv_rows<T, false>(p, p.k, p.k_stride_b, p.k_stride_h, p.k_stride_m, seq, hk, b);
  const Rows<T, false> v = kv_rows<T, false>(p, p.v, p.v_stride_b, p.v_stride_h, p.v_stride_m, seq, hk, b);

  const Policy policy(p, b, h, mq, mkv);
  int kv_lo, kv_hi;
  policy.kv_range(q_lo, imin(q_lo + kBM, mq), mkv, kv_lo, kv_hi);
  kv_lo = kv_lo / kBN * kBN;
  const int n_tiles = kv_hi > kv_lo ? ceil_div(kv_hi - kv_lo, kBN) : 0;
  // Candidate c is the key tile from kv_lo + c·kBN; those the policy says are empty are skipped
  // (TileSet), and iteration `it` (buffers it & 1) is candidate c.
  TileSet<Policy::kSkipsTiles> tiles;
  tiles.build(n_tiles, [&](int c) {
    const int n0 = kv_lo + c * kBN;
    return policy.tile_state(q_lo, imin(q_lo + kBM, mq), n0, imin(n0 + kBN, mkv));
  });
  const int n_visits = tiles.count();
  int c = tiles.next(0);

  load_tile<kBM, L::kDP, L::kQKStride, L::kThreads, Cfg::kAlign16>(sQ, q, q_lo, mq, Cfg::kHeadDim);
  load_tile<kBM, L::kDvP, L::kVStride, L::kThreads, Cfg::kAlign16>(sO, dout, q_lo, mq, Cfg::kHeadDimV);
  if (n_visits > 0) {
    load_tile<kBN, L::kDP, L::kQKStride, L::kThreads, Cfg::kAlign16>(sK0, k, kv_lo + c * kBN, mkv, Cfg::kHeadDim);
    load_tile<kBN, L::kDvP, L::kVStride, L::kThreads, Cfg::kAlign16>(sV0, v, kv_lo + c * kBN, mkv, Cfg::kHeadDimV);
  }
  cp_async_commit();

  // This thread's two rows (g and g + 8 of the warp's 16): lse in base 2, delta.
  const int row0 = q_lo + warp * 16 + g;
  float lse2[2], delta[2];
#pragma unroll
  for (int e2 = 0; e2 < 2; ++e2) {
    const int i = row0 + e2 * 8;
    const float l = i < mq ? p.lse[seq.batch * p.lse_stride_b + h * p.lse_stride_h + seq.q_start + i] : 0.f;
    lse2[e2] = l == neg_inf() ? __int_as_float(0x7f800000) : l * kLog2e;
    delta[e2] = i < mq ? bp.delta[(int64_t(seq.batch) * p.heads + h) * p.mq_rows + seq.q_start + i] : 0.f;
  }
  cp_async_wait<0>();
  __syncthreads();

  const unsigned a_lane = (((lane & 7) + ((lane >> 3) & 1) * 8) + warp * 16) ;
  unsigned q_frag[kKSd][4], o_frag[kKSv][4];
#pragma unroll
  for (int ks = 0; ks < kKSd; ++ks)
    ldmatrix_x4(q_frag[ks], smem_addr(sQ) + (a_lane * L::kQKStride + (lane >> 4) * 8 + ks * 16) * 2);
#pragma unroll
  for (int ks = 0; ks < kKSv; ++ks)
    ldmatrix_x4(o_frag[ks], smem_addr(sO) + (a_lane * L::kVStride + (lane >> 4) * 8 + ks * 16) * 2);
  const unsigned bn_lane_qk = (((lane & 7) + ((lane >> 4) << 3)) * L::kQKStride + ((lane >> 3) & 1) * 8) * 2;
  const unsigned bn_lane_v = (((lane & 7) + ((lane >> 4) << 3)) * L::kVStride + ((lane >> 3) & 1) * 8) * 2;
  const unsigned bt_lane_qk = (((lane & 7) + ((lane >> 3) & 1) * 8) * L::kQKStride + (lane >> 4) * 8) * 2;

  float dq[kDQT][4];
#pragma unroll
  for (int c = 0; c < kDQT; ++c)
#pragma unroll
    for (int e = 0; e < 4; ++e) dq[c][e] = 0.f;

  auto step = [&](int it, int c, int c_next, auto masked) {
    constexpr bool kMasked = decltype(masked)::value;
    const int n0 = kv_lo + c * kBN, n_next = kv_lo + c_next * kBN;
    const int buf = it & 1;
    // K(it), V(it) have landed; every warp is done with the other buffers.
    cp_async_wait<0>();
    __syncthreads();
    if (it + 1 < n_visits) {
      load_tile<kBN, L::kDP, L::kQKStride, L::kThreads, Cfg::kAlign16>(buf ? sK0 : sK1, k, n_next, mkv, Cfg::kHeadDim);
      load_tile<kBN, L::kDvP, L::kVStride, L::kThreads, Cfg::kAlign16>(buf ? sV0 : sV1, v, n_next, mkv, Cfg::kHeadDimV);
    }
    cp_async_commit();
    const unsigned sk = smem_addr(buf ? sK1 : sK0), sv = smem_addr(buf ? sV1 : sV0);

    float s[kNT][4], dp[kNT][4];
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[nt][e] = dp[nt][e] = 0.f;
#pragma unroll
    for (int ks = 0; ks < kKSd; ++ks)
#pragma unroll
      for (int np = 0; np < kNT / 2; ++np) {
        unsigned bk[4];
        ldmatrix_x4(bk, sk + bn_lane_qk + (np * 16 * L::kQKStride + ks * 16) * 2);
        mma_16816<Cfg::kDType>(s[2 * np], q_frag[ks], bk[0], bk[1]);
        mma_16816<Cfg::kDType>(s[2 * np + 1], q_frag[ks], bk[2], bk[3]);
      }
#pragma unroll
    for (int ks = 0; ks < kKSv; ++ks)
#pragma unroll
      for (int np = 0; np < kNT / 2; ++np) {
        unsigned bv[4];
        ldmatrix_x4(bv, sv + bn_lane_v + (np * 16 * L::kVStride + ks * 16) * 2);
        mma_16816<Cfg::kDType>(dp[2 * np], o_frag[ks], bv[0], bv[1]);
        mma_16816<Cfg::kDType>(dp[2 * np + 1], o_frag[ks], bv[2], bv[3]);
      }

#pragma unroll
    for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
      for (int e2 = 0; e2 < 2; ++e2) {
        const int i = row0 + e2 * 8, j = n0 + nt * 8 + 2 * t;
        bool keep[2] = {true, true};
        if constexpr (Cfg::kDropout) {
          const unsigned long long e0 =
              ((unsigned long long)(seq.batch * p.heads + h) * p.mq_rows + seq.q_start + i) * p.mkv_rows + seq.k_start + j;
          dropout_keep2(p, e0, keep[0], keep[1]);
        }
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          const int e = e2 * 2 + c;
          const float raw = s[nt][e] * p.scale_log2;
          float x = raw;
          if constexpr (kMasked && Policy::kLogitAnywhere) {
            const float y = policy.logit(x, imin(i, mq - 1), imin(j + c, mkv - 1));
            x = j + c < mkv && i < mq ? y : neg_inf();
          } else if constexpr (kMasked) {
            x = j + c >= mkv || i >= mq ? neg_inf() : policy.logit(x, i, j + c);
          } else if constexpr (Policy::kScore) {
            x = policy.score(x, i, j + c);
          }
          const float pv = fast_exp2(x - lse2[e2]);
          const float dpv = keep[c] ? dp[nt][e] * p.dropout_scale : 0.f;
          float ds = pv * (dpv - delta[e2]);
          if constexpr (Policy::kScoreGrad) {  // through a user score_mod
            const float sg = policy.score_grad(raw, imin(i, mq - 1), imin(j + c, mkv - 1));
            ds = pv != 0.f ? ds * sg : ds;
          }
          s[nt][e] = ds;  // dS
        }
      }

    // dQ += dS·K
#pragma unroll
    for (int kp = 0; kp < kBN / 16; ++kp) {
      unsigned a[4];
      a[0] = pack2<Cfg::kDType>(s[2 * kp][0], s[2 * kp][1]);
      a[1] = pack2<Cfg::kDType>(s[2 * kp][2], s[2 * kp][3]);
      a[2] = pack2<Cfg::kDType>(s[2 * kp + 1][0], s[2 * kp + 1][1]);
      a[3] = pack2<Cfg::kDType>(s[2 * kp + 1][2], s[2 * kp + 1][3]);
#pragma unroll
      for (int c = 0; c < kDQT / 2; ++c) {
        unsigned bk[4];
        ldmatrix_x4_trans(bk, sk + bt_lane_qk + (kp * 16 * L::kQKStride + c * 16) * 2);
        mma_16816<Cfg::kDType>(dq[2 * c], a, bk[0], bk[1]);
        mma_16816<Cfg::kDType>(dq[2 * c + 1], a, bk[2], bk[3]);
      }
    }
  };
  auto needs_mask = [&](int c) {
    const int n0 = kv_lo + c * kBN;
    if constexpr (Policy::kSkipsTiles) return Policy::kElementwise || n0 + kBN > mkv || q_lo + kBM > mq || !tiles.full(c);
    return Policy::kElementwise || n0 + kBN > mkv || q_lo + kBM > mq || !policy.tile_full(q_lo, q_lo + kBM, n0, n0 + kBN);
  };
  for (int it = 0; it < n_visits; ++it) {
    const int c_next = it + 1 < n_visits ? tiles.next(c + 1) : 0;
    if (needs_mask(c)) step(it, c, c_next, Bool<true>{});
    else step(it, c, c_next, Bool<false>{});
    c = c_next;
  }

  T* out = static_cast<T*>(bp.dq) + seq.batch * bp.dq_stride_b + h * bp.dq_stride_h + int64_t(seq.q_start) * bp.dq_stride_m;
#pragma unroll
  for (int e2 = 0; e2 < 2; ++e2) {
    const int i = row0 + e2 * 8;
    if (i >= mq) continue;
#pragma unroll
    for (int c = 0; c < kDQT; ++c) {
      const int col = c * 8 + 2 * t;
      if (col >= Cfg::kHeadDim) continue;
      T* row = out + int64_t(i) * bp.dq_stride_m + col;
      const float x0 = dq[c][2 * e2] * bp.scale, x1 = dq[c][2 * e2 + 1] * bp.scale;
      if constexpr (Cfg::kAlign16) *reinterpret_cast<unsigned*>(row) = pack2<Cfg::kDType>(x0, x1);
      else row[0] = from_float<Cfg::kDType>(x0), row[1] = from_float<Cfg::kDType>(x1);
    }
  }
}

}  // namespace jitattn
