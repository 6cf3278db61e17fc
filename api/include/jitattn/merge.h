// Split-key attention, as xFormers' memory_efficient_attention_partial and merge_attentions
// (https://arxiv.org/abs/2402.05099): attention over slices of the keys, each with its
// log-sum-exp, then one merge that gives the attention over all of them.
//
// Shapes (xFormers): a partial output is [B, M, H, K] or [B, M, G, H, K] (any dtype), its lse
// [B, H, M] or [B, G, H, M] float32. The merged output and lse have the same shapes.
//
// Splitting the keys. Slice s covers keys [a_s, a_{s+1}) of key/value [B, Mkv, Hkv, K]: a view
// of the same memory with the data pointer advanced by a_s·stride[1] elements and shape[1] =
// a_{s+1} − a_s (strides unchanged; an empty slice is allowed and gives out = 0, lse = −inf).
// Biases are applied per slice, in the slice's own key coordinates (key 0 of a mask is the
// slice's first key), so a bias over the full keys is given per slice as:
//   - no bias: std::monostate{} for every slice;
//   - a dense bias [B, H, Mq, Mkv]: TensorBias of a view of its columns [a_s, a_{s+1}) (data
//     advanced by a_s elements, shape[3] = a_{s+1} − a_s, strides unchanged). This also serves
//     any mask, materialized (e.g. a top-left causal mask with Mq < Mkv, whose slices past the
//     diagonal are then fully masked);
//   - a causal mask from the bottom right (LowerTriangularFromBottomRightMask, the decoding case)
//     over Mkv = N keys: for the slice [a, b) of length L = b − a,
//     LocalAttentionFromBottomRightMask{window_left = L, window_right = N − b} lets query i see
//     slice key j iff a + j <= i + N − Mq, exactly the full mask restricted to the slice. With
//     Mq = N this is also the top-left LowerTriangularMask.
// A query row that sees no key of a slice (fully masked, or an empty slice) gets lse = −inf
// there, and the merge ignores it; a row that sees no key at all merges to out = 0, lse = −inf.
// For the best precision write the partial outputs in f32 (AttentionOptions::output_dtype).
//
// All tensors are caller-owned device memory; work is queued on `stream` (a CUstream, null =
// the legacy default stream) and the calls return without synchronizing.
#pragma once
#include <string>
#include <vector>

#include "jitattn/attention.h"
#include "jitattn/bias.h"
#include "jitattn/error.h"
#include "jitattn/tensor.h"

namespace jitattn {

// Most partial outputs the list form of merge_attentions takes (the stacked form has no limit).
constexpr int kMaxMergeSplitsList = 32;

// Attention of `q` over the keys `k`/`v` given (one slice of a longer key sequence), with its
// log-sum-exp: out [B, Mq, (G,) H, Kv] and lse [B, (G,) H, Mq] float32, both required. The output
// dtype is options.output_dtype (f32 is recommended before a merge) or the query's. Otherwise
// exactly memory_efficient_attention_forward_requires_grad: same biases, layouts and rules.
// For a 5-D query, pass lse as [B, G, H, Mq] so that merge_attentions accepts it.
void memory_efficient_attention_partial(const TensorView& q, const TensorView& k, const TensorView& v,
                                        const AttnBias& bias, const TensorView& out, const TensorView& lse,
                                        const AttentionOptions& options = {}, void* stream = nullptr);

// Stacked form: outputs [S, B, M, H, K] or [S, B, M, G, H, K] (f16, bf16 or f32), lses
// [S, B, H, M] or [S, B, G, H, M] (f32), S >= 1. Writes
//   out = Σ_s exp(lse_s − max) · outputs[s] / Σ_s exp(lse_s − max)   into `out` [B, M, (G,) H, K]
//   (its dtype is the output dtype: xFormers' output_dtype), and, when `lse` is defined
//   (xFormers' write_lse), lse = max + log Σ_s exp(lse_s − max) into `lse` [B, (G,) H, M] f32.
// Math is fp32. Splits whose lse is −inf are skipped; if all are, out = 0 and lse = −inf.
// K must be a multiple of 8 in [8, 256]. Only the last dimension of each tensor needs stride 1.
// `out` and `lse` must not overlap the inputs.
// Note: a braced list of one view, merge_attentions({o}, {l}, out), picks this overload; write
// std::vector<TensorView>{o} for the list form.
void merge_attentions(const TensorView& outputs, const TensorView& lses, const TensorView& out,
                      const TensorView& lse = {}, void* stream = nullptr);

// List form: S = outputs.size() = lses.size() separate tensors, 1 <= S <= kMaxMergeSplitsList,
// each [B, M, (G,) H, K] / [B, (G,) H, M] and each with its own strides; all outputs of one dtype.
void merge_attentions(const std::vector<TensorView>& outputs, const std::vector<TensorView>& lses,
                      const TensorView& out, const TensorView& lse = {}, void* stream = nullptr);

// Every reason the calls above would refuse these arguments; empty when they are supported.
// Never throws.
std::vector<std::string> merge_not_supported_reasons(const TensorView& outputs, const TensorView& lses,
                                                     const TensorView& out, const TensorView& lse = {});
std::vector<std::string> merge_not_supported_reasons(const std::vector<TensorView>& outputs,
                                                     const std::vector<TensorView>& lses, const TensorView& out,
                                                     const TensorView& lse = {});

}  // namespace jitattn
