// The merge op (merge_attentions): a validated MergePlan → the merge kernel's Signature, its
// arguments (MergeParams) and grid, queued on the caller's stream.
#pragma once
#include <cuda.h>

#include "jit/ops/plans.h"

namespace jitattn::jit::ops {

void merge(const MergePlan& p, CUstream stream);

}  // namespace jitattn::jit::ops
