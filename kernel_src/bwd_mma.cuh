// Backward attention on tensor cores (mma.sync m16n8k16), sm_80 and newer.
//
// One block owns kBlockN keys of one (sequence, key/value head) and walks every query block
// that sees them, for every query head sharing those keys (GQA/MQA: dK and dV are summed over
// the group in registers, no atomics). Each warp owns kBlockN / kWarps key rows and keeps their
// dK, dV accumulators (and, for head dims up to 64, their K and V fragments) in registers. Past
// 128 + 128 head-dim columns those accumulators do not fit: two blocks then share each key block
// (BwdMmaLayout::kSlices), each computing Sᵀ and dPᵀ whole and dK, dV and dQ for half the columns.
// Q, dO, lse and delta of the next query block load during the current one. Per query block, with
// P recomputed from the saved LSE:
//   Sᵀ = K·Qᵀ,  Pᵀ = exp(Sᵀ·scale − lse),  dPᵀ = V·dOᵀ,  dV += Pᵀ·dO,
//   dSᵀ = Pᵀ ∘ (dPᵀ − delta),  dK += dSᵀ·Q,  and (kDq) dQ += dS·K,
// the last through shared memory (dS changes owner: rows are queries; two stages, so dQ of
// step i runs after the barrier that starts step i+1 — one barrier per step) and fp32 atomics
// into dq_accum. The deterministic mode leaves kDq off and computes dQ in bwd_dq_mma.cuh instead.
// Transposed products are the same mma with ldmatrix .trans, so nothing is transposed in memory.
//
// Cfg (from the generated preamble): kDType, kHeadDim, kHeadDimV, kBlockM (queries per step),
// kBlockN (keys per block), kWarps, kSlices, kAlign16, kVarlen, kDropout, kDBias, kDq.
#pragma once
#include "bias_policies.cuh"
#include "common.cuh"
#include "bwd_tile.cuh"
#include "fwd_mma.cuh"

namespace jitattn {

template <class Cfg>
struct BwdMmaLayout {
  static constexpr int kThreads = Cfg::kWarps * 32;
  static constexpr int kWarpKeys = Cfg::kBlockN / Cfg::kWarps;
  static constexpr int kKT = kWarpKeys / 16;  // 16-row key tiles per warp
  static constexpr int kDP = round_up(Cfg::kHeadDim, 16);
  static constexpr int kDvP = round_up(Cfg::kHeadDimV, 16);
  static constexpr int kQKStride = kDP + 8;   // sQ, sK rows (16 bytes of padding: no bank conflicts)
  static constexpr int kVStride = kDvP + 8;   // sV, sdO rows
  static constexpr int kSStride = Cfg::kBlockM + 8;  // sdS rows: one per key
  static constexpr int kKElems = Cfg::kBlockN * kQKStride;
  static constexpr int kVElems = Cfg::kBlockN * kVStride;
  static constexpr int kQElems = Cfg::kBlockM * kQKStride;
  static constexpr int kOElems = Cfg::kBlockM * kVStride;
  static constexpr int kSElems = Cfg::kDq ? 2 * Cfg::kBlockN * kSStride : 0;  // two stages
  // The head dims' slice of dK, dV and dQ one block computes (Cfg::kSlices, from jit/signature.h
  // bwd_mma_slices): kSlices blocks share a key block, block blockIdx.x % kSlices taking columns
  // [slice · kSliceD, ...).
  static constexpr int kSlices = Cfg::kSlices;
  static constexpr int kSliceD = kDP / kSlices, kSliceDv = kDvP / kSlices;
  // dQ = dS·K over the slice: the warps tile the [kBlockM, kSliceD] product as kDqWarpsM ×
  // kDqWarpsN, each warp kDqMT 16-row tiles (two where the columns split evenly: fewer
  // shared-memory reads per mma).
  static constexpr bool kTwoRowTiles = Cfg::kBlockM % 32 == 0 && Cfg::kWarps % (Cfg::kBlockM / 32) == 0 &&
                                       (kSliceD / 8) % (Cfg::kWarps / (Cfg::kBlockM / 32)) == 0;
  static constexpr int kDqMT = kTwoRowTiles ? 2 : 1;
  static constexpr int kDqWarpsM = Cfg::kBlockM / (16 * kDqMT);
  static constexpr int kDqWarpsN = Cfg::kWarps / kDqWarpsM;
  static constexpr int kDqNT = kSliceD / 8 / kDqWarpsN;
  static constexpr int kSmemBytes =
      (kKElems + kVElems + 2 * kQElems + 2 * kOElems + kSElems) * 2 + 2 * 2 * Cfg::kBlockM * 4;
  static_assert(kWarpKeys % 16 == 0, "each warp owns a multiple of 16 keys");
  static_assert(Cfg::kBlockM % 16 == 0, "query blocks are a multiple of 16");
  static_assert(kSlices == 1 || (kDP % (16 * kSlices) == 0 && kDvP % (16 * kSlices) == 0),
                "each slice of the head dims is a whole number of 16-column pairs");
  static_assert(!Cfg::kDq || (Cfg::kWarps % kDqWarpsM == 0 && (kSliceD / 8) % kDqWarpsN == 0),
                "the dQ product must tile over the warps");
};

template <class Cfg, class Policy>
__device__ __forceinline__ void bwd_mma(const BwdParams& bp) {
  const FwdParams& p = bp.f;
  using L = BwdMmaLayout<Cfg>;
  using T = typename DType<Cfg::kDType>::T;
  constexpr int kBM = Cfg::kBlockM, kBN = Cfg::kBlockN, kKT = L::kKT;
  constexpr int kNT = kBM / 8;          // 8-wide query tiles of Sᵀ
  constexpr int kDKT = L::kSliceD / 8;   // 8-wide column tiles of this block's dK
  constexpr int kDVT = L::kSliceDv / 8;  // 8-wide column tiles of this block's dV
  constexpr int kKSd = L::kDP / 16;     // k-steps over the head dim (Sᵀ)
  constexpr int kKSv = L::kDvP / 16;    // k-steps over the value head dim (dPᵀ)

  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* sK = reinterpret_cast<T*>(smem_raw);
  T* sV = sK + L::kKElems;
  T* sQ0 = sV + L::kVElems;
  T* sQ1 = sQ0 + L::kQElems;
  T* sO0 = sQ1 + L::kQElems;  // dO
  T* sO1 = sO0 + L::kOElems;
  T* sS = sO1 + L::kOElems;   // dSᵀ [key][query], two stages
  float* sLse = reinterpret_cast<float*>(sS + L::kSElems);  // [2][kBM]
  float* sDelta = sLse + 2 * kBM;                          // [2][kBM]

  const int n_blocks = ceil_div(bp.max_mkv, kBN);
  const int slice = L::kSlices == 1 ? 0 : int(blockIdx.x % L::kSlices);
  const unsigned block = L::kSlices == 1 ? blockIdx.x : blockIdx.x / L::kSlices;
  const int dk_col0 = slice * L::kSliceD, dv_col0 = slice * L::kSliceDv;  // this block's columns
  const int n_block = block % n_blocks;
  const int pair = block / n_blocks;
  const int hk = pair % bp.kv_heads, b = pair / bp.kv_heads;
  const SeqGeometry<Cfg::kVarlen> seq(p, b);
  const int mq = seq.mq, mkv = seq.mkv;
  const int k_lo = n_block * kBN;
  if (k_lo >= mkv) return;  // varlen: this sequence has fewer keys
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;
  const int group = p.kv_group;

  const Rows<T, false> k = kv_rows<T, false>(p, p.k, p.k_stride_b, p.k_stride_h, p.k_stride_m, seq, hk, b);
  const Rows<T, false> v = kv_rows<T, false>(p, p.v, p.v_stride_b, p.v_stride_h, p.v_stride_m, seq, hk, b);
  load_tile<kBN, L::kDP, L::kQKStride, L::kThreads, Cfg::kAlign16>(sK, k, k_lo, mkv, Cfg::kHeadDim);
  load_tile<kBN, L::kDvP, L::kVStride, L::kThreads, Cfg::kAlign16>(sV, v, k_lo, mkv, Cfg::kHeadDimV);
  cp_async_commit();

  // The query blocks that see these keys (the same for every head of the group).
  int q_begin, q_end;
  {
    const Policy policy(p, b, hk * group, mq, mkv);
    policy.q_range(k_lo, imin(k_lo + kBN, mkv), mq, q_begin, q_end);
  }
  const int m_first = q_begin / kBM;
  const int n_m = q_end > q_begin ? ceil_div(q_end, kBM) - m_first : 0;
  const int n_iters = n_m * group;
  // Candidate c is query head hk·group + c / n_m, query block m_first + c % n_m; those the policy
  // says are empty are skipped (TileSet), and iteration `it` (buffers it & 1) is candidate c.
  auto head_of = [&](int c) { return hk * group + c / n_m; };
  auto m0_of = [&](int c) { return (m_first + c % n_m) * kBM; };
  TileSet<Policy::kSkipsTiles> tiles;
  tiles.build(n_iters, [&](int c) {
    const int m0 = m0_of(c);
    return Policy(p, b, head_of(c), mq, mkv).tile_state(m0, imin(m0 + kBM, mq), k_lo, imin(k_lo + kBN, mkv));
  });
  const int n_visits = tiles.count();

  auto issue_loads = [&](int it, int c) {
    const int h = head_of(c), m0 = m0_of(c);
    const int buf = it & 1;
    const Rows<T, false> q(static_cast<const T*>(p.q) + seq.batch * p.q_stride_b + h * p.q_stride_h +
                               int64_t(seq.q_start) * p.q_stride_m, p.q_stride_m);
    const Rows<T, false> dout(static_cast<const T*>(bp.dout) + seq.batch * bp.do_stride_b + h * bp.do_stride_h +
                                  int64_t(seq.q_start) * bp.do_stride_m, bp.do_stride_m);
    load_tile<kBM, L::kDP, L::kQKStride, L::kThreads, Cfg::kAlign16>(buf ? sQ1 : sQ0, q, m0, mq, Cfg::kHeadDim);
    load_tile<kBM, L::kDvP, L::kVStride, L::kThreads, Cfg::kAlign16>(buf ? sO1 : sO0, dout, m0, mq, Cfg::kHeadDimV);
    const float* lse = p.lse + seq.batch * p.lse_stride_b + h * p.lse_stride_h + seq.q_start;
    const float* delta = bp.delta + (int64_t(seq.batch) * p.heads + h) * p.mq_rows + seq.q_start;
    load_floats<kBM, L::kThreads>(sLse + buf * kBM, lse, m0, mq);
    load_floats<kBM, L::kThreads>(sDelta + buf * kBM, delta, m0, mq);
  };
  int c = tiles.next(0);
  if (n_visits > 0) issue_loads(0, c);
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();

  // This warp's K and V rows as A fragments: kept in registers for the whole block when they
  // are few (head dims up to 64), else read from shared memory at each use.
  const int key0 = warp * L::kWarpKeys;
  const unsigned a_row = (lane & 7) + ((lane >> 3) & 1) * 8, a_col = (lane >> 4) * 8;
  const unsigned k_lane = smem_addr(sK) + ((key0 + a_row) * L::kQKStride + a_col) * 2;
  const unsigned v_lane = smem_addr(sV) + ((key0 + a_row) * L::kVStride + a_col) * 2;
  constexpr bool kKVInRegs = kKT * (kKSd + kKSv) <= 8;
  unsigned k_frag[kKVInRegs ? kKT : 1][kKVInRegs ? kKSd : 1][4], v_frag[kKVInRegs ? kKT : 1][kKVInRegs ? kKSv : 1][4];
  auto load_k = [&](unsigned (&a)[4], int kt, int ks) { ldmatrix_x4(a, k_lane + (kt * 16 * L::kQKStride + ks * 16) * 2); };
  auto load_v = [&](unsigned (&a)[4], int kt, int ks) { ldmatrix_x4(a, v_lane + (kt * 16 * L::kVStride + ks * 16) * 2); };
  if constexpr (kKVInRegs) {
#pragma unroll
    for (int kt = 0; kt < kKT; ++kt) {
#pragma unroll
      for (int ks = 0; ks < kKSd; ++ks) load_k(k_frag[kt][ks], kt, ks);
#pragma unroll
      for (int ks = 0; ks < kKSv; ++ks) load_v(v_frag[kt][ks], kt, ks);
    }
  }
  // Lane offsets of the B-fragment patterns: non-transposed (rows are n) and transposed (rows are k).
  const unsigned bn_lane_qk = (((lane & 7) + ((lane >> 4) << 3)) * L::kQKStride + ((lane >> 3) & 1) * 8) * 2;
  const unsigned bn_lane_v = (((lane & 7) + ((lane >> 4) << 3)) * L::kVStride + ((lane >> 3) & 1) * 8) * 2;
  const unsigned bt_lane_qk = (((lane & 7) + ((lane >> 3) & 1) * 8) * L::kQKStride + (lane >> 4) * 8) * 2;
  const unsigned bt_lane_v = (((lane & 7) + ((lane >> 3) & 1) * 8) * L::kVStride + (lane >> 4) * 8) * 2;

  float dk[kKT][kDKT][4], dv[kKT][kDVT][4];
#pragma unroll
  for (int kt = 0; kt < kKT; ++kt) {
#pragma unroll
    for (int c = 0; c < kDKT; ++c)
#pragma unroll
      for (int e = 0; e < 4; ++e) dk[kt][c][e] = 0.f;
#pragma unroll
    for (int c = 0; c < kDVT; ++c)
#pragma unroll
      for (int e = 0; e < 4; ++e) dv[kt][c][e] = 0.f;
  }

  auto step = [&](int it, int c, auto masked) {
    constexpr bool kMasked = decltype(masked)::value;
    const int h = head_of(c), m0 = m0_of(c);
    const int buf = it & 1;
    const unsigned sq = smem_addr(buf ? sQ1 : sQ0), so = smem_addr(buf ? sO1 : sO0);
    const float* lse_row = sLse + buf * kBM;
    const float* delta_row = sDelta + buf * kBM;
    const Policy policy(p, b, h, mq, mkv);

    // Sᵀ = K·Qᵀ and dPᵀ = V·dOᵀ
    float s[kKT][kNT][4], dp[kKT][kNT][4];
#pragma unroll
    for (int kt = 0; kt < kKT; ++kt)
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[kt][nt][e] = dp[kt][nt][e] = 0.f;
#pragma unroll
    for (int ks = 0; ks < kKSd; ++ks) {
      unsigned a_tmp[kKT][4];
      if constexpr (!kKVInRegs) {
#pragma unroll
        for (int kt = 0; kt < kKT; ++kt) load_k(a_tmp[kt], kt, ks);
      }
#pragma unroll
      for (int np = 0; np < kNT / 2; ++np) {
        unsigned bq[4];
        ldmatrix_x4(bq, sq + bn_lane_qk + (np * 16 * L::kQKStride + ks * 16) * 2);
#pragma unroll
        for (int kt = 0; kt < kKT; ++kt) {
          const unsigned (&a)[4] = kKVInRegs ? k_frag[kKVInRegs ? kt : 0][kKVInRegs ? ks : 0] : a_tmp[kt];
          mma_16816<Cfg::kDType>(s[kt][2 * np], a, bq[0], bq[1]);
          mma_16816<Cfg::kDType>(s[kt][2 * np + 1], a, bq[2], bq[3]);
        }
      }
    }
#pragma unroll
    for (int ks = 0; ks < kKSv; ++ks) {
      unsigned a_tmp[kKT][4];
      if constexpr (!kKVInRegs) {
#pragma unroll
        for (int kt = 0; kt < kKT; ++kt) load_v(a_tmp[kt], kt, ks);
      }
#pragma unroll
      for (int np = 0; np < kNT / 2; ++np) {
        unsigned bo[4];
        ldmatrix_x4(bo, so + bn_lane_v + (np * 16 * L::kVStride + ks * 16) * 2);
#pragma unroll
        for (int kt = 0; kt < kKT; ++kt) {
          const unsigned (&a)[4] = kKVInRegs ? v_frag[kKVInRegs ? kt : 0][kKVInRegs ? ks : 0] : a_tmp[kt];
          mma_16816<Cfg::kDType>(dp[kt][2 * np], a, bo[0], bo[1]);
          mma_16816<Cfg::kDType>(dp[kt][2 * np + 1], a, bo[2], bo[3]);
        }
      }
    }

    // Pᵀ (into s), dropout's keep mask applied to a copy (pd), and dSᵀ (into dp).
    float pd[kKT][kNT][4];
    bwd_probs<Cfg, kMasked>(s, dp, pd, p, policy, seq, h, m0, k_lo + key0, g, t, lse_row, delta_row);
    if constexpr (Cfg::kDBias)
      if (slice == 0) bwd_store_dbias<Cfg>(dp, bp, seq, h, m0, k_lo + key0, g, t);  // the same in every slice

    // dV += Pᵀ·dO and dK += dSᵀ·Q: the accumulator layout of Pᵀ/dSᵀ is the A layout.
#pragma unroll
    for (int kp = 0; kp < kBM / 16; ++kp) {
      unsigned pa[kKT][4], sa[kKT][4];
#pragma unroll
      for (int kt = 0; kt < kKT; ++kt) {
        bwd_a_fragment<Cfg::kDType>(pa[kt], Cfg::kDropout ? pd[kt] : s[kt], kp);
        bwd_a_fragment<Cfg::kDType>(sa[kt], dp[kt], kp);
      }
#pragma unroll
      for (int c = 0; c < kDVT / 2; ++c) {
        unsigned bo[4];
        ldmatrix_x4_trans(bo, so + bt_lane_v + (kp * 16 * L::kVStride + dv_col0 + c * 16) * 2);
#pragma unroll
        for (int kt = 0; kt < kKT; ++kt) {
          mma_16816<Cfg::kDType>(dv[kt][2 * c], pa[kt], bo[0], bo[1]);
          mma_16816<Cfg::kDType>(dv[kt][2 * c + 1], pa[kt], bo[2], bo[3]);
        }
      }
#pragma unroll
      for (int c = 0; c < kDKT / 2; ++c) {
        unsigned bq[4];
        ldmatrix_x4_trans(bq, sq + bt_lane_qk + (kp * 16 * L::kQKStride + dk_col0 + c * 16) * 2);
#pragma unroll
        for (int kt = 0; kt < kKT; ++kt) {
          mma_16816<Cfg::kDType>(dk[kt][2 * c], sa[kt], bq[0], bq[1]);
          mma_16816<Cfg::kDType>(dk[kt][2 * c + 1], sa[kt], bq[2], bq[3]);
        }
      }
    }

    if constexpr (Cfg::kDq) {
      // dSᵀ to shared memory; the next iteration computes dQ from it (dq_step), after the barrier
      // that starts it: one barrier per iteration.
      T* ss = sS + buf * (L::kSElems / 2);
#pragma unroll
      for (int kt = 0; kt < kKT; ++kt)
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
          for (int e2 = 0; e2 < 2; ++e2) {
            const int row = key0 + kt * 16 + g + e2 * 8, col = nt * 8 + 2 * t;
            *reinterpret_cast<unsigned*>(ss + row * L::kSStride + col) =
                pack2<Cfg::kDType>(dp[kt][nt][2 * e2], dp[kt][nt][2 * e2 + 1]);
          }
    }
  };

  // dQ[kBM, this slice's columns] of iteration `it` = dS·K over all kBN keys, fp32 atomics into
  // dq_accum.
  auto dq_step = [&](int it, int c) {
    const int h = head_of(c), m0 = m0_of(c);
    const T* ss = sS + (it & 1) * (L::kSElems / 2);
    const int wm = warp % L::kDqWarpsM, wn = warp / L::kDqWarpsM;
    constexpr int kMT = L::kDqMT, kCT = L::kDqNT;
    float dq[kMT][kCT][4];
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int c = 0; c < kCT; ++c)
#pragma unroll
        for (int e = 0; e < 4; ++e) dq[mt][c][e] = 0.f;
    // A = dS[query][key] from sS stored [key][query]: ldmatrix .trans with rows = keys.
    const unsigned s_lane = smem_addr(ss) + (((lane & 7) + ((lane >> 4) & 1) * 8) * L::kSStride + wm * kMT * 16 +
                                             ((lane >> 3) & 1) * 8) * 2;
    const unsigned kt_lane = smem_addr(sK) + bt_lane_qk + (dk_col0 + wn * kCT * 8) * 2;
#pragma unroll
    for (int ks = 0; ks < kBN / 16; ++ks) {
      unsigned a[kMT][4];
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) ldmatrix_x4_trans(a[mt], s_lane + (ks * 16 * L::kSStride + mt * 16) * 2);
#pragma unroll
      for (int c = 0; c + 1 < kCT; c += 2) {
        unsigned bk[4];
        ldmatrix_x4_trans(bk, kt_lane + (ks * 16 * L::kQKStride + c * 8) * 2);
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
          mma_16816<Cfg::kDType>(dq[mt][c], a[mt], bk[0], bk[1]);
          mma_16816<Cfg::kDType>(dq[mt][c + 1], a[mt], bk[2], bk[3]);
        }
      }
      if constexpr (kCT % 2 == 1) {
        unsigned bk[2];
        ldmatrix_x2_trans(bk, kt_lane + (ks * 16 * L::kQKStride + (kCT - 1) * 8) * 2);
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) mma_16816<Cfg::kDType>(dq[mt][kCT - 1], a[mt], bk[0], bk[1]);
      }
    }
    float* acc = bp.dq_accum + ((int64_t(seq.batch) * p.heads + h) * p.mq_rows + seq.q_start) * Cfg::kHeadDim;
    bwd_add_dq<Cfg::kHeadDim>(acc, dq, m0 + wm * kMT * 16, dk_col0 + wn * kCT * 8, mq, g, t);
  };

  auto needs_mask = [&](int c) {
    const int m0 = m0_of(c);
    if constexpr (Policy::kSkipsTiles) return Policy::kElementwise || k_lo + kBN > mkv || m0 + kBM > mq || !tiles.full(c);
    return Policy::kElementwise || k_lo + kBN > mkv || m0 + kBM > mq ||
           !Policy(p, b, head_of(c), mq, mkv).tile_full(m0, m0 + kBM, k_lo, k_lo + kBN);
  };
  // With dQ, one more pass after the last visit runs its dq_step: one call site, so the step is
  // compiled once (each call site inlines all of it; NVRTC's time grows with the code).
  int c_prev = 0;
  const int n_passes = n_visits + (Cfg::kDq && n_visits > 0 ? 1 : 0);
  for (int it = 0; it < n_passes; ++it) {
    const int c_next = it + 1 < n_visits ? tiles.next(c + 1) : 0;
    // Q(it), dO(it) have landed, and every warp is done with iteration it - 1.
    cp_async_wait<0>();
    __syncthreads();
    if (it + 1 < n_visits) issue_loads(it + 1, c_next);
    cp_async_commit();
    if constexpr (Cfg::kDq) {
      if (it > 0) dq_step(it - 1, c_prev);
    }
    if (it < n_visits) {
      if (needs_mask(c)) step(it, c, Bool<true>{});
      else step(it, c, Bool<false>{});
      c_prev = c;
      c = c_next;
    }
  }

  bwd_store_dkdv<Cfg>(dk, dv, bp, seq, hk, k_lo + key0, g, t, dk_col0, dv_col0);
}

}  // namespace jitattn
