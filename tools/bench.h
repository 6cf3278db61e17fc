// `jitattn bench`: forward-pass TFLOP/s on the shapes of the companion PyTorch script, timed with
// CUDA events, so the two can be put side by side as ratios (docs/design.md decision 10); with
// --decode, decode-step TB/s (tools/decode_bench.cpp). Also the few device helpers `jitattn demo`
// shares with it (the CLI links no test code).
#pragma once
#include <cuda.h>

#include <nlohmann/json_fwd.hpp>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "jit/signature.h"
#include "jitattn/tensor.h"

namespace jitattn::tools {

// ---- device helpers ---------------------------------------------------------------------

// True when a CUDA driver and a device are present (device 0's primary context is then
// current); otherwise false and why.
bool gpu_available(std::string* why);

// A device's arch as the runtime names it: sm_90a for compute capability 9.0 (the Hopper
// kernels need the "a" target), sm_80 for 8.0.
jit::Arch device_arch(CUdevice device);

// Device memory owned for a scope.
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* get() const { return reinterpret_cast<void*>(ptr_); }
  void upload(const std::vector<unsigned char>& bytes);
  std::vector<unsigned char> download() const;
  void fill(unsigned char byte);  // 0xFF is NaN in f16, bf16 and f32: poisons an output
  void fill_tiled(const std::vector<unsigned char>& pattern);  // the pattern repeated (the tail cut)

 private:
  CUdeviceptr ptr_ = 0;
  size_t bytes_ = 0;
};

// n values ~ N(0, 1), rounded to `dtype` and encoded as the device stores them.
std::vector<unsigned char> random_normal(size_t n, DType dtype, uint64_t seed);
// Element i of such an encoding, exactly, as a double.
double decode(const std::vector<unsigned char>& bytes, size_t i, DType dtype);

// ---- timing helpers (shared by the forward and decode benchmarks) ------------------------

std::string device_name();  // device 0's

// The first call of `call`, synchronized: compile or cache load, module load, launch and the
// kernel itself. *what says which of those happened ("1 compiled, 0 from the cache DB").
double first_call_ms(const std::function<void()>& call, std::string* what);

// triton.testing.do_bench's method, which `.gpu/anchors.py` times PyTorch with: warm-up calls for
// ~25 ms, then max(min_calls, ~100 ms worth) calls, each after a 256 MB write that flushes L2 and
// timed alone by a pair of CUDA events; the median. *calls says how many were timed.
double flushed_median_ms(const std::function<void()>& call, int min_calls, int* calls);

// A fresh, empty user cache and no shipped ones for this process (--cold): the first call of
// each kernel compiles. It must exist before anything reads the environment (jit::Env is read
// once per process). Its directory is removed with the object.
class FreshCache {
 public:
  FreshCache();
  ~FreshCache();
  FreshCache(const FreshCache&) = delete;
  FreshCache& operator=(const FreshCache&) = delete;

 private:
  std::string dir_;
};

void write_json(const std::string& path, const nlohmann::json& doc);  // throws Error when it cannot

// ---- the benchmark ----------------------------------------------------------------------

struct BenchOptions {
  DType dtype = DType::bf16;
  std::vector<int> head_dims{64, 128};
  std::vector<int64_t> seqlens{4096, 16384};
  std::string causal = "both";  // both | yes | no
  int64_t tokens = 16384;       // B = max(1, tokens / M)
  int64_t hidden = 2048;        // H = hidden / K
  int reps = 30;
  std::string json_path;        // when set, the results as JSON (see bench.cpp write_json)
  bool cold = false;            // fresh empty cache for this process: the first call compiles
  bool backward = false;        // also time the backward (TFLOP/s at 2.5x the forward's FLOPs)
  bool deterministic = false;   // ... in its deterministic mode
  double dropout = 0;           // ... with this dropout probability (seed 1)
  // --masks: like `.gpu/anchors.py --masks`, at M = seqlens.back(), K = head_dims.back(), B = 1:
  // full causal, causal with a local window, and documents causal within each (doc_lens, or
  // 16 random lengths summing to M).
  bool masks = false;
  int window = 256;
  std::vector<int> doc_lens;
};

// Prints one line per shape plus the first-call time and the warm per-call host overhead.
// Returns the exit code: 1 without a GPU.
int run_bench(const BenchOptions& options);

// --decode: a decode step (few queries per sequence against a long KV cache), timed as
// `.gpu/anchors.py --decode` times SDPA, in three layouts of the same keys: dense [B, N, Hkv, K]
// with no bias, BlockDiagonalCausalWithOffsetPaddedKeysMask (B = 1, keys padded to N per
// sequence) and its make_paged over a shuffled pool of pages; also (dense_hm, on request) the dense
// shapes over [B, Hkv, N, K] memory — each head's keys contiguous, as the SDPA anchor's tensors
// are. TB/s counts K + V read once:
// 2·B·N·Hkv·K·element_size bytes.
struct DecodeBenchOptions {
  DType dtype = DType::bf16;
  int64_t batch = 8;
  int64_t heads = 32;     // query heads
  int64_t kv_heads = 8;   // heads % kv_heads == 0 (GQA); kv_heads == 1 is MQA
  int64_t head_dim = 128;
  int64_t queries = 1;    // per sequence (speculative decoding's drafts: up to 16)
  std::vector<int64_t> kv_lens{4096, 32768};
  int64_t page_size = 256;  // 0: no paged layout
  std::vector<std::string> layouts{"dense", "padded", "paged"};
  int reps = 100;           // at least this many timed calls per case
  std::string json_path;
  bool cold = false;        // fresh empty cache: each layout's first call compiles its kernels
};

// Refuses options that describe no decode step (throws Error naming the option); run_decode_bench
// calls it before it looks for a GPU.
void check_decode_options(const DecodeBenchOptions& options);

// One line per layout and KV length, plus each layout's first call in this process. Returns the
// exit code: 1 without a GPU.
int run_decode_bench(const DecodeBenchOptions& options);

}  // namespace jitattn::tools
