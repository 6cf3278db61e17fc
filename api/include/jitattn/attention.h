// memory_efficient_attention: the xFormers call, JIT-compiled per specialization.
//
// Shapes follow xFormers: query [B, Mq, H, K] (or [B, Mq, K], read as H = 1), key [B, Mkv, Hkv, K],
// value [B, Mkv, Hkv, Kv], output [B, Mq, H, Kv], lse [B, H, Mq] float32. Hkv may divide H (GQA/MQA).
// 5-D [B, M, G, H, K] inputs are read as G·H heads (key/value may be expanded over H with stride 0);
// their lse is [B, G, H, Mq] or [B, G·H, Mq].
// All tensors are caller-owned device memory; work is queued on `stream` (a CUstream, null =
// the legacy default stream) and the call returns without synchronizing.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "jitattn/bias.h"
#include "jitattn/error.h"
#include "jitattn/tensor.h"

namespace jitattn {

struct AttentionOptions {
  std::optional<double> scale;        // default: K^-0.5
  std::optional<DType> output_dtype;  // when set, `out` must have this dtype; default: query's
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

// Every reason the call above would refuse these inputs; empty when it is supported.
// Pass an undefined `lse` (TensorView{}) for the plain forward. Never throws.
std::vector<std::string> not_supported_reasons(const TensorView& q, const TensorView& k,
                                               const TensorView& v, const AttnBias& bias,
                                               const TensorView& out, const TensorView& lse = {},
                                               const AttentionOptions& options = {});

}  // namespace jitattn
