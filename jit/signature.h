// What changes the generated code, and nothing else (docs/design.md, "The path of one call").
//
// Signature  — the call's code-relevant facts (op, arch, dtypes, head dims, bias kind, flags,
//              alignment class). A plain value, hashed on the hot path without allocating.
// KernelSpec — a Signature plus the kernel family and tile configuration chosen for it, with a
//              canonical readable name such as fwd.sm_90a.bf16.d128.v128.causal.lse.a16.mma_m128n64w4.
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include "jit/bias_kinds.h"
#include "jitattn/tensor.h"

namespace jitattn::jit {

// fwd: the forward. The backward runs bwd_pre (delta = rowsum(dO ∘ O), zeroed dQ accumulator),
// then bwd (dK, dV and atomically accumulated dQ) and bwd_post (dQ in the query dtype) — or, in
// the deterministic mode, bwd_kv (dK, dV only) and bwd_dq (dQ without atomics).
// merge: merge_attentions. decode: the forward for few queries per sequence (kernel_src/decode.cuh).
// swiglu_fwd/swiglu_bwd: SwiGLU's gate and its gradient (kernel_src/swiglu.cuh; head_dim is the
// elements per thread, 8). block_map: a user variant's mask_mod as a block map or a dense bias
// (kernel_src/block_map.cuh; compiled per variant, f32, head dims 8).
// New ops are appended: an enumerator's value is part of cache keys.
enum class Op : uint8_t { fwd, bwd_pre, bwd, bwd_kv, bwd_dq, bwd_post, merge, decode, swiglu_fwd, swiglu_bwd, block_map };
constexpr Op kAllOps[] = {Op::fwd,      Op::bwd_pre, Op::bwd,    Op::bwd_kv,     Op::bwd_dq,
                          Op::bwd_post, Op::merge,   Op::decode, Op::swiglu_fwd, Op::swiglu_bwd,
                          Op::block_map};
bool uses_bias(Op op);  // ops whose kernels apply the bias policy
// One enumerator per generated mask/bias policy: the rows of jit/bias_kinds.h, in order. "bd_"
// kinds are block-diagonal (varlen layout: sequences concatenated along M); padded and gappy keys
// are the same kernels with a key-length array. "_br" means aligned to the bottom right
// (shift = Mkv - Mq per sequence). "pbd_" kinds read keys and values through a page table.
// "alibi" kinds add ALiBi's -slope_h·|j - i|. An enumerator's value is part of every cache key.
#define JITATTN_BIAS_ENUMERATOR(id, ...) id,
enum class BiasKind : uint8_t { JITATTN_BIAS_KINDS(JITATTN_BIAS_ENUMERATOR) };
#define JITATTN_BIAS_LIST_ENTRY(id, ...) BiasKind::id,
constexpr BiasKind kAllBiasKinds[] = {JITATTN_BIAS_KINDS(JITATTN_BIAS_LIST_ENTRY)};
#undef JITATTN_BIAS_ENUMERATOR
#undef JITATTN_BIAS_LIST_ENTRY
// The traits of jit/bias_kinds.h.
bool is_block_diagonal(BiasKind kind);  // varlen layout (paged kinds included)
bool is_paged(BiasKind kind);
// Local-attention kinds: each query sees a window of keys bounded on the left too.
bool has_left_window(BiasKind kind);
// Kinds whose query blocks see different numbers of keys (scheduled longest first).
bool has_uneven_blocks(BiasKind kind);
bool has_backward(BiasKind kind);       // the backward supports it
bool has_tensor_bias(BiasKind kind);    // a dense additive bias tensor is read
// The policy type of kernel_src/bias_policies.cuh, "{dtype}" standing for the input DTypeId.
const char* policy_template(BiasKind kind);
const char* xformers_biases(BiasKind kind);  // the xFormers biases this kind serves
// mma: mma.sync (sm_80+); wgmma: Hopper's warpgroup MMA loaded by cp.async (the forward where
// the tma one does not serve; the backward under JITATTN_BWD_FAMILY=wgmma); simt: the portable
// family — the fp32 path, the row kernels, and on AMD (or under JITATTN_FAMILY=portable) every
// dtype — whose source compiles for both backends (kernel_src/portability.cuh); mfma: the CDNA
// matrix-core forward (kernel_src/fwd_mfma.cuh, behind JITATTN_AMD_MFMA: it has never run); tma:
// what streams through tensor maps — the warp-specialized sm_90a forward (kernel_src/fwd_tma.cuh),
// the warp-specialized sm_90a backward (kernel_src/bwd_wgmma.cuh Cfg::kTma, the default there)
// and the decode kernel with K/V through them (sm_90+; kernel_src/decode.cuh kTma), where the
// wgmma forward and the mma decode kernel load by cp.async.
// Appended: a family's name is part of kernel names.
enum class Family : uint8_t { mma, simt, wgmma, mfma, tma };

const char* to_string(Op op);
const char* to_string(BiasKind kind);  // none, causal, causal_br, tensor, bd_causal, ...
const char* to_string(Family family);
std::optional<Op> parse_op(const std::string& s);
std::optional<BiasKind> parse_bias_kind(const std::string& s);
std::optional<DType> parse_dtype(const std::string& s);

// The two backends behind the JIT (docs/design.md decision 23): NVIDIA through NVRTC and the CUDA
// driver API, AMD through hiprtc and the HIP module API. A value is part of every cache key.
enum class Backend : uint8_t { cuda = 0, hip = 1 };
const char* to_string(Backend backend);

// The AMD targets jitattn compiles for: a row's position + 1 is its Arch::sm (appended only:
// part of cache keys). `wave` is the hardware wavefront hiprtc compiles for (CDNA 64, RDNA 32);
// `lds` the local data share one workgroup may use; `mfma` whether it has CDNA matrix cores
// (the fwd_mfma.cuh builtins of gfx90a); `elf_mach` the EF_AMDGPU_MACH value a code object for it
// carries in its ELF header flags (jit/cubin.cpp checks it). Debian 12's ROCm 5.2 device
// libraries cover gfx908, gfx90a and gfx1030, not gfx942 (ROCm 6 does).
struct GfxTarget {
  const char* name;
  int wave;
  int lds;
  bool mfma;
  unsigned elf_mach;
};
inline constexpr GfxTarget kGfxTargets[] = {
    {"gfx908", 64, 65536, false, 0x030},  // MI100: its MFMA set lacks the _1k bf16 forms fwd_mfma.cuh uses
    {"gfx90a", 64, 65536, true, 0x03f},   // MI200
    {"gfx942", 64, 65536, true, 0x04c},   // MI300 (ROCm 6)
    {"gfx1030", 32, 65536, false, 0x036}, // RDNA2 (wave32, no matrix cores)
};

// CUDA: compute capability as 10·major + minor, plus the "a" (architecture-specific) suffix that
// sm_90a needs for wgmma; "sm_90a" <-> {90, true}. HIP: "gfx90a" <-> {backend hip, sm = its
// kGfxTargets position + 1}.
struct Arch {
  uint8_t sm = 0;
  bool specific = false;
  Backend backend = Backend::cuda;
  std::string name() const;
  const GfxTarget* gfx() const;  // the AMD target, or null for CUDA
  static std::optional<Arch> parse(const std::string& s);
  static std::optional<Arch> gfx(const std::string& name);  // "gfx90a" (a feature suffix after ':' is dropped)
  // What parse() accepts, for error messages.
  static std::string rule();
  bool operator==(const Arch& o) const { return sm == o.sm && specific == o.specific && backend == o.backend; }
};

// Fixed-width fields and no padding, so the bytes can be hashed and compared directly.
struct Signature {
  Op op = Op::fwd;
  BiasKind bias = BiasKind::none;
  DType dtype = DType::f16;
  DType out_dtype = DType::f16;
  uint16_t head_dim = 0;
  uint16_t head_dim_v = 0;
  uint8_t arch_sm = 0;
  uint8_t arch_specific = 0;
  uint8_t lse = 0;
  uint8_t align = 16;  // 16: every pointer and row stride is 16-byte aligned; else element-aligned
  uint8_t dropout = 0;  // fwd, bwd*: dropout on the attention probabilities
  uint8_t dbias = 0;    // bwd: also writes the gradient of a dense bias
  uint8_t backend = 0;  // Backend; 0 (CUDA) keeps every CUDA key what it was before the HIP backend
  // decode, paged keys: pages that are not a multiple of 8 rows, which no tensor-map box of whole
  // swizzle periods fits (kernel_src/decode.cuh): the cp.async kernel reads them (name flag
  // "_oddpages"). 0 everywhere else.
  uint8_t odd_pages = 0;
  // A user variant's id (jit/variant.h), 0 for none: its snippets are compiled over the bias
  // kind's policy (named "<kind>+u<16 hex>").
  uint64_t variant = 0;

  Arch arch() const { return Arch{arch_sm, arch_specific != 0, Backend(backend)}; }
  void set_arch(const Arch& a) { arch_sm = a.sm, arch_specific = a.specific, backend = uint8_t(a.backend); }
  bool operator==(const Signature& o) const;
  uint64_t hash() const;  // XXH3-64 of the bytes
};
static_assert(sizeof(Signature) == 24, "Signature must stay padding-free");

struct TileConfig {
  uint16_t block_m = 0, block_n = 0, warps = 0;
  uint16_t stages = 0;  // pipeline depth where the family lets it vary (decode); 0: the family's default
  std::string name() const;  // m128n64w8, or m16n64w4s6 with stages
  static std::optional<TileConfig> parse(const std::string& s);
};

struct KernelSpec {
  Signature sig;
  Family family = Family::mma;
  TileConfig tile;

  std::string name() const;
  // tile.warps counts groups of 32 threads in every family but mfma, where a warp is a wave64.
  int threads() const { return tile.warps * (family == Family::mfma ? 64 : 32); }
  int smem_bytes() const;  // dynamic shared memory per block
  // The inverse of name(); nullopt if `name` is not a canonical name.
  static std::optional<KernelSpec> parse(const std::string& name);
};

// The mma.sync backward's blocks per key block (kernel_src/bwd_mma.cuh Cfg::kSlices), each computing
// dK, dV and dQ over its slice of the head dims (Sᵀ and dPᵀ over all of them, in each): one up to
// 128 + 128 columns; two past that where both padded head dims halve into 16-column pairs, since
// one warp's dK and dV of 16 keys take 64 registers per 32 columns (ptxas spilled 2 KB per
// thread at 256 + 256, none sliced). The generated Cfg, the tile and the grid all read it.
inline int bwd_mma_slices(int head_dim, int head_dim_v) {
  return head_dim + head_dim_v > 256 && (head_dim + 15) / 16 % 2 == 0 && (head_dim_v + 15) / 16 % 2 == 0 ? 2 : 1;
}

// The decode kernel's K/V pipeline depth (kernel_src/decode.cuh: kStages): the tile's, else 3.
inline int decode_stages(const TileConfig& t) { return t.stages ? t.stages : 3; }
// Whether a decode signature takes the tma family (K/V through tensor maps, kernel_src/decode.cuh
// kTma): sm_90+, 16-byte aligned rows (the host gives a signature element alignment where its
// tensors cannot be mapped: jit/ops/decode.cpp), pages of a multiple of 8 rows (odd_pages), head
// dims of 64 or more; unless
// JITATTN_DECODE_TMA=off keeps the mma (cp.async) decode kernel.
bool decode_tma(const Signature& sig);

// The family and tile configuration for a signature: a small table per head dim and arch
// (jit/tile_table.cpp). JITATTN_TILE overrides the tile for experiments.
KernelSpec make_spec(const Signature& sig);

// Every reason this spec cannot be generated (unsupported head dim, too much shared memory...).
std::string validate_spec(const KernelSpec& spec);

}  // namespace jitattn::jit
