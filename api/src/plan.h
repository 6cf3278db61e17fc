// The part of a call shared by the forward and the backward: read the tensors as [B, M, H, K]
// views, validate everything (collecting every reason, like xFormers' not_supported_reasons),
// describe the bias for the kernels, and pack the forward's kernel arguments.
#pragma once
#include <string>
#include <vector>

#include "../../kernel_src/params.h"
#include "jit/signature.h"
#include "jitattn/attention.h"

namespace jitattn::detail {

// A [B, M, H, D] view of a 3-D, 4-D or 5-D tensor. 3-D is read as H = 1. 5-D is xFormers'
// BMGHK [B, M, G, H, D]: its G·H heads are one head dimension when stride[2] = H·stride[3]; a
// key/value expanded over H with stride[3] = 0 (`may_share`) is read as G heads, each serving
// the H query heads of its group through the GQA head map, without copies. With G = 1 (or 4-D
// heads of stride 0) the view keeps its H heads of stride 0 until share_heads() makes them one.
struct Bmhk {
  int64_t b = 0, m = 0, h = 0, d = 0;
  int64_t sb = 0, sm = 0, sh = 0;
};

// What the kernels need from a bias: its kind, its windows, and where its numbers live.
struct BiasPlan {
  jit::BiasKind kind = jit::BiasKind::none;
  int32_t window_left = 0, window_right = 0;  // band masks, see kernel_src/bias_policies.cuh
  const TensorView* tensor = nullptr;         // dense additive bias
  const SeqLenInfo* q_seqinfo = nullptr;      // block-diagonal layouts
  const DeviceInts* k_seqstart = nullptr;     // null: paged padded keys start at position 0
  int32_t k_max_seqlen = 0;                   // the longest key sequence
  const DeviceInts* k_seqlen = nullptr;       // padded and gappy keys
  const BlockTables* block_tables = nullptr;  // paged keys
  int32_t page_size = 0;
  const DeviceFloats* alibi_slopes = nullptr;
};

// A validated call: every reason it cannot run (empty when it can), and what the kernels need.
struct Plan {
  std::vector<std::string> reasons;
  Bmhk q, k, v, o;
  BiasPlan bias;
  double scale = 0;
  int align = 16;
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

// Validates a forward call (the backward validates its forward's tensors through it too; `lse`
// may be undefined). With `share`, key and value expanded over all their heads by stride 0 are
// read as one head (share_heads); the backward passes false when dK/dV are per-head gradients.
Plan plan(const TensorView& q, const TensorView& k, const TensorView& v, const AttnBias& bias,
          const TensorView& out, const TensorView& lse, const AttentionOptions& opt, bool share = true);

// The forward's Signature (op fwd) for this plan on a device of `arch`.
jit::Signature signature(const Plan& p, const TensorView& q, const TensorView& out, bool lse, const jit::Arch& arch);

// The forward's kernel arguments. Uploads the bias's device arrays on first use. Returns false
// when there is nothing to compute (no sequence or no query).
bool forward_params(const Plan& p, const TensorView& q, const TensorView& k, const TensorView& v,
                    const TensorView& out, const TensorView& lse, const AttentionOptions& opt, FwdParams& fp);

}  // namespace jitattn::detail
