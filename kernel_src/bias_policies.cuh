// Bias/mask policies. A policy answers these questions for one (sequence b, head h), whose
// lengths are mq queries and mkv keys (b is the batch row for dense layouts and the sequence,
// i.e. the block, for block-diagonal and paged ones; i and j below count from its start):
//   kv_range(q_lo, q_hi)          which keys rows [q_lo, q_hi) can see at all — tiles outside
//                                 are never loaded, so a mask costs what its visible part costs;
//   q_range(k_lo, k_hi)           which queries see any of keys [k_lo, k_hi) (the backward);
//   tile_full(q_lo, q_hi, k_lo, k_hi)  whether every element of a tile is visible, so the
//                                 per-element mask is skipped;
//   tile_state(q_lo, q_hi, k_lo, k_hi)  (kSkipsTiles) 0 when no element of a tile inside the
//                                 ranges above is visible (the kernels never load it), 2 when
//                                 tile_full holds, 3 (kBaseTiles) when only the built-in mask
//                                 under a user variant masks it, else 1 — once per tile, before
//                                 the loop (TileSet), so no lookup stalls the loop;
//   logit(x, i, j)                the base-2 logit of query i and key j after masking/bias
//                                 (x = q·k · scale · log2 e), or -inf where masked;
//   score(x, i, j)                (kScore) the logit of a visible element of a full tile, which
//                                 a score function still rewrites;
//   row_range(i, mkv)             (kRowMask: the mask is one key interval per row) the keys
//                                 query i sees, so a masked tile masks by one compare;
//   score_grad(x, i, j)           (kScoreGrad) d logit / d x at an unmasked element: the
//                                 backward multiplies dS by it (a user score_mod's derivative).
// kElementwise: every tile runs logit() (a bias tensor, ALiBi), never the unmasked path.
// kBaseTiles: tile_state may say 3, and `base` (a kRowMask policy) masks such a tile alone: a
// user mask_mod that its block map says is true on the whole tile, over a built-in mask that
// is not (the diagonal tiles of causal) — the forward masks it by one compare per element
// instead of calling mask_mod on each; the wgmma backward (d > 64) masks these and the full
// tiles by `base` too. Other kernels take 3 as partial (still exact).
// kSpans (user mask_mods reading captured tensors): span(i, lo, hi) says whether the variant's
// block map knows row i's keys under mask_mod to be exactly [lo, hi); logit_if(x, i, j, seen) is
// logit() with mask_mod's verdict given. A forward tile whose warp rows all have spans masks by
// them (fwd_logits).
// kLogitAnywhere: logit() (and score_grad()) may run at any (i, j) inside the sequence, masked or
// not, and has no branch: a masked tile calls it on every element, indices clamped into the
// sequence, and selects — per-element branches made user variants' masked tiles several times
// slower than the built-in masks.
// Kernels call these hooks and never branch on the bias kind themselves; adding a bias kind is
// adding a row to jit/bias_kinds.h (which names the policy type) and, if no policy here serves
// it, a struct here.
#pragma once
#include "common.cuh"

namespace jitattn {

// What a policy has, unless it says otherwise (see above).
struct PolicyTraits {
  static constexpr bool kElementwise = false, kRowMask = true, kScore = false, kSkipsTiles = false, kScoreGrad = false;
  static constexpr bool kLogitAnywhere = false, kBaseTiles = false, kSpans = false;
  __device__ int tile_state(int, int, int, int) const { return 1; }
};

struct NoBias : PolicyTraits {
  __device__ NoBias(const FwdParams&, int, int, int, int) {}
  __device__ void kv_range(int, int, int mkv, int& lo, int& hi) const { lo = 0; hi = mkv; }
  __device__ void q_range(int, int, int mq, int& lo, int& hi) const { lo = 0; hi = mq; }
  __device__ void row_range(int, int mkv, int& lo, int& hi) const { lo = 0; hi = mkv; }
  __device__ bool tile_full(int, int, int, int) const { return true; }
  __device__ float logit(float x, int, int) const { return x; }
};

// A band around the diagonal: key j is visible to query i iff
//   -window_left <= j - i - shift <= window_right,   shift = kBottomRight ? mkv - mq : 0,
// a side without kLeft/kRight being unbounded. Causal is {no left, right 0}; xFormers' local
// attention masks set window_left = window_size - 1 or take both windows from the caller.
template <bool kBottomRight, bool kLeft, bool kRight>
struct BandMask : PolicyTraits {
  int lo_off, hi_off;  // visible iff lo_off <= j - i <= hi_off
  __device__ BandMask(const FwdParams& p, int, int, int mq, int mkv) {
    const int shift = kBottomRight ? mkv - mq : 0;
    lo_off = shift - p.window_left;
    hi_off = shift + p.window_right;
  }
  __device__ void kv_range(int q_lo, int q_hi, int mkv, int& lo, int& hi) const {
    lo = kLeft ? imax(0, q_lo + lo_off) : 0;
    hi = kRight ? imax(0, imin(mkv, q_hi - 1 + hi_off + 1)) : mkv;
  }
  // The queries that see any of keys [k_lo, k_hi) (the backward walks queries per key block).
  __device__ void q_range(int k_lo, int k_hi, int mq, int& lo, int& hi) const {
    lo = kRight ? imin(mq, imax(0, k_lo - hi_off)) : 0;
    hi = kLeft ? imax(0, imin(mq, k_hi - 1 - lo_off + 1)) : mq;
  }
  // The keys query i sees: [lo, hi), clipped to [0, mkv) (empty when lo >= hi).
  __device__ void row_range(int i, int mkv, int& lo, int& hi) const {
    lo = kLeft ? imax(0, i + lo_off) : 0;
    hi = kRight ? imin(mkv, i + hi_off + 1) : mkv;
  }
  __device__ bool tile_full(int q_lo, int q_hi, int k_lo, int k_hi) const {
    return (!kRight || k_hi - 1 - q_lo <= hi_off) && (!kLeft || k_lo - (q_hi - 1) >= lo_off);
  }
  __device__ float logit(float x, int i, int j) const {
    const int d = j - i;
    return (!kRight || d <= hi_off) && (!kLeft || d >= lo_off) ? x : neg_inf();
  }
};

// A dense additive bias tensor [B, H, Mq, Mkv] (B and H may be broadcast with stride 0), added
// to what the mask policy `Mask` lets through.
template <int kBiasDType, class Mask>
struct TensorBiasPolicy : PolicyTraits {
  static constexpr bool kElementwise = true, kRowMask = false;
  using T = typename DType<kBiasDType>::T;
  Mask mask;
  const T* row0;
  int64_t stride_m;
  __device__ TensorBiasPolicy(const FwdParams& p, int b, int h, int mq, int mkv)
      : mask(p, b, h, mq, mkv),
        row0(static_cast<const T*>(p.bias) + b * p.bias_stride_b + h * p.bias_stride_h),
        stride_m(p.bias_stride_m) {}
  __device__ void kv_range(int q_lo, int q_hi, int mkv, int& lo, int& hi) const { mask.kv_range(q_lo, q_hi, mkv, lo, hi); }
  __device__ void q_range(int k_lo, int k_hi, int mq, int& lo, int& hi) const { mask.q_range(k_lo, k_hi, mq, lo, hi); }
  __device__ void row_range(int i, int mkv, int& lo, int& hi) const { mask.row_range(i, mkv, lo, hi); }
  __device__ bool tile_full(int q_lo, int q_hi, int k_lo, int k_hi) const { return mask.tile_full(q_lo, q_hi, k_lo, k_hi); }
  __device__ float logit(float x, int i, int j) const {
    const float masked = mask.logit(x, i, j);
    return masked == neg_inf() ? masked : masked + to_float(row0[i * stride_m + j]) * kLog2e;
  }
};

// ALiBi over a mask: adds -slope_h · |j - i| (base 2 here) to what `Mask` lets through.
template <class Mask>
struct AlibiPolicy : PolicyTraits {
  static constexpr bool kElementwise = true, kRowMask = false;
  Mask mask;
  float slope;  // slope_h · log2 e
  __device__ AlibiPolicy(const FwdParams& p, int b, int h, int mq, int mkv)
      : mask(p, b, h, mq, mkv), slope(p.alibi_slopes[h] * kLog2e) {}
  __device__ void kv_range(int q_lo, int q_hi, int mkv, int& lo, int& hi) const { mask.kv_range(q_lo, q_hi, mkv, lo, hi); }
  __device__ void q_range(int k_lo, int k_hi, int mq, int& lo, int& hi) const { mask.q_range(k_lo, k_hi, mq, lo, hi); }
  __device__ void row_range(int i, int mkv, int& lo, int& hi) const { mask.row_range(i, mkv, lo, hi); }
  __device__ bool tile_full(int q_lo, int q_hi, int k_lo, int k_hi) const { return mask.tile_full(q_lo, q_hi, k_lo, k_hi); }
  __device__ float logit(float x, int i, int j) const {
    const float masked = mask.logit(x, i, j);
    return masked == neg_inf() ? masked : masked - slope * fabsf(float(j - i));
  }
};

// A tensor captured by a user variant, as its snippets see it: t(i0, ..., i{R-1}) reads the
// element (no bounds check: the snippet indexes what it captured), t.size(d) its extent. f16 and
// bf16 elements read as float.
__device__ __forceinline__ float capture_value(half_bits x) { return to_float(x); }
__device__ __forceinline__ float capture_value(bf16_bits x) { return to_float(x); }
template <class T>
__device__ __forceinline__ T capture_value(T x) { return x; }
template <class T, int R>
struct TensorRef {
  const T* ptr;
  int64_t stride[R];
  int32_t extent[R];
  __device__ TensorRef(const UserArgs& a, int slot) : ptr(static_cast<const T*>(a.ptr[slot])) {
#pragma unroll
    for (int d = 0; d < R; ++d) stride[d] = a.stride[slot][d], extent[d] = a.size[slot][d];
  }
  template <class... I>
  __device__ auto operator()(I... idx) const {
    static_assert(sizeof...(I) == R, "a captured tensor takes one index per dimension");
    const int64_t is[] = {int64_t(idx)...};
    int64_t off = 0;
#pragma unroll
    for (int d = 0; d < R; ++d) off += is[d] * stride[d];
    return capture_value(ptr[off]);
  }
  template <int R_ = R>
  __device__ auto operator[](int64_t i) const {
    static_assert(R_ == 1, "t[i] reads a rank-1 capture; index higher ranks as t(i, j, ...)");
    return capture_value(ptr[i * stride[0]]);
  }
  __device__ int size(int d) const { return d >= 0 && d < R ? extent[d] : 1; }
};

// A block map (FwdParams::map) as one (sequence, head) sees it. state() sums up the cells a
// tile covers: 0 when no element is visible, 2 when every one is, 1 otherwise (or no map).
// kBinary: BlockSparseMask's layout (nonzero: all visible); else a mask_mod's map (0, 1, 2).
template <bool kBinary>
struct CellMap {
  const unsigned char* cells;  // this (b, h)'s cell (0, 0), or null
  const int32_t* spans;        // this (b, h)'s row 0 span (ternary maps), or null
  int64_t stride_r;
  int rows, cols, log2_m, log2_n;
  __device__ CellMap(const BlockMapArgs& m, int b, int h)
      : cells(m.cells ? m.cells + b * m.stride_b + h * m.stride_h : nullptr),
        spans(m.cells && m.spans ? m.spans + b * m.span_stride_b + h * m.span_stride_h : nullptr),
        stride_r(m.stride_r), rows(m.rows), cols(m.cols), log2_m(m.log2_m), log2_n(m.log2_n) {}
  // Whether the map knows row i's visible keys to be exactly [lo, hi) (BlockMapArgs::spans).
  __device__ bool span(int i, int& lo, int& hi) const {
    if (!spans) return false;
    lo = spans[2 * i], hi = spans[2 * i + 1];
    return hi >= 0;
  }
  __device__ int cell(int r, int c) const {
    const int v = cells[r * stride_r + c];
    return kBinary ? (v ? 2 : 0) : v;
  }
  __device__ int state(int q_lo, int q_hi, int k_lo, int k_hi) const {
    if (!cells || q_hi <= q_lo || k_hi <= k_lo) return 1;
    const int r0 = q_lo >> log2_m, r1 = (q_hi - 1) >> log2_m, c0 = k_lo >> log2_n, c1 = (k_hi - 1) >> log2_n;
    if (r1 >= rows || c1 >= cols) return 1;  // past the map: unknown
    bool any = false, all = true;
    for (int r = r0; r <= r1; ++r)
      for (int c = c0; c <= c1; ++c) {
        const int v = cell(r, c);
        any |= v != 0;
        all &= v == 2;
      }
    return all ? 2 : any ? 1 : 0;
  }
  // Binary maps: whether element (i, j) is visible (every element of a nonzero cell is).
  __device__ bool visible(int i, int j) const { return cells[(i >> log2_m) * stride_r + (j >> log2_n)] != 0; }
};

// Fast forms a snippet may call where precise math would dominate the element pass (precise
// division and tanhf cost tens of instructions per element; measured: a soft-cap score_mod written
// with them ran 2.2x slower than with these): tanh.approx.f32 (relative error about 2^-11, below
// f16/bf16 rounding; sm_75+) and division to 2 ulp over the full range (div.full.f32, which is
// what Triton — so FlexAttention's score_mod — compiles an fp32 `/` to).
__device__ __forceinline__ float fast_tanh(float x) {
#if JITATTN_HIP
  return tanhf(x);  // no approximate tanh instruction on AMD targets
#else
  float y;
  asm("tanh.approx.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
#endif
}
__device__ __forceinline__ float fast_div(float a, float b) {
#if JITATTN_HIP
  return __fdividef(a, b);
#else
  float y;
  asm("div.full.f32 %0, %1, %2;" : "=f"(y) : "f"(a), "f"(b));
  return y;
#endif
}

// A user variant (jit/variant.h generates `V` from the user's snippets) over a built-in policy:
// `Base` masks and biases first; then mask_mod(b, h, i, j) == false masks, and score_mod
// rewrites the score s = logit · ln 2 (q·k·scale plus the built-in bias, natural units) into
// score_mod(s, b, h, i, j). A tile runs mask_mod unless the variant's block map (built from the
// same mask_mod, FwdParams::map) says every element of it is visible, and is never loaded when
// the map says none is; a full tile still runs score_mod (score()).
template <class Base, class V>
struct UserPolicy : PolicyTraits {
  static constexpr bool kElementwise = Base::kElementwise, kRowMask = false, kLogitAnywhere = true;
  static constexpr bool kScore = V::kScore, kSkipsTiles = V::kMask, kScoreGrad = V::kScoreGrad;
  static constexpr bool kBaseTiles = V::kMask && !V::kScore && Base::kRowMask && !Base::kElementwise;
  // span(): the map's row spans stand in for a mask_mod that reads captured tensors (documents,
  // prefix tables: loads per element); one of indices and scalars alone (a window) costs less
  // than the spans' loads and runs as it is (measured: the window 4% slower through spans).
  static constexpr bool kSpans = V::kMask && V::kTensors;
  Base base;
  V v;
  CellMap<false> map;
  int b, h;
  __device__ UserPolicy(const FwdParams& p, int b_, int h_, int mq, int mkv)
      : base(p, b_, h_, mq, mkv), v(p.user), map(p.map, b_, h_), b(b_), h(h_) {}
  __device__ void kv_range(int q_lo, int q_hi, int mkv, int& lo, int& hi) const { base.kv_range(q_lo, q_hi, mkv, lo, hi); }
  __device__ void q_range(int k_lo, int k_hi, int mq, int& lo, int& hi) const { base.q_range(k_lo, k_hi, mq, lo, hi); }
  __device__ void row_range(int i, int mkv, int& lo, int& hi) const { base.row_range(i, mkv, lo, hi); }
  __device__ bool tile_full(int q_lo, int q_hi, int k_lo, int k_hi) const {
    return base.tile_full(q_lo, q_hi, k_lo, k_hi) && (!V::kMask || map.state(q_lo, q_hi, k_lo, k_hi) == 2);
  }
  __device__ int tile_state(int q_lo, int q_hi, int k_lo, int k_hi) const {
    const int m = map.state(q_lo, q_hi, k_lo, k_hi);
    if (m != 2) return m;
    return base.tile_full(q_lo, q_hi, k_lo, k_hi) ? 2 : kBaseTiles ? 3 : 1;
  }
  __device__ float score(float y, int i, int j) const {
    if constexpr (V::kScore) y = v.score_mod(y * kLn2, b, h, i, j) * kLog2e;
    return y;
  }
  // mask_mod and score_mod run on every element given, masked ones included (their results there
  // are dropped): no branch per element.
  __device__ float logit(float x, int i, int j) const {
    if constexpr (V::kMask) return logit_if(x, i, j, v.mask_mod(b, h, i, j));
    else return logit_if(x, i, j, true);
  }
  // logit() with mask_mod's verdict given (`seen`), e.g. from the row's span.
  __device__ float logit_if(float x, int i, int j, bool seen) const {
    const float y = base.logit(x, i, j);
    const bool keep = (y != neg_inf()) & seen;
    const float z = score(y, i, j);
    return keep ? z : neg_inf();
  }
  __device__ bool span(int i, int& lo, int& hi) const { return map.span(i, lo, hi); }
  __device__ float score_grad(float x, int i, int j) const {
    if constexpr (V::kScoreGrad) return v.score_grad(base.logit(x, i, j) * kLn2, b, h, i, j);
    return 1.f;
  }
};

// BlockSparseMask over a mask: element (i, j) is visible iff `Mask` lets it through and the
// layout's block (h, i / block, j / block) is set (FwdParams::layout, binary; broadcast over b and,
// with a one-head layout, h). Tiles of unset blocks are never loaded; tiles inside set blocks
// are unmasked where `Mask` allows.
template <class Mask>
struct BlockSparsePolicy : PolicyTraits {
  static constexpr bool kRowMask = false, kSkipsTiles = true, kLogitAnywhere = !Mask::kElementwise;
  Mask mask;
  CellMap<true> layout;
  __device__ BlockSparsePolicy(const FwdParams& p, int b, int h, int mq, int mkv) : mask(p, b, h, mq, mkv), layout(p.layout, b, h) {}
  __device__ void kv_range(int q_lo, int q_hi, int mkv, int& lo, int& hi) const { mask.kv_range(q_lo, q_hi, mkv, lo, hi); }
  __device__ void q_range(int k_lo, int k_hi, int mq, int& lo, int& hi) const { mask.q_range(k_lo, k_hi, mq, lo, hi); }
  __device__ void row_range(int i, int mkv, int& lo, int& hi) const { mask.row_range(i, mkv, lo, hi); }
  __device__ bool tile_full(int q_lo, int q_hi, int k_lo, int k_hi) const {
    return mask.tile_full(q_lo, q_hi, k_lo, k_hi) && layout.state(q_lo, q_hi, k_lo, k_hi) == 2;
  }
  __device__ int tile_state(int q_lo, int q_hi, int k_lo, int k_hi) const {
    const int m = layout.state(q_lo, q_hi, k_lo, k_hi);
    return m == 0 ? 0 : m == 2 && mask.tile_full(q_lo, q_hi, k_lo, k_hi) ? 2 : 1;
  }
  __device__ float logit(float x, int i, int j) const {
    const float y = mask.logit(x, i, j);
    const bool seen = layout.visible(i, j);
    return seen ? y : neg_inf();
  }
};

// The candidate tiles a block walks (key tiles of a query block, or query tiles of a key block)
// and what the policy says of each (kSkipsTiles: tile_state): one bit per candidate for "kept"
// (not empty), one for "full" and, with kBase (the policy's kBaseTiles), one for "masked by the
// base alone" (state 3), spread over each warp's lanes (lane l holds candidates 32l..32l+31), so
// every warp of the block holds the same set and walks it in step with the others. Candidates
// past the first kCap are all kept, none full. Call every member from all lanes of every warp
// (the set is block-uniform).
template <bool kOn, bool kBase = false>
struct TileSet {
  static constexpr int kCap = 1024;
  unsigned bits = 0, full_bits = 0, base_bits = 0;
  int n = 0;
  // Candidates 0..n_-1 with state(c) as tile_state gives it.
  template <class State>
  __device__ void build(int n_, const State& state) {
    n = n_;
    if constexpr (kOn) {
      const int lane = threadIdx.x % 32, words = imin(ceil_div(n, 32), 32);
      for (int w = 0; w < words; ++w) {
        const int c = w * 32 + lane;
        const int s = c < n ? state(c) : 0;
        const unsigned kept = port::ballot32(s != 0), full = port::ballot32(s == 2);
        if (lane == w) bits = kept, full_bits = full;
        if constexpr (kBase) {
          const unsigned base = port::ballot32(s == 3);
          if (lane == w) base_bits = base;
        }
      }
    }
  }
  // The words in shared memory at `at` (kBytes there): this warp stores them (store) or takes
  // those another warp stored (load, for candidates 0..n_-1) instead of building its own.
  static constexpr int kBytes = 3 * 32 * 4;
  __device__ void store(unsigned at) const {
    if constexpr (kOn) {
      const unsigned lane = threadIdx.x % 32;
      asm volatile("st.shared.u32 [%0], %1;\n" ::"r"(at + 4 * lane), "r"(bits) : "memory");
      asm volatile("st.shared.u32 [%0], %1;\n" ::"r"(at + 128 + 4 * lane), "r"(full_bits) : "memory");
      asm volatile("st.shared.u32 [%0], %1;\n" ::"r"(at + 256 + 4 * lane), "r"(base_bits) : "memory");
    }
  }
  __device__ void load(int n_, unsigned at) {
    n = n_;
    if constexpr (kOn) {
      const unsigned lane = threadIdx.x % 32;
      asm volatile("ld.shared.u32 %0, [%1];\n" : "=r"(bits) : "r"(at + 4 * lane) : "memory");
      asm volatile("ld.shared.u32 %0, [%1];\n" : "=r"(full_bits) : "r"(at + 128 + 4 * lane) : "memory");
      if constexpr (kBase) asm volatile("ld.shared.u32 %0, [%1];\n" : "=r"(base_bits) : "r"(at + 256 + 4 * lane) : "memory");
    }
  }
  // Whether kept candidate c is masked by the base policy alone (state 3); false when not known.
  __device__ bool base_only(int c) const {
    if constexpr (!kOn || !kBase) return false;
    return c < kCap && (port::shfl32(base_bits, c / 32) >> (c % 32) & 1u);
  }
  // Whether kept candidate c is full (no per-element mask); false when not known.
  __device__ bool full(int c) const {
    if constexpr (!kOn) return false;
    return c < kCap && (port::shfl32(full_bits, c / 32) >> (c % 32) & 1u);
  }
  // The first kept candidate >= c, or n when there is none.
  __device__ int next(int c) const {
    if constexpr (!kOn) return c < n ? c : n;
    if (c >= n) return n;
    if (c >= kCap) return c;
    const int lane = threadIdx.x % 32, w = c / 32;
    const unsigned here = port::shfl32(bits, w) & (~0u << (c % 32));
    if (here) return w * 32 + __ffs(here) - 1;
    const unsigned later = port::ballot32(lane > w && bits != 0);
    if (!later) return imin(n, kCap);
    const int l = __ffs(later) - 1;
    return l * 32 + __ffs(port::shfl32(bits, l)) - 1;
  }
  // How many candidates are kept.
  __device__ int count() const {
    if constexpr (!kOn) return n;
    int k = __popc(bits);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) k += port::shfl_xor32(k, o);
    return k + imax(0, n - kCap);
  }
};

// Where sequence b's queries and keys are. Dense: batch row b of [B, M, H, K] tensors.
// Varlen: the block-diagonal layout of FwdParams, in batch row 0. Paged: queries as varlen;
// k_start is the first logical key position of the sequence in its page-table row.
template <bool kVarlen, bool kPaged = false>
struct SeqGeometry {
  int batch;            // the tensors' batch index
  int q_start, k_start; // first query/key row of the sequence
  int mq, mkv;          // its lengths
  __device__ SeqGeometry(const FwdParams& p, int b) {
    if constexpr (kPaged) {
      batch = 0;
      q_start = p.q_seqstart[b];
      mq = p.q_seqstart[b + 1] - q_start;
      k_start = p.k_seqstart ? p.k_seqstart[b] : 0;
      mkv = p.k_seqlen[b];
    } else if constexpr (kVarlen) {
      batch = 0;
      q_start = p.q_seqstart[b];
      mq = p.q_seqstart[b + 1] - q_start;
      k_start = p.k_seqstart[b];
      mkv = p.k_seqlen ? p.k_seqlen[b] : p.k_seqstart[b + 1] - k_start;
    } else {
      batch = b;
      q_start = k_start = 0;
      mq = p.mq;
      mkv = p.mkv;
    }
  }
};

// Row j of a sequence's query, key or value matrix. Dense and varlen: a strided matrix starting
// at the sequence's first row. Paged (keys and values only): through the page table.
template <class T, bool kPaged_>
struct Rows {
  static constexpr bool kPaged = kPaged_;
  const T* base;  // dense: the sequence's row 0; paged: physical row 0 of the (batch 0, head) slice
  int64_t ld;
  const int32_t* table;  // paged: this sequence's page-table row
  int page_size, k_start;
  __device__ Rows(const T* base_, int64_t ld_) : base(base_), ld(ld_) {}
  __device__ Rows(const FwdParams& p, const T* base_, int64_t ld_, int b, int k_start_) : base(base_), ld(ld_) {
    if constexpr (kPaged) {
      table = p.block_tables + int64_t(b) * p.block_tables_stride;
      page_size = p.page_size;
      k_start = k_start_;
    }
  }
  __device__ const T* operator()(int j) const {
    if constexpr (kPaged) {
      const int x = k_start + j;
      return base + (int64_t(table[x / page_size]) * page_size + x % page_size) * ld;
    } else {
      return base + int64_t(j) * ld;
    }
  }
};

// The key or value rows of key/value head hk for sequence b.
template <class T, bool kPaged, class Seq>
__device__ __forceinline__ Rows<T, kPaged> kv_rows(const FwdParams& p, const void* ptr, int64_t stride_b, int64_t stride_h,
                                                   int64_t stride_m, const Seq& seq, int hk, int b) {
  const T* head = static_cast<const T*>(ptr) + seq.batch * stride_b + hk * stride_h;
  if constexpr (kPaged) return Rows<T, true>(p, head, stride_m, b, seq.k_start);
  else return Rows<T, false>(head + int64_t(seq.k_start) * stride_m, stride_m);
}

}  // namespace jitattn
