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
// Blocks are persistent (FwdTmaSchedule below): one per SM, each computing work items until the
// stream's counter has handed them all out.
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
  // The barriers after the tiles: Q's full; full and empty for each stage of K and of V; Q's
  // empty; full and empty for each slot of the work items' ring; the tail's. Then the ring's slots.
  static constexpr int kItemSlots = 2;
  static constexpr int kBarriers = 1 + 2 * (kKStages + kVStages) + 1 + 2 * kItemSlots + 1;
  // 1024 bytes of slack: the tiles start on a 1024-byte boundary, which the swizzle needs.
  // Each slot also carries the item's tile set (TileSet::store), which the producer builds once
  // for the multiplying warps: building it is the map's loads, and they were on those warps'
  // path between items.
  static constexpr int kTileSetBytes = TileSet<true, true>::kBytes;
  static constexpr int kSmemBytes = 1024 + kTileBytes + 8 * kBarriers + kItemSlots * (4 + kTileSetBytes);
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
  __device__ unsigned q_empty() const { return base + 8 * (1 + 2 * L::kKStages + 2 * L::kVStages); }
  __device__ unsigned item_full(int s) const { return q_empty() + 8 * (1 + s); }
  __device__ unsigned item_empty(int s) const { return q_empty() + 8 * (1 + L::kItemSlots + s); }
  __device__ unsigned item_slot(int s) const { return base + 8 * L::kBarriers + 4 * s; }
  __device__ unsigned tiles_slot(int s) const { return base + 8 * L::kBarriers + 4 * L::kItemSlots + L::kTileSetBytes * s; }
  __device__ unsigned tail() const { return base + 8 * (L::kBarriers - 1); }
  __device__ void init() const {  // thread 0; a __syncthreads() follows
    mbar_init(q_full(), 1);
    for (int s = 0; s < L::kKStages; ++s) mbar_init(k_full(s), 1), mbar_init(k_empty(s), 4 * L::kGroups);
    for (int s = 0; s < L::kVStages; ++s) mbar_init(v_full(s), 1), mbar_init(v_empty(s), 4 * L::kGroups);
    mbar_init(q_empty(), 4 * L::kGroups);
    // Every lane that writes or reads a slot arrives itself (its tile-set word is its own).
    for (int s = 0; s < L::kItemSlots; ++s) mbar_init(item_full(s), 32), mbar_init(item_empty(s), 128 * L::kGroups);
    mbar_init(tail(), 1);
  }
};

// The block is persistent: the grid has at most one block per SM, and each block computes work
// items (query block, head, batch; block_coords_of's 1-D index) until none is left. Block x takes
// item x first, then the next one a counter hands out (FwdTmaParams::work: the blocks that finish
// early take more, as the hardware's own scheduling of one block per item would); without the
// counter, items x, 2G-1-x, 2G+x, 4G-1-x, ... of a grid of G blocks (a snake over rounds of G, so
// that under a causal mask, where the index orders items from longest to shortest, every block
// gets long and short ones). The producer warp draws the items and passes each on through a ring
// of two shared slots (item full / item empty barriers; with the item's tile set, so that the
// map is read once per item), the past-the-end one included, which tells the others to stop;
// the last block to draw it resets the counters for the next launch.
//
// The producer runs ahead into the next item while the multiplying warps finish the last one:
// Q's buffer is handed back ("q empty") once the item's last S = Q·Kᵀ is done, and the stages of
// K and V go round across items, so the next item's Q, K and V are in flight during the last P·V
// and the output's store. Stage and parity come from the visits counted since the block started,
// the same on both sides.
template <int kBM>
struct FwdTmaSchedule {
  int items;  // ceil(Mq / kBM) · heads · batch
  __device__ explicit FwdTmaSchedule(const FwdParams& p) : items(ceil_div(p.mq, kBM) * p.heads * p.batch) {}
  // The item after round r - 1's (lane 0 of the producer warp): >= items when none is left.
  __device__ int draw(int32_t* work, int r) const {
    const int g = int(gridDim.x), x = int(blockIdx.x);
    if (r == 0) return x;
    if (!work) return r * g + ((r & 1) ? g - 1 - x : x);
    return g + atomicAdd(work, 1);
  }
  // Lane 0 of the producer warp, once it has drawn past the end: the last block resets the counters.
  __device__ void done(int32_t* work) const {
    if (!work) return;
    __threadfence();  // this block's last draw before its count
    if (atomicAdd(work + 1, 1) == int(gridDim.x) - 1) {
      atomicExch(work, 0);
      atomicExch(work + 1, 0);
    }
  }
};

// Warp 0's loop: every copy of the block, in the order the multiplying warps consume them.
template <class Cfg, class L, class Block>
__device__ __forceinline__ void fwd_tma_produce(const FwdTmaParams& tp, unsigned smem, const FwdTmaBarriers<L>& bar) {
  constexpr int kBM = Cfg::kBlockM, kBN = Cfg::kBlockN;
  const int lane = threadIdx.x % 32;
  const FwdTmaSchedule<kBM> work(tp.f);
  int visits = 0, q_uses = 0;  // K/V tiles and Q tiles loaded so far
  unsigned tail_parity = 0;
  for (int r = 0;; ++r) {
    int id = 0;
    if (lane == 0) id = work.draw(tp.work, r);
    id = port::shfl32(id, 0);
    const int slot = r % L::kItemSlots;
    const bool past = id >= work.items;
    // The item's block first: its tile set goes into the slot with the id (past the end, item 0
    // stands in and nothing is stored).
    const Block blk = Block::make_at(tp.f, smem, 0, past ? 0 : id);
    if (r >= L::kItemSlots) mbar_wait(bar.item_empty(slot), unsigned(r / L::kItemSlots - 1) & 1u);
    if (!past) blk.tiles.store(bar.tiles_slot(slot));
    if (lane == 0) asm volatile("st.shared.u32 [%0], %1;\n" ::"r"(bar.item_slot(slot)), "r"(id) : "memory");
    mbar_arrive(bar.item_full(slot));  // each lane, after its own stores
    if (past) {
      if (lane == 0) work.done(tp.work);
      break;
    }
    if (blk.empty()) continue;
    const int n_visits = blk.tiles.count();
    if (n_visits == 0) continue;  // the item's rows see no key: no loads, its output is zeros
    const int hk = blk.h / tp.f.kv_group;
    // Map coordinates: columns, then the row, head and batch index where tma_dim puts them.
    auto load = [&](int t, const void* map, unsigned dst, int panels, int rows, int row, int head, unsigned b) {
      const int32_t(&dim_of)[3] = tp.tma_dim[t];
      auto coord = [&](int dim) { return dim_of[0] == dim ? row : dim_of[1] == dim ? head : dim_of[2] == dim ? blk.seq.batch : 0; };
      mbar_arrive_expect_tx(b, unsigned(tp.tma_bytes[t]));
      for (int pn = 0; pn < panels; ++pn) tma_load_4d(dst + pn * rows * 128, map, pn * 64, coord(1), coord(2), coord(3), b);
    };
    if (q_uses > 0) mbar_wait(bar.q_empty(), unsigned(q_uses - 1) & 1u);  // the last item's S are done
    ++q_uses;
    if (lane == 0) load(0, tp.q_map, blk.sQ, L::kDP / 64, kBM, blk.seq.q_start + blk.q_lo, blk.h, bar.q_full());
    int c = blk.tiles.next(0);
    for (int it = 0; it < n_visits; ++it, c = blk.tiles.next(c + 1)) {
      const int v = visits + it, ks = v % L::kKStages, vs = v % L::kVStages;
      const int n0 = blk.tile_n0(c), row = blk.seq.k_start + n0;
      if (v >= L::kKStages) mbar_wait(bar.k_empty(ks), unsigned(v / L::kKStages - 1) & 1u);
      if (lane == 0) load(1, tp.k_map, blk.k_stage(v), L::kDP / 64, kBN, row, hk, bar.k_full(ks));
      if (v >= L::kVStages) mbar_wait(bar.v_empty(vs), unsigned(v / L::kVStages - 1) & 1u);
      // >= 1: every policy's kv_range ends at the sequence's keys, so a visited tile starts before
      // their end (a policy that broke this would make the zeroing below leave its stage).
      const int valid = blk.seq.mkv - n0;
      if (valid >= kBN) {
        if (lane == 0) load(2, tp.v_map, blk.v_stage(v), L::kDvP / 64, kBN, row, hk, bar.v_full(vs));
        continue;
      }
      if (lane == 0) load(2, tp.v_map, blk.v_stage(v), L::kDvP / 64, kBN, row, hk, bar.tail());
      mbar_wait(bar.tail(), tail_parity);
      tail_parity ^= 1u;
      constexpr int kPanels = L::kDvP / 64;
      const int chunks = (kBN - valid) * 8;  // 16-byte chunks past the keys, per panel (all of a row)
      for (int x = lane; x < kPanels * chunks; x += 32) {
        const unsigned at = blk.v_stage(v) + (x / chunks) * kBN * 128 + valid * 128 + (x % chunks) * 16;
        asm volatile("st.shared.v4.u32 [%0], {%1, %1, %1, %1};\n" ::"r"(at), "r"(0u) : "memory");
      }
      fence_proxy_async();  // the zeros before the wgmma that read them
      __syncwarp();
      if (lane == 0) mbar_arrive(bar.v_full(vs));
    }
    visits += n_visits;
  }
}

template <class Cfg, class Policy>
__device__ __forceinline__ void fwd_tma(const FwdTmaParams& tp) {
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  const unsigned smem = (smem_addr(smem_raw) + 1023u) & ~1023u;
  using L = FwdTmaLayout<Cfg>;
  using B = FwdWgmmaBlock<Cfg, Policy, L>;
  const bool producer = threadIdx.x < 128;
  const FwdTmaBarriers<L> bar{smem + L::kTileBytes};
  if (threadIdx.x == 0) bar.init();
  __syncthreads();
  if (producer) {
    setmaxnreg_dec<L::kProducerRegs>();
    if (threadIdx.x < 32) fwd_tma_produce<Cfg, L, B>(tp, smem, bar);
    return;
  }
  setmaxnreg_inc<L::kMmaRegs>();

  const int lane = threadIdx.x % 32;
  auto release = [&](unsigned b) {
    if (lane == 0) mbar_arrive(b);
  };
  auto k_landed = [&](int v) { mbar_wait(bar.k_full(v % L::kKStages), unsigned(v / L::kKStages) & 1u); };
  auto v_landed = [&](int v) { mbar_wait(bar.v_full(v % L::kVStages), unsigned(v / L::kVStages) & 1u); };
  // Turns: warpgroup g waits at barrier 1 + g before a batch and lets g + 1 (cyclically) go
  // after it. Each issues n_visits + 1 batches per item; the last warpgroup lets 0 go first and
  // skips its own last arrival (nobody waits for it), so every barrier completes as often as it
  // is waited at, item by item.
  constexpr unsigned kLast = L::kGroups - 1;
  const unsigned group = unsigned(threadIdx.x - 128) / 128;
  auto my_turn = [&]() { named_barrier_sync(1 + group, 256); };
  auto your_turn = [&](bool last) {
    if (!(last && group == kLast)) named_barrier_arrive(1 + (group + 1) % L::kGroups, 256);
  };
  const int items = FwdTmaSchedule<Cfg::kBlockM>(tp.f).items;
  int visits = 0, q_uses = 0;  // as the producer counts them
  for (int r = 0;; ++r) {
    const int slot = r % L::kItemSlots;
    mbar_wait(bar.item_full(slot), unsigned(r / L::kItemSlots) & 1u);
    int id;
    asm volatile("ld.shared.u32 %0, [%1];\n" : "=r"(id) : "r"(bar.item_slot(slot)) : "memory");
    if (id >= items) {
      mbar_arrive(bar.item_empty(slot));
      break;
    }
    B blk = B::make_at(tp.f, smem, int(threadIdx.x) - 128, id, Policy::kSkipsTiles ? bar.tiles_slot(slot) : 0u);
    mbar_arrive(bar.item_empty(slot));  // each lane, after its own reads of the slot
    if (blk.empty()) continue;  // varlen: a shorter sequence
    const int n_visits = blk.tiles.count();
    if (n_visits == 0) {  // rows that see no key: zeros (and LSE -inf)
      blk.store();
      continue;
    }
    if (group == kLast) named_barrier_arrive(1, 256);
    int c = blk.tiles.next(0);
    unsigned pa[B::kKP][4];  // P(it - 1), the A operand of the product in flight
    mbar_wait(bar.q_full(), unsigned(q_uses) & 1u);
    ++q_uses;
    {
      float s[B::kNT][4], alpha[2];
      k_landed(visits);
      my_turn();
      wgmma_fence();
      blk.issue_s(s, visits);
      your_turn(false);
      wgmma_wait<0>();
      wgmma_hold(s);
      release(bar.k_empty(visits % L::kKStages));
      if (n_visits == 1) release(bar.q_empty());
      blk.softmax(s, c, alpha);
      blk.to_p(pa, s, c);
    }
    for (int it = 1; it < n_visits; ++it) {
      c = blk.tiles.next(c + 1);
      const int v = visits + it;
      float s[B::kNT][4], alpha[2];
      k_landed(v);
      v_landed(v - 1);  // copied before K(it): no wait between the two products
      my_turn();
      wgmma_fence();
      blk.issue_s(s, v);
      blk.issue_pv(pa, v - 1);
      your_turn(false);
      wgmma_wait<1>();  // S(it) is done; P(it-1)·V(it-1) may still run
      wgmma_hold(s);
      release(bar.k_empty(v % L::kKStages));
      if (it == n_visits - 1) release(bar.q_empty());  // the producer may load the next item's Q
      blk.softmax(s, c, alpha);
      wgmma_wait<0>();
      wgmma_hold(blk.acc);
      wgmma_hold(pa);
      release(bar.v_empty((v - 1) % L::kVStages));
      fwd_rescale(blk.acc, alpha);
      blk.to_p(pa, s, c);
    }
    visits += n_visits;
    v_landed(visits - 1);
    my_turn();
    wgmma_fence();
    blk.issue_pv(pa, visits - 1);
    your_turn(true);
    wgmma_wait<0>();
    wgmma_hold(blk.acc);
    release(bar.v_empty((visits - 1) % L::kVStages));
    blk.store();
  }
}

}  // namespace jitattn
