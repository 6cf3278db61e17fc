// Attention biases, named after xformers.ops.fmha.attn_bias. Each bias *kind* is a separate
// kernel specialization; its numbers (tensor strides, offsets) are kernel arguments.
#pragma once
#include <cstdint>
#include <variant>
#include <vector>

#include "jitattn/tensor.h"

namespace jitattn {

// Query i may attend key j iff j <= i (top-left aligned causal mask).
struct LowerTriangularMask {};

// Query i may attend key j iff j <= i + (Mkv - Mq) (the last query sees every key).
struct LowerTriangularFromBottomRightMask {};

// A dense additive bias broadcastable to [B, H, Mq, Mkv]: a 4-D tensor whose B and H
// dimensions may have size 1 or stride 0; the last stride must be 1.
struct TensorBias {
  TensorView tensor;
};

using AttnBias = std::variant<std::monostate, LowerTriangularMask, LowerTriangularFromBottomRightMask,
                              TensorBias>;

// The bias as a dense [B, H, Mq, Mkv] row-major fp64 array on the host (0, -inf or values),
// as xFormers' materialize(). A TensorBias must point to host memory (device == kHost).
std::vector<double> materialize(const AttnBias& bias, int64_t B, int64_t H, int64_t Mq, int64_t Mkv);

const char* bias_name(const AttnBias& bias);

}  // namespace jitattn
