// DeviceInts: the int32 arrays kernels read (seqstarts, seqlens). The caller may hand us its own
// device copy (so a decode step can be captured in a CUDA graph); otherwise the host copy is
// uploaded once per CUDA context on first use and freed when the last copy of the DeviceInts goes.
#include <mutex>
#include <utility>
#include <vector>

#include "jit/cuda_driver.h"
#include "jit/jit_runtime.h"
#include "jitattn/bias.h"

namespace jitattn {

// Shared by every copy of one DeviceInts: the uploads made so far, one per context.
struct DeviceInts::Upload {
  struct Copy {
    CUcontext ctx;
    CUdeviceptr ptr;
  };
  std::mutex mu;
  std::vector<Copy> copies;

  ~Upload() {
    if (copies.empty()) return;
    // Errors are ignored: at process exit the driver may already be shut down.
    const jit::CudaDriver& d = jit::CudaDriver::get();
    if (!d.available) return;
    CUcontext current = nullptr;
    if (d.cuCtxGetCurrent(&current) != CUDA_SUCCESS) return;
    for (const Copy& c : copies)
      if (d.cuCtxSetCurrent(c.ctx) == CUDA_SUCCESS) (void)d.cuMemFree(c.ptr);
    (void)d.cuCtxSetCurrent(current);
  }
};

DeviceInts::DeviceInts() : upload_(std::make_shared<Upload>()) {}

DeviceInts::DeviceInts(std::vector<int32_t> host) : host_(std::move(host)), upload_(std::make_shared<Upload>()) {}

DeviceInts::DeviceInts(std::vector<int32_t> host, const int32_t* device_ptr)
    : host_(std::move(host)), caller_ptr_(device_ptr), upload_(std::make_shared<Upload>()) {}

const int32_t* DeviceInts::device(int device) const {
  if (caller_ptr_) return caller_ptr_;
  if (host_.empty() || !upload_) return nullptr;  // nothing to upload (or a moved-from object)
  const jit::ContextInfo& ctx = jit::JitRuntime::get().context(device);  // a context is now current
  std::lock_guard<std::mutex> lock(upload_->mu);
  for (const Upload::Copy& c : upload_->copies)
    if (c.ctx == ctx.ctx) return reinterpret_cast<const int32_t*>(c.ptr);

  const jit::CudaDriver& d = jit::CudaDriver::require();
  const size_t bytes = host_.size() * sizeof(int32_t);
  CUdeviceptr ptr = 0;
  jit::check_cuda(d.cuMemAlloc(&ptr, bytes), "cuMemAlloc");
  const CUresult rc = d.cuMemcpyHtoD(ptr, host_.data(), bytes);
  if (rc != CUDA_SUCCESS) {
    (void)d.cuMemFree(ptr);
    jit::check_cuda(rc, "cuMemcpyHtoD");
  }
  upload_->copies.push_back({ctx.ctx, ptr});
  return reinterpret_cast<const int32_t*>(ptr);
}

}  // namespace jitattn
