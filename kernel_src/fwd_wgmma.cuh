// Forward attention on Hopper's warpgroup MMA (sm_90a): FlashAttention-2's algorithm with wgmma
// in place of mma.sync, and FlashAttention-3's overlap of the softmax with the tensor cores.
//
// A block computes kBlockM = 64·(warpgroups) query rows of one (batch, head); warpgroup w owns
// rows 64w..64w+63, and each of its warps keeps 16 rows' running max/sum and fp32 output in
// registers. S = Q·Kᵀ reads Q and K from shared memory (both K-major); O += P·V takes P from
// registers, converted in place from S, and V from shared memory (MN-major, read transposed).
// Q, K and V are 128-byte swizzled (wgmma.cuh) and filled with cp.async.
//
// Iteration j issues S(j) = Q·K(j)ᵀ and O += P(j-1)·V(j-1) back to back, then computes the
// softmax of S(j) while P(j-1)·V(j-1) is still running; O is rescaled once that product is done.
// Tile j+1 loads during iteration j: K has two stages (K(j-1) is done with when iteration j
// starts) and V three (V(j-1) is still being read in iteration j). The block visits the key tiles
// the policy says are visible, in fwd_mma.cuh's order, skipping those it says are empty
// (TileSet), with the row math of fwd_rows.cuh.
//
// Cfg as in fwd_mma.cuh; this family takes kHeadDim, kHeadDimV ∈ {64, 128, 192, 256}, kAlign16,
// kBlockN ∈ {64, 128} and kWarps = 4·kBlockM/64 (jit/tile_table.cpp picks it only then).
#pragma once
#include "bias_policies.cuh"
#include "common.cuh"
#include "fwd_rows.cuh"
#include "wgmma.cuh"

namespace jitattn {

template <class Cfg>
struct FwdWgmmaLayout {
  static constexpr int kGroups = Cfg::kBlockM / 64;  // warpgroups, 64 query rows each
  static constexpr int kThreads = Cfg::kWarps * 32;
  static constexpr int kDP = Cfg::kHeadDim, kDvP = Cfg::kHeadDimV;  // widths in shared memory: exact here
  static constexpr int kQBytes = Cfg::kBlockM * Cfg::kHeadDim * 2;
  static constexpr int kKBytes = Cfg::kBlockN * Cfg::kHeadDim * 2;   // one stage of K
  static constexpr int kVBytes = Cfg::kBlockN * Cfg::kHeadDimV * 2;  // one stage of V
  static constexpr int kKStages = 2, kVStages = 3;
  // 1024 bytes of slack: the tiles start on a 1024-byte boundary, which the swizzle needs.
  static constexpr int kSmemBytes = 1024 + kQBytes + kKStages * kKBytes + kVStages * kVBytes;
  static_assert(Cfg::kBlockM % 64 == 0 && Cfg::kWarps == 4 * kGroups, "one warpgroup per 64 query rows");
  // Q·Kᵀ steps through 64-column panels; P·V is one product of N = kHeadDimV (wgmma.cuh).
  static_assert(Cfg::kHeadDim % 64 == 0 && Cfg::kHeadDim <= 256, "head dims 64, 128, 192 or 256");
  static_assert(Cfg::kHeadDimV % 64 == 0 && Cfg::kHeadDimV <= 256, "value head dims 64, 128, 192 or 256");
  static_assert(Cfg::kBlockN == 64 || Cfg::kBlockN == 128, "key tiles of 64 or 128");
  static_assert(Cfg::kAlign16 && Cfg::kDType != kF32, "16-byte aligned f16/bf16 rows");
};

// The block's coordinates and key range, its shared-memory tiles, one thread's output rows, and
// the products and row math of one key tile. L gives the tile sizes and stage counts (this file's
// layout, or fwd_tma.cuh's, whose kDP/kDvP pad the head dims to whole 64-column panels of
// zeros); `mma_tid` numbers the thread among the warpgroups that multiply.
template <class Cfg, class Policy, class L = FwdWgmmaLayout<Cfg>>
struct FwdWgmmaBlock {
  using T = typename DType<Cfg::kDType>::T;
  static constexpr int kBM = Cfg::kBlockM, kBN = Cfg::kBlockN, kD = Cfg::kHeadDim;
  static constexpr int kDP = L::kDP, kDvP = L::kDvP;  // padded widths (the columns past the head dims are 0)
  static constexpr int kNT = kBN / 8;   // 8-wide key tiles of S
  static constexpr int kDT = kDvP / 8;  // 8-wide column tiles of O (those past kHeadDimV are 0, not stored)
  static constexpr int kKP = kBN / 16;  // 16-key steps of P·V

  const FwdParams& p;
  int m_block, h, b;
  SeqGeometry<Cfg::kVarlen, Cfg::kPaged> seq;
  Policy policy;
  int q_lo, kv_lo, n_tiles;    // n_tiles candidate key tiles from kv_lo, visited last first
  TileSet<Policy::kSkipsTiles, Policy::kBaseTiles> tiles;  // those that are not empty
  unsigned sQ, sK, sV;  // L::kKStages stages of K, L::kVStages of V
  int group;            // this thread's warpgroup among those that multiply: rows 64·group..
  int i0, t;            // this thread's first row (the second is i0 + 8); lane % 4
  float acc[kDT][4];
  float row_max[2], row_sum[2];

  __device__ static FwdWgmmaBlock make(const FwdParams& p, unsigned smem, int mma_tid) {
    int m_block, h, b;
    block_coords(p, kBM, m_block, h, b);
    return FwdWgmmaBlock(p, smem, m_block, h, b, mma_tid);
  }
  // The block of 1-D index `id` (block_coords_of), for a block that computes several.
  // tiles_at: the shared address of the tile set another warp built for this block (TileSet::
  // store), taken instead of building it; 0 builds it.
  __device__ static FwdWgmmaBlock make_at(const FwdParams& p, unsigned smem, int mma_tid, int id, unsigned tiles_at = 0) {
    int m_block, h, b;
    block_coords_of(p, kBM, id, m_block, h, b);
    return FwdWgmmaBlock(p, smem, m_block, h, b, mma_tid, tiles_at);
  }
  __device__ FwdWgmmaBlock(const FwdParams& p_, unsigned smem, int m_block_, int h_, int b_, int mma_tid, unsigned tiles_at = 0)
      : p(p_), m_block(m_block_), h(h_), b(b_), seq(p_, b_), policy(p_, b_, h_, seq.mq, seq.mkv) {
    q_lo = m_block * kBM;
    int kv_hi;
    policy.kv_range(q_lo, imin(q_lo + kBM, seq.mq), seq.mkv, kv_lo, kv_hi);
    kv_lo = kv_lo / kBN * kBN;
    n_tiles = kv_hi > kv_lo ? ceil_div(kv_hi - kv_lo, kBN) : 0;
    const int q_hi = imin(q_lo + kBM, seq.mq);
    if (tiles_at) tiles.load(n_tiles, tiles_at);
    else tiles.build(n_tiles, [&](int c) { return policy.tile_state(q_lo, q_hi, tile_n0(c), imin(tile_n0(c) + kBN, seq.mkv)); });
    sQ = smem;
    sK = sQ + L::kQBytes;
    sV = sK + L::kKStages * L::kKBytes;
    group = mma_tid / 128;
    const int warp = (mma_tid / 32) % 4, lane = mma_tid % 32;
    i0 = q_lo + group * 64 + warp * 16 + lane / 4;
    t = lane % 4;
    row_max[0] = row_max[1] = neg_inf();
    row_sum[0] = row_sum[1] = 0.f;
#pragma unroll
    for (int dt = 0; dt < kDT; ++dt)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[dt][e] = 0.f;
  }
  __device__ bool empty() const { return q_lo >= seq.mq; }  // varlen: a shorter sequence

  // Candidate c's first key: from the last tile to the first, as in fwd_mma.cuh. Visit `it` (the
  // it-th tile not skipped) is candidate c; stages go by visits, keys by candidates.
  __device__ int tile_n0(int c) const { return kv_lo + (n_tiles - 1 - c) * kBN; }
  __device__ unsigned k_stage(int it) const { return sK + (it % L::kKStages) * L::kKBytes; }
  __device__ unsigned v_stage(int it) const { return sV + (it % L::kVStages) * L::kVBytes; }

  // Loads by kThreads threads (this one is `tid`).
  template <int kThreads>
  __device__ void load_q(int tid) const {
    const Rows<T, false> q(static_cast<const T*>(p.q) + seq.batch * p.q_stride_b + h * p.q_stride_h +
                               int64_t(seq.q_start) * p.q_stride_m, p.q_stride_m);
    load_tile_sw128<kBM, kDP, kThreads>(sQ, q, q_lo, seq.mq, tid);
  }
  template <int kThreads>
  __device__ void load_k(int it, int c, int tid) const {
    const auto k = kv_rows<T, Cfg::kPaged>(p, p.k, p.k_stride_b, p.k_stride_h, p.k_stride_m, seq, h / p.kv_group, b);
    load_tile_sw128<kBN, kDP, kThreads>(k_stage(it), k, tile_n0(c), seq.mkv, tid);
  }
  template <int kThreads>
  __device__ void load_v(int it, int c, int tid) const {
    const auto v = kv_rows<T, Cfg::kPaged>(p, p.v, p.v_stride_b, p.v_stride_h, p.v_stride_m, seq, h / p.kv_group, b);
    load_tile_sw128<kBN, kDvP, kThreads>(v_stage(it), v, tile_n0(c), seq.mkv, tid);
  }

  // S = Q·K(it)ᵀ, issued and committed (not waited for). Every 16-column step moves 32 bytes
  // along a panel of this warpgroup's Q rows and of K; the steps end with the head dim's last
  // column (past it, padding is zero).
  __device__ void issue_s(float (&s)[kNT][4], int it) const {
    const unsigned q_rows = sQ + group * 64 * 128;
#pragma unroll
    for (int ks = 0; ks < ceil_div(kD, 16); ++ks) {
      const unsigned panel = ks / 4, col = (ks % 4) * 32;
      wgmma_ss<kBN, Cfg::kDType>(s, wgmma_desc(q_rows + panel * kBM * 128 + col, 16, 1024),
                                 wgmma_desc(k_stage(it) + panel * kBN * 128 + col, 16, 1024), ks > 0);
    }
    wgmma_commit();
  }
  // O += P·V(it), issued and committed: V's 16-key steps are 2048 bytes apart; its 64-column
  // panels are kBN·128 bytes apart.
  __device__ void issue_pv(const unsigned (&pa)[kKP][4], int it) {
#pragma unroll
    for (int kp = 0; kp < kKP; ++kp)
      wgmma_rs_tb<kDvP, Cfg::kDType>(acc, pa[kp], wgmma_desc(v_stage(it) + kp * 16 * 128, kBN * 128, 1024));
    wgmma_commit();
  }
  __device__ bool needs_mask(int c) const {
    const int n0 = tile_n0(c);
    if constexpr (Policy::kSkipsTiles) return Policy::kElementwise || n0 + kBN > seq.mkv || !tiles.full(c);
    return Policy::kElementwise || n0 + kBN > seq.mkv || !policy.tile_full(q_lo, q_lo + kBM, n0, n0 + kBN);
  }
  // Candidate c's logits and softmax; alpha rescales O once the previous P·V has finished.
  __device__ void softmax(float (&s)[kNT][4], int c, float (&alpha)[2]) {
    if constexpr (Policy::kBaseTiles) {
      if (tiles.base_only(c)) {  // the user's mask_mod is true on the whole tile: the base's compare
        fwd_logits<true>(s, policy.base, p.scale_log2, i0, tile_n0(c) + 2 * t, seq.mq, seq.mkv);
        fwd_softmax(s, row_max, row_sum, alpha);
        return;
      }
    }
    if (needs_mask(c)) fwd_logits<true>(s, policy, p.scale_log2, i0, tile_n0(c) + 2 * t, seq.mq, seq.mkv);
    else fwd_logits<false>(s, policy, p.scale_log2, i0, tile_n0(c) + 2 * t, seq.mq, seq.mkv);
    fwd_softmax(s, row_max, row_sum, alpha);
  }
  // The probabilities as P·V's A operand (after dropout).
  __device__ void to_p(unsigned (&pa)[kKP][4], float (&s)[kNT][4], int c) const {
    if constexpr (Cfg::kDropout) fwd_dropout(s, p, seq, h, i0, tile_n0(c) + 2 * t);
#pragma unroll
    for (int kp = 0; kp < kKP; ++kp) fwd_p_fragment<Cfg::kDType>(pa[kp], s, kp);
  }
  __device__ void store() const { fwd_store_rows<Cfg>(acc, row_max, row_sum, p, seq, h, i0, t); }
};

template <class Cfg, class Policy>
__device__ __forceinline__ void fwd_wgmma(const FwdParams& p) {
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  const unsigned smem = (smem_addr(smem_raw) + 1023u) & ~1023u;
  using B = FwdWgmmaBlock<Cfg, Policy>;
  constexpr int kThreads = FwdWgmmaLayout<Cfg>::kThreads;
  B blk = B::make(p, smem, threadIdx.x);
  if (blk.empty()) return;
  // Visits of the key tiles not skipped: visit it is candidate c, the next one c_next.
  const int n_visits = blk.tiles.count(), tid = threadIdx.x;
  auto landed = [&]() {  // this thread's copies are done and visible to wgmma; then a barrier
    cp_async_wait<0>();
    fence_proxy_async();
    __syncthreads();
  };
  auto load_kv = [&](int it, int c) {
    blk.template load_k<kThreads>(it, c, tid);
    blk.template load_v<kThreads>(it, c, tid);
  };

  int c = blk.tiles.next(0), c_next = n_visits > 1 ? blk.tiles.next(c + 1) : 0;
  blk.template load_q<kThreads>(tid);
  if (n_visits > 0) load_kv(0, c);
  cp_async_commit();
  unsigned pa[B::kKP][4];  // P(it - 1), the A operand of the product in flight
  if (n_visits > 0) {
    landed();
    if (n_visits > 1) load_kv(1, c_next);
    cp_async_commit();
    float s[B::kNT][4], alpha[2];
    wgmma_fence();
    blk.issue_s(s, 0);
    wgmma_wait<0>();
    wgmma_hold(s);
    blk.softmax(s, c, alpha);
    blk.to_p(pa, s, c);
  }
  for (int it = 1; it < n_visits; ++it) {
    c = c_next;
    if (it + 1 < n_visits) c_next = blk.tiles.next(c + 1);
    landed();  // K/V(it) are here; every warpgroup is done with K(it-1) and V(it-2)
    if (it + 1 < n_visits) load_kv(it + 1, c_next);
    cp_async_commit();
    float s[B::kNT][4], alpha[2];
    wgmma_fence();
    blk.issue_s(s, it);
    blk.issue_pv(pa, it - 1);
    wgmma_wait<1>();  // S(it) is done; P(it-1)·V(it-1) may still run
    wgmma_hold(s);
    blk.softmax(s, c, alpha);
    wgmma_wait<0>();
    wgmma_hold(blk.acc);
    wgmma_hold(pa);
    fwd_rescale(blk.acc, alpha);
    blk.to_p(pa, s, c);
  }
  if (n_visits > 0) {
    wgmma_fence();
    blk.issue_pv(pa, n_visits - 1);
    wgmma_wait<0>();
    wgmma_hold(blk.acc);
  }
  cp_async_wait<0>();  // with no visible tile, Q's copy is still in flight
  blk.store();
}

}  // namespace jitattn
