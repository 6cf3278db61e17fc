#include "jit/launch.h"

#include <algorithm>

#include "jit/cuda_driver.h"
#include "jitattn/error.h"

namespace jitattn::jit {

void launch_forward(const LoadedKernel& kernel, FwdParams& params, int sm_count, CUstream stream) {
  const CudaDriver& d = CudaDriver::get();
  // One block per (query block, head, batch); kernel_src/common.cuh block_coords() decodes it.
  const int64_t m_blocks = (params.mq + kernel.spec.tile.block_m - 1) / kernel.spec.tile.block_m;
  const int64_t blocks = m_blocks * params.heads * params.batch;
  if (blocks > INT32_MAX) throw Error("B * H * ceil(Mq / " + std::to_string(kernel.spec.tile.block_m) + ") = " +
                                      std::to_string(blocks) + " blocks exceeds 2^31 - 1");
  // About two blocks per multiprocessor run at once; a chunk of (head, batch) pairs is that many.
  const int64_t pairs = int64_t(params.heads) * params.batch;
  params.pairs_per_chunk = int32_t(std::clamp<int64_t>((2 * sm_count + m_blocks - 1) / m_blocks, 1, pairs));
  void* args[] = {&params};
  const CUresult rc = d.cuLaunchKernel(kernel.fn, unsigned(blocks), 1, 1,
                                       unsigned(kernel.spec.threads()), 1, 1, unsigned(kernel.spec.smem_bytes()),
                                       stream, args, nullptr);
  if (rc != CUDA_SUCCESS) check_cuda(rc, "launching the attention kernel");
}

}  // namespace jitattn::jit
