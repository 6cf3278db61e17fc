// Forward entry points: validate the call (api/src/plan.cpp), then run the forward op
// (jit/ops/forward.cpp: Signature, kernel, arguments, launch); a forward that keeps lse for a
// backward first starts that backward's compiles (jit/ops/backward.cpp prefetch_backward).
#include "jitattn/attention.h"

#include "jit/ops/backward.h"
#include "jit/ops/forward.h"
#include "plan.h"

namespace jitattn {

void detail::forward(const TensorView& q, const TensorView& k, const TensorView& v, const AttnBias& bias,
                     const TensorView& out, const TensorView& lse, const AttentionOptions& opt, void* stream,
                     bool backward_follows) {
  const detail::Plan p = detail::plan(q, k, v, bias, out, lse, opt);
  if (!p.reasons.empty()) throw Error(p.reasons);
  if (backward_follows) jit::ops::prefetch_backward(p);
  jit::ops::forward(p, static_cast<CUstream>(stream));
}

void memory_efficient_attention_forward(const TensorView& q, const TensorView& k, const TensorView& v,
                                        const AttnBias& bias, const TensorView& out, const AttentionOptions& options,
                                        void* stream) {
  detail::forward(q, k, v, bias, out, TensorView{}, options, stream, false);
}

void memory_efficient_attention_forward_requires_grad(const TensorView& q, const TensorView& k, const TensorView& v,
                                                      const AttnBias& bias, const TensorView& out,
                                                      const TensorView& lse, const AttentionOptions& options,
                                                      void* stream) {
  if (!lse.defined()) throw Error("lse must be a [B, H, Mq] f32 tensor");
  detail::forward(q, k, v, bias, out, lse, options, stream, true);
}

std::vector<std::string> not_supported_reasons(const TensorView& q, const TensorView& k, const TensorView& v,
                                               const AttnBias& bias, const TensorView& out, const TensorView& lse,
                                               const AttentionOptions& options) {
  try {
    return detail::plan(q, k, v, bias, out, lse, options).reasons;
  } catch (const std::exception& e) {
    return {e.what()};
  }
}

}  // namespace jitattn
