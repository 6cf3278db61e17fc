#include "jit/launch.h"

#include "jit/cuda_driver.h"
#include "jit/hip_driver.h"
#include "jitattn/error.h"

namespace jitattn::jit {

void launch(const LoadedKernel& kernel, void* params, int64_t blocks, CUstream stream) {
  if (blocks > INT32_MAX)
    throw Error(kernel.spec.name() + ": " + std::to_string(blocks) + " blocks exceed 2^31 - 1");
  if (blocks <= 0) return;
  void* args[] = {params};
  if (kernel.spec.sig.backend == uint8_t(Backend::hip)) {  // jit/hip_driver.h; never run on an AMD GPU
    const HipDriver& h = HipDriver::get();
    const int rc = h.hipModuleLaunchKernel(reinterpret_cast<hip::hipFunction_t>(kernel.fn), unsigned(blocks), 1, 1,
                                           unsigned(kernel.spec.threads()), 1, 1, unsigned(kernel.spec.smem_bytes()),
                                           reinterpret_cast<hip::hipStream_t>(stream), args, nullptr);
    if (rc != 0) throw Error(ErrorKind::cuda, "launching " + kernel.spec.name() + ": " + h.hipGetErrorString(rc));
    return;
  }
  const CUresult rc = CudaDriver::get().cuLaunchKernel(kernel.fn, unsigned(blocks), 1, 1, unsigned(kernel.spec.threads()),
                                                       1, 1, unsigned(kernel.spec.smem_bytes()), stream, args, nullptr);
  if (rc != CUDA_SUCCESS) check_cuda(rc, ("launching " + kernel.spec.name()).c_str());
}

}  // namespace jitattn::jit
