// The C API against the C++ API on the GPU: forward (with LSE), the deterministic backward,
// partial and merge (stacked and list forms) through jitattn_* and through jitattn:: on the same
// random inputs must give the same bytes. Every output is poisoned (NaN) before the calls.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "gpu_support.h"
#include "jitattn/c_api.h"
#include "jitattn/jitattn.h"
#include "reference.h"

namespace jitattn::test {
namespace {

jitattn_tensor c_tensor(const TensorView& t) {
  jitattn_tensor c;
  std::memset(&c, 0, sizeof c);
  c.struct_size = sizeof c;
  c.data = t.data;
  c.dtype = t.dtype == DType::f16 ? JITATTN_DTYPE_F16 : t.dtype == DType::bf16 ? JITATTN_DTYPE_BF16 : JITATTN_DTYPE_F32;
  c.ndim = t.ndim;
  for (int d = 0; d < t.ndim; ++d) c.shape[d] = t.shape[d], c.stride[d] = t.stride[d];
  c.device = t.device;
  return c;
}

// A contiguous device tensor, random or poisoned.
struct Tensor {
  DeviceBuffer buf;
  TensorView view;
  jitattn_tensor c;
};
Tensor make(std::initializer_list<int64_t> shape, DType dt, bool random) {
  Tensor t;
  t.view = TensorView::make(nullptr, dt, shape);
  const size_t n = size_t(t.view.numel()), bytes = n * element_size(dt);
  t.buf = DeviceBuffer(bytes + 16);
  if (random) {
    std::vector<double> values;
    std::vector<unsigned char> raw;
    random_values(rng(), n, dt, values, raw);
    t.buf.upload(raw.data(), raw.size());
  } else {
    t.buf.fill(0xFF);
  }
  t.view.data = t.buf.get();
  t.c = c_tensor(t.view);
  return t;
}
std::vector<unsigned char> bytes(const Tensor& t) {
  std::vector<unsigned char> raw(size_t(t.view.numel()) * element_size(t.view.dtype));
  t.buf.download(raw.data(), raw.size());
  return raw;
}

#define ASSERT_C_OK(call) ASSERT_EQ((call), JITATTN_OK) << jitattn_last_error_message()

// One bias as the C API describes it and as the C++ API builds it.
struct BiasCase {
  const char* name;
  int64_t B;
  std::vector<int32_t> q_seqlen, kv_seqlen;  // block-diagonal: B = 1, M = the sums
  jitattn_bias desc;
  AttnBias bias;
};
std::vector<BiasCase> bias_cases() {
  std::vector<BiasCase> cases;
  auto desc = [](int32_t kind) {
    jitattn_bias d;
    std::memset(&d, 0, sizeof d);
    d.struct_size = sizeof d;
    d.kind = kind;
    return d;
  };
  cases.push_back({"none", 2, {}, {}, desc(JITATTN_BIAS_NONE), AttnBias{}});
  cases.push_back({"causal", 2, {}, {}, desc(JITATTN_BIAS_LOWER_TRIANGULAR), LowerTriangularMask{}});
  cases.push_back({"bottom-right local", 2, {}, {}, desc(JITATTN_BIAS_LOWER_TRIANGULAR_FROM_BOTTOM_RIGHT_LOCAL_ATTENTION),
                   LowerTriangularFromBottomRightMask{}.make_local_attention(24)});
  cases.back().desc.window_size = 24;
  cases.push_back({"block-diagonal causal", 1, {30, 0, 40}, {50, 10, 30}, desc(JITATTN_BIAS_BLOCK_DIAGONAL_CAUSAL),
                   BlockDiagonalCausalMask::from_seqlens({30, 0, 40}, {50, 10, 30})});
  cases.push_back({"block-diagonal alibi", 1, {30, 0, 40}, {50, 10, 30}, desc(JITATTN_BIAS_BLOCK_DIAGONAL_WITH_ALIBI),
                   BlockDiagonalMask::from_seqlens({30, 0, 40}, {50, 10, 30}).add_alibi(AlibiSlopes::geometric(4))});
  cases.back().desc.alibi_num_slopes = 4;
  for (auto& c : cases) {  // the descriptions point into their own vectors
    c.desc.num_seqs = int32_t(c.q_seqlen.size());
    c.desc.q_seqlen = c.q_seqlen.empty() ? nullptr : c.q_seqlen.data();
    c.desc.kv_seqlen = c.kv_seqlen.empty() ? nullptr : c.kv_seqlen.data();
  }
  return cases;
}

class CApiGpu : public ::testing::Test {
 protected:
  void SetUp() override { JITATTN_REQUIRE_GPU(); }
};

TEST_F(CApiGpu, ForwardAndBackwardMatchTheCppApiBitwise) {
  const DType dt = DType::bf16;
  const int64_t Mq = 70, Mkv = 90, H = 4, Hkv = 2, K = 64;
  for (bool use_handle : {false, true})
    for (BiasCase& bc : bias_cases()) {
      SCOPED_TRACE(std::string(bc.name) + (use_handle ? ", through a handle" : ", through a description"));
      const int64_t B = bc.B;
      Tensor q = make({B, Mq, H, K}, dt, true), k = make({B, Mkv, Hkv, K}, dt, true), v = make({B, Mkv, Hkv, K}, dt, true),
             dout = make({B, Mq, H, K}, dt, true);
      Tensor out_c = make({B, Mq, H, K}, dt, false), out_cpp = make({B, Mq, H, K}, dt, false);
      Tensor lse_c = make({B, H, Mq}, DType::f32, false), lse_cpp = make({B, H, Mq}, DType::f32, false);
      Tensor plain_c = make({B, Mq, H, K}, dt, false), plain_cpp = make({B, Mq, H, K}, dt, false);
      jitattn_bias_handle* handle = nullptr;
      ASSERT_C_OK(jitattn_bias_create(&bc.desc, &handle));

      jitattn_attention_options fo;
      std::memset(&fo, 0, sizeof fo);
      fo.struct_size = sizeof fo;
      fo.has_scale = 1, fo.scale = 0.3;
      AttentionOptions cpp_fo;
      cpp_fo.scale = 0.3;
      if (use_handle) {
        ASSERT_C_OK(jitattn_forward_requires_grad_h(&q.c, &k.c, &v.c, handle, &out_c.c, &lse_c.c, &fo, nullptr));
        ASSERT_C_OK(jitattn_forward_h(&q.c, &k.c, &v.c, handle, &plain_c.c, &fo, nullptr));
      } else {
        ASSERT_C_OK(jitattn_forward_requires_grad(&q.c, &k.c, &v.c, &bc.desc, &out_c.c, &lse_c.c, &fo, nullptr));
        ASSERT_C_OK(jitattn_forward(&q.c, &k.c, &v.c, &bc.desc, &plain_c.c, &fo, nullptr));
      }
      memory_efficient_attention_forward_requires_grad(q.view, k.view, v.view, bc.bias, out_cpp.view, lse_cpp.view, cpp_fo);
      memory_efficient_attention_forward(q.view, k.view, v.view, bc.bias, plain_cpp.view, cpp_fo);

      // The deterministic backward: bitwise repeatable, so the two APIs must agree to the bit.
      Tensor dq_c = make({B, Mq, H, K}, dt, false), dk_c = make({B, Mkv, Hkv, K}, dt, false),
             dv_c = make({B, Mkv, Hkv, K}, dt, false);
      Tensor dq_cpp = make({B, Mq, H, K}, dt, false), dk_cpp = make({B, Mkv, Hkv, K}, dt, false),
             dv_cpp = make({B, Mkv, Hkv, K}, dt, false);
      jitattn_backward_options bo;
      std::memset(&bo, 0, sizeof bo);
      bo.struct_size = sizeof bo;
      bo.has_scale = 1, bo.scale = 0.3, bo.deterministic = 1;
      BackwardOptions cpp_bo;
      cpp_bo.scale = 0.3, cpp_bo.deterministic = true;
      size_t ws = 0;
      ASSERT_C_OK(jitattn_backward_workspace_bytes_h(&q.c, &k.c, &v.c, handle, &bo, &ws));
      EXPECT_EQ(ws, memory_efficient_attention_backward_workspace_bytes(q.view, k.view, v.view, bc.bias, cpp_bo));
      if (use_handle)
        ASSERT_C_OK(jitattn_backward_h(&dout.c, &out_c.c, &lse_c.c, &q.c, &k.c, &v.c, handle, &dq_c.c, &dk_c.c, &dv_c.c,
                                       nullptr, &bo, nullptr));
      else
        ASSERT_C_OK(jitattn_backward(&dout.c, &out_c.c, &lse_c.c, &q.c, &k.c, &v.c, &bc.desc, &dq_c.c, &dk_c.c, &dv_c.c,
                                     nullptr, &bo, nullptr));
      memory_efficient_attention_backward(dout.view, out_cpp.view, lse_cpp.view, q.view, k.view, v.view, bc.bias,
                                          dq_cpp.view, dk_cpp.view, dv_cpp.view, {}, cpp_bo);
      device_synchronize();
      jitattn_bias_destroy(handle);

      EXPECT_EQ(bytes(out_c), bytes(out_cpp)) << "out";
      EXPECT_EQ(bytes(lse_c), bytes(lse_cpp)) << "lse";
      EXPECT_EQ(bytes(plain_c), bytes(plain_cpp)) << "plain forward";
      EXPECT_EQ(bytes(dq_c), bytes(dq_cpp)) << "dq";
      EXPECT_EQ(bytes(dk_c), bytes(dk_cpp)) << "dk";
      EXPECT_EQ(bytes(dv_c), bytes(dv_cpp)) << "dv";
    }
}

TEST_F(CApiGpu, PartialAndMergeMatchTheCppApiBitwise) {
  const DType dt = DType::f16;
  const int64_t B = 2, Mq = 33, Mkv = 100, H = 3, K = 64, S = 3;
  const int64_t cut[S + 1] = {0, 40, 41, Mkv};  // a one-key slice too
  Tensor q = make({B, Mq, H, K}, dt, true), k = make({B, Mkv, H, K}, dt, true), v = make({B, Mkv, H, K}, dt, true);
  // Partial outputs stacked [S, B, Mq, H, K] f32 and lses [S, B, H, Mq], written by both APIs.
  Tensor outs_c = make({S, B, Mq, H, K}, DType::f32, false), lses_c = make({S, B, H, Mq}, DType::f32, false);
  Tensor outs_cpp = make({S, B, Mq, H, K}, DType::f32, false), lses_cpp = make({S, B, H, Mq}, DType::f32, false);
  jitattn_attention_options po;
  std::memset(&po, 0, sizeof po);
  po.struct_size = sizeof po;
  po.output_dtype = JITATTN_DTYPE_F32;
  AttentionOptions cpp_po;
  cpp_po.output_dtype = DType::f32;
  std::vector<TensorView> part_outs, part_lses;
  std::vector<jitattn_tensor> c_outs, c_lses;
  for (int64_t s = 0; s < S; ++s) {
    auto slice = [&](const TensorView& t) {  // keys [cut[s], cut[s+1])
      TensorView x = t;
      x.data = static_cast<char*>(t.data) + cut[s] * t.stride[1] * int64_t(element_size(t.dtype));
      x.shape[1] = cut[s + 1] - cut[s];
      return x;
    };
    auto split = [&](const Tensor& stacked, int64_t s) {  // stacked[s]
      TensorView x = stacked.view;
      x.data = static_cast<char*>(x.data) + s * x.stride[0] * int64_t(element_size(x.dtype));
      x.ndim -= 1;
      for (int d = 0; d < x.ndim; ++d) x.shape[d] = x.shape[d + 1], x.stride[d] = x.stride[d + 1];
      return x;
    };
    const TensorView ks = slice(k.view), vs = slice(v.view);
    const jitattn_tensor ks_c = c_tensor(ks), vs_c = c_tensor(vs), o_c = c_tensor(split(outs_c, s)),
                         l_c = c_tensor(split(lses_c, s));
    ASSERT_C_OK(jitattn_partial(&q.c, &ks_c, &vs_c, nullptr, &o_c, &l_c, &po, nullptr));
    memory_efficient_attention_partial(q.view, ks, vs, AttnBias{}, split(outs_cpp, s), split(lses_cpp, s), cpp_po);
    part_outs.push_back(split(outs_cpp, s)), part_lses.push_back(split(lses_cpp, s));
    c_outs.push_back(o_c), c_lses.push_back(l_c);
  }
  Tensor merged_c = make({B, Mq, H, K}, dt, false), merged_lse_c = make({B, H, Mq}, DType::f32, false);
  Tensor merged_cpp = make({B, Mq, H, K}, dt, false), merged_lse_cpp = make({B, H, Mq}, DType::f32, false);
  Tensor list_c = make({B, Mq, H, K}, dt, false), list_cpp = make({B, Mq, H, K}, dt, false);
  ASSERT_C_OK(jitattn_merge_attentions(&outs_c.c, &lses_c.c, &merged_c.c, &merged_lse_c.c, nullptr));
  merge_attentions(outs_cpp.view, lses_cpp.view, merged_cpp.view, merged_lse_cpp.view);
  std::vector<const jitattn_tensor*> c_out_ptrs, c_lse_ptrs;
  for (int64_t s = 0; s < S; ++s) c_out_ptrs.push_back(&c_outs[size_t(s)]), c_lse_ptrs.push_back(&c_lses[size_t(s)]);
  ASSERT_C_OK(jitattn_merge_attentions_list(c_out_ptrs.data(), c_lse_ptrs.data(), size_t(S), &list_c.c, nullptr, nullptr));
  merge_attentions(part_outs, part_lses, list_cpp.view);
  device_synchronize();

  EXPECT_EQ(bytes(outs_c), bytes(outs_cpp)) << "partial outputs";
  EXPECT_EQ(bytes(lses_c), bytes(lses_cpp)) << "partial lses";
  EXPECT_EQ(bytes(merged_c), bytes(merged_cpp)) << "stacked merge";
  EXPECT_EQ(bytes(merged_lse_c), bytes(merged_lse_cpp)) << "stacked merge lse";
  EXPECT_EQ(bytes(list_c), bytes(list_cpp)) << "list merge";
}

}  // namespace
}  // namespace jitattn::test
