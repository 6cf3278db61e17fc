#include "jit/ops/scratch.h"

#include <algorithm>
#include <map>
#include <mutex>
#include <thread>
#include <tuple>

namespace jitattn::jit::ops {

namespace {

class Scratch {
 public:
  ScratchBuffers get(const ContextInfo& ctx, CUstream stream, size_t partial_bytes, size_t counter_bytes, bool& captured) {
    const CudaDriver& d = CudaDriver::require();
    CUstreamCaptureStatus status = CU_STREAM_CAPTURE_STATUS_NONE;
    check_cuda(d.cuStreamIsCapturing(stream, &status), "cuStreamIsCapturing (scratch)");
    captured = status != CU_STREAM_CAPTURE_STATUS_NONE;
    if (captured) {
      CUdeviceptr partial = 0, counters = 0;
      if (partial_bytes) check_cuda(d.cuMemAllocAsync(&partial, partial_bytes, stream), "cuMemAllocAsync (scratch)");
      check_cuda(d.cuMemAllocAsync(&counters, counter_bytes, stream), "cuMemAllocAsync (scratch counters)");
      check_cuda(d.cuMemsetD32Async(counters, 0, counter_bytes / 4, stream), "cuMemsetD32Async (scratch counters)");
      return {reinterpret_cast<float*>(partial), reinterpret_cast<int32_t*>(counters)};
    }
    // The per-thread default stream is a different stream in each thread under one handle.
    const Key key{ctx.ctx, stream, stream == CU_STREAM_PER_THREAD ? std::this_thread::get_id() : std::thread::id()};
    std::lock_guard<std::mutex> lock(mu_);
    Entry& e = entries_[key];
    grow(d, e.partial, e.partial_bytes, partial_bytes, stream, false);
    grow(d, e.counters, e.counter_bytes, counter_bytes, stream, true);
    return {partial_bytes ? reinterpret_cast<float*>(e.partial) : nullptr, reinterpret_cast<int32_t*>(e.counters)};
  }

 private:
  static void grow(const CudaDriver& d, CUdeviceptr& ptr, size_t& have, size_t need, CUstream stream, bool zero) {
    if (need <= have) return;
    const size_t bytes = std::max(need, 2 * have);
    CUdeviceptr fresh = 0;
    check_cuda(d.cuMemAllocAsync(&fresh, bytes, stream), "cuMemAllocAsync (scratch)");
    if (zero) check_cuda(d.cuMemsetD32Async(fresh, 0, bytes / 4, stream), "cuMemsetD32Async (scratch counters)");
    if (ptr) check_cuda(d.cuMemFreeAsync(ptr, stream), "cuMemFreeAsync (scratch)");  // after earlier launches
    ptr = fresh, have = bytes;
  }

  using Key = std::tuple<CUcontext, CUstream, std::thread::id>;
  struct Entry {
    CUdeviceptr partial = 0, counters = 0;
    size_t partial_bytes = 0, counter_bytes = 0;
  };
  std::mutex mu_;
  std::map<Key, Entry> entries_;
};

Scratch& scratch() {
  static Scratch* s = new Scratch;  // never destroyed: at exit the driver may be gone
  return *s;
}

}  // namespace

ScratchBuffers stream_scratch(const ContextInfo& ctx, CUstream stream, size_t partial_bytes, size_t counter_bytes,
                              bool& captured) {
  return scratch().get(ctx, stream, partial_bytes, counter_bytes, captured);
}

void release_scratch(const ScratchBuffers& b, CUstream stream) {
  const CudaDriver& d = CudaDriver::require();
  if (b.partial) check_cuda(d.cuMemFreeAsync(reinterpret_cast<CUdeviceptr>(b.partial), stream), "cuMemFreeAsync (scratch)");
  check_cuda(d.cuMemFreeAsync(reinterpret_cast<CUdeviceptr>(b.counters), stream), "cuMemFreeAsync (scratch counters)");
}

}  // namespace jitattn::jit::ops
