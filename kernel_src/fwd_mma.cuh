// Forward attention on tensor cores (mma.sync m16n8k16), FlashAttention-2 style, sm_80 and newer.
//
// One block computes kBlockM query rows of one (batch, head); each warp owns 16·kMTiles rows and
// keeps its Q fragments, its running max/sum and its fp32 output accumulator in registers.
// The block walks the key tiles the policy says are visible. K has two shared buffers and V one,
// filled with cp.async: K(j+1) is in flight during all of iteration j, V(j) during S = Q·K(j)ᵀ
// and the softmax.
//
// Cfg (from the generated preamble): kDType, kOutDType, kHeadDim, kHeadDimV, kBlockM, kBlockN,
// kWarps, kAlign16, kWriteLse, kVarlen, kPaged, kDropout.
#pragma once
#include "bias_policies.cuh"
#include "common.cuh"
#include "fwd_rows.cuh"

namespace jitattn {

template <class Cfg>
struct FwdMmaLayout {
  static constexpr int kThreads = Cfg::kWarps * 32;
  static constexpr int kWarpRows = Cfg::kBlockM / Cfg::kWarps;
  static constexpr int kMTiles = kWarpRows / 16;
  static constexpr int kDP = round_up(Cfg::kHeadDim, 16);   // padded to the mma k step
  static constexpr int kDvP = round_up(Cfg::kHeadDimV, 16);
  // Rows are padded by 16 bytes so the 8 rows an ldmatrix reads fall in distinct banks.
  static constexpr int kQKStride = kDP + 8;
  static constexpr int kVStride = kDvP + 8;
  static constexpr int kQElems = Cfg::kBlockM * kQKStride;
  static constexpr int kKElems = Cfg::kBlockN * kQKStride;
  static constexpr int kVElems = Cfg::kBlockN * kVStride;
  static constexpr int kSmemBytes = (kQElems + 2 * kKElems + kVElems) * 2;
  // Q fragments stay in registers unless that would crowd out the accumulators.
  static constexpr bool kQInRegs = kMTiles * kDP <= 128;
  static_assert(kWarpRows % 16 == 0, "each warp owns a multiple of 16 rows");
  static_assert(Cfg::kBlockN % 16 == 0, "key tiles are a multiple of 16");
};

// Loads rows [row0, row0 + kRows) × cols [0, kColsP) of a matrix whose row r starts at
// rows_at(r) (see Rows) into shared memory with row stride kSmemStride. Rows ≥ `rows` and
// columns ≥ `cols` are zero: padding must be zero, not garbage, since 0·NaN would poison the sums.
template <int kRows, int kColsP, int kSmemStride, int kThreads, bool kAlign16, class T, class RowsAt>
__device__ __forceinline__ void load_tile(T* smem, const RowsAt& rows_at, int row0, int rows, int cols) {
  if constexpr (kAlign16) {
    constexpr int kChunksPerRow = kColsP / 8;
    constexpr int kChunks = kRows * kChunksPerRow;
    const unsigned base = smem_addr(smem);
#pragma unroll
    for (int c = threadIdx.x; c < kChunks; c += kThreads) {
      const int r = c / kChunksPerRow, col = (c % kChunksPerRow) * 8;
      const bool valid = row0 + r < rows && col < cols;
      const T* src = valid ? rows_at(row0 + r) + col : rows_at.base;  // not read when invalid
      cp_async_16(base + (r * kSmemStride + col) * 2, src, valid);
    }
  } else {
    constexpr int kElems = kRows * kColsP;
    for (int e = threadIdx.x; e < kElems; e += kThreads) {
      const int r = e / kColsP, col = e % kColsP;
      T x{};
      if (row0 + r < rows && col < cols) x = rows_at(row0 + r)[col];
      smem[r * kSmemStride + col] = x;
    }
  }
}

template <class Cfg, class Policy>
__device__ __forceinline__ void fwd_mma(const FwdParams& p) {
  using L = FwdMmaLayout<Cfg>;
  using T = typename DType<Cfg::kDType>::T;
  constexpr int kBM = Cfg::kBlockM, kBN = Cfg::kBlockN, kMT = L::kMTiles;
  constexpr int kNT = kBN / 8;            // 8-wide key tiles of S
  constexpr int kDT = L::kDvP / 8;        // 8-wide column tiles of O
  constexpr int kKS = L::kDP / 16;        // k-steps of Q·Kᵀ

  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);
  T* sK0 = sQ + L::kQElems;
  T* sK1 = sK0 + L::kKElems;
  T* sV = sQ + L::kQElems + 2 * L::kKElems;

  int m_block, h, b;
  block_coords(p, kBM, m_block, h, b);
  const SeqGeometry<Cfg::kVarlen, Cfg::kPaged> seq(p, b);
  const int mq = seq.mq, mkv = seq.mkv;
  const int q_lo = m_block * kBM;
  if (q_lo >= mq) return;  // varlen: this sequence is shorter than the longest one
  const int hk = h / p.kv_group;  // GQA/MQA: the key/value head this query head reads
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;

  const Rows<T, false> q(static_cast<const T*>(p.q) + seq.batch * p.q_stride_b + h * p.q_stride_h + int64_t(seq.q_start) * p.q_stride_m, p.q_stride_m);
  const Rows<T, Cfg::kPaged> k = kv_rows<T, Cfg::kPaged>(p, p.k, p.k_stride_b, p.k_stride_h, p.k_stride_m, seq, hk, b);
  const Rows<T, Cfg::kPaged> v = kv_rows<T, Cfg::kPaged>(p, p.v, p.v_stride_b, p.v_stride_h, p.v_stride_m, seq, hk, b);

  const Policy policy(p, b, h, mq, mkv);
  int kv_lo, kv_hi;
  policy.kv_range(q_lo, imin(q_lo + kBM, mq), mkv, kv_lo, kv_hi);
  kv_lo = kv_lo / kBN * kBN;
  const int n_tiles = kv_hi > kv_lo ? ceil_div(kv_hi - kv_lo, kBN) : 0;
  // Key tiles are visited from the last to the first (candidate c starts at tile_n0(c)), so that
  // the ones a causal mask or the sequence end cut through come first; those the policy says
  // are empty are skipped (TileSet).
  auto tile_n0 = [&](int c) { return kv_lo + (n_tiles - 1 - c) * kBN; };
  TileSet<Policy::kSkipsTiles> tiles;
  tiles.build(n_tiles, [&](int c) { return policy.tile_state(q_lo, imin(q_lo + kBM, mq), tile_n0(c), imin(tile_n0(c) + kBN, mkv)); });
  const int n_visits = tiles.count();

  load_tile<kBM, L::kDP, L::kQKStride, L::kThreads, Cfg::kAlign16>(sQ, q, q_lo, mq, Cfg::kHeadDim);
  int c = tiles.next(0);  // visit it is candidate c; visits go by tiles not skipped
  if (n_visits > 0)
    load_tile<kBN, L::kDP, L::kQKStride, L::kThreads, Cfg::kAlign16>(sK0, k, tile_n0(c), mkv, Cfg::kHeadDim);
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();

  // Each lane's ldmatrix row/column within a 16x16 fragment, as byte offsets; the tile offsets
  // added below are compile-time constants.
  const int warp_row0 = warp * L::kWarpRows;
  const unsigned q_lane = smem_addr(sQ) + ((warp_row0 + (lane & 7) + ((lane >> 3) & 1) * 8) * L::kQKStride + (lane >> 4) * 8) * 2;
  const unsigned k_lane = (((lane & 7) + ((lane >> 4) << 3)) * L::kQKStride + ((lane >> 3) & 1) * 8) * 2;
  const unsigned v_lane = smem_addr(sV) + (((lane & 7) + ((lane >> 3) & 1) * 8) * L::kVStride + (lane >> 4) * 8) * 2;
  const unsigned k_base0 = smem_addr(sK0) + k_lane, k_base1 = smem_addr(sK1) + k_lane;
  auto load_q_frag = [&](unsigned (&a)[4], int mt, int ks) {
    ldmatrix_x4(a, q_lane + (mt * 16 * L::kQKStride + ks * 16) * 2);
  };
  unsigned q_frag[L::kQInRegs ? kMT : 1][L::kQInRegs ? kKS : 1][4];
  if constexpr (L::kQInRegs) {
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int ks = 0; ks < kKS; ++ks) load_q_frag(q_frag[mt][ks], mt, ks);
  }

  float acc[kMT][kDT][4];
  float row_max[kMT][2], row_sum[kMT][2];  // base-2 running max; per-thread partial sums
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
    for (int dt = 0; dt < kDT; ++dt)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[mt][dt][e] = 0.f;
    row_max[mt][0] = row_max[mt][1] = neg_inf();
    row_sum[mt][0] = row_sum[mt][1] = 0.f;
  }

  // Tiles needing no per-element work run through a separate instantiation of the step, with no
  // masking code in it.
  auto needs_mask = [&](int c) {
    const int n0 = tile_n0(c);
    if constexpr (Policy::kSkipsTiles) return Policy::kElementwise || n0 + kBN > mkv || !tiles.full(c);
    return Policy::kElementwise || n0 + kBN > mkv || !policy.tile_full(q_lo, q_lo + kBM, n0, n0 + kBN);
  };
  auto step = [&](int it, int c, int c_next, auto masked) {
    constexpr bool kMasked = decltype(masked)::value;
    const int n0 = tile_n0(c);
    // K(it) has landed, and every warp is done with V(it-1) and K(it-1).
    cp_async_wait<0>();
    __syncthreads();
    load_tile<kBN, L::kDvP, L::kVStride, L::kThreads, Cfg::kAlign16>(sV, v, n0, mkv, Cfg::kHeadDimV);
    cp_async_commit();
    if (it + 1 < n_visits)
      load_tile<kBN, L::kDP, L::kQKStride, L::kThreads, Cfg::kAlign16>((it & 1) ? sK0 : sK1, k, tile_n0(c_next), mkv, Cfg::kHeadDim);
    cp_async_commit();  // possibly empty: keeps the group count uniform
    const unsigned k_tile = (it & 1) ? k_base1 : k_base0;

    // S = Q · K(it)ᵀ
    float s[kMT][kNT][4];
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[mt][nt][e] = 0.f;
#pragma unroll
    for (int ks = 0; ks < kKS; ++ks) {
      unsigned a_tmp[kMT][4];
      if constexpr (!L::kQInRegs) {
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) load_q_frag(a_tmp[mt], mt, ks);
      }
#pragma unroll
      for (int np = 0; np < kNT / 2; ++np) {
        unsigned bk[4];
        ldmatrix_x4(bk, k_tile + (np * 16 * L::kQKStride + ks * 16) * 2);
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
          const unsigned (&a)[4] = L::kQInRegs ? q_frag[L::kQInRegs ? mt : 0][L::kQInRegs ? ks : 0] : a_tmp[mt];
          mma_16816<Cfg::kDType>(s[mt][2 * np], a, bk[0], bk[1]);
          mma_16816<Cfg::kDType>(s[mt][2 * np + 1], a, bk[2], bk[3]);
        }
      }
    }

#pragma unroll
    for (int mt = 0; mt < kMT; ++mt) {
      const int i0 = q_lo + warp_row0 + mt * 16 + g;
      fwd_logits<kMasked>(s[mt], policy, p.scale_log2, i0, n0 + 2 * t, mq, mkv);
      float alpha[2];
      fwd_softmax(s[mt], row_max[mt], row_sum[mt], alpha);
      fwd_rescale(acc[mt], alpha);
      if constexpr (Cfg::kDropout) fwd_dropout(s[mt], p, seq, h, i0, n0 + 2 * t);
    }

    cp_async_wait<1>();  // V(it) has landed; K(it+1) may still be in flight
    __syncthreads();

    // O += P · V(it). The S accumulator layout is the A-fragment layout, so P never leaves
    // registers.
#pragma unroll
    for (int kp = 0; kp < kBN / 16; ++kp) {
      unsigned pa[kMT][4];
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) fwd_p_fragment<Cfg::kDType>(pa[mt], s[mt], kp);
#pragma unroll
      for (int dp = 0; dp < kDT / 2; ++dp) {
        unsigned bv[4];
        ldmatrix_x4_trans(bv, v_lane + (kp * 16 * L::kVStride + dp * 16) * 2);
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
          mma_16816<Cfg::kDType>(acc[mt][2 * dp], pa[mt], bv[0], bv[1]);
          mma_16816<Cfg::kDType>(acc[mt][2 * dp + 1], pa[mt], bv[2], bv[3]);
        }
      }
    }
  };
  // Masked tiles, unmasked ones, then masked again to the end (a left window's edge). The two
  // masked runs share one copy of the step: each call site of `step` inlines all of it, and a
  // third copy made the compile a third longer (NVVM and ptxas time grow with the code).
  int it = 0;
#pragma unroll 1
  for (int pass = 0; pass < 2; ++pass) {
    for (; it < n_visits && (pass == 1 || needs_mask(c)); ++it) {
      const int c_next = tiles.next(c + 1);
      step(it, c, c_next, Bool<true>{});
      c = c_next;
    }
    if (pass == 0)
      for (; it < n_visits && !needs_mask(c); ++it) {
        const int c_next = tiles.next(c + 1);
        step(it, c, c_next, Bool<false>{});
        c = c_next;
      }
  }

#pragma unroll
  for (int mt = 0; mt < kMT; ++mt) fwd_store_rows<Cfg>(acc[mt], row_max[mt], row_sum[mt], p, seq, h, q_lo + warp_row0 + mt * 16 + g, t);
}

}  // namespace jitattn
