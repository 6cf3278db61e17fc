// User variants on the GPU against the fp64 reference (tests/reference.h), each snippet written
// again as a host function: document masking, prefix-LM, sliding window with sinks, tanh
// soft-capping with its derivative, a relative-position bias from a captured table, and ALiBi as
// a score_mod (which must also equal the built-in LowerTriangularMaskWithAlibi). Forward and
// backward in f16, bf16 and f32, composed with built-in masks (causal, block-diagonal causal,
// bottom-right local), with GQA, dropout, and the decode path. Outputs are poisoned first.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <sstream>

#include "gpu_support.h"
#include "jit/jit_runtime.h"
#include "jitattn/attention.h"
#include "jitattn/variant.h"
#include "philox.h"
#include "reference.h"

namespace jitattn::test {
namespace {


// A captured device tensor and its CaptureTensor.
struct Captured {
  DeviceBuffer buf;
  CaptureTensor t;
};
template <class T>
Captured capture_of(const std::vector<T>& host, CaptureType type, std::vector<int64_t> shape) {
  Captured c;
  c.buf = DeviceBuffer(host.size() * sizeof(T) + 16);
  c.buf.upload(host.data(), host.size() * sizeof(T));
  c.t.data = c.buf.get();
  c.t.type = type;
  c.t.rank = int(shape.size());
  int64_t stride = 1;
  for (int d = c.t.rank - 1; d >= 0; --d) c.t.shape[d] = shape[size_t(d)], c.t.stride[d] = stride, stride *= shape[size_t(d)];
  return c;
}

using HostMask = std::function<bool(int64_t b, int64_t h, int64_t i, int64_t j)>;
using HostScore = std::function<double(double s, int64_t b, int64_t h, int64_t i, int64_t j)>;

struct VarCase {
  std::string name;
  DType dt = DType::bf16;
  int64_t B = 2, Mq = 96, Mkv = 96, Hq = 2, Hkv = 2, K = 64, Kv = 64;
  AttnBias bias;                  // the built-in mask under the variant
  std::vector<int32_t> seqlens;   // block-diagonal biases: the sequences (queries and keys alike)
  const Variant* variant = nullptr;
  const BlockMap* map = nullptr;  // the variant's block map, or null
  HostMask mask;                  // the variant's mask_mod on the host (null: none)
  HostScore f, df;                // its score_mod and derivative (null: none)
  bool backward = true;
  double p = 0.0;
  std::string describe() const {
    std::ostringstream os;
    os << name << ' ' << to_string(dt) << " B=" << B << " Mq=" << Mq << " Mkv=" << Mkv << " Hq=" << Hq << " Hkv=" << Hkv
       << " K=" << K << " bias=" << bias_name(bias) << " p=" << p;
    return os.str();
  }
};

// Runs the forward (and backward) with the variant and checks them against the reference.
// Returns the forward's output.
std::vector<double> run_case(const VarCase& c) {
  SCOPED_TRACE(c.describe());
  const DType dt = c.dt;
  Dense q = random_dense(c.B, c.Mq, c.Hq, c.K, dt), k = random_dense(c.B, c.Mkv, c.Hkv, c.K, dt),
        v = random_dense(c.B, c.Mkv, c.Hkv, c.Kv, dt), dout = random_dense(c.B, c.Mq, c.Hq, c.Kv, dt);
  Dense out = poisoned(c.B, c.Mq, c.Hq, c.Kv, dt);
  DeviceBuffer lse_buf(size_t(c.B * c.Hq * c.Mq) * 4 + 4);
  lse_buf.fill(0xFF);
  const TensorView lse = TensorView::make(lse_buf.get(), DType::f32, {c.B, c.Hq, c.Mq});

  // Reference coordinates (b, i, j) are the tensors'; the snippets see (sequence, local i, local j).
  std::vector<int64_t> seq_of(size_t(c.Mq), 0), start_of(size_t(c.Mq), 0);
  if (!c.seqlens.empty()) {
    int64_t at = 0;
    for (size_t s = 0; s < c.seqlens.size(); ++s)
      for (int32_t r = 0; r < c.seqlens[s]; ++r, ++at) seq_of[size_t(at)] = int64_t(s), start_of[size_t(at)] = at - r;
  }
  auto local = [&](int64_t b, int64_t i, int64_t j, int64_t& sb, int64_t& li, int64_t& lj) {
    if (c.seqlens.empty()) {
      sb = b, li = i, lj = j;
      return true;
    }
    sb = seq_of[size_t(i)], li = i - start_of[size_t(i)], lj = j - start_of[size_t(i)];
    return seq_of[size_t(j)] == sb;  // else the built-in mask hides it anyway
  };
  std::vector<double> bias = materialize(c.bias, c.B, c.Hq, c.Mq, c.Mkv);
  const double ninf = -std::numeric_limits<double>::infinity();
  if (bias.empty()) bias.assign(size_t(c.B * c.Hq * c.Mq * c.Mkv), 0.0);
  if (c.mask)
    for (int64_t b = 0; b < c.B; ++b)
      for (int64_t h = 0; h < c.Hq; ++h)
        for (int64_t i = 0; i < c.Mq; ++i)
          for (int64_t j = 0; j < c.Mkv; ++j) {
            int64_t sb, li, lj;
            if (local(b, i, j, sb, li, lj) && !c.mask(sb, h, li, lj)) bias[size_t(((b * c.Hq + h) * c.Mq + i) * c.Mkv + j)] = ninf;
          }
  ScoreMod mod;
  if (c.f) {
    mod.f = [&](double x, int64_t b, int64_t h, int64_t i, int64_t j) {
      int64_t sb, li, lj;
      local(b, i, j, sb, li, lj);
      return c.f(x, sb, h, li, lj);
    };
    mod.df = [&](double x, int64_t b, int64_t h, int64_t i, int64_t j) {
      int64_t sb, li, lj;
      local(b, i, j, sb, li, lj);
      return c.df(x, sb, h, li, lj);
    };
  }

  AttentionOptions fo;
  fo.variant = c.variant;
  fo.block_map = c.map;
  fo.p = c.p, fo.seed = rng()(), fo.offset = rng()() % 1000;
  memory_efficient_attention_forward_requires_grad(q.view, k.view, v.view, c.bias, out.view, lse, fo);
  Dense dq, dk, dv;
  if (c.backward) {
    dq = poisoned(c.B, c.Mq, c.Hq, c.K, dt), dk = poisoned(c.B, c.Mkv, c.Hkv, c.K, dt), dv = poisoned(c.B, c.Mkv, c.Hkv, c.Kv, dt);
    BackwardOptions bo;
    bo.variant = c.variant;
    bo.block_map = c.map;
    bo.p = fo.p, bo.seed = fo.seed, bo.offset = fo.offset;
    memory_efficient_attention_backward(dout.view, out.view, lse, q.view, k.view, v.view, c.bias, dq.view, dk.view,
                                        dv.view, {}, bo);
  }
  device_synchronize();

  const RefShape s{c.B, c.Mq, c.Mkv, c.Hq, c.K, c.Kv};
  const double scale = 1.0 / std::sqrt(double(c.K));
  const auto kk = repeat_heads(k.values, c.B, c.Mkv, c.Hkv, c.Hq, c.K);
  const auto vv = repeat_heads(v.values, c.B, c.Mkv, c.Hkv, c.Hq, c.Kv);
  std::vector<uint8_t> keep;
  if (c.p > 0) keep = dropout_keep_mask(fo.seed, fo.offset, c.B, c.Hq, c.Mq, c.Mkv, c.p);
  const ScoreMod* m = c.f ? &mod : nullptr;
  const RefResult ref = c.p > 0 ? reference_attention_dropout(s, q.values, kk, vv, bias, scale, keep, c.p, m)
                                : reference_attention(s, q.values, kk, vv, bias, scale, m);
  const std::vector<double> got = read(out);
  EXPECT_LE(relative_error(got, ref.out), dtype_tolerance(dt)) << "out";
  std::vector<unsigned char> lse_raw(size_t(c.B * c.Hq * c.Mq) * 4);
  lse_buf.download(lse_raw.data(), lse_raw.size());
  EXPECT_LE(relative_error(decode(lse_raw, DType::f32), ref.lse), dtype_tolerance(dt)) << "lse";
  if (c.backward) {
    const RefGrads g = reference_backward(s, q.values, kk, vv, bias, scale, dout.values, c.p > 0 ? &keep : nullptr, c.p, m);
    const double tol = grad_tolerance(dt);
    EXPECT_LE(gradient_error(read(dq), g.dq, g.dq_mag), tol) << "dq";
    EXPECT_LE(gradient_error(read(dk), sum_heads(g.dk, c.B, c.Mkv, c.Hkv, c.Hq, c.K), sum_heads(g.dk_mag, c.B, c.Mkv, c.Hkv, c.Hq, c.K)),
              tol)
        << "dk";
    EXPECT_LE(relative_error(read(dv), sum_heads(g.dv, c.B, c.Mkv, c.Hkv, c.Hq, c.Kv)), tol) << "dv";
  }
  return got;
}

class VariantGpu : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override { JITATTN_REQUIRE_GPU(); }
};

// Documents cut at random points of each batch row, over no mask and over causal.
TEST_P(VariantGpu, DocumentMask) {
  reseed(1);
  const int64_t B = 2, M = 150;
  std::vector<int32_t> doc(size_t(B * M));
  std::uniform_int_distribution<int> cut(0, 9);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0, d = 0; i < M; ++i) doc[size_t(b * M + i)] = int32_t(d += cut(rng()) == 0);
  Captured docs = capture_of(doc, CaptureType::i32, {B, M});
  Variant v;
  v.mask_mod("doc(b, q_idx) == doc(b, kv_idx)").capture("doc", docs.t);
  for (bool causal : {false, true}) {
    VarCase c;
    c.name = "document";
    c.dt = GetParam(), c.B = B, c.Mq = c.Mkv = M, c.Hq = 4, c.Hkv = 2;
    if (causal) c.bias = LowerTriangularMask{};
    c.variant = &v;
    c.mask = [&](int64_t b, int64_t, int64_t i, int64_t j) { return doc[size_t(b * M + i)] == doc[size_t(b * M + j)]; };
    run_case(c);
  }
}

// Prefix-LM over packed sequences: each sequence's first prefix[b] keys are seen by all of its
// queries, the rest causally; b is the sequence, positions count from its start.
TEST_P(VariantGpu, PrefixLmOverBlockDiagonal) {
  reseed(2);
  const std::vector<int32_t> lens = random_lengths(4, 1, 70);
  std::vector<int32_t> prefix;
  for (int32_t n : lens) prefix.push_back(n ? int32_t(rng()() % uint64_t(n + 1)) : 0);
  Captured pre = capture_of(prefix, CaptureType::i32, {int64_t(prefix.size())});
  Variant v;
  v.mask_mod("return kv_idx < prefix[b] || kv_idx <= q_idx;").capture("prefix", pre.t);
  VarCase c;
  c.name = "prefix-lm";
  c.dt = GetParam(), c.B = 1, c.Mq = c.Mkv = sum(lens);
  c.bias = BlockDiagonalMask::from_seqlens(lens);
  c.seqlens = lens;
  c.variant = &v;
  c.mask = [&](int64_t b, int64_t, int64_t i, int64_t j) { return j < prefix[size_t(b)] || j <= i; };
  run_case(c);
}

// A sliding window with attention sinks, as int captures, over the bottom-right local mask.
TEST_P(VariantGpu, SlidingWindowWithSinks) {
  reseed(3);
  Variant v;
  v.mask_mod("kv_idx < sinks || q_idx - kv_idx < window").capture("sinks", int32_t(4)).capture("window", int32_t(24));
  VarCase c;
  c.name = "window+sinks";
  c.dt = GetParam(), c.Mq = 80, c.Mkv = 200;
  c.bias = LocalAttentionFromBottomRightMask{150, 0};  // causal from the bottom right, 150 back
  c.variant = &v;
  c.mask = [](int64_t, int64_t, int64_t i, int64_t j) { return j < 4 || i - j < 24; };
  run_case(c);
}

// tanh soft-capping with its derivative (score_grad), over block-diagonal causal, with GQA.
TEST_P(VariantGpu, SoftCapWithItsDerivative) {
  reseed(4);
  const std::vector<int32_t> lens = random_lengths(3, 10, 90);
  Variant v;
  v.score_mod("cap * tanhf(score / cap)", "const float t = tanhf(score / cap);\nreturn 1.f - t * t;").capture("cap", 0.8f);
  VarCase c;
  c.name = "softcap";
  c.dt = GetParam(), c.B = 1, c.Mq = c.Mkv = sum(lens), c.Hq = 4, c.Hkv = 1;
  c.bias = BlockDiagonalCausalMask::from_seqlens(lens);
  c.seqlens = lens;
  c.variant = &v;
  const double cap = 0.8;  // small against the scores, so the cap bends most of them
  c.f = [=](double s, int64_t, int64_t, int64_t, int64_t) { return cap * std::tanh(s / cap); };
  c.df = [=](double s, int64_t, int64_t, int64_t, int64_t) {
    const double t = std::tanh(s / cap);
    return 1 - t * t;
  };
  run_case(c);
}

// The same soft-cap through the fast forms a snippet may call (jitattn::fast_tanh, a reciprocal):
// within f16/bf16 rounding of the exact function (f32 keeps its 2e-5 tolerance: not for it).
TEST_P(VariantGpu, SoftCapThroughTheFastForms) {
  reseed(14);
  if (GetParam() == DType::f32) GTEST_SKIP() << "tanh.approx is within f16/bf16 rounding, not f32's";
  Variant v;
  v.score_mod("cap * jitattn::fast_tanh(score * inv_cap)",
              "const float t = jitattn::fast_tanh(jitattn::fast_div(score, cap));\nreturn 1.f - t * t;")
      .capture("cap", 0.8f)
      .capture("inv_cap", 1.25f);
  VarCase c;
  c.name = "softcap fast";
  c.dt = GetParam(), c.B = 2, c.Mq = c.Mkv = 300, c.Hq = 2, c.Hkv = 2;
  c.bias = LowerTriangularMask{};
  c.variant = &v;
  const double cap = 0.8;
  c.f = [=](double s, int64_t, int64_t, int64_t, int64_t) { return cap * std::tanh(s / cap); };
  c.df = [=](double s, int64_t, int64_t, int64_t, int64_t) {
    const double t = std::tanh(s / cap);
    return 1 - t * t;
  };
  run_case(c);
}

// A relative-position bias per head from a captured [H, 2M - 1] table, declared additive.
TEST_P(VariantGpu, RelativePositionTable) {
  reseed(5);
  const int64_t M = 120, H = 3;
  std::vector<float> table(size_t(H * (2 * M - 1)));
  std::normal_distribution<float> n01;
  for (float& x : table) x = n01(rng());
  Captured tab = capture_of(table, CaptureType::f32, {H, 2 * M - 1});
  Variant v;
  v.score_mod("score + rel(h, kv_idx - q_idx + offset)").additive_score().capture("rel", tab.t).capture("offset", int32_t(M - 1));
  VarCase c;
  c.name = "relative";
  c.dt = GetParam(), c.B = 2, c.Mq = c.Mkv = M, c.Hq = c.Hkv = H;
  c.bias = LowerTriangularMask{};
  c.variant = &v;
  c.f = [&](double s, int64_t, int64_t h, int64_t i, int64_t j) { return s + table[size_t(h * (2 * M - 1) + j - i + M - 1)]; };
  c.df = [](double, int64_t, int64_t, int64_t, int64_t) { return 1.0; };
  run_case(c);
}

// ALiBi as a score_mod over causal equals the built-in LowerTriangularMaskWithAlibi.
TEST_P(VariantGpu, AlibiAsScoreModMatchesTheBuiltIn) {
  reseed(6);
  const int64_t H = 4, M = 100;
  const AlibiSlopes slopes = AlibiSlopes::geometric(int32_t(H));
  Captured sl = capture_of(slopes.slopes.host(), CaptureType::f32, {H});
  Variant v;
  v.score_mod("score - slopes[h] * fabsf(float(kv_idx - q_idx))").additive_score().capture("slopes", sl.t);
  VarCase c;
  c.name = "alibi";
  c.dt = GetParam(), c.B = 2, c.Mq = c.Mkv = M, c.Hq = c.Hkv = H;
  c.bias = LowerTriangularMask{};
  c.variant = &v;
  const std::vector<float> s = slopes.slopes.host();
  c.f = [=](double x, int64_t, int64_t h, int64_t i, int64_t j) { return x - double(s[size_t(h)]) * std::fabs(double(j - i)); };
  c.df = [](double, int64_t, int64_t, int64_t, int64_t) { return 1.0; };
  reseed(60);
  const std::vector<double> as_mod = run_case(c);
  // The same inputs through the built-in kind (reseeded: run_case draws them again).
  reseed(60);
  VarCase builtin = c;
  builtin.name = "alibi built-in";
  builtin.bias = LowerTriangularMask{}.add_alibi(slopes);
  builtin.variant = nullptr;
  builtin.f = nullptr, builtin.df = nullptr;
  const std::vector<double> as_kind = run_case(builtin);
  EXPECT_LE(relative_error(as_mod, as_kind), dtype_tolerance(GetParam())) << "score_mod ALiBi vs AlibiBias";
}

// Dropout under a mask_mod and a score_mod: the same Philox mask as without a variant.
TEST_P(VariantGpu, DropoutWithAVariant) {
  reseed(7);
  Variant v;
  v.mask_mod("(q_idx + kv_idx) % 3 != 1").score_mod("score * 0.5f", "return 0.5f;");
  VarCase c;
  c.name = "dropout";
  c.dt = GetParam(), c.Mq = 70, c.Mkv = 90, c.p = 0.2;
  c.variant = &v;
  c.mask = [](int64_t, int64_t, int64_t i, int64_t j) { return (i + j) % 3 != 1; };
  c.f = [](double s, int64_t, int64_t, int64_t, int64_t) { return s * 0.5; };
  c.df = [](double, int64_t, int64_t, int64_t, int64_t) { return 0.5; };
  run_case(c);
}

// A few queries per sequence take the decode kernels (f16/bf16): the variant applies per row there too.
TEST_P(VariantGpu, DecodeShapes) {
  reseed(8);
  if (GetParam() == DType::f32) GTEST_SKIP() << "decode serves f16/bf16";
  Variant v;
  v.mask_mod("kv_idx % 5 != h").score_mod("score + 0.25f * float(b)").additive_score();
  for (int64_t mq : {1, 3}) {
    VarCase c;
    c.name = "decode";
    c.dt = GetParam(), c.B = 3, c.Mq = mq, c.Mkv = 700, c.Hq = 8, c.Hkv = 2, c.K = c.Kv = 128;
    c.bias = LowerTriangularFromBottomRightMask{};
    c.variant = &v;
    c.backward = false;
    c.mask = [](int64_t, int64_t h, int64_t, int64_t j) { return j % 5 != h; };
    c.f = [](double s, int64_t b, int64_t, int64_t, int64_t) { return s + 0.25 * double(b); };
    c.df = [](double, int64_t, int64_t, int64_t, int64_t) { return 1.0; };
    run_case(c);
  }
}

// Masking every key of some rows: those rows give out = 0 and lse = -inf, and no gradient.
TEST_P(VariantGpu, RowsTheVariantMasksEntirely) {
  reseed(9);
  Variant v;
  v.mask_mod("q_idx % 4 != 0");
  VarCase c;
  c.name = "empty rows";
  c.dt = GetParam(), c.Mq = 64, c.Mkv = 64;
  c.variant = &v;
  c.mask = [](int64_t, int64_t, int64_t i, int64_t) { return i % 4 != 0; };
  run_case(c);
}

// ---- block maps ---------------------------------------------------------------------------------
// A map of `v` over [Bm, Hm] built on the GPU, checked cell by cell (and row span by row span)
// against the host mask. kSpans: also the rows' spans, so the forward masks by them where it can.
struct BuiltMap {
  DeviceBuffer buf, spans;
  BlockMap map;
};
enum WithSpans : bool { kNoSpans = false, kSpans = true };
BuiltMap built_map(const Variant& v, int64_t Bm, int64_t Hm, int64_t mq, int64_t mkv, int32_t cell, const HostMask& mask,
                   WithSpans with_spans = kSpans) {
  const std::vector<int64_t> shape = block_map_shape(Bm, Hm, mq, mkv, cell);
  const int64_t n = shape[0] * shape[1] * shape[2] * shape[3];
  BuiltMap m;
  m.buf = DeviceBuffer(size_t(n) + 16);
  m.buf.fill(0xAB);  // no valid cell state
  const TensorView cells = TensorView::make(m.buf.get(), DType::u8, {shape[0], shape[1], shape[2], shape[3]});
  if (with_spans) {
    m.spans = DeviceBuffer(size_t(Bm * Hm * mq * 2) * 4);
    m.spans.fill(0xAB);  // 0xABABABAB: a negative lo, no span the builder writes
    const std::vector<int64_t> ss = block_map_spans_shape(Bm, Hm, mq);
    m.map = build_block_map(v, mq, mkv, cells, TensorView::make(m.spans.get(), DType::i32, {ss[0], ss[1], ss[2], ss[3]}), cell);
  } else {
    m.map = build_block_map(v, mq, mkv, cells, cell);
  }
  device_synchronize();
  if (with_spans) {
    std::vector<int32_t> spans(size_t(Bm * Hm * mq * 2));
    m.spans.download(spans.data(), spans.size() * 4);
    int64_t wrong = 0, exact = 0;
    for (int64_t b = 0; b < Bm; ++b)
      for (int64_t h = 0; h < Hm; ++h)
        for (int64_t i = 0; i < mq; ++i) {
          int64_t lo = mkv, hi = 0, count = 0;
          for (int64_t j = 0; j < mkv; ++j)
            if (mask(b, h, i, j)) lo = std::min(lo, j), hi = std::max(hi, j + 1), ++count;
          const bool one = count == hi - lo || count == 0;
          const int64_t want_lo = count > 0 && one ? lo : 0, want_hi = count == 0 ? 0 : one ? hi : -1;
          exact += one;
          const int32_t* got = &spans[size_t(((b * Hm + h) * mq + i) * 2)];
          if ((got[0] != want_lo || got[1] != want_hi) && wrong++ < 5)
            ADD_FAILURE() << "span of row (" << b << ", " << h << ", " << i << ") is (" << got[0] << ", " << got[1]
                          << "), want (" << want_lo << ", " << want_hi << ")";
        }
    EXPECT_EQ(wrong, 0);
    EXPECT_GT(exact, 0) << "no row of the map is one interval: the spans are never used";
  }
  std::vector<unsigned char> got(static_cast<size_t>(n));
  m.buf.download(got.data(), got.size());
  int64_t wrong = 0, states[3] = {0, 0, 0};
  for (int64_t b = 0; b < shape[0]; ++b)
    for (int64_t h = 0; h < shape[1]; ++h)
      for (int64_t r = 0; r < shape[2]; ++r)
        for (int64_t c = 0; c < shape[3]; ++c) {
          bool any = false, all = true;
          for (int64_t i = r * cell; i < std::min<int64_t>(mq, (r + 1) * cell); ++i)
            for (int64_t j = c * cell; j < std::min<int64_t>(mkv, (c + 1) * cell); ++j) {
              const bool seen = mask(b, h, i, j);
              any |= seen, all &= seen;
            }
          const int want = !any ? 0 : all ? 2 : 1;
          const int have = got[size_t(((b * shape[1] + h) * shape[2] + r) * shape[3] + c)];
          if (have != want && wrong++ < 5) ADD_FAILURE() << "cell (" << b << ", " << h << ", " << r << ", " << c << ") is " << have << ", want " << want;
          if (want >= 0 && want <= 2) ++states[want];
        }
  EXPECT_EQ(wrong, 0);
  // The cases below are drawn so that the map has empty, partial and full cells: every path runs.
  EXPECT_GT(states[0], 0) << "no empty cell";
  EXPECT_GT(states[1], 0) << "no partial cell";
  EXPECT_GT(states[2], 0) << "no full cell";
  return m;
}

// Long documents under causal (and not), the map broadcast over heads; the tiles of other
// documents are skipped and those inside one document run without mask_mod — the results must be
// those of the mask.
TEST_P(VariantGpu, BlockMapOfDocuments) {
  reseed(11);
  const int64_t B = 2, M = 700;
  // Documents of 260..400 tokens: each holds an aligned 128 × 128 cell (full), the first and the
  // last share none (empty), and their edges cut cells (partial).
  std::vector<int32_t> doc(size_t(B * M));
  std::uniform_int_distribution<int> len(260, 400);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0, d = 0, end = len(rng()); i < M; ++i) {
      if (i == end) ++d, end += len(rng());
      doc[size_t(b * M + i)] = int32_t(d);
    }
  Captured docs = capture_of(doc, CaptureType::i32, {B, M});
  Variant v;
  v.mask_mod("doc(b, q_idx) == doc(b, kv_idx)").capture("doc", docs.t);
  const HostMask mask = [&](int64_t b, int64_t, int64_t i, int64_t j) { return doc[size_t(b * M + i)] == doc[size_t(b * M + j)]; };
  const int32_t cells[] = {16, 64, 128};
  for (int n = 0; n < 3; ++n) {
    BuiltMap m = built_map(v, B, 1, M, M, cells[n], mask, n == 0 ? kNoSpans : kSpans);
    VarCase c;
    c.name = "document map cell " + std::to_string(cells[n]);
    c.dt = GetParam(), c.B = B, c.Mq = c.Mkv = M, c.Hq = 4, c.Hkv = 2, c.K = c.Kv = n == 2 ? 128 : 64;
    if (n != 1) c.bias = LowerTriangularMask{};
    c.variant = &v, c.map = &m.map, c.mask = mask;
    run_case(c);
  }
}

// A per-head map (the mask depends on h) over block-diagonal causal, with a score_mod that must
// still apply inside full tiles; and prefix-LM with a map per sequence.
TEST_P(VariantGpu, BlockMapPerHeadAndPerSequence) {
  reseed(12);
  const std::vector<int32_t> lens = random_lengths(3, 150, 400);
  const int64_t H = 2, M = sum(lens);
  int32_t longest = 0;
  for (int32_t n : lens) longest = std::max(longest, n);
  Variant v;
  v.mask_mod("h == 0 ? (q_idx / 100 + kv_idx / 100) % 2 == 0 : kv_idx < 64 + q_idx / 2").score_mod("score * 0.75f", "return 0.75f;");
  const HostMask mask = [](int64_t, int64_t h, int64_t i, int64_t j) { return h == 0 ? (i / 100 + j / 100) % 2 == 0 : j < 64 + i / 2; };
  BuiltMap m = built_map(v, 1, H, longest, longest, 32, mask);
  VarCase c;
  c.name = "per-head map";
  c.dt = GetParam(), c.B = 1, c.Mq = c.Mkv = M, c.Hq = c.Hkv = H;
  c.bias = BlockDiagonalCausalMask::from_seqlens(lens);
  c.seqlens = lens;
  c.variant = &v, c.map = &m.map, c.mask = mask;
  c.f = [](double s, int64_t, int64_t, int64_t, int64_t) { return s * 0.75; };
  c.df = [](double, int64_t, int64_t, int64_t, int64_t) { return 0.75; };
  run_case(c);

  std::vector<int32_t> prefix;
  for (int32_t n : lens) prefix.push_back(int32_t(rng()() % uint64_t(n + 1)));
  Captured pre = capture_of(prefix, CaptureType::i32, {int64_t(prefix.size())});
  Variant lm;
  lm.mask_mod("return kv_idx < prefix[b] || kv_idx <= q_idx;").capture("prefix", pre.t);
  const HostMask lm_mask = [&](int64_t b, int64_t, int64_t i, int64_t j) { return j < prefix[size_t(b)] || j <= i; };
  BuiltMap pm = built_map(lm, int64_t(lens.size()), 1, longest, longest, 64, lm_mask);
  VarCase p = c;
  p.name = "prefix-lm map";
  p.bias = BlockDiagonalMask::from_seqlens(lens);
  p.variant = &lm, p.map = &pm.map, p.mask = lm_mask;
  p.f = nullptr, p.df = nullptr;
  run_case(p);
}

// A sliding window as a mask_mod alone, with its map, over block-diagonal causal (and over
// bottom-right causal with more keys than queries): inside the window the map says full, so the
// tiles on each sequence's diagonal are masked by the built-in mask alone (kBaseTiles), the
// window's far edge by mask_mod, and tiles past it are skipped.
TEST_P(VariantGpu, BlockMapWindowOverCausal) {
  reseed(13);
  std::vector<int32_t> lens = random_lengths(3, 200, 520);
  // The longest sequence reaches past the window by more than a cell, so that the map has empty
  // cells (built_map wants every state).
  *std::max_element(lens.begin(), lens.end()) = 400 + int32_t(rng()() % 121);
  const int64_t M = sum(lens);
  int32_t longest = 0;
  for (int32_t n : lens) longest = std::max(longest, n);
  // Wider than a 64-row backward tile plus its 128 keys, so that the d = 128 backward has full
  // tiles (state 2) beside the diagonal ones (state 3).
  const int32_t window = 192 + int32_t(rng()() % 58);
  Variant v;
  v.mask_mod("q_idx - kv_idx < window").capture("window", window);
  const HostMask mask = [&](int64_t, int64_t, int64_t i, int64_t j) { return i - j < window; };
  BuiltMap m = built_map(v, 1, 1, longest, longest, 64, mask);
  VarCase c;
  c.name = "window map over block-diagonal causal";
  c.dt = GetParam(), c.B = 1, c.Mq = c.Mkv = M, c.Hq = 4, c.Hkv = 1, c.K = c.Kv = 128;
  c.bias = BlockDiagonalCausalMask::from_seqlens(lens);
  c.seqlens = lens;
  c.variant = &v, c.map = &m.map, c.mask = mask;
  run_case(c);

  // Dense rows, Mkv > Mq: the base's diagonal is shifted by Mkv - Mq, the map's is not.
  const int64_t Mq = 352 + int64_t(rng()() % 150), Mkv = Mq + 1 + int64_t(rng()() % 300);  // empty cells again
  const HostMask dmask = [&](int64_t, int64_t, int64_t i, int64_t j) { return i + (Mkv - Mq) - j < window; };
  Variant dv;
  dv.mask_mod("q_idx + shift - kv_idx < window").capture("window", window).capture("shift", int32_t(Mkv - Mq));
  BuiltMap dm = built_map(dv, 1, 1, Mq, Mkv, 32, dmask, kNoSpans);
  VarCase d;
  d.name = "window map over bottom-right causal";
  d.dt = GetParam(), d.B = 2, d.Mq = Mq, d.Mkv = Mkv, d.Hq = d.Hkv = 2, d.K = d.Kv = 64;
  d.bias = LowerTriangularFromBottomRightMask{};
  d.variant = &dv, d.map = &dm.map, d.mask = dmask;
  run_case(d);
}

// Row spans where some rows are one interval and some are not: warps whose rows all have a span
// mask by it, warps with one row without take mask_mod on every element; rows that see nothing
// have the empty span (0, 0). The mask_mod reads a captured table, so the kernels use the spans.
TEST_P(VariantGpu, BlockMapSpansBesideRowsWithout) {
  reseed(14);
  const int64_t M = 288 + int64_t(rng()() % 64);
  const int32_t gap = 3 + int32_t(rng()() % 5);
  std::vector<int32_t> first(static_cast<size_t>(M));  // each row's first key: about a third of the way
  for (int64_t i = 0; i < M; ++i) first[size_t(i)] = int32_t(i / 3 + int64_t(rng()() % 4));
  Captured firsts = capture_of(first, CaptureType::i32, {M});
  Variant v;
  v.mask_mod("q_idx % 64 == 7 ? false : q_idx >= 128 && q_idx % 5 == 0 ? kv_idx % gap < 3 : kv_idx >= first[q_idx] && kv_idx < q_idx + 40")
      .capture("gap", gap)
      .capture("first", firsts.t);
  const HostMask mask = [&](int64_t, int64_t, int64_t i, int64_t j) {
    return i % 64 == 7 ? false : i >= 128 && i % 5 == 0 ? j % gap < 3 : j >= first[size_t(i)] && j < i + 40;
  };
  BuiltMap m = built_map(v, 1, 1, M, M, 16, mask);
  for (int64_t K : {64, 128}) {
    VarCase c;
    c.name = "spans beside rows without, K=" + std::to_string(K);
    c.dt = GetParam(), c.B = 2, c.Mq = c.Mkv = M, c.Hq = 4, c.Hkv = 2, c.K = c.Kv = K;
    if (K == 64) c.bias = LowerTriangularMask{};
    c.variant = &v, c.map = &m.map, c.mask = mask;
    run_case(c);
  }
}

// The variant as an additive bias equals its host function, -inf where masked.
TEST_P(VariantGpu, MaterializeAVariant) {
  if (GetParam() != DType::f32) GTEST_SKIP() << "dtype-independent: runs once";
  reseed(13);
  const int64_t B = 2, H = 3, Mq = 37, Mkv = 53;
  Variant v;
  v.mask_mod("(q_idx * 7 + kv_idx + b) % 5 != 0").score_mod("score + 0.5f * float(h) - 0.01f * float(kv_idx)").additive_score();
  DeviceBuffer buf(size_t(B * H * Mq * Mkv) * 4);
  buf.fill(0xFF);
  materialize(v, TensorView::make(buf.get(), DType::f32, {B, H, Mq, Mkv}));
  device_synchronize();
  const std::vector<double> got = decode(buf.download(), DType::f32);
  int64_t wrong = 0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < Mq; ++i)
        for (int64_t j = 0; j < Mkv; ++j) {
          const double want = (i * 7 + j + b) % 5 != 0 ? double(0.5f * float(h) - 0.01f * float(j)) : -INFINITY;
          const double have = got[size_t(((b * H + h) * Mq + i) * Mkv + j)];
          if (!(have == want || std::fabs(have - want) <= 1e-6) && wrong++ < 5)
            ADD_FAILURE() << "(" << b << ", " << h << ", " << i << ", " << j << ") = " << have << ", want " << want;
        }
  EXPECT_EQ(wrong, 0);
  Variant capped;
  capped.score_mod("2.f * tanhf(score / 2.f)", "return 1.f;");
  EXPECT_THROW(materialize(capped, TensorView::make(buf.get(), DType::f32, {B, H, Mq, Mkv})), Error);
}

// A forward that keeps lse starts its backward's kernels compiling (jit/ops/backward.h
// prefetch_backward): the backward of a never-seen variant then compiles nothing the forward
// did not start, and its gradients are right.
TEST_P(VariantGpu, ForwardRequiresGradCompilesItsBackwardAhead) {
  reseed(12);
  Variant v;
  v.score_mod("score * 0.75f /* " + std::to_string(rng()()) + " */", "return 0.75f;");
  VarCase c;
  c.name = "prefetched backward";
  c.dt = GetParam(), c.B = 2, c.Mq = 80, c.Mkv = 112, c.Hq = 4, c.Hkv = 2;
  c.bias = LowerTriangularFromBottomRightMask{};
  c.variant = &v;
  c.f = [](double s, int64_t, int64_t, int64_t, int64_t) { return 0.75 * s; };
  c.df = [](double, int64_t, int64_t, int64_t, int64_t) { return 0.75; };
  auto& stats = jit::JitRuntime::get().stats();
  const int64_t background = stats.background.load(), compiles = stats.compiles.load();
  run_case(c);
  const int64_t started = stats.background.load() - background;
  EXPECT_GE(started, 1) << "the variant's backward kernel is new: the forward must have started it";
  EXPECT_LE(stats.compiles.load() - compiles, 1 + started) << "the backward compiled a kernel the forward did not start";
}

INSTANTIATE_TEST_SUITE_P(Dtypes, VariantGpu, ::testing::Values(DType::f16, DType::bf16, DType::f32),
                         [](const auto& info) { return std::string(to_string(info.param)); });

TEST(VariantGpuErrors, ASnippetThatDoesNotCompileNamesItsLine) {
  JITATTN_REQUIRE_GPU();
  reseed(10);
  Dense q = random_dense(1, 16, 1, 64, DType::f16), out = poisoned(1, 16, 1, 64, DType::f16);
  Variant v;
  v.mask_mod("bool ok = q_idx >= 0;\nreturn ok && not_a_capture[kv_idx];");
  AttentionOptions o;
  o.variant = &v;
  try {
    memory_efficient_attention_forward(q.view, q.view, q.view, AttnBias{}, out.view, o);
    FAIL() << "compiled";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("mask_mod(2)"), std::string::npos) << msg;
    EXPECT_NE(msg.find("not_a_capture"), std::string::npos) << msg;
  }
}

}  // namespace
}  // namespace jitattn::test
