#include "jit/launch.h"

#include "jit/cuda_driver.h"
#include "jitattn/error.h"

namespace jitattn::jit {

void launch_forward(const LoadedKernel& kernel, const FwdParams& params, CUstream stream) {
  const CudaDriver& d = CudaDriver::get();
  const unsigned grid_x = unsigned((params.mq + kernel.spec.tile.block_m - 1) / kernel.spec.tile.block_m);
  void* args[] = {const_cast<FwdParams*>(&params)};
  const CUresult rc = d.cuLaunchKernel(kernel.fn, grid_x, unsigned(params.heads), unsigned(params.batch),
                                       unsigned(kernel.spec.threads()), 1, 1, unsigned(kernel.spec.smem_bytes()),
                                       stream, args, nullptr);
  if (rc != CUDA_SUCCESS) check_cuda(rc, "launching the attention kernel");
}

}  // namespace jitattn::jit
