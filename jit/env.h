// Every environment variable jitattn reads, in one place (docs/design.md decision 6): kEnvVars below.
// Each is read once per process; `changes_key` says whether it changes the cache key of the
// kernels it affects (Triton's rule).
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "jit/signature.h"

namespace jitattn::jit {

struct EnvVarInfo {
  const char* name;
  bool changes_key;
  const char* meaning;
};
inline constexpr EnvVarInfo kEnvVars[] = {
    {"JITATTN_CACHE", false, "user cache DB path (default $XDG_CACHE_HOME/jitattn/kernels.sqlite, then ~/.cache/...)"},
    {"XDG_CACHE_HOME", false, "base of the default user cache path"},
    {"HOME", false, "where XDG_CACHE_HOME is unset: the default user cache path is $HOME/.cache/jitattn/kernels.sqlite"},
    {"JITATTN_CACHE_RO", false, "':'-separated shipped DBs, opened read-only, searched before the user DB; FILE@sha256:HEX pins one's digest"},
    {"JITATTN_JIT", false, "on (default) | off: a miss is an error | readonly: compile, never write | redo: recompile"},
    {"JITATTN_NVRTC", true, "path of the NVRTC library to load; its version is part of the key"},
    {"CUDA_HOME", true, "toolkit root: NVRTC is also looked for in $CUDA_HOME/lib64 and /lib (the PyPI wheels' layout); its version is part of the key"},
    {"JITATTN_TILE", true, "force a tile config (e.g. m128n64w4) for every forward kernel; it is part of the name"},
    {"JITATTN_FWD_FAMILY", true, "mma: keep the forward on mma.sync where wgmma would serve it; wgmma: on the cp.async wgmma kernel where the warp-specialized tma one would; tma: the default's choice, named (the tma kernel wherever it applies, padded head dims included) — experiments; it is part of the name"},
    {"JITATTN_BWD_FAMILY", true, "mma, wgmma or tma: the family of the backward's dK/dV kernel where the Hopper ones would serve it (mma: mma.sync; wgmma: cp.async loads; tma: warp-specialized, the default wherever a Hopper backward serves: 64/64, 128/64, 128/128) (experiments, tests); it is part of the name"},
    {"JITATTN_FAMILY", true, "portable: every attention kernel on NVIDIA runs the portable family AMD runs (simt, every dtype; no decode kernels) — to test that source on an NVIDIA GPU; it is part of the name"},
    {"JITATTN_AMD_MFMA", true, "on: the f16/bf16 forward on gfx90a/gfx942 takes the CDNA matrix-core kernel (fwd_mfma.cuh), which has never run on AMD hardware; it is part of the name"},
    {"JITATTN_HIP", true, "path of the library providing hiprtc (default libhiprtc.so.6, then libamdhip64.so.5); its version is part of AMD keys. The HIP runtime (module API) is taken from it when it has one, else libamdhip64.so.6/.5"},
    {"JITATTN_BWD_TILE", true, "force a tile config (e.g. m64n128w8) for the backward's dK/dV kernel (bwd, bwd_kv); a tile the wgmma family cannot take runs on mma.sync"},
    {"JITATTN_FWD_BLOCKS", false, "force the tma forward's grid: N blocks (at most one per work item; experiments; jit/ops/forward.cpp)"},
    {"JITATTN_PAIRS_PER_CHUNK", false, "force the forward's block order: (head, batch) pairs per chunk (experiments; jit/ops/forward.cpp)"},
    {"JITATTN_BWD_DQ_TILE", true, "force a tile config (e.g. m64n64w4) for the deterministic backward's dQ kernel (bwd_dq)"},
    {"JITATTN_DECODE", false, "off: few-query forwards run the prefill kernels instead of the decode kernels (experiments; jit/ops/decode.cpp)"},
    {"JITATTN_DECODE_TILE", true, "force the decode kernels' tile (e.g. m16n128w4: block_m 16, keys per tile, warps); it is part of the name"},
    {"JITATTN_DECODE_TMA", true, "off: the sm_90 decode kernels stream K/V by cp.async (the mma family) instead of tensor maps (the tma family); it is part of the name"},
    {"JITATTN_DECODE_SPLITS", false, "force the decode kernels' KV split count, 1 to 128 (tests, experiments; jit/ops/decode.cpp)"},
    {"JITATTN_VERBOSE", false, "1: log each compile, cache layer hit and new decode geometry (splits) to stderr"},
    {"JITATTN_RECORD", false, "append each distinct signature the process needs to this manifest (JSON Lines)"},
};

enum class JitPolicy { on, off, readonly, redo };
const char* to_string(JitPolicy policy);

struct Env {
  std::string cache_path;
  std::vector<std::string> cache_ro;
  std::vector<std::string> cache_ro_sha256;  // per cache_ro entry: its pinned SHA-256, "" for none
  JitPolicy jit = JitPolicy::on;
  std::string nvrtc_path;          // empty: the default search
  std::string cuda_home;           // CUDA_HOME; empty: not set
  std::optional<TileConfig> tile;      // JITATTN_TILE
  // JITATTN_FWD_FAMILY: unset takes the best family that serves a forward; mma keeps it on
  // mma.sync, wgmma off the tma kernel; tma names the default's choice.
  enum class FwdFamily : uint8_t { best, mma, wgmma, tma };
  FwdFamily fwd_family = FwdFamily::best;
  FwdFamily bwd_family = FwdFamily::best;  // JITATTN_BWD_FAMILY (mma, wgmma or tma; best: tma where it serves)
  bool portable = false;               // JITATTN_FAMILY=portable
  bool amd_mfma = false;               // JITATTN_AMD_MFMA=on
  std::string hip_path;                // JITATTN_HIP; empty: the default search
  std::optional<TileConfig> bwd_tile;     // JITATTN_BWD_TILE
  std::optional<TileConfig> bwd_dq_tile;  // JITATTN_BWD_DQ_TILE
  bool verbose = false;
  int pairs_per_chunk = 0;  // JITATTN_PAIRS_PER_CHUNK; 0: the launch's choice
  int fwd_blocks = 0;       // JITATTN_FWD_BLOCKS; 0: the launch's choice
  bool decode = true;       // JITATTN_DECODE (off: false)
  int decode_splits = 0;    // JITATTN_DECODE_SPLITS; 0: the launch's choice
  std::optional<TileConfig> decode_tile;  // JITATTN_DECODE_TILE
  bool decode_tma = true;  // JITATTN_DECODE_TMA (off: false)
  std::string record_path;         // JITATTN_RECORD; empty: record nothing

  // Parsed once; a malformed value throws jitattn::Error naming the variable.
  static const Env& get();
};

// JITATTN_CACHE_RO's value into env.cache_ro and env.cache_ro_sha256: DBs separated by ':',
// each FILE or FILE@sha256:<64 hex>. A malformed pin throws jitattn::Error.
void parse_cache_ro(const std::string& value, Env& env);

}  // namespace jitattn::jit
