#include "jit/launch.h"

#include "jit/cuda_driver.h"
#include "jitattn/error.h"

namespace jitattn::jit {

void launch_forward(const LoadedKernel& kernel, FwdParams& params, CUstream stream) {
  const CudaDriver& d = CudaDriver::get();
  // One block per (query block, head, batch); kernel_src/common.cuh block_coords() decodes it.
  const int64_t m_blocks = (params.mq + kernel.spec.tile.block_m - 1) / kernel.spec.tile.block_m;
  const int64_t blocks = m_blocks * params.heads * params.batch;
  if (blocks > INT32_MAX) throw Error("B * H * ceil(Mq / " + std::to_string(kernel.spec.tile.block_m) + ") = " +
                                      std::to_string(blocks) + " blocks exceeds 2^31 - 1");
  // Block order (kernel_src/common.cuh block_coords). Measured on the H100: blocks of equal
  // length run best one (head, batch) pair at a time, whose keys and values then stay in L2;
  // under a causal mask the longest blocks of all pairs first run best, which keeps the tail short.
  params.pairs_per_chunk = has_uneven_blocks(kernel.spec.sig.bias) ? int32_t(int64_t(params.heads) * params.batch) : 1;
  void* args[] = {&params};
  const CUresult rc = d.cuLaunchKernel(kernel.fn, unsigned(blocks), 1, 1,
                                       unsigned(kernel.spec.threads()), 1, 1, unsigned(kernel.spec.smem_bytes()),
                                       stream, args, nullptr);
  if (rc != CUDA_SUCCESS) check_cuda(rc, "launching the attention kernel");
}

}  // namespace jitattn::jit
