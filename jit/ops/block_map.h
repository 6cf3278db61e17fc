// The block-map op: a validated BlockMapPlan → the block_map kernel of the plan's user variant
// (kernel_src/block_map.cuh): its Signature, arguments and grid, queued on the caller's stream.
#pragma once
#include <cuda.h>

#include "jit/ops/plans.h"

namespace jitattn::jit::ops {

void block_map(const BlockMapPlan& p, CUstream stream);

}  // namespace jitattn::jit::ops
