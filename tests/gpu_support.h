// Device memory for GPU tests, through the library's own driver loader (tests link no CUDA).
#pragma once
#include <gtest/gtest.h>

#include <cstddef>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "jit/cuda_driver.h"
#include "jitattn/tensor.h"

namespace jitattn::test {

// True when a CUDA driver and a device are present; the reason otherwise.
bool gpu_available(std::string* why = nullptr);

#define JITATTN_REQUIRE_GPU()                                   \
  do {                                                          \
    std::string why_;                                           \
    if (!::jitattn::test::gpu_available(&why_)) GTEST_SKIP() << why_; \
  } while (0)

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) { o.ptr_ = 0, o.bytes_ = 0; }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;

  void* get() const { return reinterpret_cast<void*>(ptr_); }
  size_t bytes() const { return bytes_; }
  void upload(const void* src, size_t bytes, size_t offset = 0);
  void download(void* dst, size_t bytes, size_t offset = 0) const;
  std::vector<unsigned char> download() const;
  void fill(unsigned char byte);  // poison: 0xFF is NaN in f16, bf16 and f32

 private:
  CUdeviceptr ptr_ = 0;
  size_t bytes_ = 0;
};

void device_synchronize();

// A contiguous [B, M, H, D] device tensor and the logical values it holds.
struct Dense {
  DeviceBuffer buf;
  TensorView view;
  std::vector<double> values;
};
// Values ~ N(0, 1) rounded to `dt` (reference.h random_values) from rng().
Dense random_dense(int64_t B, int64_t M, int64_t H, int64_t D, DType dt);
// Every byte 0xFF (NaN in f16, bf16 and f32): an element a kernel forgets to write fails the check.
Dense poisoned(int64_t B, int64_t M, int64_t H, int64_t D, DType dt);
// The tensor's contents, decoded to doubles.
std::vector<double> read(const Dense& t);

// ---- random inputs shared by the GPU tests ---------------------------------------------------
// One generator per process, seeded from std::random_device; the seed is printed ("[ seed ] N")
// so a failure can be replayed with JITATTN_TEST_SEED=N.
std::mt19937_64& rng();
// Restarts rng() from the process seed and `salt`, so a test that calls it first draws the same
// values whichever tests ran before it in the process (a sharded run replays test by test).
void reseed(uint64_t salt);
// n lengths drawn from [lo, hi], plus an empty and a one-token sequence, shuffled.
std::vector<int32_t> random_lengths(int n, int lo, int hi);
int64_t sum(const std::vector<int32_t>& v);
// Relative error a kernel output in `dtype` may have against the fp64 reference: the rounding of
// the inputs (and of P to the input dtype) — 2e-5 for f32, 2e-3 for f16, 1e-2 for bf16.
double dtype_tolerance(DType dtype);
// The same for gradients: they carry the rounding of P and dS to the input dtype (8 bits of
// mantissa for bf16, 11 for f16) through two more products than the forward; fp32 is exact
// arithmetic in float. 1e-4 for f32, 5e-3 for f16, 3e-2 for bf16.
double grad_tolerance(DType dtype);

// A stream created CU_STREAM_NON_BLOCKING (not ordered with the legacy default stream, as the
// streams of PyTorch's pool): work on the legacy stream (DeviceBuffer's copies and fills) must be
// finished, e.g. by device_synchronize(), before work queued here may depend on it.
class Stream {
 public:
  Stream();
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  CUstream get() const { return stream_; }
  void synchronize() const;

 private:
  CUstream stream_ = nullptr;
};

// An instantiated CUDA graph made by stream capture.
class Graph {
 public:
  // Captures what `enqueue` queues on `stream` (CU_STREAM_CAPTURE_MODE_GLOBAL: a call that is not
  // allowed during capture, such as a synchronous copy or an allocation, from any thread
  // invalidates it and end of capture throws) and instantiates it. Nothing runs. If `enqueue`
  // throws, the capture is ended and the exception passed on.
  static Graph capture(CUstream stream, const std::function<void()>& enqueue);

  Graph() = default;
  ~Graph();
  Graph(Graph&& o) noexcept : graph_(o.graph_), exec_(o.exec_) { o.graph_ = nullptr, o.exec_ = nullptr; }
  Graph& operator=(Graph&& o) noexcept;

  void launch(CUstream stream) const;  // queues one replay on `stream`

 private:
  void reset();
  CUgraph graph_ = nullptr;
  CUgraphExec exec_ = nullptr;
};

}  // namespace jitattn::test
