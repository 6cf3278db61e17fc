// Forward attention on Hopper's warpgroup MMA (sm_90a), FlashAttention-2's algorithm with
// wgmma in place of mma.sync.
//
// A block computes kBlockM = 64·(warpgroups) query rows of one (batch, head); warpgroup w owns
// rows 64w..64w+63, and each of its warps keeps 16 rows' running max/sum and fp32 output in
// registers. S = Q·Kᵀ reads Q and K from shared memory (both K-major); O += P·V takes P from
// registers, converted in place from S, and V from shared memory (MN-major, read transposed).
// Q, K and V are 128-byte swizzled (wgmma.cuh). K and V have two stages each, filled with
// cp.async: tile j+1 is in flight during all of iteration j. The block visits the key tiles the
// policy says are visible, in fwd_mma.cuh's order, with the row math of fwd_rows.cuh.
//
// Cfg as in fwd_mma.cuh; this family takes kHeadDim = kHeadDimV ∈ {64, 128}, kAlign16,
// kBlockN ∈ {64, 128} and kWarps = 4·kBlockM/64 (jit/tile_table.cpp picks it only then).
#pragma once
#include "bias_policies.cuh"
#include "common.cuh"
#include "fwd_rows.cuh"
#include "wgmma.cuh"

namespace jitattn {

template <class Cfg>
struct FwdWgmmaLayout {
  static constexpr int kThreads = Cfg::kWarps * 32;
  static constexpr int kGroups = Cfg::kWarps / 4;  // warpgroups, 64 query rows each
  static constexpr int kQBytes = Cfg::kBlockM * Cfg::kHeadDim * 2;
  static constexpr int kKVBytes = Cfg::kBlockN * Cfg::kHeadDim * 2;  // one stage of K or of V
  // 1024 bytes of slack: the tiles start on a 1024-byte boundary, which the swizzle needs.
  static constexpr int kSmemBytes = 1024 + kQBytes + 4 * kKVBytes;
  static_assert(Cfg::kWarps % 4 == 0 && Cfg::kBlockM == 64 * kGroups, "one warpgroup per 64 query rows");
  static_assert(Cfg::kHeadDim == Cfg::kHeadDimV && (Cfg::kHeadDim == 64 || Cfg::kHeadDim == 128), "head dims 64 or 128");
  static_assert(Cfg::kBlockN == 64 || Cfg::kBlockN == 128, "key tiles of 64 or 128");
  static_assert(Cfg::kAlign16 && Cfg::kDType != kF32, "16-byte aligned f16/bf16 rows");
};

// Rows [row0, row0 + kRows) × kCols columns (a multiple of 64) into the swizzled layout of
// wgmma.cuh at shared address `base`; rows ≥ `rows` are zero (0·NaN would poison the sums).
template <int kRows, int kCols, int kThreads, class RowsAt>
__device__ __forceinline__ void load_tile_sw128(unsigned base, const RowsAt& rows_at, int row0, int rows) {
  constexpr int kChunksPerRow = kCols / 8;
  constexpr int kChunks = kRows * kChunksPerRow;
#pragma unroll
  for (int k = 0; k < ceil_div(kChunks, kThreads); ++k) {
    const int c = threadIdx.x + k * kThreads;
    if (kChunks % kThreads != 0 && c >= kChunks) break;
    const int r = c / kChunksPerRow, chunk = c % kChunksPerRow;
    const bool valid = row0 + r < rows;
    const auto* src = valid ? rows_at(row0 + r) + chunk * 8 : rows_at.base;  // not read when invalid
    cp_async_16(base + sw128_offset(kRows, r, chunk), src, valid);
  }
}

template <class Cfg, class Policy>
__device__ __forceinline__ void fwd_wgmma(const FwdParams& p) {
  using L = FwdWgmmaLayout<Cfg>;
  using T = typename DType<Cfg::kDType>::T;
  constexpr int kBM = Cfg::kBlockM, kBN = Cfg::kBlockN, kD = Cfg::kHeadDim;
  constexpr int kNT = kBN / 8;  // 8-wide key tiles of S
  constexpr int kDT = kD / 8;   // 8-wide column tiles of O

  extern __shared__ __align__(1024) unsigned char smem_raw[];
  const unsigned sQ = (smem_addr(smem_raw) + 1023u) & ~1023u;
  const unsigned sK = sQ + L::kQBytes;      // two stages
  const unsigned sV = sK + 2 * L::kKVBytes;  // two stages

  int m_block, h, b;
  block_coords(p, kBM, m_block, h, b);
  const SeqGeometry<Cfg::kVarlen, Cfg::kPaged> seq(p, b);
  const int mq = seq.mq, mkv = seq.mkv;
  const int q_lo = m_block * kBM;
  if (q_lo >= mq) return;  // varlen: this sequence is shorter than the longest one
  const int hk = h / p.kv_group;
  const int group = threadIdx.x / 128, warp = (threadIdx.x / 32) % 4, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;
  const int i0 = q_lo + group * 64 + warp * 16 + g;  // this thread's first row (the second is i0 + 8)

  const Rows<T, false> q(static_cast<const T*>(p.q) + seq.batch * p.q_stride_b + h * p.q_stride_h + int64_t(seq.q_start) * p.q_stride_m, p.q_stride_m);
  const Rows<T, Cfg::kPaged> k = kv_rows<T, Cfg::kPaged>(p, p.k, p.k_stride_b, p.k_stride_h, p.k_stride_m, seq, hk, b);
  const Rows<T, Cfg::kPaged> v = kv_rows<T, Cfg::kPaged>(p, p.v, p.v_stride_b, p.v_stride_h, p.v_stride_m, seq, hk, b);

  const Policy policy(p, seq.batch, h, mq, mkv);
  int kv_lo, kv_hi;
  policy.kv_range(q_lo, imin(q_lo + kBM, mq), mkv, kv_lo, kv_hi);
  kv_lo = kv_lo / kBN * kBN;
  const int n_tiles = kv_hi > kv_lo ? ceil_div(kv_hi - kv_lo, kBN) : 0;
  // Key tiles from the last to the first, as in fwd_mma.cuh.
  auto tile_n0 = [&](int it) { return kv_lo + (n_tiles - 1 - it) * kBN; };
  auto load_kv = [&](int it) {
    const unsigned stage = (it & 1) * L::kKVBytes;
    load_tile_sw128<kBN, kD, L::kThreads>(sK + stage, k, tile_n0(it), mkv);
    load_tile_sw128<kBN, kD, L::kThreads>(sV + stage, v, tile_n0(it), mkv);
  };

  load_tile_sw128<kBM, kD, L::kThreads>(sQ, q, q_lo, mq);
  if (n_tiles > 0) load_kv(0);
  cp_async_commit();
  if (n_tiles > 1) load_kv(1);
  cp_async_commit();  // possibly empty: keeps the group count uniform

  float acc[kDT][4];
  float row_max[2] = {neg_inf(), neg_inf()}, row_sum[2] = {0.f, 0.f};
#pragma unroll
  for (int dt = 0; dt < kDT; ++dt)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[dt][e] = 0.f;

  // This warpgroup's Q rows; every 16-column step of S = Q·Kᵀ moves 32 bytes along a panel.
  const unsigned q_desc_base = sQ + group * 64 * 128;
  auto needs_mask = [&](int it) {
    const int n0 = tile_n0(it);
    return Policy::kElementwise || n0 + kBN > mkv || !policy.tile_full(q_lo, q_lo + kBM, n0, n0 + kBN);
  };
  auto step = [&](int it, auto masked) {
    constexpr bool kMasked = decltype(masked)::value;
    const int n0 = tile_n0(it);
    const unsigned k_stage = sK + (it & 1) * L::kKVBytes, v_stage = sV + (it & 1) * L::kKVBytes;
    cp_async_wait<1>();  // Q and K/V(it) have landed; K/V(it+1) may still be in flight
    fence_proxy_async();
    __syncthreads();

    // S = Q · K(it)ᵀ
    float s[kNT][4];
    wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < kD / 16; ++ks) {
      const unsigned panel = ks / 4, col = (ks % 4) * 32;
      wgmma_ss<kBN, Cfg::kDType>(s, wgmma_desc(q_desc_base + panel * kBM * 128 + col, 16, 1024),
                                 wgmma_desc(k_stage + panel * kBN * 128 + col, 16, 1024), ks > 0);
    }
    wgmma_commit();
    wgmma_wait<0>();
    wgmma_hold(s);

    fwd_logits<kMasked>(s, policy, p.scale_log2, i0, n0 + 2 * t, mq, mkv);
    fwd_online_softmax(s, acc, row_max, row_sum);
    if constexpr (Cfg::kDropout) fwd_dropout(s, p, seq, h, i0, n0 + 2 * t);

    // O += P · V(it)
    unsigned pa[kBN / 16][4];
#pragma unroll
    for (int kp = 0; kp < kBN / 16; ++kp) fwd_p_fragment<Cfg::kDType>(pa[kp], s, kp);
    wgmma_fence();
#pragma unroll
    for (int kp = 0; kp < kBN / 16; ++kp)
      wgmma_rs_tb<kD, Cfg::kDType>(acc, pa[kp], wgmma_desc(v_stage + kp * 16 * 128, kBN * 128, 1024));
    wgmma_commit();
    wgmma_wait<0>();
    wgmma_hold(acc);

    __syncthreads();  // every warpgroup is done with stage it & 1
    if (it + 2 < n_tiles) load_kv(it + 2);
    cp_async_commit();
  };
  int it = 0;
  for (; it < n_tiles && needs_mask(it); ++it) step(it, Bool<true>{});
  for (; it < n_tiles && !needs_mask(it); ++it) step(it, Bool<false>{});
  for (; it < n_tiles; ++it) step(it, Bool<true>{});
  cp_async_wait<0>();  // with no visible tile, Q's copy is still in flight

  fwd_store_rows<Cfg>(acc, row_max, row_sum, p, seq, h, i0, t);
}

}  // namespace jitattn
