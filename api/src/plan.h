// The part of a call shared by the forward and the backward: read the tensors as [B, M, H, K]
// views, validate everything (collecting every reason, like xFormers' not_supported_reasons),
// and describe the bias for the kernels: a jit::ops::ForwardPlan.
#pragma once
#include <string>
#include <vector>

#include "jit/ops/plans.h"
#include "jitattn/attention.h"

namespace jitattn::detail {

// A [B, M, H, D] view of a 3-D, 4-D or 5-D tensor (jit::ops::Bmhk). 3-D is read as H = 1. 5-D is
// xFormers' BMGHK [B, M, G, H, D]: its G·H heads are one head dimension when stride[2] =
// H·stride[3]; a key/value expanded over H with stride[3] = 0 (`may_share`) is read as G heads,
// each serving the H query heads of its group through the GQA head map, without copies. With
// G = 1 (or 4-D heads of stride 0) the view keeps its H heads of stride 0 until share_heads()
// makes them one.
using Bmhk = jit::ops::Bmhk;
using BiasPlan = jit::ops::BiasPlan;

// A validated call: every reason it cannot run (empty when it can), and the op's plan.
struct Plan : jit::ops::ForwardPlan {
  std::vector<std::string> reasons;
};

// What the kernels need from `bias` (no validation: see bias_reasons).
BiasPlan describe(const AttnBias& bias);

// Bmhk of a 3-D/4-D/5-D tensor; false with the reason in `why` when it cannot be read so.
bool as_bmhk(const TensorView& t, bool may_share, Bmhk& x, std::string* why);
// A key/value (or its gradient) whose H > 1 heads all have stride 0: one head's memory.
bool shares_heads(const Bmhk& x);
// Reads such a view as that one head (H = 1), which then serves every query head as in MQA.
void share_heads(Bmhk& x);
// Whether the pointer and the strides of `t` (read as `x`) are 16-byte aligned.
bool aligned16(const TensorView& t, const Bmhk& x);

// A user variant's code id and capture values for the kernels; its reasons appended to R.
void plan_variant(const Variant& v, jit::ops::VariantPlan& u, std::vector<std::string>& R);

// Cells of block maps and BlockSparseMask blocks: a power of two in [16, 256]; its log2.
bool power_of_two_cell(int64_t c);
int log2_of(int64_t x);
// A block map's row spans (`name`, e.g. "spans") beside its cells over mq queries: i32
// [cells B, cells H, mq, 2], last two dimensions contiguous, on the cells' device.
void check_spans(const TensorView& spans, const TensorView& cells, int64_t mq, const std::string& name,
                 std::vector<std::string>& R);

// Validates a forward call (the backward validates its forward's tensors through it too; `lse`
// may be undefined). With `share`, key and value expanded over all their heads by stride 0 are
// read as one head (share_heads); the backward passes false when dK/dV are per-head gradients.
Plan plan(const TensorView& q, const TensorView& k, const TensorView& v, const AttnBias& bias,
          const TensorView& out, const TensorView& lse, const AttentionOptions& opt, bool share = true);

// Validates and runs a forward (with `lse` when it is defined). With backward_follows (the public
// forward_requires_grad: a training step) the backward's kernels start compiling on threads of
// their own first (jit::ops::prefetch_backward); partial attention, which needs lse only to merge,
// passes false.
void forward(const TensorView& q, const TensorView& k, const TensorView& v, const AttnBias& bias, const TensorView& out,
             const TensorView& lse, const AttentionOptions& opt, void* stream, bool backward_follows);

}  // namespace jitattn::detail
