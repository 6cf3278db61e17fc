// Registry parts on the GPU: a part built from a JSON config runs exactly the call it stands for.
// Its forward (and forward with LSE) must be bitwise equal to memory_efficient_attention_forward
// with the bias, options and variant written out by hand; its backward must match the direct
// backward (dQ is summed with atomics, so within the gradient tolerance rather than bitwise).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "gpu_support.h"
#include "jitattn/attention.h"
#include "jitattn/registry.h"
#include "reference.h"

namespace jitattn::test {
namespace {

constexpr int64_t B = 2, M = 80, H = 4, K = 64;

struct Buf {
  DeviceBuffer buf;
  TensorView view;
};
Buf random_tensor(DType dt, std::vector<int64_t> shape) {
  Buf t;
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  std::vector<double> values;
  std::vector<unsigned char> bytes;
  random_values(rng(), size_t(n), dt, values, bytes);
  t.buf = DeviceBuffer(bytes.size() + 16);
  t.buf.upload(bytes.data(), bytes.size());
  t.view = TensorView::make(t.buf.get(), dt, {shape[0], shape[1], shape[2], shape[3]});
  return t;
}
Buf poisoned(DType dt, std::initializer_list<int64_t> shape) {
  Buf t;
  t.view = TensorView::make(nullptr, dt, shape);
  t.buf = DeviceBuffer(size_t(t.view.numel()) * element_size(dt) + 16);
  t.buf.fill(0xFF);
  t.view.data = t.buf.get();
  return t;
}
std::vector<unsigned char> bytes_of(const Buf& t) {
  std::vector<unsigned char> raw(size_t(t.view.numel()) * element_size(t.view.dtype));
  t.buf.download(raw.data(), raw.size());
  return raw;
}

struct Case {
  std::string json;
  AttnBias bias;  // what the part should call with, written out
  AttentionOptions options;
  uint64_t seed = 0, offset = 0;
};

void check_forward(const Case& c, DType dt) {
  SCOPED_TRACE(c.json + " " + to_string(dt));
  const auto part = attention_from_config(c.json);
  Buf q = random_tensor(dt, {B, M, H, K}), k = random_tensor(dt, {B, M, H, K}), v = random_tensor(dt, {B, M, H, K});
  Buf o_part = poisoned(dt, {B, M, H, K}), o_direct = poisoned(dt, {B, M, H, K});
  Buf l_part = poisoned(DType::f32, {B, H, M}), l_direct = poisoned(DType::f32, {B, H, M});
  AttentionOptions opt = c.options;
  opt.seed = c.seed, opt.offset = c.offset;

  part->forward(q.view, k.view, v.view, o_part.view, nullptr, c.seed, c.offset);
  memory_efficient_attention_forward(q.view, k.view, v.view, c.bias, o_direct.view, opt);
  device_synchronize();
  EXPECT_EQ(bytes_of(o_part), bytes_of(o_direct)) << "forward";

  o_part.buf.fill(0xFF), o_direct.buf.fill(0xFF);
  part->forward_requires_grad(q.view, k.view, v.view, o_part.view, l_part.view, nullptr, c.seed, c.offset);
  memory_efficient_attention_forward_requires_grad(q.view, k.view, v.view, c.bias, o_direct.view, l_direct.view, opt);
  device_synchronize();
  EXPECT_EQ(bytes_of(o_part), bytes_of(o_direct)) << "forward_requires_grad: out";
  EXPECT_EQ(bytes_of(l_part), bytes_of(l_direct)) << "forward_requires_grad: lse";

  if (c.options.variant && !c.options.variant->score_code().empty() && c.options.variant->score_grad_code().empty() &&
      !c.options.variant->additive())
    return;  // no backward for it
  Buf g = random_tensor(dt, {B, M, H, K});
  Buf dq[2] = {poisoned(dt, {B, M, H, K}), poisoned(dt, {B, M, H, K})};
  Buf dk[2] = {poisoned(dt, {B, M, H, K}), poisoned(dt, {B, M, H, K})};
  Buf dv[2] = {poisoned(dt, {B, M, H, K}), poisoned(dt, {B, M, H, K})};
  part->backward(g.view, o_part.view, l_part.view, q.view, k.view, v.view, dq[0].view, dk[0].view, dv[0].view, nullptr,
                 c.seed, c.offset);
  BackwardOptions bopt;
  bopt.scale = opt.scale, bopt.p = opt.p, bopt.seed = opt.seed, bopt.offset = opt.offset, bopt.variant = opt.variant;
  memory_efficient_attention_backward(g.view, o_direct.view, l_direct.view, q.view, k.view, v.view, c.bias, dq[1].view,
                                      dk[1].view, dv[1].view, {}, bopt);
  device_synchronize();
  const char* names[] = {"dq", "dk", "dv"};
  Buf* grads[] = {dq, dk, dv};
  for (int i = 0; i < 3; ++i)
    EXPECT_LE(relative_error(decode(bytes_of(grads[i][0]), dt), decode(bytes_of(grads[i][1]), dt)), grad_tolerance(dt))
        << names[i];
}

TEST(RegistryGpu, PartsCallTheKernelsTheyStandFor) {
  JITATTN_REQUIRE_GPU();
  reseed(0x5e9157);
  Variant window;
  window.mask_mod("q_idx - kv_idx < w").capture("w", int32_t(24));
  Variant softcap;
  softcap.score_mod("return cap * tanhf(score / cap);", "const float t = tanhf(score / cap); return 1.f - t * t;")
      .capture("cap", 2.5f);
  AttentionOptions dropout;
  dropout.p = 0.2, dropout.scale = 0.1;
  AttentionOptions with_window, with_softcap;
  with_window.variant = &window, with_softcap.variant = &softcap;

  const std::vector<Case> cases = {
      {R"({"name": "scaled_dot_product"})", AttnBias{}, {}},
      {R"({"name": "scaled_dot_product", "causal": true})", LowerTriangularMask{}, {}},
      {R"({"name": "scaled_dot_product", "dropout": "0.2", "scale": 0.1})", AttnBias{}, dropout, 5, 3},
      {R"({"name": "local", "window_size": "16", "causal": true})", LowerTriangularFromBottomRightLocalAttentionMask{9}, {}},
      {R"({"name": "local", "window_size": 16})", LocalAttentionFromBottomRightMask{8, 8}, {}},
      {R"({"name": "alibi", "causal": true})", LowerTriangularMask{}.add_alibi(AlibiSlopes::geometric(int32_t(H))), {}},
      {R"({"name": "alibi", "num_heads": 4})", AlibiBias{AlibiSlopes::geometric(int32_t(H))}, {}},
      {R"({"name": "variant", "mask_mod": "q_idx - kv_idx < w", "causal": true, "captures": {"w": "24"}})",
       LowerTriangularMask{}, with_window},
      {R"({"name": "variant", "score_mod": "return cap * tanhf(score / cap);",
           "score_grad": "const float t = tanhf(score / cap); return 1.f - t * t;", "captures": {"cap": 2.5}})",
       AttnBias{}, with_softcap},
  };
  for (DType dt : {DType::bf16, DType::f16})
    for (const Case& c : cases) check_forward(c, dt);
}

}  // namespace
}  // namespace jitattn::test
