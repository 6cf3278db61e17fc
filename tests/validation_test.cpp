// Bad input gets a reason that names the argument and the rule, before anything touches a GPU.
#include <gtest/gtest.h>

#include "api/src/plan.h"
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

// The kernels index lse at b·lse_stride_b + head·lse_stride_h for the G·H heads of a 5-D call:
// with H = 1 the heads are the groups, one stride[1] apart, whatever stride[2] says (a
// [B, 1, G, Mq] buffer viewed as [B, G, 1, Mq] had the kernels write past its end); with G = 1,
// stride[1] is never used.
TEST(Validation, FiveDimensionalLseHeadStride) {
  const int64_t B = 2, M = 64, G = 4, K = 64;
  Call c;
  for (TensorView* t : {&c.q, &c.k, &c.v, &c.out}) *t = TensorView::make(fake(), DType::f16, {B, M, G, 1, K});
  c.lse = TensorView::make(fake(), DType::f32, {B, G, 1, M}, {G * M, M, G * M, 1});
  detail::Plan p = detail::plan(c.q, c.k, c.v, c.bias, c.out, c.lse, c.opt);
  ASSERT_TRUE(p.reasons.empty()) << joined(p.reasons);
  EXPECT_EQ(p.lse_stride_b, G * M);
  EXPECT_EQ(p.lse_stride_h, M);
  // G = 1, H = 4: the heads are H, stride[2] apart; stride[1] may be anything.
  const int64_t H = 4;
  for (TensorView* t : {&c.q, &c.k, &c.v, &c.out}) *t = TensorView::make(fake(), DType::f16, {B, M, 1, H, K});
  c.lse = TensorView::make(fake(), DType::f32, {B, 1, H, M}, {H * M, 7, M, 1});
  p = detail::plan(c.q, c.k, c.v, c.bias, c.out, c.lse, c.opt);
  ASSERT_TRUE(p.reasons.empty()) << joined(p.reasons);
  EXPECT_EQ(p.lse_stride_h, M);
}

// A window past the longest sequence hides nothing more: it is cut there, so the kernels' int32
// offsets (shift ± window) cannot wrap (INT32_MAX made every key invisible to the kernels while
// materialize() showed them).
TEST(Validation, HugeWindowsAreCutToTheLongestSequence) {
  Call c;  // Mq = 100, Mkv = 120
  c.bias = LocalAttentionFromBottomRightMask{0, INT32_MAX};
  detail::Plan p = detail::plan(c.q, c.k, c.v, c.bias, c.out, c.lse, c.opt);
  ASSERT_TRUE(p.reasons.empty()) << joined(p.reasons);
  EXPECT_EQ(p.bias.window_left, 0);
  EXPECT_EQ(p.bias.window_right, 120);
  c.bias = LowerTriangularFromBottomRightLocalAttentionMask{INT32_MAX};
  p = detail::plan(c.q, c.k, c.v, c.bias, c.out, c.lse, c.opt);
  ASSERT_TRUE(p.reasons.empty()) << joined(p.reasons);
  EXPECT_EQ(p.bias.window_left, 120);
  EXPECT_EQ(p.bias.window_right, 0);
  c.bias = LocalAttentionFromBottomRightMask{7, 3};  // small windows stay as given
  p = detail::plan(c.q, c.k, c.v, c.bias, c.out, c.lse, c.opt);
  EXPECT_EQ(p.bias.window_left, 7);
  EXPECT_EQ(p.bias.window_right, 3);
}

TEST(Validation, ScaleMustBeFiniteAsAFloat) {
  Call c;
  c.opt.scale = 1e39;  // finite as a double, inf as the kernels' float
  EXPECT_TRUE(mentions(c.reasons(), "is not finite as a float")) << joined(c.reasons());
  c.opt.scale = -0.25;
  EXPECT_TRUE(c.reasons().empty()) << joined(c.reasons());
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

// With no queries the contiguous strides of [B, H, 0, Mkv] are 0 over B and H: that is not a
// broadcast bias (the random family test drew it and was refused).
TEST(BackwardValidation, DbiasOfAnEmptyTensorBiasIsNotABroadcast) {
  BwdCall c;
  for (TensorView* t : {&c.fwd.q, &c.fwd.out, &c.grad, &c.dq}) *t = TensorView::make(fake(), DType::bf16, {3, 0, 1, 64});
  for (TensorView* t : {&c.fwd.k, &c.fwd.v, &c.dk, &c.dv}) *t = TensorView::make(fake(), DType::bf16, {3, 87, 1, 64});
  c.lse = TensorView::make(fake(), DType::f32, {3, 1, 0});
  c.fwd.bias = TensorBias{TensorView::make(fake(), DType::bf16, {3, 1, 0, 87})};
  c.dbias = TensorView::make(fake(), DType::bf16, {3, 1, 0, 87});
  EXPECT_TRUE(c.reasons().empty()) << joined(c.reasons());
}

TEST(BackwardValidation, DropoutProbabilityMustBeBelowOne) {
  BwdCall c;
  c.opt.p = 1.0;
  EXPECT_TRUE(mentions(c.reasons(), "p=1.000000 (dropout) must be in [0, 1)")) << joined(c.reasons());
}

TEST(BackwardValidation, WorkspaceMustBe16ByteAligned) {
  BwdCall c;
  c.opt.workspace = reinterpret_cast<void*>(uintptr_t(0x7f0000001008));
  EXPECT_TRUE(mentions(c.reasons(), "workspace must be 16-byte aligned")) << joined(c.reasons());
  c.opt.workspace = reinterpret_cast<void*>(uintptr_t(0x7f0000001010));
  EXPECT_TRUE(c.reasons().empty()) << joined(c.reasons());
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

// ---- inputs that must be refused, each with a reason naming the argument -------------------

TEST(Validation, CountsNarrowedToInt32AreChecked) {
  const int64_t big = int64_t(1) << 32;
  Call c;  // B = 2^32 would launch nothing; H = 2^32 + 4 would compute 4 heads
  c.q = TensorView::make(fake(), DType::bf16, {big, 1, 1, 64});
  c.k = TensorView::make(fake(), DType::bf16, {big, 1, 1, 64});
  c.v = TensorView::make(fake(), DType::bf16, {big, 1, 1, 64});
  c.out = TensorView::make(fake(), DType::bf16, {big, 1, 1, 64});
  EXPECT_TRUE(mentions(c.reasons(), "query batch size B=4294967296 must be below 2^31")) << joined(c.reasons());
  Call h;
  h.q = TensorView::make(fake(), DType::bf16, {1, 1, big + 4, 64});
  h.k = TensorView::make(fake(), DType::bf16, {1, 1, big + 4, 64});
  h.v = TensorView::make(fake(), DType::bf16, {1, 1, big + 4, 64});
  h.out = TensorView::make(fake(), DType::bf16, {1, 1, big + 4, 64});
  EXPECT_TRUE(mentions(h.reasons(), "query head count H=4294967300 must be below 2^31")) << joined(h.reasons());
  Call bh;  // each fits, the product B·H does not
  for (TensorView* t : {&bh.q, &bh.k, &bh.v, &bh.out}) *t = TensorView::make(fake(), DType::bf16, {1 << 16, 1, 1 << 16, 64});
  EXPECT_TRUE(mentions(bh.reasons(), "query B·H=4294967296 must be below 2^31")) << joined(bh.reasons());
}

TEST(Validation, OutputsMustNotOverlapThemselvesOrInputs) {
  Call c;
  c.out = TensorView::make(fake(), DType::bf16, {2, 100, 4, 64}, {25600, 0, 64, 1});  // stride 0 over M
  EXPECT_TRUE(mentions(c.reasons(), "out has elements that share memory")) << joined(c.reasons());
  c.out = TensorView::make(fake(), DType::bf16, {2, 100, 4, 64}, {0, 0, 0, 1});  // fully broadcast
  EXPECT_TRUE(mentions(c.reasons(), "out has elements that share memory")) << joined(c.reasons());
  Call same;
  same.out = same.q;  // in place
  same.k = TensorView::make(fake(), DType::bf16, {2, 100, 4, 64});
  same.v = TensorView::make(fake(), DType::bf16, {2, 100, 4, 64});
  EXPECT_TRUE(mentions(same.reasons(), "out overlaps query")) << joined(same.reasons());
  Call l;
  l.lse = TensorView::make(fake(), DType::f32, {2, 4, 100}, {100, 0, 1});  // stride 0 over heads
  EXPECT_TRUE(mentions(l.reasons(), "lse has elements that share memory")) << joined(l.reasons());
  // Slices of one packed [B, M, 4, H, K] buffer do not overlap: q, k, v and out side by side.
  void* packed = fake();
  auto slice = [&](int s) {
    return TensorView::make(static_cast<char*>(packed) + s * 4 * 64 * 2, DType::bf16, {2, 100, 4, 64},
                            {100 * 4 * 4 * 64, 4 * 4 * 64, 64, 1});
  };
  Call p;
  p.q = slice(0), p.k = slice(1), p.v = slice(2), p.out = slice(3);
  EXPECT_TRUE(p.reasons().empty()) << joined(p.reasons());
  p.out = slice(0);
  EXPECT_TRUE(mentions(p.reasons(), "out overlaps query")) << joined(p.reasons());
}

TEST(Validation, PointersMustBeAlignedToTheElementSize) {
  Call c;
  c.q.data = static_cast<char*>(fake()) + 1;  // an f16/bf16 tensor at an odd address
  EXPECT_TRUE(mentions(c.reasons(), "is not aligned to its element size (2 bytes for bf16)")) << joined(c.reasons());
  Call l;
  l.lse = TensorView::make(static_cast<char*>(fake()) + 2, DType::f32, {2, 4, 100});
  EXPECT_TRUE(mentions(l.reasons(), "lse.data=")) << joined(l.reasons());
}

TEST(Validation, RanksOutOfRangeAreNeverReadPast) {
  Call c;
  c.q.ndim = 1000;
  EXPECT_TRUE(mentions(c.reasons(), "query must be 3-D")) << joined(c.reasons());
  EXPECT_EQ(c.q.shape_string(), "[invalid: ndim=1000]");
  EXPECT_THROW(c.q.numel(), Error);
  c.q.ndim = -5;
  EXPECT_EQ(c.q.shape_string(), "[invalid: ndim=-5]");
  EXPECT_THROW(c.q.numel(), Error);
  TensorView bad = TensorView::make(fake(), DType::bf16, {1, 10, 4, 64});
  bad.ndim = 77;
  EXPECT_THROW(BlockDiagonalMask::from_tensor_list({bad}), Error);
}

TEST(Validation, ShapesAndStridesThatOverflowAreRefused) {
  const int64_t huge = int64_t(1) << 62;
  EXPECT_THROW(TensorView::make(fake(), DType::bf16, {huge, huge, 1, 8}), Error);  // contiguous strides overflow
  EXPECT_THROW(TensorView::make(fake(), DType::bf16, {-3, 4}), Error);
  TensorView t = TensorView::make(fake(), DType::bf16, {4, 4});
  t.shape[0] = huge, t.shape[1] = huge;
  EXPECT_THROW(t.numel(), Error);
  Call c;
  c.q = TensorView::make(fake(), DType::bf16, {2, 100, 4, 64}, {huge, 256, 64, 1});
  EXPECT_TRUE(mentions(c.reasons(), "query: shape [2, 100, 4, 64] with its strides addresses more than 2^63 bytes"))
      << joined(c.reasons());
  c.q = TensorView::make(fake(), DType::bf16, {2, 100, 4, 64}, {-25600, 256, 64, 1});
  EXPECT_TRUE(mentions(c.reasons(), "query.stride[0]=-25600 is negative")) << joined(c.reasons());
  c.q = TensorView::make(fake(), DType::bf16, {2, 100, 4, 64});
  c.q.shape[1] = -100;
  EXPECT_TRUE(mentions(c.reasons(), "query.shape[1]=-100 is negative")) << joined(c.reasons());
}

TEST(Validation, WindowSizesAtTheIntLimitsAreRefusedCleanly) {
  Call c;
  c.bias = LowerTriangularFromBottomRightLocalAttentionMask{INT32_MIN};
  EXPECT_TRUE(mentions(c.reasons(), "window_size=-2147483648 must be >= 1")) << joined(c.reasons());
  const auto bd = BlockDiagonalMask::from_seqlens({50, 50});
  Call v;
  for (TensorView* t : {&v.q, &v.k, &v.v, &v.out}) *t = TensorView::make(fake(), DType::bf16, {1, 100, 4, 64});
  v.bias = BlockDiagonalCausalLocalAttentionMask{bd.q_seqinfo, bd.k_seqinfo, INT32_MIN};
  EXPECT_TRUE(mentions(v.reasons(), "window_size=-2147483648 must be >= 1")) << joined(v.reasons());
  v.bias = BlockDiagonalCausalLocalAttentionMask{bd.q_seqinfo, bd.k_seqinfo, INT32_MAX};
  EXPECT_TRUE(v.reasons().empty()) << joined(v.reasons());
}

TEST(BackwardValidation, GradientOutputsMustNotOverlap) {
  BwdCall c;
  c.dq = TensorView::make(fake(), DType::bf16, {2, 100, 4, 64}, {0, 256, 64, 1});  // stride 0 over B
  EXPECT_TRUE(mentions(c.reasons(), "dq has elements that share memory")) << joined(c.reasons());
  BwdCall d;
  d.dk = d.fwd.k;  // a gradient written over its input
  EXPECT_TRUE(mentions(d.reasons(), "dk overlaps key")) << joined(d.reasons());
  BwdCall e;
  e.dv = e.dk;
  EXPECT_TRUE(mentions(e.reasons(), "dk and dv overlap")) << joined(e.reasons());
}

// Key/value expanded over their heads by stride 0 and the gradients given the same way: the
// gradient of the shared memory, accepted (4-D, and 5-D with G = 1 and G = 2). Per-head
// gradients of 4-D/G = 1 expanded inputs are accepted too; of G >= 2 refused with what to pass.
TEST(BackwardValidation, StrideZeroGradientsOfSharedKeyValueHeads) {
  const int64_t B = 2, M = 100, N = 120, K = 64;
  for (int64_t G : {1, 2}) {
    const int64_t H = 3;
    BwdCall c;
    for (TensorView* t : {&c.fwd.q, &c.fwd.out, &c.grad, &c.dq}) *t = TensorView::make(fake(), DType::bf16, {B, M, G, H, K});
    for (TensorView* t : {&c.fwd.k, &c.fwd.v, &c.dk, &c.dv})
      *t = TensorView::make(fake(), DType::bf16, {B, N, G, H, K}, {N * G * K, G * K, K, 0, 1});
    c.lse = TensorView::make(fake(), DType::f32, {B, G * H, M});
    EXPECT_TRUE(c.reasons().empty()) << "G=" << G << ": " << joined(c.reasons());
    c.dk = TensorView::make(fake(), DType::bf16, {B, N, G, H, K});
    c.dv = TensorView::make(fake(), DType::bf16, {B, N, G, H, K});
    if (G == 1) EXPECT_TRUE(c.reasons().empty()) << joined(c.reasons());
    else EXPECT_TRUE(mentions(c.reasons(), "pass dk expanded the same way")) << joined(c.reasons());
    // Only dk expanded: it would need the sum over heads whose keys differ... and dv per head.
    c.dk = TensorView::make(fake(), DType::bf16, {B, N, G, H, K}, {N * G * K, G * K, K, 0, 1});
    EXPECT_FALSE(c.reasons().empty());
  }
  BwdCall f;  // 4-D, key/value one head viewed as 4
  for (TensorView* t : {&f.fwd.k, &f.fwd.v, &f.dk, &f.dv}) *t = TensorView::make(fake(), DType::bf16, {2, 120, 4, 64}, {120 * 64, 64, 0, 1});
  EXPECT_TRUE(f.reasons().empty()) << joined(f.reasons());
  f.fwd.k = TensorView::make(fake(), DType::bf16, {2, 120, 4, 64});  // distinct key heads, shared dk
  f.fwd.v = TensorView::make(fake(), DType::bf16, {2, 120, 4, 64});
  EXPECT_TRUE(mentions(f.reasons(), "dk is expanded over its heads by stride 0")) << joined(f.reasons());
}

// Padded and gappy keys with dK/dV that are not one dense block (a 5-D expanded view, a slice of
// a packed buffer) were refused ("must be contiguous"); they are summed in fp32 and written
// through their strides.
TEST(BackwardValidation, PaddedAndGappyKeysTakeStridedGradients) {
  const std::vector<int32_t> ql{60, 40}, kl{30, 50};
  for (const AttnBias& bias : {AttnBias{BlockDiagonalCausalWithOffsetPaddedKeysMask::from_seqlens(ql, 64, kl)},
                               AttnBias{BlockDiagonalGappyKeysMask::from_seqlens(ql, {0, 10, 128}, kl)}}) {
    BwdCall c;
    c.fwd.bias = bias;
    for (TensorView* t : {&c.fwd.q, &c.fwd.out, &c.grad, &c.dq}) *t = TensorView::make(fake(), DType::bf16, {1, 100, 2, 3, 64});
    for (TensorView* t : {&c.fwd.k, &c.fwd.v, &c.dk, &c.dv})
      *t = TensorView::make(fake(), DType::bf16, {1, 128, 2, 3, 64}, {128 * 2 * 64, 2 * 64, 64, 0, 1});
    c.lse = TensorView::make(fake(), DType::f32, {1, 6, 100});
    EXPECT_TRUE(c.reasons().empty()) << bias_name(bias) << ": " << joined(c.reasons());
    BackwardOptions o;  // the workspace has room for the fp32 dK/dV sums
    EXPECT_GE(memory_efficient_attention_backward_workspace_bytes(c.fwd.q, c.fwd.k, c.fwd.v, bias, o),
              size_t(6 * 100) * 4 * 65 + size_t(2 * 128) * 64 * 4 * 2);
  }
}

TEST(BackwardValidation, WorkspaceOfInvalidShapesIsAnError) {
  BwdCall c;
  BackwardOptions o;
  c.fwd.q.shape[1] = -100;
  EXPECT_THROW(memory_efficient_attention_backward_workspace_bytes(c.fwd.q, c.fwd.k, c.fwd.v, c.fwd.bias, o), Error);
  c.fwd.q.shape[1] = 100, c.fwd.q.ndim = 9;
  EXPECT_THROW(memory_efficient_attention_backward_workspace_bytes(c.fwd.q, c.fwd.k, c.fwd.v, c.fwd.bias, o), Error);
}

}  // namespace
}  // namespace jitattn

namespace jitattn {
namespace {
// A 5-D key with H = 1 (e.g. a slice of keys expanded over H) is G heads st[2] apart, whatever
// the stride of its size-1 H dim says: PyTorch gives such a slice stride 0 there.
TEST(Validation, FiveDimKeysWithOneHeadPerGroupAreGroupsApart) {
  for (int64_t h_stride : {0, 8, 999}) {
    TensorView t = TensorView::make(reinterpret_cast<void*>(uintptr_t(1) << 20), DType::bf16, {2, 3, 4, 1, 8});
    const int64_t st[5] = {96, 32, 8, h_stride, 1};
    for (int i = 0; i < 5; ++i) t.stride[i] = st[i];
    jit::ops::Bmhk x;
    std::string why;
    ASSERT_TRUE(detail::as_bmhk(t, true, x, &why)) << why;
    EXPECT_EQ(x.h, 4);
    EXPECT_EQ(x.sh, 8) << "H stride " << h_stride;
    EXPECT_EQ(x.sm, 32);
  }
}
}  // namespace
}  // namespace jitattn
