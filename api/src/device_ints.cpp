// DeviceArray<T>: the arrays kernels read (int32 seqstarts, seqlens and block tables; float ALiBi
// slopes). The caller may hand us its own device copy (so a decode step can be captured in a CUDA
// graph); otherwise the host copy is uploaded once per CUDA context on first use and freed when
// the last copy of the DeviceArray goes. Instantiated for int32_t (DeviceInts) and float
// (DeviceFloats) at the end of this file.
#include <mutex>
#include <utility>
#include <vector>

#include "jit/cuda_driver.h"
#include "jit/jit_runtime.h"
#include "jitattn/bias.h"

namespace jitattn {

// Shared by every copy of one DeviceArray: the uploads made so far, one per context.
template <class T>
struct DeviceArray<T>::Upload {
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

template <class T>
DeviceArray<T>::DeviceArray() : upload_(std::make_shared<Upload>()) {}

template <class T>
DeviceArray<T>::DeviceArray(std::vector<T> host) : host_(std::move(host)), upload_(std::make_shared<Upload>()) {}

template <class T>
DeviceArray<T>::DeviceArray(std::vector<T> host, const T* device_ptr)
    : host_(std::move(host)), caller_ptr_(device_ptr), upload_(std::make_shared<Upload>()) {}

template <class T>
const T* DeviceArray<T>::device(int device) const {
  if (caller_ptr_) return caller_ptr_;
  if (host_.empty() || !upload_) return nullptr;  // nothing to upload (or a moved-from object)
  const jit::ContextInfo& ctx = jit::JitRuntime::get().context(device);  // a context is now current
  std::lock_guard<std::mutex> lock(upload_->mu);
  for (const typename Upload::Copy& c : upload_->copies)
    if (c.ctx == ctx.ctx) return reinterpret_cast<const T*>(c.ptr);

  const jit::CudaDriver& d = jit::CudaDriver::require();
  const size_t bytes = host_.size() * sizeof(T);
  CUdeviceptr ptr = 0;
  jit::check_cuda(d.cuMemAlloc(&ptr, bytes), "cuMemAlloc");
  CUresult rc = d.cuMemcpyHtoD(ptr, host_.data(), bytes);
  // From pageable memory the copy may still be in flight when cuMemcpyHtoD returns, and a kernel
  // on a non-blocking stream is not ordered after it: wait for it (once per array and context).
  if (rc == CUDA_SUCCESS) rc = d.cuCtxSynchronize();
  if (rc != CUDA_SUCCESS) {
    (void)d.cuMemFree(ptr);
    jit::check_cuda(rc, "cuMemcpyHtoD");
  }
  upload_->copies.push_back({ctx.ctx, ptr});
  return reinterpret_cast<const T*>(ptr);
}

template class DeviceArray<int32_t>;
template class DeviceArray<float>;

}  // namespace jitattn
