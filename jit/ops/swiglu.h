// The SwiGLU gate op: a validated SwigluPlan → the swiglu_fwd/swiglu_bwd kernel's Signature, its
// arguments (kernel_src/swiglu_params.h) and grid, queued on the caller's stream.
#pragma once
#include <cuda.h>

#include "jit/ops/plans.h"

namespace jitattn::jit::ops {

void swiglu(const SwigluPlan& p, CUstream stream);

}  // namespace jitattn::jit::ops
