// BlockSparseMask and block maps on the CPU: materialize() of a layout against the rule written
// out, every rule the calls check (naming the argument), and that the kernels the two reach
// compile through NVRTC (block-sparse forward/backward per family, a variant over a
// block-sparse mask, the block-map builder). GPU results: block_sparse_gpu_test.cpp and the
// BlockMap tests of variant_gpu_test.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "jit/codegen.h"
#include "jit/nvrtc_compiler.h"
#include "jit/signature.h"
#include "jitattn/attention.h"
#include "jitattn/bias.h"
#include "jitattn/error.h"
#include "jitattn/variant.h"

namespace jitattn {
namespace {

::testing::AssertionResult has(const std::vector<std::string>& reasons, const std::string& part) {
  for (const auto& r : reasons)
    if (r.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "no reason contains \"" << part << "\": " << ::testing::PrintToString(reasons);
}

TEST(BlockSparseMaterialize, FollowsTheLayoutPerHeadAndCausal) {
  std::mt19937 rng(7);
  const int64_t B = 2, H = 3, Mq = 45, Mkv = 70;
  for (int32_t bs : {16, 32}) {
    for (bool causal : {false, true}) {
      const int64_t rows = (Mq + bs - 1) / bs, cols = (Mkv + bs - 1) / bs;
      std::vector<uint8_t> layout(size_t(H * rows * cols));
      for (auto& x : layout) x = uint8_t(rng() % 3 == 0 ? 0 : rng() % 256);  // any nonzero byte is set
      const BlockSparseMask m{TensorView::make(layout.data(), DType::u8, {H, rows, cols}, {}, TensorView::kHost), bs, causal};
      const std::vector<double> got = materialize(m, B, H, Mq, Mkv);
      for (int64_t b = 0; b < B; ++b)
        for (int64_t h = 0; h < H; ++h)
          for (int64_t i = 0; i < Mq; ++i)
            for (int64_t j = 0; j < Mkv; ++j) {
              const bool seen = layout[size_t((h * rows + i / bs) * cols + j / bs)] != 0 && (!causal || j <= i);
              ASSERT_EQ(got[size_t(((b * H + h) * Mq + i) * Mkv + j)], seen ? 0.0 : -INFINITY)
                  << "b=" << b << " h=" << h << " i=" << i << " j=" << j << " block=" << bs << " causal=" << causal;
            }
    }
  }
  // One layout for all heads (shape[0] = 1) broadcasts.
  std::vector<uint8_t> one = {1, 0, 0, 1};
  const BlockSparseMask m{TensorView::make(one.data(), DType::u8, {1, 2, 2}, {}, TensorView::kHost), 16, false};
  const std::vector<double> got = materialize(m, 1, 2, 32, 32);
  for (int64_t h = 0; h < 2; ++h) {
    EXPECT_EQ(got[size_t((h * 32 + 0) * 32 + 0)], 0.0);
    EXPECT_EQ(got[size_t((h * 32 + 0) * 32 + 20)], -INFINITY);
    EXPECT_EQ(got[size_t((h * 32 + 20) * 32 + 20)], 0.0);
  }
}

TEST(BlockSparseValidation, ReasonsNameTheRule) {
  std::vector<uint8_t> bytes(4096);
  auto layout = [&](int64_t h, int64_t r, int64_t c, DType dt = DType::u8) { return TensorView::make(bytes.data(), dt, {h, r, c}); };
  EXPECT_TRUE(has(bias_reasons(BlockSparseMask{layout(1, 4, 4), 24}, 1, 2, 90, 90), "block_size=24 must be a power of two"));
  EXPECT_TRUE(has(bias_reasons(BlockSparseMask{layout(1, 4, 4), 512}, 1, 2, 90, 90), "block_size=512"));
  EXPECT_TRUE(has(bias_reasons(BlockSparseMask{layout(1, 4, 4, DType::f16), 32}, 1, 2, 90, 90), "layout.dtype=f16 must be u8"));
  EXPECT_TRUE(has(bias_reasons(BlockSparseMask{TensorView::make(bytes.data(), DType::u8, {4, 4}), 32}, 1, 2, 90, 90),
                  "layout.ndim=2 must be 3"));
  EXPECT_TRUE(has(bias_reasons(BlockSparseMask{layout(3, 3, 3), 32}, 1, 2, 90, 90), "layout.shape[0]=3 must equal H"));
  EXPECT_TRUE(has(bias_reasons(BlockSparseMask{layout(2, 2, 3), 32}, 1, 2, 90, 90), "layout.shape[1]=2 must equal ceil(Mq / block_size)=3"));
  EXPECT_TRUE(has(bias_reasons(BlockSparseMask{layout(2, 3, 4), 32}, 1, 2, 90, 90), "layout.shape[2]=4 must equal ceil(Mkv / block_size)=3"));
  EXPECT_TRUE(bias_reasons(BlockSparseMask{layout(2, 3, 3), 32}, 1, 2, 90, 90).empty());
  EXPECT_TRUE(bias_reasons(BlockSparseMask{layout(1, 3, 3), 32, true}, 4, 2, 90, 90).empty());
  EXPECT_STREQ(bias_name(BlockSparseMask{}), "BlockSparseMask");
}

// A call: the layout must be on the query's device; a u8 query is refused.
TEST(BlockSparseValidation, CallsCheckDeviceAndDtypes) {
  std::vector<char> mem(1 << 20);  // distinct addresses, never read (device 0 is only a number here)
  int next = 0;
  auto t = [&](int64_t m, DType dt = DType::bf16) { return TensorView::make(mem.data() + 65536 * next++, dt, {1, m, 2, 64}); };
  const TensorView q = t(64), k = t(64), v = t(64), out = t(64);
  TensorView l = TensorView::make(mem.data() + 65536 * next++, DType::u8, {1, 2, 2}, {}, TensorView::kHost);
  EXPECT_TRUE(has(not_supported_reasons(q, k, v, BlockSparseMask{l, 32}, out), "layout (BlockSparseMask) must be on the query's device"));
  l.device = 0;
  EXPECT_TRUE(not_supported_reasons(q, k, v, BlockSparseMask{l, 32}, out).empty());
  // The kernels read the layout through its strides: none negative, every offset in int64.
  TensorView neg = l;
  neg.stride[0] = -4;
  EXPECT_TRUE(has(not_supported_reasons(q, k, v, BlockSparseMask{neg, 32}, out), "layout (BlockSparseMask).stride[0]=-4 is negative"));
  TensorView huge = l;
  huge.stride[1] = INT64_MAX;
  EXPECT_TRUE(has(not_supported_reasons(q, k, v, BlockSparseMask{huge, 32}, out), "addresses more than 2^63 bytes"));
  const TensorView q8 = t(64, DType::u8);
  EXPECT_TRUE(has(not_supported_reasons(q8, q8, q8, AttnBias{}, q8), "query.dtype=u8 must be f16, bf16 or f32"));
}

Variant window_variant() {
  Variant v;
  v.mask_mod("q_idx - kv_idx < 40 && kv_idx <= q_idx");
  return v;
}

TEST(BlockMapValidation, AMapMustBeThisVariantsAndCoverTheCall) {
  std::vector<char> mem(1 << 21);  // distinct addresses, never read
  int next = 0;
  auto t = [&](int64_t b, int64_t m) { return TensorView::make(mem.data() + 131072 * next++, DType::bf16, {b, m, 2, 64}); };
  const TensorView q = t(2, 100), k = t(2, 100), v = t(2, 100), out = t(2, 100);
  const Variant var = window_variant();
  BlockMap m;
  m.cells = TensorView::make(mem.data() + 131072 * next++, DType::u8, {1, 1, 4, 4});
  m.cell_size = 32, m.mq = 100, m.mkv = 100, m.variant = var.code_id();
  AttentionOptions o;
  o.variant = &var, o.block_map = &m;
  EXPECT_TRUE(not_supported_reasons(q, k, v, AttnBias{}, out, TensorView{}, o).empty());

  AttentionOptions no_variant;
  no_variant.block_map = &m;
  EXPECT_TRUE(has(not_supported_reasons(q, k, v, AttnBias{}, out, TensorView{}, no_variant), "needs options.variant with a mask_mod"));
  Variant other = window_variant();
  other.mask_mod("kv_idx <= q_idx");
  AttentionOptions foreign = o;
  foreign.variant = &other;
  EXPECT_TRUE(has(not_supported_reasons(q, k, v, AttnBias{}, out, TensorView{}, foreign), "was built from variant"));
  BlockMap bad = m;
  bad.cell_size = 48;
  o.block_map = &bad;
  EXPECT_TRUE(has(not_supported_reasons(q, k, v, AttnBias{}, out, TensorView{}, o), "cell_size=48"));
  bad = m, bad.cells.dtype = DType::f32;
  EXPECT_TRUE(has(not_supported_reasons(q, k, v, AttnBias{}, out, TensorView{}, o), "block_map.cells.dtype=f32 must be u8"));
  bad = m, bad.cells.shape[0] = 3;
  EXPECT_TRUE(has(not_supported_reasons(q, k, v, AttnBias{}, out, TensorView{}, o), "block_map.cells.shape[0]=3"));
  bad = m, bad.cells.shape[3] = 5;
  EXPECT_TRUE(has(not_supported_reasons(q, k, v, AttnBias{}, out, TensorView{}, o), "must end in [ceil(mq / cell_size)"));
  bad = m, bad.mq = 90, bad.cells.shape[2] = 3;
  EXPECT_TRUE(has(not_supported_reasons(q, k, v, AttnBias{}, out, TensorView{}, o), "block_map covers 90 queries"));
  bad = m, bad.cells.stride[1] = -16;
  EXPECT_TRUE(has(not_supported_reasons(q, k, v, AttnBias{}, out, TensorView{}, o), "block_map.cells.stride[1]=-16 is negative"));
  bad = m, bad.cells.shape[0] = 2, bad.cells.stride[0] = INT64_MAX;
  EXPECT_TRUE(has(not_supported_reasons(q, k, v, AttnBias{}, out, TensorView{}, o), "block_map.cells: shape"));
  bad = m, bad.cells.device = 1;
  EXPECT_TRUE(has(not_supported_reasons(q, k, v, AttnBias{}, out, TensorView{}, o), "block_map.cells must be on the query's device"));
  // Row spans: i32 [cells B, cells H, mq, 2], each row's pair side by side.
  bad = m, bad.spans = TensorView::make(mem.data() + 131072 * next++, DType::i32, {1, 1, 100, 2});
  EXPECT_TRUE(not_supported_reasons(q, k, v, AttnBias{}, out, TensorView{}, o).empty());
  bad.spans.dtype = DType::u8;
  EXPECT_TRUE(has(not_supported_reasons(q, k, v, AttnBias{}, out, TensorView{}, o), "block_map.spans.dtype=u8 must be i32"));
  bad.spans = TensorView::make(bad.spans.data, DType::i32, {1, 1, 99, 2});
  EXPECT_TRUE(has(not_supported_reasons(q, k, v, AttnBias{}, out, TensorView{}, o), "block_map.spans.shape=[1, 1, 99, 2] must be [1, 1, 100, 2]"));
  bad.spans = TensorView::make(bad.spans.data, DType::i32, {1, 1, 100, 2}, {400, 400, 4, 1});
  EXPECT_TRUE(has(not_supported_reasons(q, k, v, AttnBias{}, out, TensorView{}, o), "must end in [2, 1]"));
  bad.spans = TensorView::make(bad.spans.data, DType::i32, {1, 1, 100, 2}, {}, 1);
  EXPECT_TRUE(has(not_supported_reasons(q, k, v, AttnBias{}, out, TensorView{}, o), "block_map.spans must be on the cells' device"));
  // Per-sequence maps of a block-diagonal bias count its sequences, not the batch.
  const BlockDiagonalMask bd = BlockDiagonalMask::from_seqlens({30, 40, 30});
  const TensorView q1 = t(1, 100), k1 = t(1, 100), v1 = t(1, 100), o1 = t(1, 100);
  bad = m, bad.cells.shape[0] = 3;
  EXPECT_TRUE(not_supported_reasons(q1, k1, v1, bd, o1, TensorView{}, o).empty());
  bad.cells.shape[0] = 2;
  EXPECT_TRUE(has(not_supported_reasons(q1, k1, v1, bd, o1, TensorView{}, o), "the call's sequences (3)"));
}

TEST(BlockMapValidation, BuildAndMaterializeRefuseBadArguments) {
  std::vector<char> mem(1 << 16);
  const Variant var = window_variant();
  const TensorView cells = TensorView::make(mem.data(), DType::u8, {1, 1, 4, 4});
  auto reasons_of = [](auto&& call) {
    try {
      call();
    } catch (const Error& e) {
      return e.reasons();
    }
    return std::vector<std::string>{};
  };
  EXPECT_TRUE(has(reasons_of([&] { build_block_map(var, 100, 100, cells, 33); }), "cell_size=33"));
  EXPECT_TRUE(has(reasons_of([&] { build_block_map(var, 100, 200, cells, 32); }), "must be [B or 1, H or 1, 4, 7]"));
  EXPECT_TRUE(has(reasons_of([&] { build_block_map(var, 0, 100, cells, 32); }), "mq=0"));
  TensorView f = cells;
  f.dtype = DType::f32;
  EXPECT_TRUE(has(reasons_of([&] { build_block_map(var, 100, 100, f, 32); }), "cells.dtype=f32 must be u8"));
  const TensorView spans = TensorView::make(mem.data() + 4096, DType::i32, {1, 1, 100, 2});
  EXPECT_TRUE(has(reasons_of([&] { build_block_map(var, 100, 100, cells, TensorView::make(spans.data, DType::i32, {1, 2, 100, 2}), 32); }),
                  "spans.shape=[1, 2, 100, 2] must be [1, 1, 100, 2]"));
  EXPECT_TRUE(has(reasons_of([&] { build_block_map(var, 100, 100, cells, TensorView::make(spans.data, DType::f32, {1, 1, 100, 2}), 32); }),
                  "spans.dtype=f32 must be i32"));
  EXPECT_EQ(block_map_spans_shape(2, 3, 100), (std::vector<int64_t>{2, 3, 100, 2}));
  EXPECT_THROW(block_map_spans_shape(1, 1, 0), Error);
  Variant score_only;
  score_only.score_mod("score * 2.f", "return 2.f;");
  EXPECT_TRUE(has(reasons_of([&] { build_block_map(score_only, 100, 100, cells, 32); }), "needs a mask_mod"));
  EXPECT_EQ(block_map_shape(2, 1, 100, 300, 64), (std::vector<int64_t>{2, 1, 2, 5}));
  EXPECT_THROW(block_map_shape(1, 1, 100, 100, 10), Error);
  const TensorView dense = TensorView::make(mem.data(), DType::f32, {1, 1, 8, 8});
  Variant capped;
  capped.score_mod("2.f * tanhf(score / 2.f)", "return 1.f;");
  EXPECT_TRUE(has(reasons_of([&] { materialize(capped, dense); }), "not additive_score()"));
  TensorView host = dense;
  host.device = TensorView::kHost;
  EXPECT_TRUE(has(reasons_of([&] { materialize(var, host); }), "out must be in CUDA device memory"));
}

// The kernels these reach compile for every family: block-sparse forward (wgmma, mma, simt),
// backward and deterministic dQ, a variant with a map over a block-sparse mask, the builder.
TEST(BlockSparseCompile, KernelsCompile) {
  jit::NvrtcCompiler* compiler = nullptr;
  try {
    compiler = &jit::NvrtcCompiler::get();
  } catch (const std::exception& e) {
    FAIL() << "NVRTC is required for this test: " << e.what();
  }
  const Variant var = window_variant();
  Variant scored = window_variant();
  scored.score_mod("score * 0.5f", "return 0.5f;");
  struct Case {
    jit::Op op;
    DType dt;
    jit::BiasKind bias;
    const Variant* v;
    int arch;
  };
  const Case cases[] = {
      {jit::Op::fwd, DType::bf16, jit::BiasKind::block_sparse, nullptr, 90},
      {jit::Op::fwd, DType::f16, jit::BiasKind::causal_block_sparse, nullptr, 80},
      {jit::Op::fwd, DType::f32, jit::BiasKind::block_sparse, nullptr, 90},
      {jit::Op::bwd, DType::bf16, jit::BiasKind::causal_block_sparse, nullptr, 90},
      {jit::Op::bwd_dq, DType::f16, jit::BiasKind::block_sparse, nullptr, 90},
      {jit::Op::bwd, DType::f32, jit::BiasKind::block_sparse, nullptr, 90},
      {jit::Op::fwd, DType::bf16, jit::BiasKind::causal_block_sparse, &scored, 90},
      {jit::Op::bwd, DType::bf16, jit::BiasKind::none, &scored, 90},
      {jit::Op::block_map, DType::f32, jit::BiasKind::none, &scored, 90},
  };
  for (const Case& c : cases) {
    jit::Signature s;
    s.op = c.op, s.arch_sm = uint8_t(c.arch), s.arch_specific = c.arch == 90, s.dtype = s.out_dtype = c.dt;
    s.head_dim = s.head_dim_v = c.op == jit::Op::block_map ? 8 : 128, s.bias = c.bias, s.lse = c.op == jit::Op::fwd;
    s.align = c.dt == DType::f32 ? 4 : 16;
    s.variant = c.v ? c.v->code_id() : 0;
    const jit::KernelSpec spec = jit::make_spec(s);
    SCOPED_TRACE(spec.name());
    ASSERT_EQ(jit::validate_spec(spec), "");
    const std::string src = jit::generate_source(spec);
    if (c.op == jit::Op::block_map) EXPECT_NE(src.find("jitattn::block_map<Cfg, Policy>"), std::string::npos);
    try {
      const jit::CompiledKernel k = compiler->compile(spec, src);
      EXPECT_GT(k.cubin.size(), 1000u);
    } catch (const std::exception& e) {
      ADD_FAILURE() << e.what();
    }
  }
}

}  // namespace
}  // namespace jitattn
