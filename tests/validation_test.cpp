// Bad input gets a reason that names the argument and the rule, before anything touches a GPU.
#include <gtest/gtest.h>

#include "jitattn/attention.h"
#include "test_reasons.h"

namespace jitattn {
namespace {

using test::fake;
using test::joined;
using test::mentions;

struct Call {
  TensorView q = TensorView::make(fake(), DType::bf16, {2, 100, 4, 64});
  TensorView k = TensorView::make(fake(), DType::bf16, {2, 120, 4, 64});
  TensorView v = TensorView::make(fake(), DType::bf16, {2, 120, 4, 64});
  TensorView out = TensorView::make(fake(), DType::bf16, {2, 100, 4, 64});
  TensorView lse;
  AttnBias bias;
  AttentionOptions opt;
  std::vector<std::string> reasons() const { return not_supported_reasons(q, k, v, bias, out, lse, opt); }
};

TEST(Validation, AcceptsAValidCall) {
  Call c;
  EXPECT_TRUE(c.reasons().empty()) << joined(c.reasons());
  c.lse = TensorView::make(fake(), DType::f32, {2, 4, 100});
  c.bias = LowerTriangularFromBottomRightMask{};
  EXPECT_TRUE(c.reasons().empty()) << joined(c.reasons());
}

TEST(Validation, HeadDimMustBeAMultipleOf8) {
  Call c;
  c.q = TensorView::make(fake(), DType::bf16, {2, 100, 4, 100});
  c.k = TensorView::make(fake(), DType::bf16, {2, 120, 4, 100});
  EXPECT_TRUE(mentions(c.reasons(), "query.shape[-1]=100 is not a multiple of 8")) << joined(c.reasons());
}

TEST(Validation, HeadDimAtMost256) {
  Call c;
  c.v = TensorView::make(fake(), DType::bf16, {2, 120, 4, 512});
  c.out = TensorView::make(fake(), DType::bf16, {2, 100, 4, 512});
  EXPECT_TRUE(mentions(c.reasons(), "value.shape[-1]=512 is not in [8, 256]")) << joined(c.reasons());
}

TEST(Validation, LastStrideMustBeOne) {
  Call c;
  c.q = TensorView::make(fake(), DType::bf16, {2, 100, 4, 64}, {51200, 512, 128, 2});
  EXPECT_TRUE(mentions(c.reasons(), "query.stride[-1]=2 must be 1")) << joined(c.reasons());
}

TEST(Validation, DtypesMustMatch) {
  Call c;
  c.k.dtype = DType::f16;
  EXPECT_TRUE(mentions(c.reasons(), "key.dtype=f16")) << joined(c.reasons());
  Call d;
  d.out.dtype = DType::f32;
  EXPECT_TRUE(mentions(d.reasons(), "out.dtype=f32 must be bf16")) << joined(d.reasons());
  d.opt.output_dtype = DType::f32;
  EXPECT_TRUE(d.reasons().empty()) << joined(d.reasons());
}

TEST(Validation, ShapesMustAgree) {
  Call c;
  c.v = TensorView::make(fake(), DType::bf16, {2, 119, 4, 64});
  EXPECT_TRUE(mentions(c.reasons(), "key.shape[1]=120 and value.shape[1]=119")) << joined(c.reasons());
  Call d;
  d.k = TensorView::make(fake(), DType::bf16, {2, 120, 8, 64});
  EXPECT_TRUE(mentions(d.reasons(), "head counts: query 4, key 8, value 4")) << joined(d.reasons());
  Call e;
  e.out = TensorView::make(fake(), DType::bf16, {2, 100, 4, 32});
  EXPECT_TRUE(mentions(e.reasons(), "out.shape=[2, 100, 4, 32] must be [B, Mq, H, Kv]")) << joined(e.reasons());
}

TEST(Validation, LseShapeAndDtype) {
  Call c;
  c.lse = TensorView::make(fake(), DType::bf16, {2, 4, 99});
  EXPECT_TRUE(mentions(c.reasons(), "lse.dtype=bf16 must be f32")) << joined(c.reasons());
  EXPECT_TRUE(mentions(c.reasons(), "lse.shape=[2, 4, 99]")) << joined(c.reasons());
}

TEST(Validation, TensorBiasBroadcastRules) {
  Call c;
  c.bias = TensorBias{TensorView::make(fake(), DType::bf16, {1, 4, 100, 120})};
  EXPECT_TRUE(c.reasons().empty()) << joined(c.reasons());
  c.bias = TensorBias{TensorView::make(fake(), DType::bf16, {3, 4, 100, 120})};
  EXPECT_TRUE(mentions(c.reasons(), "attn_bias.shape[0]=3 must equal B=query.shape[0]=2 or 1")) << joined(c.reasons());
  c.bias = TensorBias{TensorView::make(fake(), DType::bf16, {2, 4, 100, 64})};
  EXPECT_TRUE(mentions(c.reasons(), "attn_bias.shape[3]=64 must equal key.shape[1]=120")) << joined(c.reasons());
  c.bias = TensorBias{TensorView::make(fake(), DType::f32, {2, 4, 100, 120})};
  EXPECT_TRUE(mentions(c.reasons(), "attn_bias.dtype=f32 must equal query.dtype=bf16")) << joined(c.reasons());
}

TEST(Validation, HostMemoryAndNullPointersAreRejected) {
  Call c;
  c.q.device = TensorView::kHost;
  EXPECT_TRUE(mentions(c.reasons(), "query must be in CUDA device memory")) << joined(c.reasons());
  Call d;
  d.v.data = nullptr;
  EXPECT_TRUE(mentions(d.reasons(), "value.data is null")) << joined(d.reasons());
}

TEST(Validation, ForwardThrowsWithEveryReason) {
  Call c;
  c.q.ndim = 2;
  c.k.dtype = DType::f32;
  try {
    memory_efficient_attention_forward(c.q, c.k, c.v, c.bias, c.out);
    FAIL() << "expected jitattn::Error";
  } catch (const Error& e) {
    EXPECT_FALSE(e.reasons().empty());
    EXPECT_NE(std::string(e.what()).find("query must be 3-D"), std::string::npos) << e.what();
  }
}

TEST(Validation, GroupedQueryHeadsShareKeyValueHeads) {
  Call c;
  c.q = TensorView::make(fake(), DType::bf16, {2, 100, 8, 64});
  c.out = TensorView::make(fake(), DType::bf16, {2, 100, 8, 64});
  c.k = TensorView::make(fake(), DType::bf16, {2, 120, 2, 64});
  c.v = TensorView::make(fake(), DType::bf16, {2, 120, 2, 64});
  EXPECT_TRUE(c.reasons().empty()) << joined(c.reasons());
  c.k = TensorView::make(fake(), DType::bf16, {2, 120, 3, 64});
  c.v = TensorView::make(fake(), DType::bf16, {2, 120, 3, 64});
  EXPECT_TRUE(mentions(c.reasons(), "dividing the query's")) << joined(c.reasons());
}

TEST(Validation, FiveDimensionalGroupedInputs) {
  // BMGHK [B, M, G, H, K]: query/out contiguous; key/value expanded over H with stride 0.
  const int64_t B = 2, M = 50, N = 70, G = 2, H = 3, K = 64;
  Call c;
  c.q = TensorView::make(fake(), DType::bf16, {B, M, G, H, K});
  c.out = TensorView::make(fake(), DType::bf16, {B, M, G, H, K});
  c.k = TensorView::make(fake(), DType::bf16, {B, N, G, H, K}, {N * G * K, G * K, K, 0, 1});
  c.v = TensorView::make(fake(), DType::bf16, {B, N, G, H, K}, {N * G * K, G * K, K, 0, 1});
  EXPECT_TRUE(c.reasons().empty()) << joined(c.reasons());
  c.lse = TensorView::make(fake(), DType::f32, {B, G, H, M});
  EXPECT_TRUE(c.reasons().empty()) << joined(c.reasons());
  c.lse = TensorView::make(fake(), DType::f32, {B, G * H, M});
  EXPECT_TRUE(c.reasons().empty()) << joined(c.reasons());
  // A query whose groups cannot be read as G·H heads of one stride.
  c.q = TensorView::make(fake(), DType::bf16, {B, M, G, H, K}, {M * G * 4 * K, G * 4 * K, 4 * K, K, 1});
  EXPECT_TRUE(mentions(c.reasons(), "query.stride[2]=256 must equal shape[3]·stride[3]=192")) << joined(c.reasons());
  // Group counts must agree.
  Call d;
  d.q = TensorView::make(fake(), DType::bf16, {B, M, G, H, K});
  d.out = TensorView::make(fake(), DType::bf16, {B, M, G, H, K});
  d.k = TensorView::make(fake(), DType::bf16, {B, N, 1, H, K});
  d.v = TensorView::make(fake(), DType::bf16, {B, N, 1, H, K});
  EXPECT_TRUE(mentions(d.reasons(), "the group dims differ")) << joined(d.reasons());
}

TEST(Validation, ThreeDimensionalInputsAreOneHead) {
  Call c;
  c.q = TensorView::make(fake(), DType::f16, {2, 100, 64});
  c.k = TensorView::make(fake(), DType::f16, {2, 120, 64});
  c.v = TensorView::make(fake(), DType::f16, {2, 120, 32});
  c.out = TensorView::make(fake(), DType::f16, {2, 100, 32});
  EXPECT_TRUE(c.reasons().empty()) << joined(c.reasons());
}

// ---- backward -------------------------------------------------------------------------------
struct BwdCall {
  Call fwd;
  TensorView lse = TensorView::make(fake(), DType::f32, {2, 4, 100});
  TensorView grad = TensorView::make(fake(), DType::bf16, {2, 100, 4, 64});
  TensorView dq = TensorView::make(fake(), DType::bf16, {2, 100, 4, 64});
  TensorView dk = TensorView::make(fake(), DType::bf16, {2, 120, 4, 64});
  TensorView dv = TensorView::make(fake(), DType::bf16, {2, 120, 4, 64});
  TensorView dbias;
  BackwardOptions opt;
  std::vector<std::string> reasons() const {
    return backward_not_supported_reasons(grad, fwd.out, lse, fwd.q, fwd.k, fwd.v, fwd.bias, dq, dk, dv, dbias, opt);
  }
};

TEST(BackwardValidation, AcceptsAValidCallAndGqaGradients) {
  BwdCall c;
  EXPECT_TRUE(c.reasons().empty()) << joined(c.reasons());
  c.fwd.k = TensorView::make(fake(), DType::bf16, {2, 120, 2, 64});
  c.fwd.v = TensorView::make(fake(), DType::bf16, {2, 120, 2, 64});
  c.dk = TensorView::make(fake(), DType::bf16, {2, 120, 2, 64});
  c.dv = TensorView::make(fake(), DType::bf16, {2, 120, 2, 64});
  EXPECT_TRUE(c.reasons().empty()) << joined(c.reasons());
}

TEST(BackwardValidation, GradientsMustMatchTheirInputs) {
  BwdCall c;
  c.dk = TensorView::make(fake(), DType::bf16, {2, 100, 4, 64});
  c.grad = TensorView::make(fake(), DType::f16, {2, 100, 4, 64});
  const auto r = c.reasons();
  EXPECT_TRUE(mentions(r, "dk.shape=[2, 100, 4, 64] must match its input")) << joined(r);
  EXPECT_TRUE(mentions(r, "grad.dtype=f16 must be bf16")) << joined(r);
}

TEST(BackwardValidation, NeedsTheForwardsLse) {
  BwdCall c;
  c.lse = TensorView{};
  EXPECT_TRUE(mentions(c.reasons(), "lse is undefined")) << joined(c.reasons());
}

TEST(BackwardValidation, PagedMasksHaveNoBackward) {
  BwdCall c;
  const std::vector<int32_t> ql{60, 40}, kl{30, 50};
  const auto padded = BlockDiagonalPaddedKeysMask::from_seqlens(ql, 64, kl);
  c.fwd.bias = padded.make_paged(BlockTables{DeviceInts({0, 1, 2, 3}), 2}, 32);
  for (TensorView* t : {&c.fwd.q, &c.fwd.out, &c.grad, &c.dq}) *t = TensorView::make(fake(), DType::bf16, {1, 100, 4, 64});
  for (TensorView* t : {&c.fwd.k, &c.fwd.v, &c.dk, &c.dv}) *t = TensorView::make(fake(), DType::bf16, {1, 128, 4, 64});
  c.lse = TensorView::make(fake(), DType::f32, {1, 4, 100});
  EXPECT_TRUE(mentions(c.reasons(), "the backward does not support PagedBlockDiagonalPaddedKeysMask")) << joined(c.reasons());
}

TEST(BackwardValidation, DbiasNeedsAFullTensorBias) {
  BwdCall c;
  c.dbias = TensorView::make(fake(), DType::bf16, {2, 4, 100, 120});
  EXPECT_TRUE(mentions(c.reasons(), "dbias needs a dense tensor bias")) << joined(c.reasons());
  c.fwd.bias = TensorBias{TensorView::make(fake(), DType::bf16, {1, 4, 100, 120})};  // broadcast over B
  c.dbias = TensorView::make(fake(), DType::bf16, {1, 4, 100, 120});
  EXPECT_TRUE(mentions(c.reasons(), "dbias needs attn_bias of full shape")) << joined(c.reasons());
  c.fwd.bias = TensorBias{TensorView::make(fake(), DType::bf16, {2, 4, 100, 120})};
  c.dbias = TensorView::make(fake(), DType::bf16, {2, 4, 100, 120});
  EXPECT_TRUE(c.reasons().empty()) << joined(c.reasons());
}

TEST(BackwardValidation, DropoutProbabilityMustBeBelowOne) {
  BwdCall c;
  c.opt.p = 1.0;
  EXPECT_TRUE(mentions(c.reasons(), "p=1.000000 (dropout) must be in [0, 1)")) << joined(c.reasons());
}

TEST(BackwardValidation, WorkspaceHoldsDeltaAndTheDqAccumulator) {
  BwdCall c;
  const size_t rows = 2 * 4 * 100;
  BackwardOptions o;
  const size_t full = memory_efficient_attention_backward_workspace_bytes(c.fwd.q, c.fwd.k, c.fwd.v, c.fwd.bias, o);
  EXPECT_GE(full, rows * 4 + rows * 64 * 4);
  o.deterministic = true;  // no dQ accumulator
  const size_t det = memory_efficient_attention_backward_workspace_bytes(c.fwd.q, c.fwd.k, c.fwd.v, c.fwd.bias, o);
  EXPECT_GE(det, rows * 4);
  EXPECT_LT(det, rows * 64 * 4);
}

}  // namespace
}  // namespace jitattn
