// Which kernel family and tile configuration serves a signature. Measured on the H100
// (see docs in README "Performance"); JITATTN_TILE overrides it for experiments.
#include <algorithm>

#include "jit/env.h"
#include "jit/signature.h"

namespace jitattn::jit {

namespace {
int round_up(int x, int m) { return (x + m - 1) / m * m; }

// kernel_src/bwd_simt.cuh's layouts (bwd/bwd_kv and bwd_dq, fp32 inputs).
int bwd_simt_smem_bytes(const KernelSpec& spec) {
  const int m = spec.tile.block_m, n = spec.tile.block_n, d = spec.sig.head_dim, dv = spec.sig.head_dim_v;
  if (spec.sig.op == Op::bwd_dq) return 4 * (m * d + m * dv + n * d + n * dv + m * n + 2 * m);
  return 4 * (n * d + n * dv + m * d + m * dv + m * n + 2 * m);
}

// Largest dynamic shared memory a block may opt into, per compute capability (CUDA) or the
// target's LDS (HIP).
int max_smem_bytes(const Signature& sig) {
  if (const GfxTarget* g = sig.arch().gfx()) return g->lds;
  if (sig.backend != uint8_t(Backend::cuda)) return 0;
  const int sm = sig.arch_sm;
  if (sm == 80 || sm == 87) return 163 * 1024;
  if (sm == 90 || sm >= 100) return 227 * 1024;
  return 99 * 1024;  // sm_86, sm_89, sm_120...
}

int smem_of(const Signature& sig, Family family, TileConfig tile);

// The first tile of `candidates` whose shared memory fits the signature's arch (the backward's
// tiles are large: what fits an H100's 227 KB does not fit an A100's 163 KB or an sm_86's 99 KB).
TileConfig first_fitting(const Signature& sig, Family family, std::initializer_list<TileConfig> candidates) {
  for (const TileConfig& t : candidates)
    if (smem_of(sig, family, t) <= max_smem_bytes(sig)) return t;
  return *(candidates.end() - 1);  // validate_spec then says why it does not fit
}

TileConfig default_tile(const Signature& sig, Family family) {
  const int d = std::max(sig.head_dim, sig.head_dim_v);
  switch (sig.op) {
    case Op::bwd_pre: return {4, 1, 4};     // one warp per row
    case Op::bwd_post: return {128, 1, 4};  // one thread per element
    case Op::merge: return {128, 1, 4};     // one thread per output element
    case Op::swiglu_fwd: case Op::swiglu_bwd: return {128, 1, 8};  // 8 elements per thread
    case Op::block_map: return {256, 1, 8};  // a cell's elements, or one element per thread
    case Op::decode:
      // 16 packed rows, 16 keys per warp per tile (kernel_src/decode.cuh). H200, bf16, B = 8,
      // 32/8 heads, d = 128 (JITATTN_DECODE_TILE sweep): m16n128w8 (213 KB, one block per SM)
      // gave 3.87/3.60 TB/s dense/paged at KV 32768 against 3.80/3.53 for m16n64w4 (two per SM),
      // 3.69/3.52 for m16n32w2 and 3.16/2.39 for m16n64w2; at KV 4096 m16n128w8 and m16n64w4 tie.
      // The smaller tiles where the larger do not fit (sm_80's 163 KB, sm_86's 99 KB). With tensor
      // maps (session 8, docs/perf-notes.md) m16n128w8 gave 2.64/3.93 TB/s at 4k/32k against
      // 2.55/4.00 for m16n64w4s4 and 2.57/3.91 for m16n64w4: kept.
      if (d <= 128) return first_fitting(sig, family, {{16, 128, 8}, {16, 64, 4}, {16, 32, 2}});
      return first_fitting(sig, family, {{16, 64, 4}, {16, 32, 2}, {16, 16, 1}});
    case Op::bwd: case Op::bwd_kv:
      // kBlockN keys per block (16 per warp), kBlockM queries per step.
      // AMD's 64 KiB of LDS holds m16n32 up to d = 128, m8n16 at 256.
      if (family == Family::simt) return first_fitting(sig, family, {{16, 32, 4}, {16, 16, 4}, {8, 16, 4}});
      // bwd_wgmma.cuh: two warpgroups of 64 keys, 64 queries per step (at d = 128 the Sᵀ, dPᵀ, dK
      // and dV accumulators take 192 of the 255 registers; 128 queries at d = 64 spilled).
      if (family == Family::wgmma) return {64, 128, 8};
      if (family == Family::tma) return {64, 128, 12};  // and the producer warpgroup
      // H100, bf16, M = 4096: at d = 64, m128n128w8 246/214 TFLOP/s (non-causal/causal) against
      // m64n128w8 219/194 and m32n128w8 173/161; at d = 128 m128 does not fit in shared memory.
      // Smaller tiles only where the larger ones do not fit.
      if (d <= 64) return first_fitting(sig, family, {{128, 128, 8}, {64, 128, 8}, {64, 64, 4}, {32, 64, 4}, {16, 32, 2}});
      if (d <= 128) return first_fitting(sig, family, {{64, 128, 8}, {64, 64, 4}, {32, 64, 4}, {16, 32, 2}});
      // Sliced head dims (bwd_mma_slices): H200, bf16, d = 256, M = 16384 (JITATTN_BWD_TILE, one
      // call): m32n128w8 158/161 TFLOP/s non-causal/causal against m64n64w4 123/111, m16n128w8
      // 120/121, m16n64w4 112/114, m32n64w4 109/111 (docs/perf-notes.md). Its 8 warps tile the
      // 32-row dQ product 2 × 4, so the query head dim's slice must be a multiple of 32 columns.
      if (bwd_mma_slices(sig.head_dim, sig.head_dim_v) == 2 && (sig.head_dim + 15) / 16 * 16 % 64 == 0)
        return first_fitting(sig, family, {{32, 128, 8}, {64, 64, 4}, {32, 64, 4}, {16, 32, 2}});
      return first_fitting(sig, family, {{64, 64, 4}, {32, 64, 4}, {16, 32, 2}});
    case Op::bwd_dq:
      if (family == Family::simt) return first_fitting(sig, family, {{16, 32, 4}, {16, 16, 4}, {8, 16, 4}});
      return first_fitting(sig, family, {{64, 64, 4}, {64, 32, 4}, {32, 32, 2}, {32, 16, 2}, {16, 16, 1}});
    case Op::fwd: break;
  }
  if (family == Family::simt) {
    if (d <= 128) return first_fitting(sig, family, {{16, 32, 4}, {16, 16, 4}, {8, 16, 4}});
    return first_fitting(sig, family, {{16, 16, 4}, {8, 16, 4}});
  }
  // fwd_mfma.cuh: one wave64 per 16 query rows; four waves up to d = 128, two past it (LDS).
  if (family == Family::mfma) return d <= 128 ? TileConfig{64, 32, 4} : TileConfig{32, 32, 2};
  if (family == Family::tma) {
    const int dp = round_up(d, 64);  // the padded width (fwd_tma.cuh kDP, kDvP)
    // fwd_tma.cuh, H200, bf16, M = 4096/16384, non-causal/causal (JITATTN_TILE, one call): at
    // d = 64 m128n128w12 gave 389/361 and 414/438 TFLOP/s against 349/296 and 368/359 for
    // m128n64w12; at d = 128 m128n128w12 621/516, 664/588 against 503/446, 533/491. Past 128,
    // m128n64w12 fits (194 KB at 256: 627/550, 660/613).
    if (dp <= 64) return {192, 128, 16};
    return {128, uint16_t(dp <= 128 ? 128 : 64), 12};
  }
  if (family == Family::wgmma) {
    // H100, bf16, M = 4096/16384, one call (JITATTN_TILE sweep, docs/perf-notes.md "w3"): at
    // d = 64 m128n64w8 gave 325-372 TFLOP/s against 285-331 for m128n128w8; at d = 128
    // m128n128w8 gave 394-451 against 344-387 for m128n64w8. A local window makes every block
    // short: there m64n64w4 (two blocks per SM) took the 256-key window at M = 16384 from 0.204
    // to 0.176 ms. Block-diagonal kinds keep m128n128w8 (16 documents: 0.402 against 0.412 ms).
    // Past 128: m128n64w8, the two-warpgroup tile that fits (225 KB of shared memory at 256).
    if (d > 128) return {128, 64, 8};
    if (has_left_window(sig.bias)) return {64, 64, 4};
    return d <= 64 ? TileConfig{128, 64, 8} : TileConfig{128, 128, 8};
  }
  // H100, bf16 (tools/perf/sweep.sh): m128n64w4 beat m128n64w8, m64n64w4, m128n32w4 and
  // m128n128w8 at d = 64 and 128. Each warp owns 32 query rows, so each K/V fragment read from
  // shared memory feeds two MMAs.
  if (d <= 128) return {128, 64, 4};
  return {64, 32, 4};
}

// The forwards fwd_wgmma.cuh serves: sm_90a, f16/bf16, 16-byte aligned rows, head dims (query/key
// and value, independently) 64, 128, 192 or 256: Q·Kᵀ steps through 64-column panels and P·V is
// one wgmma of N = the value head dim.
bool wgmma_head_dim(int d) { return d % 64 == 0 && d <= 256; }
// The backwards bwd_wgmma.cuh serves (dK/dV kernel; the deterministic mode's dQ kernel stays
// mma): sm_90a, f16/bf16, 16-byte aligned rows, head dims 64/64, 128/64 or 128/128 (query/key,
// value): the dK/dV accumulators of 64 keys per warpgroup must fit in registers beside Sᵀ/dPᵀ.
bool wgmma_backward(const Signature& sig) {
  return (sig.op == Op::bwd || sig.op == Op::bwd_kv) && sig.arch_sm == 90 && sig.arch_specific &&
         sig.dtype != DType::f32 && sig.align == 16 &&
         ((sig.head_dim == 64 && sig.head_dim_v == 64) || (sig.head_dim == 128 && (sig.head_dim_v == 64 || sig.head_dim_v == 128)));
}
// The tma family's backward is bwd_wgmma.cuh's warp-specialized form (a producer warpgroup,
// Cfg::kTma) and serves the same signatures; it is the default, JITATTN_BWD_FAMILY=wgmma asks for
// the cp.async form. H200, bf16, M = 4096 / 16384, non-causal / causal, one call each
// (docs/perf-notes.md): at 64 it gave 342-344 / 271-277 / 378-379 / 345-346 TFLOP/s against
// 292 / 252 / 314 / 301 for the cp.async form (session 15); at 128, once dV and dK read Pᵀ and dSᵀ
// from shared memory and dQ accumulates in Sᵀ's registers (kOperandsSmem), 441 / 328-361 / 471-473
// / 448 against 375 / 313 / 412 / 384 (session 20; before, 240 registers were too few and it was
// 2-4% slower).
bool tma_backward(const Signature& sig) {
  const Env::FwdFamily f = Env::get().bwd_family;
  return wgmma_backward(sig) && (f == Env::FwdFamily::tma || f == Env::FwdFamily::best);
}
// A tile bwd_wgmma.cuh takes: a warpgroup (4 warps) per 64 keys (and the tma family's producer
// warpgroup), 64 or 128 queries per step, and dQ pieces of 32 columns or more per warpgroup (""
// when it does, else why not).
std::string wgmma_backward_tile_problem(const Signature& s, const TileConfig& t, bool tma) {
  const int producer_warps = tma ? 4 : 0;
  if (t.warps % 4 != 0 || t.block_n != 16 * (t.warps - producer_warps))
    return "tile " + t.name() + (tma ? ": the tma backward has a producer warpgroup and one warpgroup (4 warps) per 64 keys"
                                     : ": the wgmma backward has one warpgroup (4 warps) per 64 keys");
  if (t.block_m != 64 && t.block_m != 128) return "tile " + t.name() + ": block_m must be 64 or 128";
  const int dq_m = t.block_m / 64, groups = t.warps / 4 - (tma ? 1 : 0);
  if (groups % dq_m != 0 || (s.head_dim * dq_m / groups) % 32 != 0)
    return "tile " + t.name() + ": the dQ product (block_m x head_dim) must split into pieces of 32 or more columns per warpgroup";
  return "";
}
// What both Hopper forwards need: sm_90a, f16/bf16, 16-byte aligned rows.
bool hopper_forward(const Signature& sig) {
  return sig.op == Op::fwd && sig.arch_sm == 90 && sig.arch_specific && sig.dtype != DType::f32 && sig.align == 16;
}
bool wgmma_forward_serves(const Signature& sig) {
  return hopper_forward(sig) && wgmma_head_dim(sig.head_dim) && wgmma_head_dim(sig.head_dim_v);
}
bool wgmma_forward(const Signature& sig) { return wgmma_forward_serves(sig) && Env::get().fwd_family != Env::FwdFamily::mma; }
// The forwards fwd_tma.cuh serves: those of fwd_wgmma.cuh whose keys a tensor map addresses
// (not paged: the host gives a signature element alignment where a view cannot be mapped,
// jit/ops/forward.cpp) and without a left window (whose short blocks run best two per SM, on
// fwd_wgmma.cuh's m64 tile, where one block per SM leaves the SM half idle).
// Its head dims may also be other multiples of 8 in 64..256: shared memory pads them to 64-column
// panels, which the boxes fill with zeros (docs/perf-notes.md: faster than mma.sync at every one
// measured, for all the padding's wasted products).
bool tma_head_dim(int d) { return d % 8 == 0 && d >= 64 && d <= 256; }
bool tma_forward_serves(const Signature& sig) {
  return hopper_forward(sig) && tma_head_dim(sig.head_dim) && tma_head_dim(sig.head_dim_v) && !is_paged(sig.bias) &&
         !has_left_window(sig.bias);
}
bool tma_forward(const Signature& sig) {
  const Env::FwdFamily f = Env::get().fwd_family;
  return tma_forward_serves(sig) && (f == Env::FwdFamily::best || f == Env::FwdFamily::tma);
}
// A tile fwd_tma.cuh takes: two or three warpgroups of 64 query rows and the producer's (m128w12,
// m192w16), keys by 64 or 128 ("" when it does, else why not).
std::string tma_forward_tile_problem(const TileConfig& t) {
  if ((t.block_m != 128 && t.block_m != 192) || t.warps != 4 * (t.block_m / 64 + 1))
    return "tile " + t.name() +
           ": the tma forward has two or three warpgroups of 64 query rows and a producer warpgroup (m128w12, m192w16)";
  if (t.block_n != 64 && t.block_n != 128) return "tile " + t.name() + ": block_n must be 64 or 128";
  return "";
}

// The forwards fwd_mfma.cuh serves: f16/bf16 on a CDNA target with matrix cores, head dims
// multiples of 16 (the k and n of one v_mfma_f32_16x16x16), under JITATTN_AMD_MFMA=on.
bool mfma_head_dim(int d) { return d % 16 == 0 && d <= 256; }

// The decode signatures the tma family can serve (decode_tma adds the environment).
bool tma_decode_serves(const Signature& sig) {
  return sig.op == Op::decode && sig.arch().backend == Backend::cuda && sig.arch_sm >= 90 && sig.align == 16 &&
         !sig.odd_pages && sig.head_dim >= 64 && sig.head_dim_v >= 64;
}
bool mfma_forward(const Signature& sig) {
  const GfxTarget* g = sig.arch().gfx();
  return sig.op == Op::fwd && g && g->mfma && sig.dtype != DType::f32 && mfma_head_dim(sig.head_dim) &&
         mfma_head_dim(sig.head_dim_v);
}
}  // namespace

KernelSpec make_spec(const Signature& sig) {
  KernelSpec spec;
  spec.sig = sig;
  const bool rowwise = sig.op == Op::bwd_pre || sig.op == Op::bwd_post || sig.op == Op::merge ||
                       sig.op == Op::swiglu_fwd || sig.op == Op::swiglu_bwd || sig.op == Op::block_map;
  // JITATTN_FAMILY=portable: NVIDIA runs what AMD runs (the decode op stays mma: forward() does
  // not route to it then, jit/ops/decode.cpp decode_applies).
  const bool portable = Env::get().portable && sig.op != Op::decode;
  if (sig.backend == uint8_t(Backend::hip))
    spec.family = mfma_forward(sig) && Env::get().amd_mfma ? Family::mfma : Family::simt;
  else
    spec.family = sig.dtype == DType::f32 || rowwise || portable ? Family::simt
                  : tma_forward(sig)                             ? Family::tma
                  : wgmma_forward(sig)                           ? Family::wgmma
                  : tma_backward(sig)                            ? Family::tma
                  : wgmma_backward(sig) && Env::get().bwd_family != Env::FwdFamily::mma ? Family::wgmma
                  : decode_tma(sig)                              ? Family::tma
                                                                 : Family::mma;
  const auto& forced = Env::get().tile;  // forward experiments only
  spec.tile = forced && sig.op == Op::fwd ? *forced : default_tile(sig, spec.family);
  // A forced tile the tma forward cannot take is a cp.async wgmma experiment where that family
  // serves the head dims (multiples of 64), else an mma.sync one.
  if (forced && sig.op == Op::fwd && spec.family == Family::tma && !tma_forward_tile_problem(spec.tile).empty())
    spec.family = wgmma_forward(sig) ? Family::wgmma : Family::mma;
  const auto& forced_bwd = Env::get().bwd_tile;
  if (forced_bwd && (sig.op == Op::bwd || sig.op == Op::bwd_kv) &&
      (spec.family == Family::mma || spec.family == Family::wgmma || spec.family == Family::tma)) {
    spec.tile = *forced_bwd;
    // A tile the tma backward cannot take is a wgmma (cp.async) experiment where that family takes
    // it, and one the wgmma backward cannot take an mma.sync experiment.
    if (spec.family == Family::tma && !wgmma_backward_tile_problem(sig, spec.tile, true).empty()) spec.family = Family::wgmma;
    if (spec.family == Family::wgmma && !wgmma_backward_tile_problem(sig, spec.tile, false).empty()) spec.family = Family::mma;
  }
  if (Env::get().decode_tile && sig.op == Op::decode) spec.tile = *Env::get().decode_tile;
  const auto& forced_dq = Env::get().bwd_dq_tile;
  if (forced_dq && sig.op == Op::bwd_dq && spec.family == Family::mma) spec.tile = *forced_dq;
  return spec;
}

// Mirrors the kernels' layouts (kernel_src/*: kSmemBytes); the generated source static_asserts
// that both agree.
namespace {
int smem_of(const Signature& sig, Family family, TileConfig tile) {
  KernelSpec spec;
  spec.sig = sig;
  spec.family = family;
  spec.tile = tile;
  return spec.smem_bytes();
}
}  // namespace

bool decode_tma(const Signature& sig) {
  return tma_decode_serves(sig) && Env::get().decode_tma;
}

int KernelSpec::smem_bytes() const {
  const int m = tile.block_m, n = tile.block_n, d = sig.head_dim, dv = sig.head_dim_v;
  const int qk_stride = round_up(d, 16) + 8, v_stride = round_up(dv, 16) + 8;
  switch (sig.op) {
    case Op::bwd_pre: case Op::bwd_post: case Op::merge: case Op::swiglu_fwd: case Op::swiglu_bwd: case Op::block_map: return 0;
    case Op::decode:  // Q and the K/V stages (decode.cuh DecodeLayout)
      if (family == Family::tma) return 1024 + decode_stages(tile) * n * 128 * ((d + 63) / 64 + (dv + 63) / 64) + 2 * 16 * qk_stride;
      return 2 * (16 * qk_stride + decode_stages(tile) * n * (qk_stride + v_stride));
    case Op::bwd: case Op::bwd_kv:
      if (family == Family::simt) return bwd_simt_smem_bytes(*this);
      // K, V; two stages of Q, dO, dSᵀ (bwd only), lse and delta (bwd_wgmma.cuh); dQ in fp32 (bwd
      // only); the tma family's 11 barriers and, past d = 64, its Pᵀ (bwd only, kOperandsSmem)
      if (family == Family::wgmma || family == Family::tma)
        return 1024 + 2 * (n * d + n * dv + 2 * m * d + 2 * m * dv + (sig.op == Op::bwd ? 2 * n * m : 0)) +
               (sig.op == Op::bwd ? 4 * m * d : 0) + 16 * m +
               (family == Family::tma ? 8 * 11 + (sig.op == Op::bwd && d > 64 ? 2 * n * m : 0) : 0);
      // K, V; two stages of Q, dO, dSᵀ (bwd only), lse and delta (bwd_mma.cuh)
      return 2 * (n * qk_stride + n * v_stride + 2 * m * qk_stride + 2 * m * v_stride +
                  (sig.op == Op::bwd ? 2 * n * (m + 8) : 0)) + 16 * m;
    case Op::bwd_dq:
      if (family == Family::simt) return bwd_simt_smem_bytes(*this);
      return 2 * (m * qk_stride + m * v_stride + 2 * n * qk_stride + 2 * n * v_stride);  // bwd_dq_mma.cuh
    case Op::fwd: break;
  }
  if (family == Family::simt) return 4 * (m * d + n * d + n * dv + m * n + m * dv + 3 * m);
  // Q, K, V as 16-bit rows padded by 8, S [m][n] fp32, P [m][n + 8] 16-bit, max/sum/alpha (fwd_mfma.cuh)
  if (family == Family::mfma) return 2 * (m + n) * (d + 8) + 2 * n * (dv + 8) + 4 * m * n + 2 * m * (n + 8) + 12 * m;
  if (family == Family::wgmma) return 1024 + 2 * (m * d + 2 * n * d + 3 * n * dv);  // Q, two K and three V stages (fwd_wgmma.cuh)
  if (family == Family::tma) {  // Q, two K and V stages at the padded widths, 15 barriers, 2 work-item slots
    const int dp = round_up(d, 64), dvp = round_up(dv, 64);  // of an id and a tile set (fwd_tma.cuh)
    return 1024 + 2 * (m * dp + 2 * n * dp + 2 * n * dvp) + 8 * 15 + 2 * (4 + 384);
  }
  return 2 * (m * qk_stride + 2 * n * qk_stride + n * v_stride);  // Q, two K stages, V (fwd_mma.cuh)
}

std::string validate_spec(const KernelSpec& spec) {
  const Signature& s = spec.sig;
  auto dim_ok = [](int d) { return d >= 8 && d <= 256 && d % 8 == 0; };
  if (!dim_ok(s.head_dim)) return "head_dim=" + std::to_string(s.head_dim) + " must be a multiple of 8 in [8, 256]";
  if (!dim_ok(s.head_dim_v)) return "head_dim_v=" + std::to_string(s.head_dim_v) + " must be a multiple of 8 in [8, 256]";
  if (s.backend == uint8_t(Backend::hip)) {
    if (!s.arch().gfx()) return "arch " + s.arch().name() + " is not a known AMD target (" + Arch::rule() + ")";
    if (s.op == Op::decode) return "the decode kernels are CUDA-only (mma.sync); on AMD the forward takes few queries as any other";
    if (spec.family != Family::simt && spec.family != Family::mfma)
      return "the " + std::string(to_string(spec.family)) + " family is CUDA-only; AMD targets take the simt (portable) or mfma family";
  } else if (s.backend != uint8_t(Backend::cuda)) {
    return "backend " + std::to_string(s.backend) + " is not cuda (0) or hip (1)";
  } else if (spec.family == Family::mfma) {
    return "the mfma family is the AMD (CDNA) forward";
  }
  if (s.backend == uint8_t(Backend::cuda) && s.arch_sm < 80) return "arch " + s.arch().name() + " is older than sm_80";
  if (s.align != 16 && s.align != 2 && s.align != 4) return "align=" + std::to_string(s.align) + " must be 2, 4 or 16";
  if (spec.tile.stages && s.op != Op::decode) return "tile " + spec.tile.name() + ": only the decode kernels take a stage count";
  if (s.odd_pages && (s.op != Op::decode || !is_paged(s.bias)))
    return "oddpages: only a decode kernel of a paged bias kind reads pages";
  if (s.op == Op::decode) {
    if (s.dtype == DType::f32) return "the decode kernels take f16/bf16 inputs";
    if (s.dropout) return "the decode kernels have no dropout";
    if (spec.family != Family::mma && spec.family != Family::tma) return "the decode kernels are of the mma or tma family";
    if (spec.family == Family::tma && !tma_decode_serves(s))
      return "the tma family needs sm_90 or newer, 16-byte aligned rows, pages of a multiple of 8 rows and head dims of 64 or more";
    if (spec.tile.block_m != 16 || spec.tile.warps == 0 || spec.tile.block_n % (spec.tile.warps * 16) != 0)
      return "tile " + spec.tile.name() + ": decode takes block_m 16 and block_n a multiple of 16 x warps";
  } else if (spec.family == Family::tma && s.op == Op::fwd) {
    if (!tma_forward_serves(s))
      return "the tma forward needs sm_90a, f16/bf16, 16-byte aligned rows, head dims that are multiples of 8 in 64..256, unpaged keys and no left window";
    if (std::string problem = tma_forward_tile_problem(spec.tile); !problem.empty()) return problem;
  } else if (spec.family == Family::tma && (s.op == Op::bwd || s.op == Op::bwd_kv)) {
    if (!wgmma_backward(s))
      return "the tma backward needs sm_90a, f16/bf16, 16-byte aligned rows and head dims 64/64, 128/64 or 128/128";
    if (std::string problem = wgmma_backward_tile_problem(s, spec.tile, true); !problem.empty()) return problem;
  } else if (spec.family == Family::tma) {
    return "the tma family is the sm_90a forward and backward and the decode kernel";
  } else if (spec.family == Family::mma && (s.op == Op::bwd || s.op == Op::bwd_kv)) {
    if (s.dtype == DType::f32) return "the mma family takes f16/bf16 inputs";
    if (spec.tile.block_n % (spec.tile.warps * 16) != 0)
      return "tile " + spec.tile.name() + ": block_n must be a multiple of 16 x warps";
    if (spec.tile.block_m % 16 != 0 || spec.tile.warps % (spec.tile.block_m / 16) != 0)
      return "tile " + spec.tile.name() + ": block_m must be a multiple of 16 whose 16-row tiles divide the warps";
  } else if (spec.family == Family::wgmma && (s.op == Op::bwd || s.op == Op::bwd_kv)) {
    if (!wgmma_backward(s))
      return "the wgmma backward needs sm_90a, f16/bf16, 16-byte aligned rows and head dims 64/64, 128/64 or 128/128";
    if (std::string problem = wgmma_backward_tile_problem(s, spec.tile, false); !problem.empty()) return problem;
  } else if (spec.family == Family::wgmma) {
    if (s.op != Op::fwd || s.arch_sm != 90 || !s.arch_specific) return "the wgmma family is the sm_90a forward and backward";
    if (s.dtype == DType::f32) return "the wgmma family takes f16/bf16 inputs";
    if (s.align != 16) return "the wgmma family needs 16-byte aligned rows";
    if (!wgmma_head_dim(s.head_dim) || !wgmma_head_dim(s.head_dim_v))
      return "the wgmma family takes head_dim and head_dim_v of 64, 128, 192 or 256";
    if (spec.tile.block_m % 64 != 0 || spec.tile.warps != spec.tile.block_m / 16)
      return "tile " + spec.tile.name() + ": the wgmma family has one warpgroup (4 warps) per 64 query rows";
    if (spec.tile.block_n != 64 && spec.tile.block_n != 128) return "tile " + spec.tile.name() + ": block_n must be 64 or 128";
  } else if (spec.family == Family::mfma) {
    if (s.op != Op::fwd || !s.arch().gfx() || !s.arch().gfx()->mfma)
      return "the mfma family is the forward on AMD targets with matrix cores (gfx90a, gfx942)";
    if (s.dtype == DType::f32) return "the mfma family takes f16/bf16 inputs";
    if (!mfma_head_dim(s.head_dim) || !mfma_head_dim(s.head_dim_v)) return "the mfma family takes head dims that are multiples of 16";
    if (spec.tile.block_m != 16 * spec.tile.warps || spec.tile.block_n % 16 != 0)
      return "tile " + spec.tile.name() + ": the mfma family has one wave64 per 16 query rows and block_n a multiple of 16";
  } else if (spec.family == Family::mma) {
    if (s.dtype == DType::f32) return "the mma family takes f16/bf16 inputs";
    if (spec.tile.block_m % (spec.tile.warps * 16) != 0)
      return "tile " + spec.tile.name() + ": block_m must be a multiple of 16 x warps";
    if (spec.tile.block_n % 16 != 0) return "tile " + spec.tile.name() + ": block_n must be a multiple of 16";
  }
  if (spec.smem_bytes() > max_smem_bytes(s))
    return "tile " + spec.tile.name() + " needs " + std::to_string(spec.smem_bytes()) +
           " bytes of shared memory, more than " + s.arch().name() + " allows";
  return "";
}

}  // namespace jitattn::jit
