// `jitattn bench`: forward-pass TFLOP/s on the shapes of the companion PyTorch script, timed with
// CUDA events, so the two can be put side by side as ratios (docs/design.md decision 10). Also the few
// device helpers `jitattn demo` shares with it (the CLI links no test code).
#pragma once
#include <cuda.h>

#include <cstddef>
#include <cstdint>
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

 private:
  CUdeviceptr ptr_ = 0;
  size_t bytes_ = 0;
};

// n values ~ N(0, 1), rounded to `dtype` and encoded as the device stores them.
std::vector<unsigned char> random_normal(size_t n, DType dtype, uint64_t seed);
// Element i of such an encoding, exactly, as a double.
double decode(const std::vector<unsigned char>& bytes, size_t i, DType dtype);

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

}  // namespace jitattn::tools
