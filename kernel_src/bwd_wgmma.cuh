// Backward attention on Hopper's warpgroup MMA (sm_90a): bwd_mma.cuh's algorithm with wgmma.
//
// One block owns kBlockN = 64·(warpgroups) keys of one (sequence, key/value head) and walks
// every query block that sees them, for every query head of the GQA group (dK and dV summed over
// the group in registers), as bwd_mma.cuh does. Warpgroup w owns keys 64w..64w+63 and keeps
// their dK and dV accumulators in registers. Per query block of kBlockM queries:
//   Sᵀ = K·Qᵀ and dPᵀ = V·dOᵀ: both operands in shared memory, K-major (M = the warpgroup's 64
//     keys, N = kBlockM queries);
//   Pᵀ and dSᵀ in registers (bwd_tile.cuh); dV += Pᵀ·dO and dK += dSᵀ·Q take them as register
//     A operands and dO, Q from shared memory, MN-major (read transposed). The tma form past
//     d = 64 (kOperandsSmem) stores Pᵀ and dSᵀ to shared memory first and reads both from there,
//     so that no A operand holds registers while the products run;
//   dQ += dS·K (kDq): dSᵀ goes to shared memory as [key][query]; after the next block barrier
//     each warpgroup multiplies its kDqM-th 64 queries × kDqN columns of it (A = dS and B = K,
//     both MN-major) behind that iteration's dV/dK products. The pieces meet in shared memory in
//     fp32, 128-byte swizzled boxes of 32 columns, and after the next block barrier the copy
//     engine adds each box into dq_accum through the tensor map BwdParams::dq_map
//     (cp.reduce.async.bulk.tensor). On the H200 at d = 128, per-thread fp32 reductions of the
//     same values (red.global.add.v2) made the kernel 1.6× slower than leaving them out, and so
//     did a bulk reduction per (padded) row (docs/perf-notes.md).
//     Rows of a box past the sequence's end add zeros (their dS rows are zero) to the rows after
//     it: the next sequence's, padding, or the next head's; the map clips at dq_accum's end.
//     The deterministic mode leaves kDq off (bwd_dq_mma.cuh).
// Q, dO, lse and delta of the next query block load (cp.async) during the current one. Every tile
// is 128-byte swizzled (wgmma.cuh).
//
// With Cfg::kTma (the tma family, sm_90a) the block is warp-specialized, as fwd_tma.cuh is: a
// producer warpgroup in front (threads 0..127) and the multiplying warpgroups behind it, which
// then do nothing but the products, the elementwise step and the shared-memory stores above.
//   Warp 0 loads Q(it) and dO(it) as boxes of the tensor maps BwdParams::q_map / do_map (encoded on
//     the host per call) and lse/delta with plain loads, into two stages, each with a "full"
//     mbarrier (the copy engine's bytes and warp 0's own stores) and an "empty" one (an arrival
//     from every multiplying thread once its products of that visit are done). A box that runs past the
//     sequence's queries lands on a barrier of its own first, and warp 0 zeroes those rows (0·NaN
//     would poison dK and dV: they may be the next sequence's rows, not zeros).
//   Warp 1 adds each query block's dQ into dq_accum (the tensor reductions above) once the
//     multiplying warps have stored it ("dq full") and hands the rows back when the copy engine has
//     read them ("dq empty").
//   dSᵀ(it) is handed between the two multiplying warpgroups by a "ds full" barrier per buffer (it
//     needs both groups' keys for dQ) and back by a "ds empty" one, so no barrier of the whole block
//     runs after the start and the warpgroups drift apart by up to a visit.
// The producer warpgroup gives its registers to the others (setmaxnreg: 24 and 240 per thread).
// At d = 128 those 240 hold dK and dV (128), Sᵀ and dPᵀ (64), ~24 addresses and counters, and
// dQ, which therefore accumulates in Sᵀ's registers (dq_acc below); with dQ in registers of its
// own, or Pᵀ and dSᵀ as register operands, ptxas serialized the wgmma pipeline (C7512).
//
// Cfg as in bwd_mma.cuh. This family takes head dims (query/key, value) 64/64, 128/64 or 128/128,
// kBlockM 64 or 128 (whose dQ pieces are 32 columns or more), kBlockN = 64 per warpgroup,
// kAlign16, f16/bf16 (jit/tile_table.cpp picks it only then).
#pragma once
#include "bias_policies.cuh"
#include "bwd_tile.cuh"
#include "common.cuh"
#include "wgmma.cuh"

namespace jitattn {

template <class Cfg>
struct BwdWgmmaLayout {
  static constexpr int kProducers = Cfg::kTma ? 1 : 0;             // the tma family's producer warpgroup
  static constexpr int kGroups = Cfg::kWarps / 4 - kProducers;  // warpgroups that multiply, 64 keys each
  static constexpr int kThreads = Cfg::kWarps * 32;
  static constexpr int kBM = Cfg::kBlockM, kBN = Cfg::kBlockN;
  static constexpr int kKBytes = kBN * Cfg::kHeadDim * 2, kVBytes = kBN * Cfg::kHeadDimV * 2;
  static constexpr int kQBytes = kBM * Cfg::kHeadDim * 2, kOBytes = kBM * Cfg::kHeadDimV * 2;  // a stage of Q, dO
  static constexpr int kSBytes = Cfg::kDq ? kBN * kBM * 2 : 0;  // a stage of dSᵀ
  // kOperandsSmem (the tma family past d = 64): dV += Pᵀ·dO and dK += dSᵀ·Q read Pᵀ and dSᵀ from
  // shared memory (Pᵀ from one buffer of its own, dSᵀ from the one stored for dQ), so that no A
  // operand holds registers while the products run.
  static constexpr bool kOperandsSmem = Cfg::kTma && Cfg::kDq && Cfg::kHeadDim > 64;
  static constexpr int kPBytes = kOperandsSmem ? kBN * kBM * 2 : 0;
  // dQ of a query block (kBM × kHeadDim): warpgroup w computes queries 64·(w % kDqM).. and
  // columns kDqN·(w / kDqM)..
  static constexpr int kDqM = kBM / 64;
  static constexpr int kDqN = Cfg::kHeadDim * kDqM / kGroups;
  // The query block's dQ in fp32 for the copy engine: kHeadDim / 32 boxes of kBM rows × 128 bytes,
  // 16-byte chunk c of row r at chunk position c ^ (r % 8) (the map's 128-byte swizzle).
  static constexpr int kDqBoxBytes = kBM * 128;
  static constexpr int kDqBytes = Cfg::kDq ? kBM * Cfg::kHeadDim * 4 : 0;
  // The tma family's barriers (BwdTmaBarriers): full and empty per stage of Q/dO, ds full and
  // empty per dSᵀ buffer, dq full, dq empty, the tail's.
  static constexpr int kBarriers = Cfg::kTma ? 2 * 2 + 2 * 2 + 3 : 0;
  // Registers per thread after setmaxnreg. setmaxnreg.inc takes only registers the block's own
  // warps gave back: from the 168 per thread that ptxas gives 384 threads under
  // __launch_bounds__(384, 1), 128·(168 − 24) = 256·(240 − 168). (32 for the producer, which at 24
  // spills a few bytes, left the multiplying warps waiting for registers for ever.)
  static constexpr int kProducerRegs = 24, kMmaRegs = 240;
  // 1024 bytes of slack for the 1024-byte alignment of the swizzled tiles; K, V; two stages of
  // Q, dO and dSᵀ; dQ; lse and delta, two stages each; the barriers.
  static constexpr int kSmemBytes =
      1024 + kKBytes + kVBytes + 2 * (kQBytes + kOBytes + kSBytes) + kPBytes + kDqBytes + 2 * 2 * kBM * 4 + 8 * kBarriers;
  static_assert(Cfg::kWarps % 4 == 0 && kBN == 64 * kGroups, "one warpgroup (4 warps) per 64 keys (and the producer's)");
  static_assert(kBM == 64 || kBM == 128, "query blocks of 64 or 128");
  static_assert(!Cfg::kTma || (Cfg::kWarps == 12 && kProducerRegs * 128 + kMmaRegs * 256 <= 168 * 384),
                "the multiplying warps take no more registers than the producer gives back");
  static_assert((Cfg::kHeadDim == 64 || Cfg::kHeadDim == 128) && (Cfg::kHeadDimV == 64 || Cfg::kHeadDimV == 128),
                "head dims 64 or 128");
  static_assert(kGroups % kDqM == 0 && kDqN % 32 == 0, "the dQ product must tile over the warpgroups");
  static_assert(Cfg::kAlign16 && Cfg::kDType != kF32, "16-byte aligned f16/bf16 rows");
};

__device__ __forceinline__ void st_shared_u32(unsigned addr, unsigned x) {
  asm volatile("st.shared.u32 [%0], %1;\n" ::"r"(addr), "r"(x) : "memory");
}

// The tma family's barriers, by shared address (after lse and delta).
struct BwdTmaBarriers {
  unsigned base;
  __device__ unsigned full(int s) const { return base + 8 * s; }
  __device__ unsigned empty(int s) const { return base + 8 * (2 + s); }
  __device__ unsigned ds_full(int b) const { return base + 8 * (4 + b); }
  __device__ unsigned ds_empty(int b) const { return base + 8 * (6 + b); }
  __device__ unsigned dq_full() const { return base + 8 * 8; }
  __device__ unsigned dq_empty() const { return base + 8 * 9; }
  __device__ unsigned tail() const { return base + 8 * 10; }
  // Every thread that wrote or read what a barrier hands over arrives on it itself (not one lane
  // per warp after __syncwarp), as CUTLASS's pipelines count their consumers.
  __device__ void init(int mma_threads) const {  // thread 0; a __syncthreads() follows
    for (int s = 0; s < 2; ++s) {
      mbar_init(full(s), 1 + 32);  // the box bytes' arrival (or a plain one), then warp 0's lanes
      mbar_init(empty(s), unsigned(mma_threads));
      mbar_init(ds_full(s), unsigned(mma_threads));
      mbar_init(ds_empty(s), unsigned(mma_threads));
    }
    mbar_init(dq_full(), unsigned(mma_threads));
    mbar_init(dq_empty(), 32);
    mbar_init(tail(), 1);
  }
};

// The query blocks a block visits, in order: candidate c is query block m_first + c % n_m of head
// head0 + c / n_m (bwd_wgmma below).
struct BwdVisits {
  int head0, n_m, m_first, block_m;
  __device__ int head(int c) const { return head0 + c / n_m; }
  __device__ int m0(int c) const { return (m_first + c % n_m) * block_m; }
};

// Warp 0 of the tma family's producer warpgroup: Q, dO (boxes), lse and delta (plain loads) of each
// visit into stage it % 2, in the order the multiplying warps consume them.
template <class Cfg, class Seq, class Tiles>
__device__ __forceinline__ void bwd_tma_produce(const BwdParams& bp, const Seq& seq, const Tiles& tiles, int n_visits,
                                                const BwdVisits& at, unsigned sQ, unsigned sO, float* sLse, float* sDelta,
                                                const BwdTmaBarriers& bar) {
  using L = BwdWgmmaLayout<Cfg>;
  constexpr int kBM = Cfg::kBlockM;
  const FwdParams& p = bp.f;
  const int lane = threadIdx.x % 32, mq = seq.mq;
  unsigned tail_parity = 0;
  int c = tiles.next(0);
  for (int it = 0; it < n_visits; ++it, c = tiles.next(c + 1)) {
    const int s = it & 1, h = at.head(c), m0 = at.m0(c);
    if (it >= 2) mbar_wait(bar.empty(s), unsigned((it - 2) / 2) & 1u);
    // Rows of the box past the sequence's queries: another sequence's (or zeros past the tensor).
    const int valid = imin(mq - m0, kBM);
    const bool tail = valid < kBM;
    const unsigned qdo_bar = tail ? bar.tail() : bar.full(s);
    if (lane == 0) {
      auto load = [&](int t, const void* map, unsigned dst, int panels) {
        const int32_t(&dim_of)[3] = bp.tma_dim[t];
        auto coord = [&](int dim) {
          return dim_of[0] == dim ? seq.q_start + m0 : dim_of[1] == dim ? h : dim_of[2] == dim ? seq.batch : 0;
        };
        for (int pn = 0; pn < panels; ++pn) tma_load_4d(dst + pn * kBM * 128, map, pn * 64, coord(1), coord(2), coord(3), qdo_bar);
      };
      mbar_arrive_expect_tx(qdo_bar, unsigned(bp.tma_bytes[0] + bp.tma_bytes[1]));
      load(0, bp.q_map, sQ + s * L::kQBytes, Cfg::kHeadDim / 64);
      load(1, bp.do_map, sO + s * L::kOBytes, Cfg::kHeadDimV / 64);
      if (tail) mbar_arrive(bar.full(s));  // its first arrival, without bytes: they land on the tail's
    }
    const float* lse = p.lse + seq.batch * p.lse_stride_b + h * p.lse_stride_h + seq.q_start;
    const float* delta = bp.delta + (int64_t(seq.batch) * p.heads + h) * p.mq_rows + seq.q_start;
    for (int i = lane; i < kBM; i += 32) {  // rows past the queries read 0, as load_floats
      const bool in = i < valid;
      sLse[s * kBM + i] = in ? lse[m0 + i] : 0.f;
      sDelta[s * kBM + i] = in ? delta[m0 + i] : 0.f;
    }
    if (tail) {
      mbar_wait(bar.tail(), tail_parity);
      tail_parity ^= 1u;
      const int chunks = (kBM - valid) * 8;  // 16-byte chunks past the queries, per 64-column panel
      auto zero = [&](unsigned tile, int panels) {
        for (int x = lane; x < panels * chunks; x += 32) {
          const unsigned at_ = tile + (x / chunks) * kBM * 128 + (valid + (x % chunks) / 8) * 128 + (x % 8) * 16;
          asm volatile("st.shared.v4.u32 [%0], {%1, %1, %1, %1};\n" ::"r"(at_), "r"(0u) : "memory");
        }
      };
      zero(sQ + s * L::kQBytes, Cfg::kHeadDim / 64);
      zero(sO + s * L::kOBytes, Cfg::kHeadDimV / 64);
      fence_proxy_async();  // the zeros before the wgmma that read them
    }
    mbar_arrive(bar.full(s));  // this lane's rows of lse, delta (and zeros) are stored
  }
}

// Warp 1 of the tma family's producer warpgroup: each visit's dQ, once the multiplying warps have
// stored it, added into dq_accum (one box reduction per 32 columns, lanes 0 .. kHeadDim / 32 - 1).
template <class Cfg, class Seq, class Tiles>
__device__ __forceinline__ void bwd_tma_add_dq(const BwdParams& bp, const Seq& seq, const Tiles& tiles, int n_visits,
                                               const BwdVisits& at, unsigned sDq, const BwdTmaBarriers& bar) {
  using L = BwdWgmmaLayout<Cfg>;
  const FwdParams& p = bp.f;
  const int lane = threadIdx.x % 32;
  const bool adds = lane < Cfg::kHeadDim / 32;
  int c = tiles.next(0);
  for (int it = 0; it < n_visits; ++it, c = tiles.next(c + 1)) {
    mbar_wait(bar.dq_full(), unsigned(it) & 1u);
    if (adds) {
      const int row0 = (seq.batch * p.heads + at.head(c)) * p.mq_rows + seq.q_start + at.m0(c);
      tma_reduce_add_2d(bp.dq_map, sDq + lane * L::kDqBoxBytes, lane * 32, row0);
      bulk_commit();
      bulk_wait<0, true>();  // read: the rows may be overwritten
    }
    mbar_arrive(bar.dq_empty());
  }
  if (adds) bulk_wait<0, false>();
}

template <class Cfg, class Policy>
__device__ __forceinline__ void bwd_wgmma(const BwdParams& bp) {
  const FwdParams& p = bp.f;
  using L = BwdWgmmaLayout<Cfg>;
  using T = typename DType<Cfg::kDType>::T;
  constexpr int kDT = Cfg::kDType;
  constexpr int kBM = Cfg::kBlockM, kBN = Cfg::kBlockN, kD = Cfg::kHeadDim, kDv = Cfg::kHeadDimV;
  constexpr int kThreads = L::kThreads, kDqN = L::kDqN;
  constexpr int kNT = kBM / 8;   // 8-wide query tiles of Sᵀ
  constexpr int kKP = kBM / 16;  // 16-query steps of dV and dK

  extern __shared__ __align__(1024) unsigned char smem_raw[];
  const unsigned raw = smem_addr(smem_raw), smem = (raw + 1023u) & ~1023u;
  const unsigned sK = smem, sV = sK + L::kKBytes;
  const unsigned sQ = sV + L::kVBytes, sO = sQ + 2 * L::kQBytes, sS = sO + 2 * L::kOBytes;  // two stages each
  const unsigned sP = sS + 2 * L::kSBytes;                                       // kOperandsSmem only
  const unsigned sDq = sP + L::kPBytes;                                          // kHeadDim / 32 boxes
  float* sLse = reinterpret_cast<float*>(smem_raw + (sDq + L::kDqBytes - raw));  // [2][kBM]
  float* sDelta = sLse + 2 * kBM;                                                  // [2][kBM]
  const BwdTmaBarriers bar{sDq + L::kDqBytes + 2 * 2 * kBM * 4};                  // kTma only

  const int n_blocks = ceil_div(bp.max_mkv, kBN);
  const int n_block = blockIdx.x % n_blocks;
  const int pair = blockIdx.x / n_blocks;
  const int hk = pair % bp.kv_heads, b = pair / bp.kv_heads;
  const SeqGeometry<Cfg::kVarlen> seq(p, b);
  const int mq = seq.mq, mkv = seq.mkv;
  const int k_lo = n_block * kBN;
  if (k_lo >= mkv) return;  // varlen: this sequence has fewer keys
  // wg: the multiplying warpgroup (the producer's is -1).
  const int tid = threadIdx.x, wg = tid / 128 - L::kProducers, warp = (tid / 32) % 4, lane = tid % 32;
  const int g = lane / 4, t = lane % 4;
  const int j0 = k_lo + wg * 64 + warp * 16;  // this thread's keys: j0 + g and j0 + g + 8
  const int group = p.kv_group;

  const Rows<T, false> k = kv_rows<T, false>(p, p.k, p.k_stride_b, p.k_stride_h, p.k_stride_m, seq, hk, b);
  const Rows<T, false> v = kv_rows<T, false>(p, p.v, p.v_stride_b, p.v_stride_h, p.v_stride_m, seq, hk, b);
  load_tile_sw128<kBN, kD, kThreads>(sK, k, k_lo, mkv, tid);
  load_tile_sw128<kBN, kDv, kThreads>(sV, v, k_lo, mkv, tid);
  cp_async_commit();
  if constexpr (Cfg::kTma)
    if (tid == 0) bar.init(128 * L::kGroups);

  // The query blocks that see these keys (the same for every head of the group); candidates and
  // skipped tiles as in bwd_mma.cuh.
  int q_begin, q_end;
  {
    const Policy policy(p, b, hk * group, mq, mkv);
    policy.q_range(k_lo, imin(k_lo + kBN, mkv), mq, q_begin, q_end);
  }
  const int m_first = q_begin / kBM;
  const int n_m = q_end > q_begin ? ceil_div(q_end, kBM) - m_first : 0;
  const int n_iters = n_m * group;
  auto head_of = [&](int c) { return hk * group + c / n_m; };
  auto m0_of = [&](int c) { return (m_first + c % n_m) * kBM; };
  TileSet<Policy::kSkipsTiles, Policy::kBaseTiles> tiles;
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
    load_tile_sw128<kBM, kD, kThreads>(sQ + buf * L::kQBytes, q, m0, mq, tid);
    load_tile_sw128<kBM, kDv, kThreads>(sO + buf * L::kOBytes, dout, m0, mq, tid);
    const float* lse = p.lse + seq.batch * p.lse_stride_b + h * p.lse_stride_h + seq.q_start;
    const float* delta = bp.delta + (int64_t(seq.batch) * p.heads + h) * p.mq_rows + seq.q_start;
    load_floats<kBM, kThreads>(sLse + buf * kBM, lse, m0, mq);
    load_floats<kBM, kThreads>(sDelta + buf * kBM, delta, m0, mq);
  };
  int c = tiles.next(0);
  if constexpr (!Cfg::kTma)
    if (n_visits > 0) issue_loads(0, c);
  cp_async_commit();
  if constexpr (Cfg::kTma) {  // K and V land, the barriers are initialized; then each warpgroup to its part
    cp_async_wait<0>();
    fence_proxy_async();
    __syncthreads();
    if (wg < 0) {
      setmaxnreg_dec<L::kProducerRegs>();
      const BwdVisits at{hk * group, n_m, m_first, kBM};
      if (warp == 0) bwd_tma_produce<Cfg>(bp, seq, tiles, n_visits, at, sQ, sO, sLse, sDelta, bar);
      else if (Cfg::kDq && warp == 1) bwd_tma_add_dq<Cfg>(bp, seq, tiles, n_visits, at, sDq, bar);
      return;
    }
    setmaxnreg_inc<L::kMmaRegs>();
  }

  float dk[1][kD / 8][4], dv[1][kDv / 8][4];
#pragma unroll
  for (int i = 0; i < kD / 8; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[0][i][e] = 0.f;
#pragma unroll
  for (int i = 0; i < kDv / 8; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) dv[0][i][e] = 0.f;

  // Sᵀ = K·Qᵀ and dPᵀ = V·dOᵀ of stage `buf`, issued and committed as two groups: every
  // 16-column step moves 32 bytes along a panel of this warpgroup's 64 key rows and of the query
  // block's rows.
  auto issue_sdp = [&](float (&s)[kNT][4], float (&dp)[kNT][4], int buf) {
    const unsigned sq = opaque(sQ + buf * L::kQBytes), so = opaque(sO + buf * L::kOBytes);
    const unsigned k_rows = opaque(sK + wg * 64 * 128), v_rows = opaque(sV + wg * 64 * 128);
#pragma unroll
    for (int ks = 0; ks < kD / 16; ++ks) {
      const unsigned panel = ks / 4, col = (ks % 4) * 32;
      wgmma_ss<kBM, kDT>(s, wgmma_desc(k_rows + panel * kBN * 128 + col, 16, 1024),
                         wgmma_desc(sq + panel * kBM * 128 + col, 16, 1024), ks > 0);
    }
    wgmma_commit();
#pragma unroll
    for (int ks = 0; ks < kDv / 16; ++ks) {
      const unsigned panel = ks / 4, col = (ks % 4) * 32;
      wgmma_ss<kBM, kDT>(dp, wgmma_desc(v_rows + panel * kBN * 128 + col, 16, 1024),
                         wgmma_desc(so + panel * kBM * 128 + col, 16, 1024), ks > 0);
    }
    wgmma_commit();
  };
  // This warpgroup's piece of dQ = dS·K from dSᵀ stage `buf`, issued and committed. Both operands
  // are MN-major: 16-key steps are 2048 bytes apart, 64-column panels kBN·128.
  const int dq_m = wg % L::kDqM, dq_n = wg / L::kDqM;
  auto issue_dq = [&](float (&dq)[kDqN / 8][4], int buf) {
    const unsigned a0 = opaque(sS + buf * L::kSBytes + dq_m * kBN * 128);
    const unsigned b0 = opaque(sK + (dq_n * kDqN / 64) * kBN * 128 + (dq_n * kDqN % 64) * 2);
#pragma unroll
    for (int ks = 0; ks < kBN / 16; ++ks)
      wgmma_ss_tt<kDqN, kDT>(dq, wgmma_desc(a0 + ks * 2048, kBN * 128, 1024), wgmma_desc(b0 + ks * 2048, kBN * 128, 1024),
                             ks > 0);
    wgmma_commit();
  };
  // One visit: Sᵀ and dPᵀ issued as two groups. With kSplitWait, once Sᵀ lands Pᵀ is computed
  // (bwd_wgmma_p) while dPᵀ's product still runs, and dSᵀ (bwd_wgmma_ds) once dPᵀ lands;
  // otherwise both wait for both (bwd_probs). Then dSᵀ is stored for dQ, and dV += Pᵀ·dO and
  // dK += dSᵀ·Q are issued (pa and sa are their A operands: untouched until the wait).
  // kSplitWait only at d = 64: at d = 128 it spilled 24–72 bytes and ran 10% slower (H200,
  // non-causal; docs/perf-notes.md), where at d = 64 it gained 2–5%. Issuing dV before dSᵀ, so
  // that its product ran beside bwd_wgmma_ds, kept pa in flight across that step, and at d = 128
  // ptxas serialized the wgmma pipeline for want of registers. Tiles take the masked path (bounds
  // and the policy's logit per element), but for kUnmaskedTiles: a second, unmasked copy of the
  // step made ptxas serialize the cp.async form, and it spilled 580 bytes in the tma form with
  // dropout. Where the tma form at d = 128 has it, a warp whose 16 keys × kBM queries lie inside
  // the sequence and are all visible (tile_full) skips the mask: 1–6% faster (H200,
  // docs/perf-notes.md). Without kSplitWait no product is in flight there, and a user mask_mod
  // whose map is full on the tile (states 2 and 3, kBaseTiles) is left out: the built-in mask
  // under it masks alone.
  constexpr bool kSplitWait = kD <= 64 && kDv <= 64;
  constexpr bool kUnmaskedTiles = L::kOperandsSmem && !Cfg::kDropout && !Policy::kElementwise && !Policy::kBaseTiles;
  // dQ(it - 1)'s product runs after visit it's Sᵀ is dead: where their shapes agree (d = 128 with
  // kBM = 64) it accumulates in Sᵀ's registers. ptxas gave each wgmma accumulator registers of its
  // own, and at d = 128 the tma form's 32 for dQ beside Sᵀ's were what serialized its pipeline
  // (C7512) under setmaxnreg's 240. (The cp.async form, at 255, serialized with it: C7515.)
  constexpr bool kDqInS = Cfg::kTma && kDqN / 8 == kNT;
  float s[1][kNT][4], dp[1][kNT][4], dq_own[1][kDqInS ? 1 : kDqN / 8][4];
  auto dq_acc = [&]() -> float (&)[kDqN / 8][4] {
    if constexpr (kDqInS) return s[0];
    else return dq_own[0];
  };
  unsigned pa[kKP][4], sa[kKP][4];
  auto visit_products = [&](int it, int c) {
    const int h = head_of(c), m0 = m0_of(c);
    const int buf = it & 1;
    wgmma_fence();
    issue_sdp(s[0], dp[0], buf);
    const Policy policy(p, b, h, mq, mkv);
    if constexpr (kSplitWait) {
      wgmma_wait<1>();
      wgmma_hold(s[0]);
      unsigned kept[(kNT + 7) / 8];
      bwd_wgmma_p<Cfg>(s[0], pa, kept, p, policy, seq, h, m0, j0, g, t, sLse + buf * kBM);
      wgmma_wait<0>();
      wgmma_hold(dp[0]);
      bwd_wgmma_ds<Cfg>(dp[0], s[0], kept, p, t, sDelta + buf * kBM);
#pragma unroll
      for (int kp = 0; kp < kKP; ++kp)
        if constexpr (!Cfg::kDropout && !Policy::kScoreGrad) bwd_a_fragment<kDT>(pa[kp], s[0], kp);
    } else {
      wgmma_wait<0>();
      wgmma_hold(s[0]);
      wgmma_hold(dp[0]);
      float pd[1][kNT][4];
      bool base_only = false;
      if constexpr (Policy::kBaseTiles) base_only = tiles.full(c) || tiles.base_only(c);
      if constexpr (Policy::kBaseTiles) {
        if (base_only) bwd_probs<Cfg, true>(s, dp, pd, p, policy.base, seq, h, m0, j0, g, t, sLse + buf * kBM, sDelta + buf * kBM);
      }
      if constexpr (kUnmaskedTiles) {
        // This warp's 16 keys × the query block inside the sequence and visible: no per-element mask.
        const bool full = m0 + kBM <= mq && j0 + 16 <= mkv && policy.tile_full(m0, m0 + kBM, j0, j0 + 16);
        if (full) bwd_probs<Cfg, false>(s, dp, pd, p, policy, seq, h, m0, j0, g, t, sLse + buf * kBM, sDelta + buf * kBM);
        else bwd_probs<Cfg, true>(s, dp, pd, p, policy, seq, h, m0, j0, g, t, sLse + buf * kBM, sDelta + buf * kBM);
      } else if (!base_only) {
        bwd_probs<Cfg, true>(s, dp, pd, p, policy, seq, h, m0, j0, g, t, sLse + buf * kBM, sDelta + buf * kBM);
      }
#pragma unroll
      for (int kp = 0; kp < kKP; ++kp) bwd_a_fragment<kDT>(pa[kp], Cfg::kDropout ? pd[0] : s[0], kp);
    }
    if constexpr (Cfg::kDBias) bwd_store_dbias<Cfg>(dp, bp, seq, h, m0, j0, g, t);
#pragma unroll
    for (int kp = 0; kp < kKP; ++kp) bwd_a_fragment<kDT>(sa[kp], dp[0], kp);
    // a[kp] holds keys r and r + 8, queries 16·kp + 2t (+1) and 16·kp + 8 + 2t (+1), into a
    // [key][query] tile of kBN rows.
    const int r = wg * 64 + warp * 16 + g;
    auto store_fragments = [&](unsigned tile, const unsigned (&a)[kKP][4]) {
      // kOperandsSmem: r ≡ r + 8 ≡ g (mod 8), so 16-byte chunk c of either row lies at the row's
      // address with c·16 XORed into its bits 4..6, which hold g; from one base per call, which the
      // compiler may not hoist. Two tiles' 16 addresses each, kept across the loop, spilled 100
      // bytes at d = 128 (ptxas); in the other forms the plain offsets spill least.
      const unsigned base = L::kOperandsSmem ? opaque(tile + unsigned(r * 128 + (g << 4) + 4 * t)) : 0u;
#pragma unroll
      for (int kp = 0; kp < kKP; ++kp)
#pragma unroll
        for (int half = 0; half < 2; ++half)
#pragma unroll
          for (int e2 = 0; e2 < 2; ++e2) {
            const int chunk = 2 * kp + half;
            if constexpr (L::kOperandsSmem)
              st_shared_u32((base ^ unsigned((chunk % 8) << 4)) + unsigned(chunk / 8) * kBN * 128 + unsigned(e2) * 1024u,
                            a[kp][2 * half + e2]);
            else
              st_shared_u32(tile + sw128_offset(kBN, r + 8 * e2, chunk) + 4 * t, a[kp][2 * half + e2]);
          }
    };
    if constexpr (L::kOperandsSmem) store_fragments(sP, pa);  // dV(it - 1) has read it: its wait ended that pass
    if constexpr (Cfg::kDq) {
      // The dQ products of visit it - 2 have read this buffer (tma: both warpgroups'; else the
      // block barrier at the top of the pass said so).
      if (Cfg::kTma && it >= 2) mbar_wait(bar.ds_empty(buf), unsigned((it - 2) / 2) & 1u);
      store_fragments(sS + buf * L::kSBytes, sa);
      if constexpr (Cfg::kTma) {  // for the other warpgroup's dQ product (async proxy)
        fence_proxy_async();
        mbar_arrive(bar.ds_full(buf));
      }
      if constexpr (L::kOperandsSmem) named_barrier_sync(2 + wg, 128);  // this warpgroup's rows, for its dK
    }
    const unsigned sq = opaque(sQ + buf * L::kQBytes), so = opaque(sO + buf * L::kOBytes);
    wgmma_fence();
    if constexpr (L::kOperandsSmem) {  // A: this warpgroup's 64 key rows of Pᵀ and dSᵀ, K-major
      const unsigned ps = opaque(sP + wg * 64 * 128), ds = opaque(sS + buf * L::kSBytes + wg * 64 * 128);
#pragma unroll
      for (int kp = 0; kp < kKP; ++kp)
        wgmma_ss_tb<kDv, kDT>(dv[0], wgmma_desc(ps + (kp / 4) * kBN * 128 + (kp % 4) * 32, 16, 1024),
                              wgmma_desc(so + kp * 2048, kBM * 128, 1024));
#pragma unroll
      for (int kp = 0; kp < kKP; ++kp)
        wgmma_ss_tb<kD, kDT>(dk[0], wgmma_desc(ds + (kp / 4) * kBN * 128 + (kp % 4) * 32, 16, 1024),
                             wgmma_desc(sq + kp * 2048, kBM * 128, 1024));
    } else {
#pragma unroll
      for (int kp = 0; kp < kKP; ++kp) wgmma_rs_tb<kDv, kDT>(dv[0], pa[kp], wgmma_desc(so + kp * 2048, kBM * 128, 1024));
#pragma unroll
      for (int kp = 0; kp < kKP; ++kp) wgmma_rs_tb<kD, kDT>(dk[0], sa[kp], wgmma_desc(sq + kp * 2048, kBM * 128, 1024));
    }
    wgmma_commit();
  };

  // This warpgroup's dQ piece into the block's fp32 rows, and those rows (the query block of
  // candidate c) added into dq_accum: one tensor reduction per 32-column box, one thread each.
  auto store_dq = [&]() {
    // Columns col, col + 1 (col = dq_n·kDqN + 8i + 2t, dq_n·kDqN a multiple of 32) of rows
    // row ≡ g (mod 8) lie in 16-byte chunk 2·(i % 4) + t / 2 of their box row, at position
    // (2·(i % 4) + t / 2) ^ g = (2·(i % 4) ^ (g & 6)) | ((t / 2 ^ g) & 1).
    const unsigned base = sDq + (dq_n * kDqN / 32) * L::kDqBoxBytes + (dq_m * 64 + warp * 16 + g) * 128 + (t % 2) * 8 +
                          ((((t / 2) ^ g) & 1) << 4);
    const int hi = g & 6;
#pragma unroll
    for (int i = 0; i < kDqN / 8; ++i)
#pragma unroll
      for (int e2 = 0; e2 < 2; ++e2) {
        const unsigned at = base + (i / 4) * L::kDqBoxBytes + e2 * 1024 + (((2 * (i % 4)) ^ hi) << 4);
        asm volatile("st.shared.v2.f32 [%0], {%1, %2};\n" ::"r"(at),
                     "f"(dq_acc()[i][2 * e2]), "f"(dq_acc()[i][2 * e2 + 1])
                     : "memory");
      }
  };
  auto flush_dq = [&](int c) {  // lanes 0 .. kD / 32 - 1 of warp 0
    const int row0 = (seq.batch * p.heads + head_of(c)) * p.mq_rows + seq.q_start + m0_of(c);
    tma_reduce_add_2d(bp.dq_map, sDq + lane * L::kDqBoxBytes, lane * 32, row0);
    bulk_commit();
  };
  const bool dq_lane = tid < kD / 32;

  // With dQ, one more pass after the last visit runs its dQ product.
  const int n_passes = n_visits + (Cfg::kDq && n_visits > 0 ? 1 : 0);
  if constexpr (Cfg::kTma) {
    // The multiplying warps: visit it's products once its stage is full, dQ(it - 1)'s once both
    // warpgroups have stored dSᵀ(it - 1); the stage handed back when the products are done, dQ
    // stored once warp 1 has handed its rows back.
    for (int it = 0; it < n_passes; ++it) {
      const int c_next = it + 1 < n_visits ? tiles.next(c + 1) : 0;
      const bool visit = it < n_visits, dq_prev = Cfg::kDq && it > 0;
      if (visit) {
        mbar_wait(bar.full(it & 1), unsigned(it / 2) & 1u);
        visit_products(it, c);  // dV, dK in flight
      }
      if (dq_prev) {
        mbar_wait(bar.ds_full((it - 1) & 1), unsigned((it - 1) / 2) & 1u);
        wgmma_fence();
        issue_dq(dq_acc(), (it - 1) & 1);
      }
      wgmma_wait<0>();
      if (visit) {
        wgmma_hold(dk[0]);
        wgmma_hold(dv[0]);
        if constexpr (!L::kOperandsSmem) {
          wgmma_hold(pa);
          wgmma_hold(sa);
        }
      }
      if (visit) mbar_arrive(bar.empty(it & 1));
      if (dq_prev) {
        wgmma_hold(dq_acc());
        mbar_arrive(bar.ds_empty((it - 1) & 1));
        if (it >= 2) mbar_wait(bar.dq_empty(), unsigned(it - 2) & 1u);  // warp 1 has read dQ(it - 2)
        store_dq();
        fence_proxy_async();
        mbar_arrive(bar.dq_full());
      }
      if (visit) c = c_next;
    }
  } else {
    // A dQ stored in pass it is flushed after the barrier that starts pass it + 1 (c_dq: its
    // candidate).
    int c_prev = 0, c_dq = 0;
    for (int it = 0; it < n_passes; ++it) {
      const int c_next = it + 1 < n_visits ? tiles.next(c + 1) : 0;
      // Q(it), dO(it) (and K, V) have landed and dSᵀ(it - 1) is stored, visible to wgmma; every
      // warpgroup is done with iteration it - 1.
      cp_async_wait<0>();
      fence_proxy_async();
      __syncthreads();
      const bool dq_stored = Cfg::kDq && it >= 2;  // pass it - 1 stored the dQ of visit it - 2
      if (dq_stored && dq_lane) flush_dq(c_dq);
      if (it + 1 < n_visits) issue_loads(it + 1, c_next);
      cp_async_commit();
      const bool visit = it < n_visits, dq_prev = Cfg::kDq && it > 0;
      if (visit) visit_products(it, c);  // dV, dK in flight
      if (dq_prev) {  // behind dV, dK on the tensor cores; Sᵀ, dPᵀ are dead by now
        wgmma_fence();
        issue_dq(dq_acc(), (it - 1) & 1);
      }
      wgmma_wait<0>();
      if (visit) {
        wgmma_hold(dk[0]);
        wgmma_hold(dv[0]);
        wgmma_hold(pa);
        wgmma_hold(sa);
      }
      if (dq_prev) {
        wgmma_hold(dq_acc());
        if (dq_stored) {  // the flush of this pass has read the rows before they are overwritten
          if (dq_lane) bulk_wait<0, true>();
          named_barrier_sync(1, kThreads);
        }
        store_dq();
        c_dq = c_prev;
      }
      if (visit) {
        c_prev = c;
        c = c_next;
      }
    }
    cp_async_wait<0>();  // with no visit, K and V are still in flight
    if (Cfg::kDq && n_visits > 0) {  // the last pass's dQ
      fence_proxy_async();
      __syncthreads();
      if (dq_lane) {
        flush_dq(c_dq);
        bulk_wait<0, false>();
      }
    }
  }
  bwd_store_dkdv<Cfg>(dk, dv, bp, seq, hk, j0, g, t);
}

}  // namespace jitattn
