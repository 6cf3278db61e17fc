// Decode attention: few queries per sequence (a decode step, speculative drafts), at the
// speed of reading K and V once.
//
// The kv_group query heads that share a key/value head are packed into the rows of one tile
// (params.h DecodeParams: row r = query · kv_group + head in group), so one block reads each
// key/value row once for all of them; the keys a block sees are cut into num_splits splits run
// by separate blocks (split-KV), merged by their LSE at the end. Within a block each warp owns
// kBlockN / kWarps keys of every key tile and keeps its own running max, sum and accumulator;
// the warps are merged through shared memory once, at the end. Key/value tiles stream through
// kStages shared buffers, kStages − 1 tiles in flight while one is computed, filled
//   - with kTma (the tma family: sm_90+): by the tensor-memory-access engine, four or so instructions
//     of thread 0 per tile (a box of kBlockN rows × 64 columns each, 128-byte swizzled: row r's
//     16-byte chunk c at chunk position c ^ (r % 8) of its 128-byte panel row), counted on one
//     mbarrier per stage (bulk.cuh); the host encodes the tensor maps (DecodeParams). Paged keys
//     take kBlockN / R boxes of R = gcd(page size, kBlockN) rows per panel instead, each inside
//     one page, at the physical row the page table gives (looked up ahead, as for cp.async); the
//     tiles then start at a multiple of R in the page table's rows, and keys of the first tile
//     before the split's start are masked;
//   - else by cp.async, 16 bytes per thread and instruction, into rows padded by 16 bytes.
//
// Cfg (from the generated preamble): kDType, kOutDType, kHeadDim, kHeadDimV, kBlockM (16: packed
// rows per block), kBlockN (keys per tile), kWarps, kStages, kTma, kAlign16, kWriteLse, kVarlen,
// kPaged.
#pragma once
#include "bias_policies.cuh"
#include "bulk.cuh"
#include "common.cuh"
#include "fwd_mma.cuh"
#include "fwd_rows.cuh"

namespace jitattn {

template <class Cfg>
struct DecodeLayout {
  static constexpr int kThreads = Cfg::kWarps * 32;
  static constexpr int kStages = Cfg::kStages;  // jit/signature.h decode_stages
  static constexpr bool kTma = Cfg::kTma;
  static constexpr int kKeysPerWarp = Cfg::kBlockN / Cfg::kWarps;
  static constexpr int kDP = round_up(Cfg::kHeadDim, 16);
  static constexpr int kDvP = round_up(Cfg::kHeadDimV, 16);
  static constexpr int kQKStride = kDP + 8;  // 16 bytes of padding: ldmatrix rows in distinct banks
  static constexpr int kVStride = kDvP + 8;
  static constexpr int kQElems = Cfg::kBlockM * kQKStride;
  static constexpr int kKElems = Cfg::kBlockN * kQKStride;
  static constexpr int kVElems = Cfg::kBlockN * kVStride;
  static constexpr int kStageElems = kKElems + kVElems;
  // kTma: a stage is the K panels, then the V panels, each kBlockN rows of 128 bytes (64 columns).
  static constexpr int kKPanels = (Cfg::kHeadDim + 63) / 64, kVPanels = (Cfg::kHeadDimV + 63) / 64;
  static constexpr int kPanelBytes = Cfg::kBlockN * 128;
  static constexpr int kStageBytes = kTma ? (kKPanels + kVPanels) * kPanelBytes : kStageElems * 2;
  // kTma: the stages first, from the first 1024-byte boundary (the swizzle's period), then Q.
  static constexpr int kSmemBytes = kTma ? 1024 + kStages * kStageBytes + kQElems * 2 : (kQElems + kStages * kStageElems) * 2;
  // The end reuses the stage buffers: each warp's rows (kBlockM × kDvP floats), its row maxima
  // and sums, then the split weights of the merge (kBlockM × kMaxSplits floats).
  static constexpr int kMaxSplits = kDecodeMaxSplits;  // params.h
  static constexpr int kRedFloats = Cfg::kWarps * Cfg::kBlockM * (kDvP + 2);
  static_assert(Cfg::kBlockM == 16, "one m16 tile of packed rows per block");
  static_assert(kStages >= 2, "one tile in flight while one is computed");
  static_assert(!kTma || (Cfg::kAlign16 && Cfg::kBlockN <= 256), "tensor maps: aligned rows");
  static_assert(kKeysPerWarp % 16 == 0, "each warp owns a multiple of 16 keys of a tile");
  static_assert(Cfg::kBlockN <= kThreads, "one thread per key row looks up its page");
  static_assert((kRedFloats + Cfg::kBlockM * (kMaxSplits + 1)) * 4 <= kStages * kStageBytes,
                "the end's buffers must fit in the stage buffers");
};

// Query rows of a block: packed row r of the chunk is query (r0 + r) / group of head
// hk · group + (r0 + r) % group.
template <class T>
struct PackedQueryRows {
  const T* base;  // the sequence's query 0 of head 0
  int64_t stride_m, stride_h;
  int r0, group, hk;
  __device__ const T* operator()(int r) const {
    const int x = r0 + r;
    return base + int64_t(x / group) * stride_m + int64_t(hk * group + x % group) * stride_h;
  }
};

// Rows [row0, row0 + kRows) of a key or value tile into shared memory (row stride kStride),
// columns [0, kColsP), zero past `cols` and for rows whose physical row is -1: row r is
// base[phys(r) · ld], phys(r) = rows[r] when `rows` (paged: looked up ahead of time), else
// row0 + r while below `end`.
template <int kRows, int kColsP, int kStride, int kThreads, bool kAlign16, class T>
__device__ __forceinline__ void load_kv_tile(T* smem, const T* base, int64_t ld, const int* rows, int row0, int end,
                                             int cols) {
  auto phys = [&](int r) { return rows ? rows[r] : row0 + r < end ? row0 + r : -1; };
  if constexpr (kAlign16) {
    constexpr int kChunksPerRow = kColsP / 8;
    const unsigned dst = smem_addr(smem);
#pragma unroll
    for (int c = threadIdx.x; c < kRows * kChunksPerRow; c += kThreads) {
      const int r = c / kChunksPerRow, col = (c % kChunksPerRow) * 8;
      const int row = phys(r);
      const bool valid = row >= 0 && col < cols;
      cp_async_16(dst + (r * kStride + col) * 2, valid ? base + int64_t(row) * ld + col : base, valid);
    }
  } else {
    for (int e = threadIdx.x; e < kRows * kColsP; e += kThreads) {
      const int r = e / kColsP, col = e % kColsP;
      const int row = phys(r);
      T x{};
      if (row >= 0 && col < cols) x = base[int64_t(row) * ld + col];
      smem[r * kStride + col] = x;
    }
  }
}

template <class Cfg, class Policy>
__device__ __forceinline__ void decode_attention(const DecodeParams& dp) {
  using L = DecodeLayout<Cfg>;
  using T = typename DType<Cfg::kDType>::T;
  using TO = typename DType<Cfg::kOutDType>::T;
  constexpr int kBM = Cfg::kBlockM, kBN = Cfg::kBlockN, kKW = L::kKeysPerWarp;
  constexpr int kNT = kKW / 8;      // 8-wide key tiles of a warp's S
  constexpr int kDT = L::kDvP / 8;  // 8-wide column tiles of O
  constexpr int kKS = L::kDP / 16;  // k-steps of Q·Kᵀ
  const FwdParams& p = dp.f;

  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* sQ;
  T* sStage;  // stage s: K at s·kStageElems (kTma: s·kStageBytes bytes), V after it
  if constexpr (L::kTma) {
    unsigned char* aligned = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
    sStage = reinterpret_cast<T*>(aligned);
    sQ = reinterpret_cast<T*>(aligned + L::kStages * L::kStageBytes);
  } else {
    sQ = reinterpret_cast<T*>(smem_raw);
    sStage = sQ + L::kQElems;
  }

  int id = blockIdx.x;
  const int rc = id % dp.row_chunks;
  id /= dp.row_chunks;
  const int split = id % dp.num_splits;
  id /= dp.num_splits;
  const int hk = id % dp.kv_heads, b = id / dp.kv_heads;

  const SeqGeometry<Cfg::kVarlen, Cfg::kPaged> seq(p, b);
  const int group = p.kv_group, mq = seq.mq, mkv = seq.mkv;
  const int r0 = rc * kBM;
  // Uniform over the splits of this (b, hk, chunk): none of them runs, none waits for another.
  if (r0 >= mq * group) return;
  const int nrows = imin(kBM, mq * group - r0);
  const int i_lo = r0 / group, i_hi = (r0 + nrows - 1) / group + 1;  // the chunk's queries

  // The keys the chunk sees, and this split's share of them (whole tiles, except the last).
  const Policy block_policy(p, b, hk * group, mq, mkv);
  int kv_lo, kv_hi;
  block_policy.kv_range(i_lo, i_hi, mkv, kv_lo, kv_hi);
  const int span = imax(0, kv_hi - kv_lo);
  const int per_split = (span + dp.num_splits - 1) / dp.num_splits;
  const int chunk = (per_split + kBN - 1) / kBN * kBN;
  const int s_lo = imin(kv_hi, kv_lo + split * chunk);
  const int s_hi = imax(s_lo, imin(kv_hi, s_lo + chunk));
  // Tiles start at t_lo: s_lo, or (paged boxes) the multiple of the box rows R at or before it in
  // the page table's rows (every split's start moves by the same, as chunk is whole tiles); keys
  // t_lo..s_lo - 1 are then loaded and masked.
  constexpr bool kBoxed = L::kTma && Cfg::kPaged;
  int t_lo = s_lo;
  if constexpr (kBoxed) t_lo = s_lo - (seq.k_start + s_lo) % dp.tma_box_rows;
  const int n_tiles = s_hi > s_lo ? (s_hi - t_lo + kBN - 1) / kBN : 0;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;

  // This thread's two packed rows (g and g + 8): their query, head and policy. Rows past the
  // chunk's end compute on zero queries and are never stored.
  int qi[2], hh[2];
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int r = imin(r0 + g + 8 * half, r0 + nrows - 1);
    qi[half] = r / group;
    hh[half] = hk * group + r % group;
  }
  const Policy pol0(p, b, hh[0], mq, mkv), pol1(p, b, hh[1], mq, mkv);

  const PackedQueryRows<T> q_rows{static_cast<const T*>(p.q) + seq.batch * p.q_stride_b + int64_t(seq.q_start) * p.q_stride_m,
                                  p.q_stride_m, p.q_stride_h, r0, group, hk};
  const Rows<T, Cfg::kPaged> k = kv_rows<T, Cfg::kPaged>(p, p.k, p.k_stride_b, p.k_stride_h, p.k_stride_m, seq, hk, b);
  const Rows<T, Cfg::kPaged> v = kv_rows<T, Cfg::kPaged>(p, p.v, p.v_stride_b, p.v_stride_h, p.v_stride_m, seq, hk, b);

  float acc[kDT][4];
  float row_max[2] = {neg_inf(), neg_inf()}, row_sum[2] = {0.f, 0.f};
#pragma unroll
  for (int dt = 0; dt < kDT; ++dt)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[dt][e] = 0.f;

  // Paged: the physical rows of tile x, in slot x % kRowSlots. Each thread looks up its row's page
  // (a page-table read into a register) two tiles before the tile is requested and publishes the
  // row to shared memory one tile before, after the current tile's math: the table's latency
  // stays off the path from one tile's arrival to the next one's request.
  constexpr int kRowSlots = L::kStages + 1;
  __shared__ int sRows[Cfg::kPaged ? kRowSlots : 1][kBN];
  int page_even = 0, page_odd = 0;  // the pages fetched for the next even and odd tiles
  auto fetch = [&](int x) {
    if constexpr (Cfg::kPaged) {
      const int j = t_lo + x * kBN + int(threadIdx.x);
      if (x < n_tiles && threadIdx.x < kBN && j < s_hi) {
        const int page = k.table[(k.k_start + j) / k.page_size];
        if (x & 1) page_odd = page;
        else page_even = page;
      }
    }
  };
  auto publish = [&](int x) {
    if constexpr (Cfg::kPaged) {
      const int j = t_lo + x * kBN + int(threadIdx.x);
      if (x < n_tiles && threadIdx.x < kBN)
        sRows[x % kRowSlots][threadIdx.x] = j < s_hi ? ((x & 1) ? page_odd : page_even) * k.page_size + (k.k_start + j) % k.page_size : -1;
    }
  };

  // kTma: stage s's barrier, used by tiles s, s + kStages, ...: tile it waits for parity
  // (it / kStages) % 2.
  __shared__ __align__(8) unsigned long long bars[L::kTma ? L::kStages : 1];
  if (n_tiles > 0) {
    // Q lands with tile 0 (the first commit group); under kTma before the first tile.
    load_tile<kBM, L::kDP, L::kQKStride, L::kThreads, Cfg::kAlign16>(sQ, q_rows, 0, nrows, Cfg::kHeadDim);
    // kTma, thread 0: tile it's boxes. Map coordinates: columns, then the key row, head and batch
    // index where DecodeParams::tma_dim puts them.
    auto coord = [&](const int32_t (&dim_of)[3], int dim, int row) {
      return dim_of[0] == dim ? row : dim_of[1] == dim ? hk : dim_of[2] == dim ? seq.batch : 0;
    };
    auto issue_tma = [&](int it) {
      if (it >= n_tiles) return;
      const int slot = it % L::kStages;
      const unsigned dst = smem_addr(sStage) + slot * L::kStageBytes, bar = smem_addr(&bars[slot]);
      const int32_t(&kd)[3] = dp.tma_dim[0];
      const int32_t(&vd)[3] = dp.tma_dim[1];
      mbar_arrive_expect_tx(bar, unsigned(dp.tma_stage_bytes));
      auto boxes = [&](unsigned at, int row) {
#pragma unroll
        for (int pn = 0; pn < L::kKPanels; ++pn)
          tma_load_4d(at + pn * L::kPanelBytes, dp.k_map, pn * 64, coord(kd, 1, row), coord(kd, 2, row), coord(kd, 3, row), bar);
#pragma unroll
        for (int pn = 0; pn < L::kVPanels; ++pn)
          tma_load_4d(at + (L::kKPanels + pn) * L::kPanelBytes, dp.v_map, pn * 64, coord(vd, 1, row), coord(vd, 2, row),
                      coord(vd, 3, row), bar);
      };
      if constexpr (kBoxed) {  // box x: the physical rows of keys t_lo + it·kBN + x·R.., one page's
        const int R = dp.tma_box_rows;
        for (int x = 0; x * R < kBN; ++x) {
          const int row = sRows[it % kRowSlots][x * R];
          boxes(dst + x * R * 128, row >= 0 ? row : 0);  // past the split's end: any rows (zeroed below)
        }
      } else {
        boxes(dst, seq.k_start + s_lo + it * kBN);
      }
    };
    auto issue = [&](int it) {
      if (it < n_tiles) {
        T* sK = sStage + (it % L::kStages) * L::kStageElems;
        const int n0 = t_lo + it * kBN;
        const int* rows = Cfg::kPaged ? sRows[it % kRowSlots] : nullptr;
        load_kv_tile<kBN, L::kDP, L::kQKStride, L::kThreads, Cfg::kAlign16>(sK, k.base, k.ld, rows, n0, s_hi, Cfg::kHeadDim);
        load_kv_tile<kBN, L::kDvP, L::kVStride, L::kThreads, Cfg::kAlign16>(sK + L::kKElems, v.base, v.ld, rows, n0, s_hi,
                                                                           Cfg::kHeadDimV);
      }
      cp_async_commit();  // possibly empty: keeps the group count uniform
    };
    if constexpr (Cfg::kPaged) {
#pragma unroll
      for (int x = 0; x < L::kStages; ++x) fetch(x), publish(x);
      fetch(L::kStages);
      __syncthreads();
    }
    if constexpr (L::kTma) {
      cp_async_commit();
      cp_async_wait<0>();
      if (threadIdx.x == 0) {
        for (int st = 0; st < L::kStages; ++st) mbar_init(smem_addr(&bars[st]), 1);
        for (int st = 0; st < L::kStages - 1; ++st) issue_tma(st);
      }
    } else {
#pragma unroll
      for (int s = 0; s < L::kStages - 1; ++s) issue(s);
    }

    const unsigned q_lane = smem_addr(sQ) + (((lane & 7) + ((lane >> 3) & 1) * 8) * L::kQKStride + (lane >> 4) * 8) * 2;
    const unsigned k_lane = (((warp * kKW + (lane & 7) + ((lane >> 4) << 3)) * L::kQKStride) + ((lane >> 3) & 1) * 8) * 2;
    const unsigned v_lane =
        (L::kKElems + (warp * kKW + (lane & 7) + ((lane >> 3) & 1) * 8) * L::kVStride + (lane >> 4) * 8) * 2;
    // kTma: the byte offset in a stage of 16-byte chunk `chunk` (of 8 columns) of this lane's K
    // row (ldmatrix_x4: rows +8 for lanes 16..31, chunk +1 for lanes 8..15 and 24..31) and V row
    // (x4.trans: rows +8 for lanes 8..15 and 24..31, chunk +1 for lanes 16..31). Every row here is
    // ≡ lane % 8 (mod 8), so the swizzle XORs the chunk's position in its panel with lane % 8.
    const int k_row = warp * kKW + (lane & 7) + ((lane >> 4) << 3), v_row = warp * kKW + (lane & 7) + ((lane >> 3) & 1) * 8;
    auto k_chunk = [&](int row, int chunk) {
      const int c = chunk + ((lane >> 3) & 1);
      return unsigned((c / 8) * L::kPanelBytes + (k_row + row) * 128 + (((c % 8) ^ (lane & 7)) << 4));
    };
    auto v_chunk = [&](int row, int chunk) {
      const int c = chunk + (lane >> 4);
      return unsigned((L::kKPanels + c / 8) * L::kPanelBytes + (v_row + row) * 128 + (((c % 8) ^ (lane & 7)) << 4));
    };
    const unsigned stage0 = smem_addr(sStage);
    unsigned q_frag[kKS][4];

    auto step = [&](int it, auto masked) {
      constexpr bool kMasked = decltype(masked)::value;
      const int w0 = t_lo + it * kBN + warp * kKW;  // this warp's first key
      const unsigned st = stage0 + (it % L::kStages) * L::kStageBytes;
      float s[kNT][4];
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[nt][e] = 0.f;
#pragma unroll
      for (int ks = 0; ks < kKS; ++ks)
#pragma unroll
        for (int np = 0; np < kNT / 2; ++np) {
          unsigned bk[4];
          if constexpr (L::kTma) ldmatrix_x4(bk, st + k_chunk(np * 16, ks * 2));
          else ldmatrix_x4(bk, st + k_lane + (np * 16 * L::kQKStride + ks * 16) * 2);
          mma_16816<Cfg::kDType>(s[2 * np], q_frag[ks], bk[0], bk[1]);
          mma_16816<Cfg::kDType>(s[2 * np + 1], q_frag[ks], bk[2], bk[3]);
        }

      // Logits in base 2; masked: the policy's verdict, and keys past the split's end.
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const Policy& pol = half ? pol1 : pol0;
        int lo = s_lo, hi = s_hi;
        if constexpr (kMasked && Policy::kRowMask) {
          int rlo, rhi;
          pol.row_range(qi[half], mkv, rlo, rhi);
          lo = imax(lo, rlo), hi = imin(hi, rhi);
        }
        const int base = w0 + 2 * t - lo;
        const unsigned width = hi > lo ? unsigned(hi - lo) : 0u;
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
          for (int c = 0; c < 2; ++c) {
            float x = s[nt][2 * half + c] * p.scale_log2;
            const int j = w0 + nt * 8 + 2 * t + c;
            if constexpr (kMasked) {
              if constexpr (!Policy::kRowMask) x = j < s_hi && (!kBoxed || j >= s_lo) ? pol.logit(x, qi[half], j) : neg_inf();
              else x = unsigned(base + nt * 8 + c) < width ? x : neg_inf();
            } else if constexpr (Policy::kScore) {
              x = pol.score(x, qi[half], j);
            }
            s[nt][2 * half + c] = x;
          }
      }
      float alpha[2];
      fwd_softmax(s, row_max, row_sum, alpha);
      fwd_rescale(acc, alpha);

      // O += P · V: the S accumulators are the A fragments.
#pragma unroll
      for (int kp = 0; kp < kKW / 16; ++kp) {
        unsigned pa[4];
        fwd_p_fragment<Cfg::kDType>(pa, s, kp);
#pragma unroll
        for (int dq = 0; dq < kDT / 2; ++dq) {
          unsigned bv[4];
          if constexpr (L::kTma) ldmatrix_x4_trans(bv, st + v_chunk(kp * 16, dq * 2));
          else ldmatrix_x4_trans(bv, st + v_lane + (kp * 16 * L::kVStride + dq * 16) * 2);
          mma_16816<Cfg::kDType>(acc[2 * dq], pa, bv[0], bv[1]);
          mma_16816<Cfg::kDType>(acc[2 * dq + 1], pa, bv[2], bv[3]);
        }
      }
    };

    for (int it = 0; it < n_tiles; ++it) {
      if constexpr (L::kTma) {
        __syncthreads();  // all are done with tile it − 1 (Q and the barriers are ready for it = 0)
        if (threadIdx.x == 0) issue_tma(it + L::kStages - 1);  // into tile it − 1's buffer
        mbar_wait(smem_addr(&bars[it % L::kStages]), unsigned(it / L::kStages) & 1u);  // tile it has landed
        const int valid = s_hi - (t_lo + it * kBN), lead = it == 0 ? s_lo - t_lo : 0;
        if (valid < kBN || lead > 0) {
          // The split's last tile: the boxes ran past its keys into rows of other keys, padding
          // or another sequence, which need not be finite; and (paged) the first tile's rows
          // before the split's start. Zeros there (then P·V is exact), and a proxy fence: the
          // buffer's next fill is a TMA write.
          unsigned char* stage = reinterpret_cast<unsigned char*>(sStage) + (it % L::kStages) * L::kStageBytes;
          constexpr int kChunks = (L::kKPanels + L::kVPanels) * 8;  // 16-byte chunks per row
          const int tail = kBN - imin(valid, kBN);
          for (int c = threadIdx.x; c < (lead + tail) * kChunks; c += L::kThreads) {
            const int y = c / kChunks, r = y < lead ? y : kBN - tail + (y - lead), x = c % kChunks;
            unsigned long long* d = reinterpret_cast<unsigned long long*>(stage + (x / 8) * L::kPanelBytes + r * 128 + (x % 8) * 16);
            d[0] = 0, d[1] = 0;
          }
          fence_proxy_async();
          __syncthreads();
        }
      } else {
        cp_async_wait<L::kStages - 2>();  // tile it (and Q) have landed
        __syncthreads();                  // ...for every thread; and all are done with tile it − 1
        issue(it + L::kStages - 1);       // into tile it − 1's buffer
      }
      fetch(it + L::kStages + 1);
      if (it == 0) {
#pragma unroll
        for (int ks = 0; ks < kKS; ++ks) ldmatrix_x4(q_frag[ks], q_lane + ks * 16 * 2);
      }
      const int w0 = t_lo + it * kBN + warp * kKW;
      // Else the split's last tile ends before this warp's keys (or, paged, its first starts after them).
      if (w0 < s_hi && (!kBoxed || w0 + kKW > s_lo)) {
        const bool full = !Policy::kElementwise && w0 + kKW <= s_hi && (!kBoxed || w0 >= s_lo) &&
                          block_policy.tile_full(i_lo, i_hi, w0, w0 + kKW);
        if (full) step(it, Bool<false>{});
        else step(it, Bool<true>{});
      }
      publish(it + L::kStages);  // into tile it − 1's slot (it was requested at it − 3)
    }
    if constexpr (!L::kTma) cp_async_wait<0>();
  }
  __syncthreads();  // the stage buffers are free

  // Merge the warps: each scales its rows to the block's max, the sums add up.
  float* sRed = reinterpret_cast<float*>(sStage);         // [kWarps][kBM][kDvP]
  float* sMax = sRed + Cfg::kWarps * kBM * L::kDvP;       // [kWarps][kBM]
  float* sSum = sMax + Cfg::kWarps * kBM;                 // [kWarps][kBM]
  float* sW = sSum + Cfg::kWarps * kBM;                   // [kBM][kMaxSplits + 1] (the merge)
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const float l = quad_sum(row_sum[half]);
    if (t == 0) {
      sMax[warp * kBM + g + 8 * half] = row_max[half];
      sSum[warp * kBM + g + 8 * half] = l;
    }
  }
  __syncthreads();
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int row = g + 8 * half;
    float mx = neg_inf();
#pragma unroll
    for (int w = 0; w < Cfg::kWarps; ++w) mx = fmaxf(mx, sMax[w * kBM + row]);
    const float f = mx == neg_inf() ? 0.f : fast_exp2(row_max[half] - mx);
#pragma unroll
    for (int dt = 0; dt < kDT; ++dt) {
      float* dst = sRed + (warp * kBM + row) * L::kDvP + dt * 8 + 2 * t;
      dst[0] = acc[dt][2 * half] * f;
      dst[1] = acc[dt][2 * half + 1] * f;
    }
  }
  __syncthreads();

  // Row `row` of the block: its normalized output column `col` and its LSE (natural log).
  auto block_row = [&](int row, float& inv, float& lse) {
    float mx = neg_inf();
#pragma unroll
    for (int w = 0; w < Cfg::kWarps; ++w) mx = fmaxf(mx, sMax[w * kBM + row]);
    float l = 0.f;
    if (mx != neg_inf()) {
#pragma unroll
      for (int w = 0; w < Cfg::kWarps; ++w) l += sSum[w * kBM + row] * fast_exp2(sMax[w * kBM + row] - mx);
    }
    inv = l > 0.f ? 1.f / l : 0.f;
    lse = l > 0.f ? (mx + __log2f(l)) * kLn2 : neg_inf();
  };
  auto block_out = [&](int row, int col, float inv) {
    float o = 0.f;
#pragma unroll
    for (int w = 0; w < Cfg::kWarps; ++w) o += sRed[(w * kBM + row) * L::kDvP + col];
    return o * inv;
  };
  auto out_at = [&](int row) {  // packed row `row` of the chunk in out
    const int x = r0 + row;
    return static_cast<TO*>(p.out) + seq.batch * p.o_stride_b + int64_t(seq.q_start + x / group) * p.o_stride_m +
           int64_t(hk * group + x % group) * p.o_stride_h;
  };
  auto lse_at = [&](int row) {
    const int x = r0 + row;
    return p.lse + seq.batch * p.lse_stride_b + int64_t(hk * group + x % group) * p.lse_stride_h + seq.q_start + x / group;
  };

  if (dp.num_splits == 1) {
    for (int e = threadIdx.x; e < nrows * Cfg::kHeadDimV; e += L::kThreads) {
      const int row = e / Cfg::kHeadDimV, col = e % Cfg::kHeadDimV;
      float inv, lse;
      block_row(row, inv, lse);
      out_at(row)[col] = from_float<Cfg::kOutDType>(block_out(row, col, inv));
      if constexpr (Cfg::kWriteLse)
        if (col == 0) *lse_at(row) = lse;
    }
    return;
  }

  // Split-KV: store this split's rows, then the last split of the chunk to finish merges them.
  const int64_t chunk_id = (int64_t(b) * dp.kv_heads + hk) * dp.row_chunks + rc;
  const int64_t part0 = chunk_id * dp.num_splits;  // split 0 of this chunk
  {
    float* o_part = dp.o_partial + (part0 + split) * kBM * Cfg::kHeadDimV;
    float* lse_part = dp.lse_partial + (part0 + split) * kBM;
    for (int e = threadIdx.x; e < nrows * Cfg::kHeadDimV; e += L::kThreads) {
      const int row = e / Cfg::kHeadDimV, col = e % Cfg::kHeadDimV;
      float inv, lse;
      block_row(row, inv, lse);
      o_part[row * Cfg::kHeadDimV + col] = block_out(row, col, inv);
      if (col == 0) lse_part[row] = lse;
    }
  }
  __threadfence();  // this split's rows are visible device-wide before it is counted
  __syncthreads();
  __shared__ int last;
  if (threadIdx.x == 0) {
    const int before = atomicAdd(dp.counters + chunk_id, 1);
    last = before == dp.num_splits - 1;
    if (last) dp.counters[chunk_id] = 0;  // every split has counted: ready for the next launch
  }
  __syncthreads();
  if (!last) return;
  __threadfence();

  // Weights w_s = exp(lse_s − max), then out = Σ w_s · out_s / Σ w_s (merge.cuh's formula).
  // Partial rows are read through L2 (ld.cg): other blocks wrote them.
  const int splits = dp.num_splits;
  constexpr int kWS = L::kMaxSplits + 1;
  for (int e = threadIdx.x; e < nrows * splits; e += L::kThreads) {
    const int row = e / splits, s = e % splits;
    sW[row * kWS + s] = __ldcg(dp.lse_partial + (part0 + s) * kBM + row);
  }
  __syncthreads();
  if (threadIdx.x < nrows) {
    const int row = threadIdx.x;
    float mx = neg_inf();
    for (int s = 0; s < splits; ++s) mx = fmaxf(mx, sW[row * kWS + s]);
    float sum = 0.f;
    for (int s = 0; s < splits; ++s) {
      const float l = sW[row * kWS + s];
      const float w = l == neg_inf() ? 0.f : fast_exp2((l - mx) * kLog2e);
      sW[row * kWS + s] = w;
      sum += w;
    }
    sW[row * kWS + L::kMaxSplits] = sum > 0.f ? 1.f / sum : 0.f;
    if constexpr (Cfg::kWriteLse) *lse_at(row) = sum > 0.f ? mx + logf(sum) : neg_inf();
  }
  __syncthreads();
  for (int e = threadIdx.x; e < nrows * Cfg::kHeadDimV; e += L::kThreads) {
    const int row = e / Cfg::kHeadDimV, col = e % Cfg::kHeadDimV;
    float o = 0.f;
    for (int s = 0; s < splits; ++s) {
      const float w = sW[row * kWS + s];
      if (w != 0.f) o = fmaf(w, __ldcg(dp.o_partial + ((part0 + s) * kBM + row) * Cfg::kHeadDimV + col), o);
    }
    out_at(row)[col] = from_float<Cfg::kOutDType>(o * sW[row * kWS + L::kMaxSplits]);
  }
}

}  // namespace jitattn
