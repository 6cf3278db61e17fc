// merge_attentions and memory_efficient_attention_partial without a GPU: every validation rule
// names its argument, and every merge kernel variant compiles through NVRTC for sm_80 and sm_90a.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <set>
#include <mutex>
#include <random>
#include <thread>

#include "jit/codegen.h"
#include "jit/nvrtc_compiler.h"
#include "jit/signature.h"
#include "jitattn/merge.h"
#include "test_reasons.h"

namespace jitattn {
namespace {

using test::fake;
using test::joined;
using test::mentions;

// A valid stacked call: S = 3 splits of [B=2, M=10, H=4, K=64] (or [2, 10, G=3, 4, 64]).
struct Stacked {
  bool five = false;
  TensorView outputs, lses, out, lse;
  explicit Stacked(bool five_d = false, DType in = DType::f32, DType odt = DType::bf16) : five(five_d) {
    if (five) {
      outputs = TensorView::make(fake(), in, {3, 2, 10, 3, 4, 64});
      lses = TensorView::make(fake(), DType::f32, {3, 2, 3, 4, 10});
      out = TensorView::make(fake(), odt, {2, 10, 3, 4, 64});
      lse = TensorView::make(fake(), DType::f32, {2, 3, 4, 10});
    } else {
      outputs = TensorView::make(fake(), in, {3, 2, 10, 4, 64});
      lses = TensorView::make(fake(), DType::f32, {3, 2, 4, 10});
      out = TensorView::make(fake(), odt, {2, 10, 4, 64});
      lse = TensorView::make(fake(), DType::f32, {2, 4, 10});
    }
  }
  std::vector<std::string> reasons() const { return merge_not_supported_reasons(outputs, lses, out, lse); }
};

// A valid list call: S separate tensors.
struct List {
  std::vector<TensorView> outputs, lses;
  TensorView out, lse;
  explicit List(int S = 3, bool five = false, DType in = DType::bf16) {
    for (int s = 0; s < S; ++s) {
      outputs.push_back(five ? TensorView::make(fake(0x10000 * (s + 1)), in, {2, 10, 3, 4, 64})
                             : TensorView::make(fake(0x10000 * (s + 1)), in, {2, 10, 4, 64}));
      lses.push_back(five ? TensorView::make(fake(0x100000 * (s + 1)), DType::f32, {2, 3, 4, 10})
                          : TensorView::make(fake(0x100000 * (s + 1)), DType::f32, {2, 4, 10}));
    }
    out = five ? TensorView::make(fake(), DType::f32, {2, 10, 3, 4, 64}) : TensorView::make(fake(), DType::f32, {2, 10, 4, 64});
  }
  std::vector<std::string> reasons() const { return merge_not_supported_reasons(outputs, lses, out, lse); }
};

TEST(MergeValidation, AcceptsStackedAndListForms) {
  for (bool five : {false, true}) {
    Stacked c(five);
    EXPECT_TRUE(c.reasons().empty()) << joined(c.reasons());
    c.lse = TensorView{};  // write_lse off
    EXPECT_TRUE(c.reasons().empty()) << joined(c.reasons());
    List l(5, five);
    EXPECT_TRUE(l.reasons().empty()) << joined(l.reasons());
    l.lse = five ? TensorView::make(fake(), DType::f32, {2, 3, 4, 10}) : TensorView::make(fake(), DType::f32, {2, 4, 10});
    EXPECT_TRUE(l.reasons().empty()) << joined(l.reasons());
  }
  // Any dtype in and out.
  for (DType in : {DType::f16, DType::bf16, DType::f32})
    for (DType odt : {DType::f16, DType::bf16, DType::f32}) {
      Stacked c(false, in, odt);
      EXPECT_TRUE(c.reasons().empty()) << joined(c.reasons());
    }
}

TEST(MergeValidation, AcceptsNonContiguousPartialsWithTheirOwnStrides) {
  List l(2);
  // outputs[1]: physically [B, H, M, K + 8]; lses[1]: physically [H, B, M + 3].
  l.outputs[1] = TensorView::make(fake(), DType::bf16, {2, 10, 4, 64}, {4 * 10 * 72, 72, 10 * 72, 1});
  l.lses[1] = TensorView::make(fake(), DType::f32, {2, 4, 10}, {13, 2 * 13, 1});
  EXPECT_TRUE(l.reasons().empty()) << joined(l.reasons());
}

TEST(MergeValidation, StackedNeedsOneMoreDimensionThanOut) {
  Stacked c;
  c.outputs = TensorView::make(fake(), DType::f32, {2, 10, 4, 64});
  EXPECT_TRUE(mentions(c.reasons(), "outputs must be 5-D [S, B, M, H, K] (out is 4-D), got 4-D")) << joined(c.reasons());
  EXPECT_TRUE(mentions(c.reasons(), "pass std::vector<TensorView>")) << joined(c.reasons());
  Stacked d;
  d.lses = TensorView::make(fake(), DType::f32, {2, 4, 10});
  EXPECT_TRUE(mentions(d.reasons(), "lses must be 4-D [S, B, H, M], got 3-D")) << joined(d.reasons());
}

TEST(MergeValidation, OutMustBe4Or5D) {
  Stacked c;
  c.out = TensorView::make(fake(), DType::f32, {20, 4, 64});
  EXPECT_TRUE(mentions(c.reasons(), "out must be 4-D [B, M, H, K] or 5-D [B, M, G, H, K], got 3-D")) << joined(c.reasons());
}

TEST(MergeValidation, SplitCounts) {
  Stacked c;
  c.lses = TensorView::make(fake(), DType::f32, {4, 2, 4, 10});
  EXPECT_TRUE(mentions(c.reasons(), "lses.shape[0]=4 must equal outputs.shape[0]=3 (S)")) << joined(c.reasons());
  Stacked z;
  z.outputs = TensorView::make(fake(), DType::f32, {0, 2, 10, 4, 64});
  z.lses = TensorView::make(fake(), DType::f32, {0, 2, 4, 10});
  EXPECT_TRUE(mentions(z.reasons(), "outputs.shape[0]=0 (S, the number of splits) must be >= 1")) << joined(z.reasons());
  // The stacked form has no cap...
  Stacked many;
  many.outputs = TensorView::make(fake(), DType::f32, {100, 2, 10, 4, 64});
  many.lses = TensorView::make(fake(), DType::f32, {100, 2, 4, 10});
  EXPECT_TRUE(many.reasons().empty()) << joined(many.reasons());
  // ...the list form has kMaxMergeSplitsList.
  List l(kMaxMergeSplitsList);
  EXPECT_TRUE(l.reasons().empty()) << joined(l.reasons());
  List over(kMaxMergeSplitsList + 1);
  EXPECT_TRUE(mentions(over.reasons(), "len(outputs)=33 exceeds 32")) << joined(over.reasons());
  List e(0);
  EXPECT_TRUE(mentions(e.reasons(), "outputs is empty")) << joined(e.reasons());
  List m(3);
  m.lses.pop_back();
  EXPECT_TRUE(mentions(m.reasons(), "len(outputs)=3 must equal len(lses)=2")) << joined(m.reasons());
}

TEST(MergeValidation, ShapesMustMatchOut) {
  List l(3);
  l.outputs[2] = TensorView::make(fake(), DType::bf16, {2, 11, 4, 64});
  EXPECT_TRUE(mentions(l.reasons(), "outputs[2].shape=[2, 11, 4, 64] must be [B, M, H, K] = [2, 10, 4, 64]"))
      << joined(l.reasons());
  List d(3);
  d.outputs[1] = TensorView::make(fake(), DType::bf16, {2, 10, 1, 4, 64});
  EXPECT_TRUE(mentions(d.reasons(), "outputs[1].shape=[2, 10, 1, 4, 64] must be [B, M, H, K]")) << joined(d.reasons());
  List s(2);
  s.lses[0] = TensorView::make(fake(), DType::f32, {2, 10, 4});
  EXPECT_TRUE(mentions(s.reasons(), "lses[0].shape=[2, 10, 4] must be [B, H, M] = [2, 4, 10]")) << joined(s.reasons());
  Stacked c(true);
  c.outputs = TensorView::make(fake(), DType::f32, {3, 2, 10, 3, 5, 64});
  EXPECT_TRUE(mentions(c.reasons(), "outputs.shape=[3, 2, 10, 3, 5, 64] must be [S] + [B, M, G, H, K] = [2, 10, 3, 4, 64]"))
      << joined(c.reasons());
  Stacked o(true);
  o.lse = TensorView::make(fake(), DType::f32, {2, 12, 10});
  EXPECT_TRUE(mentions(o.reasons(), "lse.shape=[2, 12, 10] must be [B, G, H, M] = [2, 3, 4, 10]")) << joined(o.reasons());
}

TEST(MergeValidation, Dtypes) {
  List l(3);
  l.outputs[1].dtype = DType::f16;
  EXPECT_TRUE(mentions(l.reasons(), "outputs[1].dtype=f16 must equal outputs[0].dtype=bf16")) << joined(l.reasons());
  List s(2);
  s.lses[1].dtype = DType::bf16;
  EXPECT_TRUE(mentions(s.reasons(), "lses[1].dtype=bf16 must be f32")) << joined(s.reasons());
  Stacked c;
  c.lses.dtype = DType::f16;
  c.lse.dtype = DType::bf16;
  EXPECT_TRUE(mentions(c.reasons(), "lses.dtype=f16 must be f32")) << joined(c.reasons());
  EXPECT_TRUE(mentions(c.reasons(), "lse.dtype=bf16 must be f32")) << joined(c.reasons());
  // Bytes of masks and block maps are no attention output.
  Stacked u(false, DType::u8, DType::i32);
  EXPECT_TRUE(mentions(u.reasons(), "outputs.dtype=u8 must be f16, bf16 or f32")) << joined(u.reasons());
  EXPECT_TRUE(mentions(u.reasons(), "out.dtype=i32 must be f16, bf16 or f32")) << joined(u.reasons());
  List li(2, false, DType::i32);
  EXPECT_TRUE(mentions(li.reasons(), "outputs[0].dtype=i32 must be f16, bf16 or f32")) << joined(li.reasons());
}

TEST(MergeValidation, HeadDim) {
  Stacked c;
  c.outputs = TensorView::make(fake(), DType::f32, {3, 2, 10, 4, 100});
  c.out = TensorView::make(fake(), DType::bf16, {2, 10, 4, 100});
  EXPECT_TRUE(mentions(c.reasons(), "out.shape[-1]=100 (K) must be a multiple of 8 in [8, 256]")) << joined(c.reasons());
  c.outputs = TensorView::make(fake(), DType::f32, {3, 2, 10, 4, 512});
  c.out = TensorView::make(fake(), DType::bf16, {2, 10, 4, 512});
  EXPECT_TRUE(mentions(c.reasons(), "out.shape[-1]=512 (K) must be a multiple of 8 in [8, 256]")) << joined(c.reasons());
}

TEST(MergeValidation, LastStrideMustBeOne) {
  List l(2);
  l.outputs[1] = TensorView::make(fake(), DType::bf16, {2, 10, 4, 64}, {5120, 512, 128, 2});
  l.lses[0] = TensorView::make(fake(), DType::f32, {2, 4, 10}, {80, 20, 2});
  l.out = TensorView::make(fake(), DType::f32, {2, 10, 4, 64}, {5120, 512, 128, 2});
  l.lse = TensorView::make(fake(), DType::f32, {2, 4, 10}, {80, 20, 2});
  const auto r = l.reasons();
  EXPECT_TRUE(mentions(r, "outputs[1].stride[-1]=2 must be 1")) << joined(r);
  EXPECT_TRUE(mentions(r, "lses[0].stride[-1]=2 must be 1")) << joined(r);
  EXPECT_TRUE(mentions(r, "out.stride[-1]=2 must be 1")) << joined(r);
  EXPECT_TRUE(mentions(r, "lse.stride[-1]=2 must be 1")) << joined(r);
  // A dimension of one element may have any stride.
  Stacked c;
  c.lses = TensorView::make(fake(), DType::f32, {3, 2, 4, 1}, {8, 4, 1, 7});
  c.outputs = TensorView::make(fake(), DType::f32, {3, 2, 1, 4, 64});
  c.out = TensorView::make(fake(), DType::bf16, {2, 1, 4, 64});
  c.lse = TensorView::make(fake(), DType::f32, {2, 4, 1}, {4, 1, 9});
  EXPECT_TRUE(c.reasons().empty()) << joined(c.reasons());
}

TEST(MergeValidation, OutputsMustNotBeBroadcast) {
  Stacked c;
  c.out = TensorView::make(fake(), DType::bf16, {2, 10, 4, 64}, {0, 256, 64, 1});
  c.lse = TensorView::make(fake(), DType::f32, {2, 4, 10}, {40, 0, 1});
  EXPECT_TRUE(mentions(c.reasons(), "out.stride[0]=0 with shape[0]=2: an output must not be broadcast")) << joined(c.reasons());
  EXPECT_TRUE(mentions(c.reasons(), "lse.stride[1]=0 with shape[1]=4")) << joined(c.reasons());
  // Inputs may be broadcast (e.g. one lse row shared over B).
  Stacked in;
  in.lses = TensorView::make(fake(), DType::f32, {3, 2, 4, 10}, {40, 0, 10, 1});
  EXPECT_TRUE(in.reasons().empty()) << joined(in.reasons());
}

// The merge kernel reads and writes through every stride as given: none negative, offsets in
// int64, data aligned to its element; out and lse written with plain stores, so neither may
// overlap itself, the other or a partial (the forward's rules, api/src/layout.h).
TEST(MergeValidation, LayoutsAndOverlap) {
  Stacked neg;
  neg.outputs.stride[2] = -256;
  EXPECT_TRUE(mentions(neg.reasons(), "outputs.stride[2]=-256 is negative")) << joined(neg.reasons());
  Stacked huge;
  huge.outputs.stride[1] = INT64_MAX / 4;
  EXPECT_TRUE(mentions(huge.reasons(), "outputs: shape [3, 2, 10, 4, 64] with its strides addresses more than 2^63 bytes"))
      << joined(huge.reasons());
  List mis(2, false, DType::f32);
  mis.outputs[1].data = static_cast<char*>(mis.outputs[1].data) + 2;
  EXPECT_TRUE(mentions(mis.reasons(), "outputs[1].data=")) << joined(mis.reasons());
  Stacked lse_neg;
  lse_neg.lse.stride[1] = -10;
  EXPECT_TRUE(mentions(lse_neg.reasons(), "lse.stride[1]=-10 is negative")) << joined(lse_neg.reasons());
  // out over a partial, and out over itself (a head stride of 1 with K = 64).
  List alias(2);
  alias.out = alias.outputs[0];
  alias.out.dtype = DType::bf16;
  EXPECT_TRUE(mentions(alias.reasons(), "out overlaps outputs[0]: an output must not share memory with an input"))
      << joined(alias.reasons());
  Stacked self;
  self.out = TensorView::make(fake(), DType::bf16, {2, 10, 4, 64}, {256, 256, 1, 1});
  EXPECT_TRUE(mentions(self.reasons(), "out has elements that share memory")) << joined(self.reasons());
  Stacked lse_on_out;
  lse_on_out.lse.data = lse_on_out.lses.data;
  EXPECT_TRUE(mentions(lse_on_out.reasons(), "lse overlaps lses: an output must not share memory with an input"))
      << joined(lse_on_out.reasons());
}

TEST(MergeValidation, DeviceMemoryOnOneDevice) {
  List l(2);
  l.outputs[0].device = TensorView::kHost;
  l.lses[1].device = 1;
  l.lse = TensorView::make(fake(), DType::f32, {2, 4, 10}, {}, 2);
  const auto r = l.reasons();
  EXPECT_TRUE(mentions(r, "outputs[0] must be in CUDA device memory (device >= 0)")) << joined(r);
  EXPECT_TRUE(mentions(r, "lses[1] must be on out's device (0)")) << joined(r);
  EXPECT_TRUE(mentions(r, "lse must be on out's device (0)")) << joined(r);
  Stacked c;
  c.out.device = TensorView::kHost;
  EXPECT_TRUE(mentions(c.reasons(), "out must be in CUDA device memory")) << joined(c.reasons());
}

TEST(MergeValidation, NullDataAndNegativeSizes) {
  List l(2);
  l.outputs[1].data = nullptr;
  l.lses[0].data = nullptr;
  EXPECT_TRUE(mentions(l.reasons(), "outputs[1].data is null")) << joined(l.reasons());
  EXPECT_TRUE(mentions(l.reasons(), "lses[0].data is null")) << joined(l.reasons());
  Stacked c;
  c.out.data = nullptr;
  EXPECT_TRUE(mentions(c.reasons(), "out.data is null")) << joined(c.reasons());
  Stacked n;
  n.outputs.shape[2] = -1;
  EXPECT_TRUE(mentions(n.reasons(), "outputs.shape[2]=-1 is negative")) << joined(n.reasons());
}

TEST(MergeValidation, CollectsEveryReasonAndThrowsBeforeTouchingAGpu) {
  List l(2);
  l.outputs[1].dtype = DType::f32;
  l.lses[0].dtype = DType::f16;
  l.lse = TensorView::make(fake(), DType::f16, {2, 4, 10});
  EXPECT_GE(l.reasons().size(), 3u) << joined(l.reasons());
  try {
    merge_attentions(l.outputs, l.lses, l.out, l.lse);
    FAIL() << "expected jitattn::Error";
  } catch (const Error& e) {
    EXPECT_EQ(e.reasons(), l.reasons());
  }
  Stacked c;
  c.lses.dtype = DType::bf16;
  EXPECT_THROW(merge_attentions(c.outputs, c.lses, c.out, c.lse), Error);
}

TEST(MergeValidation, NothingToMergeReturnsWithoutAGpu) {
  // B = 0 (or M = 0, H = 0): a valid call with nothing to write queues nothing.
  Stacked c;
  c.outputs = TensorView::make(fake(), DType::f32, {3, 0, 10, 4, 64});
  c.lses = TensorView::make(fake(), DType::f32, {3, 0, 4, 10});
  c.out = TensorView::make(fake(), DType::bf16, {0, 10, 4, 64});
  c.lse = TensorView::make(fake(), DType::f32, {0, 4, 10});
  EXPECT_NO_THROW(merge_attentions(c.outputs, c.lses, c.out, c.lse));
  List l(2);
  for (auto& t : l.outputs) t.shape[1] = 0;
  for (auto& t : l.lses) t.shape[2] = 0;
  l.out.shape[1] = 0;
  EXPECT_TRUE(l.reasons().empty()) << joined(l.reasons());
  EXPECT_NO_THROW(merge_attentions(l.outputs, l.lses, l.out));
}

TEST(MergeValidation, SixDimensionalViews) {
  const TensorView t = TensorView::make(fake(), DType::f32, {2, 3, 4, 5, 6, 8});
  EXPECT_EQ(t.ndim, 6);
  EXPECT_EQ(t.stride[0], 3 * 4 * 5 * 6 * 8);
  EXPECT_EQ(t.shape_string(), "[2, 3, 4, 5, 6, 8]");
  EXPECT_THROW(TensorView::make(fake(), DType::f32, {1, 2, 3, 4, 5, 6, 7}), Error);
}

// jitattn/merge.h's recipe: a bottom-right causal mask over N keys, restricted to the slice
// [a, b), is LocalAttentionFromBottomRightMask{b - a, N - b} on the slice's own coordinates.
TEST(MergeSlicing, BottomRightCausalRecipeMatchesTheFullMask) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    const int64_t N = std::uniform_int_distribution<int64_t>(0, 40)(rng);
    const int64_t Mq = std::uniform_int_distribution<int64_t>(1, 40)(rng);
    int64_t a = std::uniform_int_distribution<int64_t>(0, N)(rng), b = std::uniform_int_distribution<int64_t>(0, N)(rng);
    if (a > b) std::swap(a, b);
    const int64_t L = b - a;
    const std::vector<double> full = materialize(LowerTriangularFromBottomRightMask{}, 1, 1, Mq, N);
    const std::vector<double> top = materialize(LowerTriangularMask{}, 1, 1, Mq, N);
    const std::vector<double> part =
        materialize(LocalAttentionFromBottomRightMask{int32_t(L), int32_t(N - b)}, 1, 1, Mq, L);
    for (int64_t i = 0; i < Mq; ++i)
      for (int64_t j = 0; j < L; ++j) {
        ASSERT_EQ(part[size_t(i * L + j)], full[size_t(i * N + a + j)]) << "N=" << N << " Mq=" << Mq << " [" << a << ", " << b << ") i=" << i << " j=" << j;
        if (Mq == N) ASSERT_EQ(part[size_t(i * L + j)], top[size_t(i * N + a + j)]);
      }
  }
}

TEST(MergePartialValidation, RequiresLseAndRejectsDropout) {
  const TensorView q = TensorView::make(fake(), DType::bf16, {2, 100, 4, 64});
  const TensorView k = TensorView::make(fake(), DType::bf16, {2, 30, 4, 64});
  const TensorView out = TensorView::make(fake(), DType::f32, {2, 100, 4, 64});
  const TensorView lse = TensorView::make(fake(), DType::f32, {2, 4, 100});
  AttentionOptions opt;
  opt.output_dtype = DType::f32;
  try {
    memory_efficient_attention_partial(q, k, k, {}, out, TensorView{}, opt);
    FAIL() << "expected jitattn::Error";
  } catch (const Error& e) {
    EXPECT_TRUE(mentions(e.reasons(), "lse must be given")) << joined(e.reasons());
  }
  opt.p = 0.1;
  try {
    memory_efficient_attention_partial(q, k, k, {}, out, lse, opt);
    FAIL() << "expected jitattn::Error";
  } catch (const Error& e) {
    EXPECT_TRUE(mentions(e.reasons(), "dropout is not supported by memory_efficient_attention_partial")) << joined(e.reasons());
  }
  // The forward's own rules apply (here: out's dtype against options.output_dtype), reported
  // together with the partial's.
  opt.output_dtype.reset();
  try {
    memory_efficient_attention_partial(q, k, k, {}, out, lse, opt);
    FAIL() << "expected jitattn::Error";
  } catch (const Error& e) {
    EXPECT_TRUE(mentions(e.reasons(), "dropout")) << joined(e.reasons());
    EXPECT_TRUE(mentions(e.reasons(), "out.dtype=f32 must be bf16")) << joined(e.reasons());
  }
}

}  // namespace

namespace jit {
namespace {

Signature merge_sig(const char* arch, DType in, DType out, int k, bool lse, bool align16) {
  const Arch a = *Arch::parse(arch);
  Signature s;
  s.op = Op::merge;
  s.bias = BiasKind::none;
  s.dtype = in;
  s.out_dtype = out;
  s.head_dim = s.head_dim_v = uint16_t(k);
  s.arch_sm = a.sm;
  s.arch_specific = a.specific;
  s.lse = lse;
  s.align = uint8_t(align16 ? 16 : element_size(in));
  return s;
}

TEST(MergeKernel, SpecNameSourceAndLaunchShape) {
  const KernelSpec spec = make_spec(merge_sig("sm_90a", DType::bf16, DType::f32, 128, true, true));
  EXPECT_EQ(spec.name(), "merge.sm_90a.bf16_to_f32.d128.v128.none.lse.a16.simt_m128n1w4");
  const auto back = KernelSpec::parse(spec.name());
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->sig, spec.sig);
  EXPECT_EQ(spec.threads(), 128);
  EXPECT_EQ(spec.smem_bytes(), 0);
  EXPECT_EQ(validate_spec(spec), "");
  const std::string src = generate_source(spec);
  EXPECT_NE(src.find("#include \"merge.cuh\""), std::string::npos) << src;
  EXPECT_NE(src.find("jitattn::merge_attentions<Cfg>(p)"), std::string::npos) << src;
  EXPECT_NE(src.find("jitattn::MergeParams"), std::string::npos) << src;
  EXPECT_NE(src.find("kWriteLse = true"), std::string::npos) << src;
}

// The merge's variants: partial-output dtype × output dtype × write_lse × alignment class × arch,
// each at head dims 8, 64 and 256 (the head dim only sets the number of 16-byte chunks per
// row), and every head dim (multiples of 8 in [8, 256]) for two of those combinations per arch.
// JITATTN_TEST_EXHAUSTIVE=1 compiles the full product with every head dim (2304 kernels, about
// 0.35 s each).
std::vector<KernelSpec> every_merge_variant() {
  const char* all = std::getenv("JITATTN_TEST_EXHAUSTIVE");
  const bool exhaustive = all && std::string(all) == "1";
  std::vector<KernelSpec> specs;
  std::set<std::string> seen;
  auto add = [&](const Signature& s) {
    KernelSpec spec = make_spec(s);
    if (seen.insert(spec.name()).second) specs.push_back(spec);
  };
  std::vector<int> dims;
  for (int k = 8; k <= 256; k += 8) dims.push_back(k);
  for (const char* arch : {"sm_80", "sm_90a"}) {
    for (DType in : {DType::f16, DType::bf16, DType::f32})
      for (DType out : {DType::f16, DType::bf16, DType::f32})
        for (int k : exhaustive ? dims : std::vector<int>{8, 64, 256})
          for (bool lse : {false, true})
            for (bool a16 : {true, false}) add(merge_sig(arch, in, out, k, lse, a16));
    for (int k : dims) {
      add(merge_sig(arch, DType::bf16, DType::f32, k, true, true));
      add(merge_sig(arch, DType::f32, DType::f16, k, false, false));
    }
  }
  return specs;
}

TEST(MergeCompile, EveryVariantForSm80AndSm90a) {
  NvrtcCompiler* compiler = nullptr;
  try {
    compiler = &NvrtcCompiler::get();
  } catch (const std::exception& e) {
    FAIL() << "NVRTC is required for this test: " << e.what();
  }
  const auto specs = every_merge_variant();
  std::atomic<size_t> next{0};
  std::mutex mu;
  std::vector<std::string> failures;
  size_t compiled = 0;
  double ms = 0;
  auto worker = [&] {
    for (size_t i; (i = next++) < specs.size();) {
      const KernelSpec& spec = specs[i];
      std::string error = validate_spec(spec);
      double t = 0;
      if (error.empty()) {
        try {
          const CompiledKernel k = compiler->compile(spec, generate_source(spec));
          t = k.compile_ms;
          if (k.cubin.size() < 1000) error = "cubin of " + std::to_string(k.cubin.size()) + " bytes";
          else if (k.registers <= 0) error = "no register count in the ptxas report";
          else if (k.log.find("bytes stack frame") != std::string::npos &&
                   k.log.find(" 0 bytes stack frame") == std::string::npos)
            error = "uses a stack frame (local memory): " + k.log;
        } catch (const std::exception& e) {
          error = e.what();
        }
      } else {
        error = "invalid spec: " + error;
      }
      std::lock_guard<std::mutex> lock(mu);
      ms += t;
      if (error.empty()) ++compiled;
      else failures.push_back(spec.name() + ": " + error);
    }
  };
  const unsigned n = std::max(2u, std::thread::hardware_concurrency());
  std::vector<std::thread> threads;
  for (unsigned i = 0; i < n; ++i) threads.emplace_back(worker);
  for (auto& t : threads) t.join();
  for (const auto& f : failures) ADD_FAILURE() << f;
  EXPECT_EQ(compiled, specs.size());
  std::cout << "compiled " << compiled << " of " << specs.size() << " merge variants, "
            << (compiled ? ms / double(compiled) : 0) << " ms each\n";
}

}  // namespace
}  // namespace jit
}  // namespace jitattn
