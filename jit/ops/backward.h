// The backward op: a validated BackwardPlan → a chain of JIT kernels on the caller's stream
//   default:        bwd_pre (delta, zeroed dQ accumulator) → bwd (dK, dV, dQ atomics) → bwd_post (dQ)
//   deterministic:  bwd_pre (delta) → bwd_kv (dK, dV) → bwd_dq (dQ, no atomics)
// and, when dK/dV are summed in fp32 (shared key rows, or rows no sequence sees that one memset
// cannot zero), bwd_post once more for each of them.
#pragma once
#include <cuda.h>

#include <cstddef>

#include "jit/ops/plans.h"

namespace jitattn::jit::ops {

// Scratch the backward of this forward needs (delta, the dQ accumulator, the dK/dV sums when
// the call may need them), in bytes. Uses only the shapes and the bias.
size_t backward_workspace_bytes(const ForwardPlan& p, bool deterministic);

void backward(const BackwardPlan& p, CUstream stream);

// For a forward whose backward will follow (memory_efficient_attention_forward_requires_grad):
// starts compiling, on threads of their own, the backward kernels of dense gradients of the
// forward's alignment (as autograd makes them), so that the backward's first call finds them
// compiled or nearly so (JitRuntime::prefetch_async). Returns at once; never throws; a call
// whose gradients differ compiles what it needs itself.
void prefetch_backward(const ForwardPlan& p);

// The alignment the backward's kernels are built for on `arch` (grad: dO's view): the plan's
// `align`, or 4 where the dK/dV kernel would be the tma family's (kernel_src/bwd_wgmma.cuh kTma)
// and Q or dO is a view no tensor map addresses; the mma.sync backward then runs, as the forward
// takes an element-aligned kernel for views no map addresses.
int backward_kernel_align(const ForwardPlan& p, const Bmhk& grad, int align, bool deterministic, const Arch& arch);

// ---- gradients summed over several key blocks (ring attention, api/src/ring.cpp) -----------
// The backward's kernels on caller-owned fp32 accumulators, so that one query block's gradients
// are summed over key blocks that arrive one after the other (default mode: fp32 atomics).
// delta [B, H, M] and dq_accum [B, H, M, K] (fp32, M = full.fwd.q.m): delta = rowsum(dO ∘ O) from
// full's grad and out, dq_accum zeroed.
void backward_begin(const BackwardPlan& full, float* delta, float* dq_accum, CUstream stream);
// bwd over `part`, whose queries are rows [q_row, q_row + part.fwd.q.m) of a block of q_rows rows
// (delta and dq_accum as backward_begin made them) and whose keys are rows [k_row, k_row +
// part.fwd.k.m) of a block of k_rows rows: adds its dQ (unscaled) into dq_accum, dK · scale and dV
// into dk_accum / dv_accum ([B, Hkv, k_rows, K] and [..., Kv] fp32). Nothing else is written.
void backward_add(const BackwardPlan& part, int64_t q_rows, int64_t q_row, float* delta, float* dq_accum,
                  int64_t k_rows, int64_t k_row, float* dk_accum, float* dv_accum, CUstream stream);
// grad (a [B, M, H, D] view x of `like`'s dtype) = accum ([B, H, M, D] fp32) · scale.
void backward_write(const ForwardPlan& like, const Bmhk& x, const float* accum, void* grad, float scale,
                    CUstream stream);

}  // namespace jitattn::jit::ops
