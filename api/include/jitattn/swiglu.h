// SwiGLU's gate, JIT-compiled per dtype (xFormers' swiglu: out = W3·(silu(W1·x + b1) ⊙ (W2·x + b2))
// + b3). The GEMMs are the caller's (cuBLAS through torch): x12 = x·[W1; W2]ᵀ + [b1; b2] packs the
// two halves side by side, and these two calls do the rest in one pass over memory.
//
// x12 [N, 2H] (f16, bf16 or f32; rows of any stride, the last stride 1), h and dh [N, H], dx12
// [N, 2H], all one dtype on one device; outputs must not overlap inputs. Work is queued on
// `stream`; nothing synchronizes.
#pragma once
#include <string>
#include <vector>

#include "jitattn/tensor.h"

namespace jitattn {

// h = silu(x12[:, :H]) ⊙ x12[:, H:]
void swiglu_gate_forward(const TensorView& x12, const TensorView& h, void* stream = nullptr);
// dx12[:, :H] = dh ⊙ x2 ⊙ silu'(x1),  dx12[:, H:] = dh ⊙ silu(x1)
void swiglu_gate_backward(const TensorView& x12, const TensorView& dh, const TensorView& dx12, void* stream = nullptr);

// Every reason the calls would refuse these tensors (dh and dx12 undefined for the forward).
std::vector<std::string> swiglu_gate_not_supported_reasons(const TensorView& x12, const TensorView& h_or_dh,
                                                           const TensorView& dx12 = {});

}  // namespace jitattn
