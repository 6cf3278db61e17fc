// Exact fp32 backward on CUDA cores (no tensor cores, no tf32): the path for float32 inputs.
// The same contracts as the tensor-core kernels, with everything staged in shared memory as
// float:
//
// bwd_simt (bwd, bwd_kv) — bwd_mma.cuh's grid: one block owns kBlockN keys of one (sequence,
// key/value head) and walks every query block of the policy's q_range, for every query head of
// the GQA group. Per query block, P recomputed from the saved LSE:
//   S = Q·Kᵀ,  P = exp2(S·scale·log2 e − lse·log2 e),  dP = dO·Vᵀ,
//   dV += (P·keep)ᵀ·dO,  dS = P ∘ (dP·keep·1/(1−p) − delta),  dK += dSᵀ·Q,
//   dbias = dS (kDBias),  dq_accum += dS·K (kDq, fp32 atomics, unscaled: bwd_post scales).
// dK (· scale) and dV (· 1/(1−p) under dropout) are summed over the group in registers.
//
// bwd_dq_simt (bwd_dq) — the forward's grid: one block per query block of one (sequence, head),
// walking the key tiles of the policy's kv_range: dQ = Σ dS·K · scale, no atomics.
//
// Shared memory (floats, no padding; jit/tile_table.cpp bwd_simt_smem_bytes):
//   bwd_simt:    K [n][d], V [n][dv], Q [m][d], dO [m][dv], S [m][n], lse [m], delta [m]
//   bwd_dq_simt: Q [m][d], dO [m][dv], K [n][d], V [n][dv], S [m][n], lse [m], delta [m]
// K and V rows are read both across rows (S = Q·Kᵀ: each lane its own key) and along a row
// (dQ = dS·K: each lane its own column), so their 16-byte chunks are XOR-permuted per row
// (SimtSwizzle) instead of padded: both patterns are free of bank conflicts.
//
// Cfg (from the generated preamble): kDType, kHeadDim, kHeadDimV, kBlockM, kBlockN, kWarps,
// kVarlen, kDropout, kDBias, kDq. Paged keys are not supported in the backward.
#pragma once
#include "bias_policies.cuh"
#include "common.cuh"

namespace jitattn {

// How kThreads threads share the items of an [R][C] grid. When C <= kThreads, thread t owns
// column t % C of rows t / C + k·kRowStep, kRowStep = kThreads / C (the threads from
// kRowStep·C on idle when C does not divide kThreads): the column is the same for all of a
// thread's slots, so an operand indexed by the column is loaded once per step and the slots
// differ by constant offsets. Otherwise slot k is item t + k·kThreads, row-major. valid() says
// whether slot k of thread t holds an item.
template <int R, int C, int kThreads>
struct SimtSlots {
  static constexpr bool kColFixed = C <= kThreads;
  static constexpr int kRowStep = kColFixed ? kThreads / C : 1;
  static constexpr int kSlots = kColFixed ? ceil_div(R, kRowStep) : ceil_div(R * C, kThreads);
  static constexpr bool kExact = kColFixed ? kThreads % C == 0 && R % kRowStep == 0 : (R * C) % kThreads == 0;
  __device__ static __forceinline__ int row(int tid, int k) {
    if constexpr (kColFixed) return tid / C + k * kRowStep;
    else return (tid + k * kThreads) / C;
  }
  __device__ static __forceinline__ int col(int tid, int k) {
    if constexpr (kColFixed) return tid % C;
    else return (tid + k * kThreads) % C;
  }
  __device__ static __forceinline__ bool valid(int tid, int k) {
    if constexpr (kExact) return true;
    else if constexpr (kColFixed) return tid / C < kRowStep && row(tid, k) < R;
    else return row(tid, k) < R;
  }
};

// Rows of W floats (W a multiple of 8) whose 16-byte chunks are stored in a per-row XOR order:
// chunk c4 of row r sits at chunk c4 ^ swz(r). swz(r) < kP, a power of two dividing the row's
// chunk count, so a row keeps its own chunks. Chosen so that 8 consecutive rows read at one
// chunk index (a quarter warp of 16-byte loads, one key per lane: S = Q·Kᵀ, dP = dO·Vᵀ) hit
// 8 distinct bank quads for every W, while a row read chunk by chunk (dQ = dS·K) is only
// permuted. Unswizzled, the first pattern is an 8-way conflict whenever W is a multiple of 32.
template <int W>
struct SimtSwizzle {
  static constexpr int kChunks = W / 4;
  static constexpr int kLow = kChunks & -kChunks;  // largest power of two dividing kChunks
  static constexpr int kP = kLow < 8 ? kLow : 8;
  static constexpr int kShift = kP == 8 ? 0 : kP == 4 ? 1 : 2;  // log2(8 / kP)
  static_assert(W % 8 == 0 && kP >= 2, "rows are a multiple of 8 floats");
  __device__ static __forceinline__ int swz(int r) { return (r >> kShift) & (kP - 1); }
  // The float4 index of chunk c4 of row r, and the float index of element c of row r.
  __device__ static __forceinline__ int chunk(int r, int c4) { return r * kChunks + (c4 ^ swz(r)); }
  __device__ static __forceinline__ int elem(int r, int c) { return r * W + (((c >> 2) ^ swz(r)) << 2) + (c & 3); }
};

// Rows [row0, row0 + kRows) of a matrix with W columns (row x at src(x)) into shared memory as
// float, zero past `rows`; swizzled (SimtSwizzle<W>) or plain row-major.
template <int kRows, int W, bool kSwizzled, int kThreads, class Src>
__device__ __forceinline__ void simt_load_rows(float* dst, const Src& src, int row0, int rows) {
  for (int e = threadIdx.x; e < kRows * W; e += kThreads) {
    const int r = e / W, c = e % W;
    const float x = row0 + r < rows ? to_float(src(row0 + r)[c]) : 0.f;
    dst[kSwizzled ? SimtSwizzle<W>::elem(r, c) : e] = x;
  }
}

// lse (base 2; +inf where the query saw no key or is past the sequence, so that P = 0) and
// delta of query rows [m0, m0 + kRows).
template <int kRows, int kThreads>
__device__ __forceinline__ void simt_load_lse_delta(float* s_lse, float* s_delta, const float* lse, const float* delta,
                                                    int m0, int mq) {
  for (int r = threadIdx.x; r < kRows; r += kThreads) {
    const int i = m0 + r;
    const float l = i < mq ? lse[i] : neg_inf();
    s_lse[r] = l == neg_inf() ? __int_as_float(0x7f800000) : l * kLog2e;
    s_delta[r] = i < mq ? delta[i] : 0.f;
  }
}

// dS (and P·keep) for this thread's slots of the [kBlockM, kBlockN] tile of query rows m0.. and
// keys n0.., both counted within the sequence: S = Q·Kᵀ and dP = dO·Vᵀ from shared memory
// (sK, sV swizzled), then P from the LSE with the policy's mask, and dropout.
template <class Cfg, class Policy, class Seq>
__device__ __forceinline__ void simt_ds_tile(
    const FwdParams& p, const Policy& policy, const Seq& seq, int h, int m0, int n0, bool full,
    const float* sQ, const float* sK, const float* sO, const float* sV, const float* s_lse, const float* s_delta,
    float (&pd)[SimtSlots<Cfg::kBlockM, Cfg::kBlockN, Cfg::kWarps * 32>::kSlots],
    float (&ds)[SimtSlots<Cfg::kBlockM, Cfg::kBlockN, Cfg::kWarps * 32>::kSlots]) {
  constexpr int kThreads = Cfg::kWarps * 32;
  constexpr int kD4 = Cfg::kHeadDim / 4, kDv4 = Cfg::kHeadDimV / 4;
  using SM = SimtSlots<Cfg::kBlockM, Cfg::kBlockN, kThreads>;
  using SwK = SimtSwizzle<Cfg::kHeadDim>;
  using SwV = SimtSwizzle<Cfg::kHeadDimV>;
  const int tid = threadIdx.x;
  const int mq = seq.mq, mkv = seq.mkv;

  float s[SM::kSlots], dp[SM::kSlots];
#pragma unroll
  for (int k = 0; k < SM::kSlots; ++k) s[k] = dp[k] = 0.f;
  const float4* q4 = reinterpret_cast<const float4*>(sQ);
  const float4* k4 = reinterpret_cast<const float4*>(sK);
  const float4* o4 = reinterpret_cast<const float4*>(sO);
  const float4* v4 = reinterpret_cast<const float4*>(sV);
#pragma unroll 16
  for (int c4 = 0; c4 < kD4; ++c4) {
#pragma unroll
    for (int k = 0; k < SM::kSlots; ++k) {
      if (!SM::valid(tid, k)) continue;
      const int r = SM::row(tid, k), c = SM::col(tid, k);
      const float4 a = q4[r * kD4 + c4], b = k4[SwK::chunk(c, c4)];
      s[k] = fmaf(a.x, b.x, s[k]);
      s[k] = fmaf(a.y, b.y, s[k]);
      s[k] = fmaf(a.z, b.z, s[k]);
      s[k] = fmaf(a.w, b.w, s[k]);
    }
  }
#pragma unroll 16
  for (int c4 = 0; c4 < kDv4; ++c4) {
#pragma unroll
    for (int k = 0; k < SM::kSlots; ++k) {
      if (!SM::valid(tid, k)) continue;
      const int r = SM::row(tid, k), c = SM::col(tid, k);
      const float4 a = o4[r * kDv4 + c4], b = v4[SwV::chunk(c, c4)];
      dp[k] = fmaf(a.x, b.x, dp[k]);
      dp[k] = fmaf(a.y, b.y, dp[k]);
      dp[k] = fmaf(a.z, b.z, dp[k]);
      dp[k] = fmaf(a.w, b.w, dp[k]);
    }
  }

  const float dp_scale = Cfg::kDropout ? p.dropout_scale : 1.f;
#pragma unroll
  for (int k = 0; k < SM::kSlots; ++k) {
    pd[k] = ds[k] = 0.f;
    if (!SM::valid(tid, k)) continue;
    const int r = SM::row(tid, k), c = SM::col(tid, k);
    const int i = m0 + r, j = n0 + c;
    const float raw = s[k] * p.scale_log2;
    float x = raw;
    if (!full) x = i >= mq || j >= mkv ? neg_inf() : policy.logit(x, i, j);
    else if constexpr (Policy::kScore) x = policy.score(x, i, j);
    // s_lse is +inf for a query that saw no key: exp2(x - inf) = 0.
    const float pv = exp2f(x - s_lse[r]);
    bool keep = true;
    if constexpr (Cfg::kDropout) {
      if (i < mq && j < mkv) {
        const unsigned long long e =
            ((unsigned long long)(seq.batch * p.heads + h) * p.mq_rows + seq.q_start + i) * p.mkv_rows + seq.k_start + j;
        keep = dropout_keep1(p, e);
      }
    }
    const float dpv = keep ? dp[k] * dp_scale : 0.f;
    pd[k] = keep ? pv : 0.f;
    ds[k] = pv * (dpv - s_delta[r]);
    if constexpr (Policy::kScoreGrad) {  // through a user score_mod
      if (pv != 0.f) ds[k] *= policy.score_grad(raw, i, j);
    }
  }
}

template <class Cfg>
struct BwdSimtLayout {
  static constexpr int kThreads = Cfg::kWarps * 32;
  static constexpr int kSmemFloats = Cfg::kBlockN * Cfg::kHeadDim + Cfg::kBlockN * Cfg::kHeadDimV +
                                     Cfg::kBlockM * Cfg::kHeadDim + Cfg::kBlockM * Cfg::kHeadDimV +
                                     Cfg::kBlockM * Cfg::kBlockN + 2 * Cfg::kBlockM;
  static constexpr int kSmemBytes = kSmemFloats * 4;
  static_assert(Cfg::kHeadDim % 8 == 0 && Cfg::kHeadDimV % 8 == 0, "head dims are multiples of 8");
};

template <class Cfg, class Policy>
__device__ __forceinline__ void bwd_simt(const BwdParams& bp) {
  const FwdParams& p = bp.f;
  using L = BwdSimtLayout<Cfg>;
  using T = typename DType<Cfg::kDType>::T;
  constexpr int kBM = Cfg::kBlockM, kBN = Cfg::kBlockN, kD = Cfg::kHeadDim, kDv = Cfg::kHeadDimV;
  constexpr int kThreads = L::kThreads, kD4 = kD / 4, kDv4 = kDv / 4;
  using SM = SimtSlots<kBM, kBN, kThreads>;   // S, dP, dS tile
  using SK = SimtSlots<kBN, kD4, kThreads>;   // dK [key][chunk]
  using SV = SimtSlots<kBN, kDv4, kThreads>;  // dV [key][chunk]
  using SQ = SimtSlots<kBM, kD4, kThreads>;   // dQ [query][chunk]
  using SwK = SimtSwizzle<kD>;

  extern __shared__ __align__(128) unsigned char smem_raw[];
  float* sK = reinterpret_cast<float*>(smem_raw);
  float* sV = sK + kBN * kD;
  float* sQ = sV + kBN * kDv;
  float* sO = sQ + kBM * kD;  // dO
  float* sS = sO + kBM * kDv; // P·keep, then dS [query][key]
  float* sLse = sS + kBM * kBN;
  float* sDelta = sLse + kBM;

  const int n_blocks = ceil_div(bp.max_mkv, kBN);
  const int n_block = blockIdx.x % n_blocks;
  const int pair = blockIdx.x / n_blocks;
  const int hk = pair % bp.kv_heads, b = pair / bp.kv_heads;
  const SeqGeometry<Cfg::kVarlen> seq(p, b);
  const int mq = seq.mq, mkv = seq.mkv;
  const int k_lo = n_block * kBN;
  if (k_lo >= mkv) return;  // varlen: this sequence has fewer keys
  const int tid = threadIdx.x;
  const int group = p.kv_group;

  const Rows<T, false> k = kv_rows<T, false>(p, p.k, p.k_stride_b, p.k_stride_h, p.k_stride_m, seq, hk, b);
  const Rows<T, false> v = kv_rows<T, false>(p, p.v, p.v_stride_b, p.v_stride_h, p.v_stride_m, seq, hk, b);
  simt_load_rows<kBN, kD, true, kThreads>(sK, k, k_lo, mkv);
  simt_load_rows<kBN, kDv, true, kThreads>(sV, v, k_lo, mkv);

  // The query blocks that see these keys (the same for every head of the group).
  int q_begin, q_end;
  {
    const Policy policy(p, b, hk * group, mq, mkv);
    policy.q_range(k_lo, imin(k_lo + kBN, mkv), mq, q_begin, q_end);
  }
  const int m_first = q_begin / kBM;
  const int m_end = q_end > q_begin ? ceil_div(q_end, kBM) : m_first;

  float dk[SK::kSlots][4], dv[SV::kSlots][4];
#pragma unroll
  for (int s = 0; s < SK::kSlots; ++s)
#pragma unroll
    for (int u = 0; u < 4; ++u) dk[s][u] = 0.f;
#pragma unroll
  for (int s = 0; s < SV::kSlots; ++s)
#pragma unroll
    for (int u = 0; u < 4; ++u) dv[s][u] = 0.f;

  const float4* q4 = reinterpret_cast<const float4*>(sQ);
  const float4* o4 = reinterpret_cast<const float4*>(sO);
  const float4* k4 = reinterpret_cast<const float4*>(sK);

  for (int hh = 0; hh < group; ++hh) {
    const int h = hk * group + hh;
    const Policy policy(p, b, h, mq, mkv);
    const Rows<T, false> q(static_cast<const T*>(p.q) + seq.batch * p.q_stride_b + h * p.q_stride_h +
                               int64_t(seq.q_start) * p.q_stride_m, p.q_stride_m);
    const Rows<T, false> dout(static_cast<const T*>(bp.dout) + seq.batch * bp.do_stride_b + h * bp.do_stride_h +
                                  int64_t(seq.q_start) * bp.do_stride_m, bp.do_stride_m);
    const float* lse = p.lse + seq.batch * p.lse_stride_b + h * p.lse_stride_h + seq.q_start;
    const float* delta = bp.delta + (int64_t(seq.batch) * p.heads + h) * p.mq_rows + seq.q_start;

    for (int mb = m_first; mb < m_end; ++mb) {
      const int m0 = mb * kBM;
      __syncthreads();  // every thread is done with the previous block's Q, dO, S (and K, V's stores)
      simt_load_rows<kBM, kD, false, kThreads>(sQ, q, m0, mq);
      simt_load_rows<kBM, kDv, false, kThreads>(sO, dout, m0, mq);
      simt_load_lse_delta<kBM, kThreads>(sLse, sDelta, lse, delta, m0, mq);
      __syncthreads();

      const bool full = !Policy::kElementwise && k_lo + kBN <= mkv && m0 + kBM <= mq &&
                        policy.tile_full(m0, m0 + kBM, k_lo, k_lo + kBN);
      float pd[SM::kSlots], ds[SM::kSlots];
      simt_ds_tile<Cfg>(p, policy, seq, h, m0, k_lo, full, sQ, sK, sO, sV, sLse, sDelta, pd, ds);
#pragma unroll
      for (int s = 0; s < SM::kSlots; ++s)
        if (SM::valid(tid, s)) sS[SM::row(tid, s) * kBN + SM::col(tid, s)] = pd[s];

      if constexpr (Cfg::kDBias) {  // dbias = dS, unscaled
        T* db = static_cast<T*>(bp.dbias) + seq.batch * bp.dbias_stride_b + h * bp.dbias_stride_h;
#pragma unroll
        for (int s = 0; s < SM::kSlots; ++s) {
          if (!SM::valid(tid, s)) continue;
          const int i = m0 + SM::row(tid, s), j = k_lo + SM::col(tid, s);
          if (i < mq && j < mkv) db[int64_t(seq.q_start + i) * bp.dbias_stride_m + seq.k_start + j] = from_float<Cfg::kDType>(ds[s]);
        }
      }
      __syncthreads();

      // dV += (P·keep)ᵀ·dO
#pragma unroll 4
      for (int r = 0; r < kBM; ++r)
#pragma unroll
        for (int s = 0; s < SV::kSlots; ++s) {
          if (!SV::valid(tid, s)) continue;
          const float a = sS[r * kBN + SV::row(tid, s)];
          const float4 o = o4[r * kDv4 + SV::col(tid, s)];
          dv[s][0] = fmaf(a, o.x, dv[s][0]);
          dv[s][1] = fmaf(a, o.y, dv[s][1]);
          dv[s][2] = fmaf(a, o.z, dv[s][2]);
          dv[s][3] = fmaf(a, o.w, dv[s][3]);
        }
      __syncthreads();
#pragma unroll
      for (int s = 0; s < SM::kSlots; ++s)
        if (SM::valid(tid, s)) sS[SM::row(tid, s) * kBN + SM::col(tid, s)] = ds[s];
      __syncthreads();

      // dK += dSᵀ·Q
#pragma unroll 4
      for (int r = 0; r < kBM; ++r)
#pragma unroll
        for (int s = 0; s < SK::kSlots; ++s) {
          if (!SK::valid(tid, s)) continue;
          const float a = sS[r * kBN + SK::row(tid, s)];
          const float4 x = q4[r * kD4 + SK::col(tid, s)];
          dk[s][0] = fmaf(a, x.x, dk[s][0]);
          dk[s][1] = fmaf(a, x.y, dk[s][1]);
          dk[s][2] = fmaf(a, x.z, dk[s][2]);
          dk[s][3] = fmaf(a, x.w, dk[s][3]);
        }

      if constexpr (Cfg::kDq) {  // dq_accum += dS·K (unscaled; bwd_post applies the scale)
        float dq[SQ::kSlots][4];
#pragma unroll
        for (int s = 0; s < SQ::kSlots; ++s)
#pragma unroll
          for (int u = 0; u < 4; ++u) dq[s][u] = 0.f;
#pragma unroll 4
        for (int j = 0; j < kBN; ++j)
#pragma unroll
          for (int s = 0; s < SQ::kSlots; ++s) {
            if (!SQ::valid(tid, s)) continue;
            const float a = sS[SQ::row(tid, s) * kBN + j];
            const float4 x = k4[SwK::chunk(j, SQ::col(tid, s))];
            dq[s][0] = fmaf(a, x.x, dq[s][0]);
            dq[s][1] = fmaf(a, x.y, dq[s][1]);
            dq[s][2] = fmaf(a, x.z, dq[s][2]);
            dq[s][3] = fmaf(a, x.w, dq[s][3]);
          }
        float* acc = bp.dq_accum + ((int64_t(seq.batch) * p.heads + h) * p.mq_rows + seq.q_start) * kD;
#pragma unroll
        for (int s = 0; s < SQ::kSlots; ++s) {
          if (!SQ::valid(tid, s)) continue;
          const int i = m0 + SQ::row(tid, s);
          if (i >= mq) continue;
          float* row = acc + int64_t(i) * kD + SQ::col(tid, s) * 4;
#pragma unroll
          for (int u = 0; u < 4; ++u) atomic_add_f32(row + u, dq[s][u]);
        }
      }
    }
  }

  // Epilogue: dK · scale, dV (· 1/(1-p) under dropout), rows past the sequence end skipped.
  T* dkp = static_cast<T*>(bp.dk) + seq.batch * bp.dk_stride_b + hk * bp.dk_stride_h + int64_t(seq.k_start) * bp.dk_stride_m;
  T* dvp = static_cast<T*>(bp.dv) + seq.batch * bp.dv_stride_b + hk * bp.dv_stride_h + int64_t(seq.k_start) * bp.dv_stride_m;
  const float dv_scale = Cfg::kDropout ? p.dropout_scale : 1.f;
  float* ak = dkv_accum_rows(bp, bp.dk_accum, seq.batch, hk, seq.k_start, kD);
  float* av = dkv_accum_rows(bp, bp.dv_accum, seq.batch, hk, seq.k_start, Cfg::kHeadDimV);
#pragma unroll
  for (int s = 0; s < SK::kSlots; ++s) {
    if (!SK::valid(tid, s)) continue;
    const int j = k_lo + SK::row(tid, s);
    if (j >= mkv) continue;
    if (ak) {
#pragma unroll
      for (int u = 0; u < 4; ++u) atomic_add_f32(ak + int64_t(j) * kD + SK::col(tid, s) * 4 + u, dk[s][u] * bp.scale);
      continue;
    }
    T* row = dkp + int64_t(j) * bp.dk_stride_m + SK::col(tid, s) * 4;
#pragma unroll
    for (int u = 0; u < 4; ++u) row[u] = from_float<Cfg::kDType>(dk[s][u] * bp.scale);
  }
#pragma unroll
  for (int s = 0; s < SV::kSlots; ++s) {
    if (!SV::valid(tid, s)) continue;
    const int j = k_lo + SV::row(tid, s);
    if (j >= mkv) continue;
    if (av) {
#pragma unroll
      for (int u = 0; u < 4; ++u)
        atomic_add_f32(av + int64_t(j) * Cfg::kHeadDimV + SV::col(tid, s) * 4 + u, dv[s][u] * dv_scale);
      continue;
    }
    T* row = dvp + int64_t(j) * bp.dv_stride_m + SV::col(tid, s) * 4;
#pragma unroll
    for (int u = 0; u < 4; ++u) row[u] = from_float<Cfg::kDType>(dv[s][u] * dv_scale);
  }
}

template <class Cfg>
struct BwdDqSimtLayout {
  static constexpr int kThreads = Cfg::kWarps * 32;
  static constexpr int kSmemFloats = Cfg::kBlockM * Cfg::kHeadDim + Cfg::kBlockM * Cfg::kHeadDimV +
                                     Cfg::kBlockN * Cfg::kHeadDim + Cfg::kBlockN * Cfg::kHeadDimV +
                                     Cfg::kBlockM * Cfg::kBlockN + 2 * Cfg::kBlockM;
  static constexpr int kSmemBytes = kSmemFloats * 4;
  static_assert(Cfg::kHeadDim % 8 == 0 && Cfg::kHeadDimV % 8 == 0, "head dims are multiples of 8");
};

template <class Cfg, class Policy>
__device__ __forceinline__ void bwd_dq_simt(const BwdParams& bp) {
  const FwdParams& p = bp.f;
  using L = BwdDqSimtLayout<Cfg>;
  using T = typename DType<Cfg::kDType>::T;
  constexpr int kBM = Cfg::kBlockM, kBN = Cfg::kBlockN, kD = Cfg::kHeadDim, kDv = Cfg::kHeadDimV;
  constexpr int kThreads = L::kThreads, kD4 = kD / 4;
  using SM = SimtSlots<kBM, kBN, kThreads>;  // S, dP, dS tile
  using SQ = SimtSlots<kBM, kD4, kThreads>;  // dQ [query][chunk]
  using SwK = SimtSwizzle<kD>;

  extern __shared__ __align__(128) unsigned char smem_raw[];
  float* sQ = reinterpret_cast<float*>(smem_raw);
  float* sO = sQ + kBM * kD;  // dO
  float* sK = sO + kBM * kDv;
  float* sV = sK + kBN * kD;
  float* sS = sV + kBN * kDv;  // dS [query][key]
  float* sLse = sS + kBM * kBN;
  float* sDelta = sLse + kBM;

  int m_block, h, b;
  block_coords(p, kBM, m_block, h, b);
  const SeqGeometry<Cfg::kVarlen> seq(p, b);
  const int mq = seq.mq, mkv = seq.mkv;
  const int q_lo = m_block * kBM;
  if (q_lo >= mq) return;  // varlen: this sequence is shorter than the longest one
  const int hk = h / p.kv_group;
  const int tid = threadIdx.x;

  const Rows<T, false> q(static_cast<const T*>(p.q) + seq.batch * p.q_stride_b + h * p.q_stride_h +
                             int64_t(seq.q_start) * p.q_stride_m, p.q_stride_m);
  const Rows<T, false> dout(static_cast<const T*>(bp.dout) + seq.batch * bp.do_stride_b + h * bp.do_stride_h +
                                int64_t(seq.q_start) * bp.do_stride_m, bp.do_stride_m);
  const Rows<T, false> k = kv_rows<T, false>(p, p.k, p.k_stride_b, p.k_stride_h, p.k_stride_m, seq, hk, b);
  const Rows<T, false> v = kv_rows<T, false>(p, p.v, p.v_stride_b, p.v_stride_h, p.v_stride_m, seq, hk, b);

  const Policy policy(p, b, h, mq, mkv);
  int kv_lo, kv_hi;
  policy.kv_range(q_lo, imin(q_lo + kBM, mq), mkv, kv_lo, kv_hi);
  kv_lo = kv_lo / kBN * kBN;  // the key tiles of bwd_simt's grid
  const int n_tiles = kv_hi > kv_lo ? ceil_div(kv_hi - kv_lo, kBN) : 0;

  simt_load_rows<kBM, kD, false, kThreads>(sQ, q, q_lo, mq);
  simt_load_rows<kBM, kDv, false, kThreads>(sO, dout, q_lo, mq);
  simt_load_lse_delta<kBM, kThreads>(sLse, sDelta, p.lse + seq.batch * p.lse_stride_b + h * p.lse_stride_h + seq.q_start,
                                     bp.delta + (int64_t(seq.batch) * p.heads + h) * p.mq_rows + seq.q_start, q_lo, mq);

  float dq[SQ::kSlots][4];
#pragma unroll
  for (int s = 0; s < SQ::kSlots; ++s)
#pragma unroll
    for (int u = 0; u < 4; ++u) dq[s][u] = 0.f;
  const float4* k4 = reinterpret_cast<const float4*>(sK);

  for (int it = 0; it < n_tiles; ++it) {
    const int n0 = kv_lo + it * kBN;
    __syncthreads();  // every thread is done with the previous tile's K, V and dS
    simt_load_rows<kBN, kD, true, kThreads>(sK, k, n0, mkv);
    simt_load_rows<kBN, kDv, true, kThreads>(sV, v, n0, mkv);
    __syncthreads();

    const bool full = !Policy::kElementwise && n0 + kBN <= mkv && q_lo + kBM <= mq &&
                      policy.tile_full(q_lo, q_lo + kBM, n0, n0 + kBN);
    float pd[SM::kSlots], ds[SM::kSlots];
    simt_ds_tile<Cfg>(p, policy, seq, h, q_lo, n0, full, sQ, sK, sO, sV, sLse, sDelta, pd, ds);
#pragma unroll
    for (int s = 0; s < SM::kSlots; ++s)
      if (SM::valid(tid, s)) sS[SM::row(tid, s) * kBN + SM::col(tid, s)] = ds[s];
    __syncthreads();

    // dQ += dS·K
#pragma unroll 4
    for (int j = 0; j < kBN; ++j)
#pragma unroll
      for (int s = 0; s < SQ::kSlots; ++s) {
        if (!SQ::valid(tid, s)) continue;
        const float a = sS[SQ::row(tid, s) * kBN + j];
        const float4 x = k4[SwK::chunk(j, SQ::col(tid, s))];
        dq[s][0] = fmaf(a, x.x, dq[s][0]);
        dq[s][1] = fmaf(a, x.y, dq[s][1]);
        dq[s][2] = fmaf(a, x.z, dq[s][2]);
        dq[s][3] = fmaf(a, x.w, dq[s][3]);
      }
  }

  T* out = static_cast<T*>(bp.dq) + seq.batch * bp.dq_stride_b + h * bp.dq_stride_h + int64_t(seq.q_start) * bp.dq_stride_m;
#pragma unroll
  for (int s = 0; s < SQ::kSlots; ++s) {
    if (!SQ::valid(tid, s)) continue;
    const int i = q_lo + SQ::row(tid, s);
    if (i >= mq) continue;
    T* row = out + int64_t(i) * bp.dq_stride_m + SQ::col(tid, s) * 4;
#pragma unroll
    for (int u = 0; u < 4; ++u) row[u] = from_float<Cfg::kDType>(dq[s][u] * bp.scale);
  }
}

}  // namespace jitattn
