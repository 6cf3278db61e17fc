// memory_efficient_attention: the xFormers call, JIT-compiled per specialization.
//
// Shapes follow xFormers: query [B, Mq, H, K] (or [B, Mq, K], read as H = 1), key [B, Mkv, Hkv, K],
// value [B, Mkv, Hkv, Kv], output [B, Mq, H, Kv], lse [B, H, Mq] float32. Hkv may divide H (GQA/MQA).
// 5-D [B, M, G, H, K] inputs are read as G·H heads (key/value may be expanded over H with stride 0);
// their lse is [B, G, H, Mq] or [B, G·H, Mq].
// All tensors are caller-owned device memory; work is queued on `stream` (a CUstream, null =
// the legacy default stream) and the call returns without synchronizing.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "jitattn/bias.h"
#include "jitattn/error.h"
#include "jitattn/tensor.h"
#include "jitattn/variant.h"

namespace jitattn {

struct AttentionOptions {
  std::optional<double> scale;        // default: K^-0.5
  std::optional<DType> output_dtype;  // when set, `out` must have this dtype; default: query's
  // Dropout on the attention probabilities (xFormers' p): each is dropped with probability p
  // and the kept ones scaled by 1/(1-p). The mask is a function of (seed, offset) and the element
  // (Philox4x32-10, layout in kernel_src/params.h), so the backward with the same seed and offset
  // regenerates it; a different offset gives an independent mask. Not with paged masks.
  double p = 0.0;
  uint64_t seed = 0, offset = 0;
  // The caller's mask_mod/score_mod over `bias` (jitattn/variant.h), or null. Read during the call.
  const Variant* variant = nullptr;
  // That variant's block map (build_block_map), or null: then every tile runs mask_mod.
  const BlockMap* block_map = nullptr;
};

// out = softmax(q @ k^T * scale + bias) @ v
void memory_efficient_attention_forward(const TensorView& q, const TensorView& k, const TensorView& v,
                                        const AttnBias& bias, const TensorView& out,
                                        const AttentionOptions& options = {}, void* stream = nullptr);

// As above, and also writes the log-sum-exp of each query row (natural log) to `lse`
// ([B, H, Mq] float32). A fully masked row gives out = 0 and lse = -inf.
void memory_efficient_attention_forward_requires_grad(const TensorView& q, const TensorView& k,
                                                      const TensorView& v, const AttnBias& bias,
                                                      const TensorView& out, const TensorView& lse,
                                                      const AttentionOptions& options = {},
                                                      void* stream = nullptr);

// ---- backward ----------------------------------------------------------------------------------
struct BackwardOptions {
  std::optional<double> scale;  // the forward's scale (default K^-0.5)
  double p = 0.0;               // the forward's dropout probability, seed and offset: the backward
  uint64_t seed = 0, offset = 0;  // regenerates the same mask
  // No atomics: dQ is summed in a fixed order, so results are bitwise identical run to run. It
  // recomputes Q·Kᵀ and dO·Vᵀ for dQ, so it is slower than the default.
  bool deterministic = false;
  // Device scratch of at least memory_efficient_attention_backward_workspace_bytes() bytes,
  // 16-byte aligned, or null: then it is allocated and freed on `stream` (stream-ordered,
  // cuMemAllocAsync).
  void* workspace = nullptr;
  // The forward's variant (jitattn/variant.h); with a score_mod it needs score_grad or additive_score().
  const Variant* variant = nullptr;
  const BlockMap* block_map = nullptr;  // as AttentionOptions::block_map
};

// Gradients of out = attention(q, k, v, bias) with respect to q, k, v (and a dense bias), given
// grad = dL/dout and the forward's out and lse (from memory_efficient_attention_forward_requires_grad
// with the same inputs, bias, scale and dropout). dq, dk, dv are caller-owned with the shapes of
// q, k, v and q's dtype; grad has out's shape and q's dtype. With GQA/MQA (fewer key/value heads,
// or 5-D key/value expanded over H with stride 0) dk and dv have the key/value heads and hold the
// sum over the query heads that share them. dbias (optional) needs a TensorBias or
// LowerTriangularMaskWithTensorBias whose tensor is not broadcast; it gets the bias's shape,
// contiguous, q's dtype. Paged masks have no backward. Work is queued on `stream`.
void memory_efficient_attention_backward(const TensorView& grad, const TensorView& out, const TensorView& lse,
                                         const TensorView& q, const TensorView& k, const TensorView& v,
                                         const AttnBias& bias, const TensorView& dq, const TensorView& dk,
                                         const TensorView& dv, const TensorView& dbias = {},
                                         const BackwardOptions& options = {}, void* stream = nullptr);

// Scratch the backward needs for these inputs (delta rows, and the fp32 dQ accumulator unless
// deterministic), in bytes.
size_t memory_efficient_attention_backward_workspace_bytes(const TensorView& q, const TensorView& k,
                                                           const TensorView& v, const AttnBias& bias,
                                                           const BackwardOptions& options = {});

// Every reason memory_efficient_attention_backward would refuse these inputs. Never throws.
std::vector<std::string> backward_not_supported_reasons(const TensorView& grad, const TensorView& out,
                                                        const TensorView& lse, const TensorView& q,
                                                        const TensorView& k, const TensorView& v,
                                                        const AttnBias& bias, const TensorView& dq,
                                                        const TensorView& dk, const TensorView& dv,
                                                        const TensorView& dbias = {},
                                                        const BackwardOptions& options = {});

// Every reason the forward would refuse these inputs; empty when it is supported.
// Pass an undefined `lse` (TensorView{}) for the plain forward. Never throws.
std::vector<std::string> not_supported_reasons(const TensorView& q, const TensorView& k,
                                               const TensorView& v, const AttnBias& bias,
                                               const TensorView& out, const TensorView& lse = {},
                                               const AttentionOptions& options = {});

}  // namespace jitattn
