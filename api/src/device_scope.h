// Makes a device's primary context current for a scope (ring attention drives several devices
// from one thread: one per local rank).
#pragma once
#include "jit/cuda_driver.h"

namespace jitattn::detail {

// Makes `device`'s primary context current (unless the current context is on it already) for
// the scope; restores the previous one.
class DeviceScope {
 public:
  explicit DeviceScope(int device) {
    const jit::CudaDriver& d = jit::CudaDriver::require();
    jit::check_cuda(d.cuCtxGetCurrent(&prev_), "cuCtxGetCurrent");
    CUdevice cur = -1;
    if (prev_ && d.cuCtxGetDevice(&cur) == CUDA_SUCCESS && cur == device) return;
    CUdevice dev;
    jit::check_cuda(d.cuDeviceGet(&dev, device), "cuDeviceGet");
    CUcontext ctx;
    jit::check_cuda(d.cuDevicePrimaryCtxRetain(&ctx, dev), "cuDevicePrimaryCtxRetain");  // kept for the process
    jit::check_cuda(d.cuCtxSetCurrent(ctx), "cuCtxSetCurrent");
    switched_ = true;
  }
  ~DeviceScope() {
    if (switched_) (void)jit::CudaDriver::get().cuCtxSetCurrent(prev_);
  }
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

 private:
  CUcontext prev_ = nullptr;
  bool switched_ = false;
};

}  // namespace jitattn::detail
