#include "jit/launch.h"

#include <algorithm>

#include "jit/cuda_driver.h"
#include "jit/env.h"
#include "jitattn/error.h"

namespace jitattn::jit {

namespace {
void launch(const LoadedKernel& kernel, void* params, int64_t blocks, CUstream stream) {
  if (blocks > INT32_MAX)
    throw Error(kernel.spec.name() + ": " + std::to_string(blocks) + " blocks exceed 2^31 - 1");
  if (blocks <= 0) return;
  void* args[] = {params};
  const CUresult rc = CudaDriver::get().cuLaunchKernel(kernel.fn, unsigned(blocks), 1, 1, unsigned(kernel.spec.threads()),
                                                       1, 1, unsigned(kernel.spec.smem_bytes()), stream, args, nullptr);
  if (rc != CUDA_SUCCESS) check_cuda(rc, ("launching " + kernel.spec.name()).c_str());
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Block order (kernel_src/common.cuh block_coords). Measured on the H100: blocks of equal
// length run best one (head, batch) pair at a time, whose keys and values then stay in L2;
// under a causal mask the longest blocks of all pairs first run best, which keeps the tail short.
int32_t pairs_per_chunk(const KernelSpec& spec, const FwdParams& p) {
  const int64_t pairs = int64_t(p.heads) * p.batch;
  if (const int forced = Env::get().pairs_per_chunk) return int32_t(std::min<int64_t>(forced, pairs));
  return has_uneven_blocks(spec.sig.bias) ? int32_t(pairs) : 1;
}
}  // namespace

void launch_forward(const LoadedKernel& kernel, FwdParams& params, CUstream stream) {
  // One block per (query block, head, batch); block_coords() decodes it.
  params.pairs_per_chunk = pairs_per_chunk(kernel.spec, params);
  launch(kernel, &params, ceil_div(params.mq, kernel.spec.tile.block_m) * params.heads * params.batch, stream);
}

void launch_backward(const LoadedKernel& kernel, BwdParams& params, CUstream stream) {
  const FwdParams& f = params.f;
  const TileConfig& tile = kernel.spec.tile;
  int64_t blocks = 0;
  switch (kernel.spec.sig.op) {
    case Op::bwd_pre:  // one warp per (b, i, h) row of the query tensor
      blocks = ceil_div(int64_t(f.batch_rows) * f.mq_rows * f.heads, tile.warps);
      break;
    case Op::bwd_post:  // one thread per dQ element
      blocks = ceil_div(int64_t(f.batch_rows) * f.mq_rows * f.heads * kernel.spec.sig.head_dim, kernel.spec.threads());
      break;
    case Op::bwd: case Op::bwd_kv:  // one block per (key block, key/value head, sequence)
      blocks = ceil_div(params.max_mkv, tile.block_n) * params.kv_heads * f.batch;
      break;
    case Op::bwd_dq:  // the forward's grid
      params.f.pairs_per_chunk = pairs_per_chunk(kernel.spec, f);
      blocks = ceil_div(f.mq, tile.block_m) * f.heads * f.batch;
      break;
    default:
      throw Error(kernel.spec.name() + " is not a backward kernel");
  }
  launch(kernel, &params, blocks, stream);
}

void launch_merge(const LoadedKernel& kernel, MergeParams& params, CUstream stream) {
  if (kernel.spec.sig.op != Op::merge) throw Error(kernel.spec.name() + " is not a merge kernel");
  // kernel_src/merge.cuh: 16 bytes of partial output (8 f16/bf16 or 4 f32 elements) per thread.
  const int64_t vec = kernel.spec.sig.dtype == DType::f32 ? 4 : 8;
  const int64_t rows = int64_t(params.batch) * params.m * params.groups * params.heads;
  launch(kernel, &params, ceil_div(rows * (kernel.spec.sig.head_dim_v / vec), kernel.spec.threads()), stream);
}

}  // namespace jitattn::jit
