// The forward's kernel arguments, shared by the ops whose kernels take them (the forward, and
// the backward's BwdParams::f). Internal to jit/ops/: only the ops see kernel_src/params.h.
#pragma once
#include "../../kernel_src/params.h"
#include "jit/ops/plans.h"

namespace jitattn::jit::ops {

// FwdParams of the plan. Uploads the bias's device arrays on first use. Returns false when there
// is nothing to compute (no sequence or no query).
bool forward_params(const ForwardPlan& p, FwdParams& fp);

// A user variant's capture values as the kernels read them.
void user_args(const VariantPlan& v, UserArgs& a);

// Blocks per run of (head, batch) pairs in block order (kernel_src/common.cuh block_coords).
int32_t pairs_per_chunk(const KernelSpec& spec, const FwdParams& p);

}  // namespace jitattn::jit::ops
