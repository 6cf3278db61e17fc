// Forward attention on Hopper, warp-specialized (sm_90a; docs/design.md decision 25): one
// producer warp feeds Q, K and V through the tensor-memory-access engine, and the warpgroups
// that multiply do nothing else.
//
// The block is fwd_wgmma.cuh's (FwdWgmmaBlock: the same tiles, products, row math and order of
// visits) plus one warpgroup in front: threads 0..127 produce, threads 128.. multiply (64 query
// rows per warpgroup). Warp 0 issues every copy as a box of a tensor map (FwdTmaParams, encoded
// on the host per call): Q once, then K(it) and V(it) for each visit, into two stages of each;
// the copy engine counts their bytes on the stage's "full" mbarrier, and the multiplying warps
// hand a stage back on its "empty" one (one arrival per warp) as soon as their wgmma have read
// it, K after S = Q·K(it)ᵀ, V after O += P(it)·V(it). No block-wide barrier runs after the start.
// The producer warpgroup gives its registers to the others (setmaxnreg: 40 and 232 per thread).
//
// Within a warpgroup the softmax of S(it) runs while P(it-1)·V(it-1) does (fwd_wgmma.cuh's
// order); between warpgroups, the batches of products take turns (FlashAttention-3's ping-pong):
// warpgroup g issues its batch once warpgroup g − 1 (cyclically) has issued its own (named
// barrier 1 + g), so one warpgroup's products keep the tensor cores busy while the others
// compute their softmax.
//
// A key tile that runs past the sequence's keys reads rows of whatever follows (another
// sequence, padding, a gap: not necessarily finite). Masking makes their probabilities 0, but
// 0·NaN is NaN, so the producer lands such a V tile on a barrier of its own, zeroes those rows
// and only then completes the stage's barrier itself (S needs nothing: a masked logit is
// replaced, not added to). Rows of Q past the sequence's end are never stored.
//
// Cfg as in fwd_wgmma.cuh, with kBlockM 128 or 192 and kWarps = 4·(kBlockM/64 + 1); kAlign16,
// not paged, no left window; head dims multiples of 8 in 64..256, padded in shared memory to
// whole 64-column panels, which the boxes fill with the zeros past the tensor's columns (the
// products then add nothing for them; O's padding columns are never stored).
#pragma once
#include "bulk.cuh"
#include "fwd_wgmma.cuh"

namespace jitattn {

template <class Cfg>
struct FwdTmaLayout {
  static constexpr int kGroups = Cfg::kBlockM / 64;  // warpgroups that multiply, 64 query rows each
  static constexpr int kThreads = Cfg::kWarps * 32;  // theirs and the producer warpgroup's
  // Head dims in whole 64-column panels: a box's columns past the tensor's read as zeros.
  static constexpr int kDP = round_up(Cfg::kHeadDim, 64), kDvP = round_up(Cfg::kHeadDimV, 64);
  static constexpr int kQBytes = Cfg::kBlockM * kDP * 2;
  static constexpr int kKBytes = Cfg::kBlockN * kDP * 2;   // one stage of K
  static constexpr int kVBytes = Cfg::kBlockN * kDvP * 2;  // one stage of V
  static constexpr int kKStages = 2, kVStages = 2;
  static constexpr int kTileBytes = kQBytes + kKStages * kKBytes + kVStages * kVBytes;
  // The barriers after the tiles: Q's; full and empty for each stage of K and of V; the tail's.
  static constexpr int kBarriers = 1 + 2 * (kKStages + kVStages) + 1;
  // 1024 bytes of slack: the tiles start on a 1024-byte boundary, which the swizzle needs.
  static constexpr int kSmemBytes = 1024 + kTileBytes + 8 * kBarriers;
  // Registers per thread after setmaxnreg: 128·40 + 256·232 and 128·24 + 384·160 ≤ 65536. The
  // multiplying warpgroups' setmaxnreg.inc waits for registers the block holds: it must start
  // with 168 (w12) or 126 (w16) per thread, which ptxas gives under __launch_bounds__(threads, 1)
  // (the compile tests check its report).
  static constexpr int kProducerRegs = kGroups == 2 ? 40 : 24, kMmaRegs = kGroups == 2 ? 232 : 160;
  static_assert((kGroups == 2 || kGroups == 3) && Cfg::kWarps == 4 * (kGroups + 1),
                "two or three warpgroups of 64 query rows and a producer");
  static_assert(Cfg::kHeadDim % 8 == 0 && Cfg::kHeadDim >= 64 && Cfg::kHeadDim <= 256, "head dims 64..256, multiples of 8");
  static_assert(Cfg::kHeadDimV % 8 == 0 && Cfg::kHeadDimV >= 64 && Cfg::kHeadDimV <= 256, "value head dims 64..256, multiples of 8");
  static_assert(Cfg::kBlockN == 64 || Cfg::kBlockN == 128, "key tiles of 64 or 128");
  static_assert(Cfg::kAlign16 && Cfg::kDType != kF32 && !Cfg::kPaged, "tensor maps: aligned f16/bf16 rows, not paged");
};

// The barriers of FwdTmaLayout, by shared address.
template <class L>
struct FwdTmaBarriers {
  unsigned base;
  __device__ unsigned q_full() const { return base; }
  __device__ unsigned k_full(int s) const { return base + 8 * (1 + s); }
  __device__ unsigned k_empty(int s) const { return base + 8 * (1 + L::kKStages + s); }
  __device__ unsigned v_full(int s) const { return base + 8 * (1 + 2 * L::kKStages + s); }
  __device__ unsigned v_empty(int s) const { return base + 8 * (1 + 2 * L::kKStages + L::kVStages + s); }
  __device__ unsigned tail() const { return base + 8 * (L::kBarriers - 1); }
  __device__ void init() const {  // thread 0; a __syncthreads() follows
    mbar_init(q_full(), 1);
    for (int s = 0; s < L::kKStages; ++s) mbar_init(k_full(s), 1), mbar_init(k_empty(s), 4 * L::kGroups);
    for (int s = 0; s < L::kVStages; ++s) mbar_init(v_full(s), 1), mbar_init(v_empty(s), 4 * L::kGroups);
    mbar_init(tail(), 1);
  }
};

// Warp 0's loop: every copy of the block, in the order the multiplying warps consume them.
template <class Cfg, class L, class Block>
__device__ __forceinline__ void fwd_tma_produce(const FwdTmaParams& tp, const Block& blk, const FwdTmaBarriers<L>& bar) {
  constexpr int kBM = Cfg::kBlockM, kBN = Cfg::kBlockN;
  const int lane = threadIdx.x % 32, hk = blk.h / tp.f.kv_group;
  // Map coordinates: columns, then the row, head and batch index where tma_dim puts them.
  auto load = [&](int t, const void* map, unsigned dst, int panels, int rows, int row, int head, unsigned b) {
    const int32_t(&dim_of)[3] = tp.tma_dim[t];
    auto coord = [&](int dim) { return dim_of[0] == dim ? row : dim_of[1] == dim ? head : dim_of[2] == dim ? blk.seq.batch : 0; };
    mbar_arrive_expect_tx(b, unsigned(tp.tma_bytes[t]));
    for (int pn = 0; pn < panels; ++pn) tma_load_4d(dst + pn * rows * 128, map, pn * 64, coord(1), coord(2), coord(3), b);
  };
  if (lane == 0) load(0, tp.q_map, blk.sQ, L::kDP / 64, kBM, blk.seq.q_start + blk.q_lo, blk.h, bar.q_full());
  const int n_visits = blk.tiles.count();
  unsigned tail_parity = 0;
  int c = blk.tiles.next(0);
  for (int it = 0; it < n_visits; ++it, c = blk.tiles.next(c + 1)) {
    const int ks = it % L::kKStages, vs = it % L::kVStages;
    const int n0 = blk.tile_n0(c), row = blk.seq.k_start + n0;
    if (it >= L::kKStages) mbar_wait(bar.k_empty(ks), unsigned(it / L::kKStages - 1) & 1u);
    if (lane == 0) load(1, tp.k_map, blk.k_stage(it), L::kDP / 64, kBN, row, hk, bar.k_full(ks));
    if (it >= L::kVStages) mbar_wait(bar.v_empty(vs), unsigned(it / L::kVStages - 1) & 1u);
    // >= 1: every policy's kv_range ends at the sequence's keys, so a visited tile starts before
    // their end (a policy that broke this would make the zeroing below leave its stage).
    const int valid = blk.seq.mkv - n0;
    if (valid >= kBN) {
      if (lane == 0) load(2, tp.v_map, blk.v_stage(it), L::kDvP / 64, kBN, row, hk, bar.v_full(vs));
      continue;
    }
    if (lane == 0) load(2, tp.v_map, blk.v_stage(it), L::kDvP / 64, kBN, row, hk, bar.tail());
    mbar_wait(bar.tail(), tail_parity);
    tail_parity ^= 1u;
    constexpr int kPanels = L::kDvP / 64;
    const int chunks = (kBN - valid) * 8;  // 16-byte chunks past the keys, per panel (all of a row)
    for (int x = lane; x < kPanels * chunks; x += 32) {
      const unsigned at = blk.v_stage(it) + (x / chunks) * kBN * 128 + valid * 128 + (x % chunks) * 16;
      asm volatile("st.shared.v4.u32 [%0], {%1, %1, %1, %1};\n" ::"r"(at), "r"(0u) : "memory");
    }
    fence_proxy_async();  // the zeros before the wgmma that read them
    __syncwarp();
    if (lane == 0) mbar_arrive(bar.v_full(vs));
  }
}

template <class Cfg, class Policy>
__device__ __forceinline__ void fwd_tma(const FwdTmaParams& tp) {
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  const unsigned smem = (smem_addr(smem_raw) + 1023u) & ~1023u;
  using L = FwdTmaLayout<Cfg>;
  using B = FwdWgmmaBlock<Cfg, Policy, L>;
  const bool producer = threadIdx.x < 128;
  B blk = B::make(tp.f, smem, producer ? 0 : int(threadIdx.x) - 128);
  if (blk.empty()) return;  // the whole block
  const FwdTmaBarriers<L> bar{smem + L::kTileBytes};
  if (threadIdx.x == 0) bar.init();
  __syncthreads();
  if (producer) {
    setmaxnreg_dec<L::kProducerRegs>();
    if (threadIdx.x < 32) fwd_tma_produce<Cfg, L>(tp, blk, bar);
    return;
  }
  setmaxnreg_inc<L::kMmaRegs>();

  const int n_visits = blk.tiles.count(), lane = threadIdx.x % 32;
  auto release = [&](unsigned b) {
    if (lane == 0) mbar_arrive(b);
  };
  auto k_landed = [&](int it) { mbar_wait(bar.k_full(it % L::kKStages), unsigned(it / L::kKStages) & 1u); };
  auto v_landed = [&](int it) { mbar_wait(bar.v_full(it % L::kVStages), unsigned(it / L::kVStages) & 1u); };
  // Turns: warpgroup g waits at barrier 1 + g before a batch and lets g + 1 (cyclically) go
  // after it. Each issues n_visits + 1 batches; the last warpgroup lets 0 go first and skips its
  // own last arrival (nobody waits for it), so every barrier completes as often as it is waited at.
  constexpr unsigned kLast = L::kGroups - 1;
  const unsigned group = unsigned(blk.group);
  auto my_turn = [&]() { named_barrier_sync(1 + group, 256); };
  auto your_turn = [&](bool last) {
    if (!(last && group == kLast)) named_barrier_arrive(1 + (group + 1) % L::kGroups, 256);
  };
  if (n_visits > 0 && group == kLast) named_barrier_arrive(1, 256);
  int c = blk.tiles.next(0);
  unsigned pa[B::kKP][4];  // P(it - 1), the A operand of the product in flight
  mbar_wait(bar.q_full(), 0);
  if (n_visits > 0) {
    float s[B::kNT][4], alpha[2];
    k_landed(0);
    my_turn();
    wgmma_fence();
    blk.issue_s(s, 0);
    your_turn(false);
    wgmma_wait<0>();
    wgmma_hold(s);
    release(bar.k_empty(0));
    blk.softmax(s, c, alpha);
    blk.to_p(pa, s, c);
  }
  for (int it = 1; it < n_visits; ++it) {
    c = blk.tiles.next(c + 1);
    float s[B::kNT][4], alpha[2];
    k_landed(it);
    v_landed(it - 1);  // copied before K(it): no wait between the two products
    my_turn();
    wgmma_fence();
    blk.issue_s(s, it);
    blk.issue_pv(pa, it - 1);
    your_turn(false);
    wgmma_wait<1>();  // S(it) is done; P(it-1)·V(it-1) may still run
    wgmma_hold(s);
    release(bar.k_empty(it % L::kKStages));
    blk.softmax(s, c, alpha);
    wgmma_wait<0>();
    wgmma_hold(blk.acc);
    wgmma_hold(pa);
    release(bar.v_empty((it - 1) % L::kVStages));
    fwd_rescale(blk.acc, alpha);
    blk.to_p(pa, s, c);
  }
  if (n_visits > 0) {
    v_landed(n_visits - 1);
    my_turn();
    wgmma_fence();
    blk.issue_pv(pa, n_visits - 1);
    your_turn(true);
    wgmma_wait<0>();
    wgmma_hold(blk.acc);
  }
  blk.store();
}

}  // namespace jitattn
