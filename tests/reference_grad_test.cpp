// reference_backward against central finite differences of the forward reference, the Philox
// known-answer vectors, and the statistics and layout of dropout_keep_mask.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <random>

#include "philox.h"
#include "reference.h"

namespace jitattn::test {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

std::vector<double> normal(std::mt19937_64& rng, size_t n) {
  std::normal_distribution<double> dist(0.0, 1.0);
  std::vector<double> x(n);
  for (auto& e : x) e = dist(rng);
  return x;
}

struct Problem {
  RefShape s;
  std::vector<double> q, k, v, bias, dout;
  double scale;
};

// Random inputs; `causal` adds a bottom-right-aligned causal mask (rows fully masked when Mq > Mkv),
// `with_bias` a random additive bias (so dbias is exercised).
Problem make_problem(std::mt19937_64& rng, RefShape s, bool causal, bool with_bias) {
  Problem pr;
  pr.s = s;
  pr.q = normal(rng, size_t(s.B * s.Mq * s.H * s.K));
  pr.k = normal(rng, size_t(s.B * s.Mkv * s.H * s.K));
  pr.v = normal(rng, size_t(s.B * s.Mkv * s.H * s.Kv));
  pr.dout = normal(rng, size_t(s.B * s.Mq * s.H * s.Kv));
  pr.scale = 1.0 / std::sqrt(double(s.K));
  if (causal || with_bias) {
    pr.bias = with_bias ? normal(rng, size_t(s.B * s.H * s.Mq * s.Mkv)) : std::vector<double>(size_t(s.B * s.H * s.Mq * s.Mkv), 0.0);
    if (causal)
      for (int64_t bh = 0; bh < s.B * s.H; ++bh)
        for (int64_t i = 0; i < s.Mq; ++i)
          for (int64_t j = 0; j < s.Mkv; ++j)
            if (j > i + s.Mkv - s.Mq) pr.bias[size_t((bh * s.Mq + i) * s.Mkv + j)] = -kInf;
  }
  return pr;
}

// L = Σ out ∘ dout, with or without dropout.
double loss(const Problem& pr, const std::vector<uint8_t>* keep, double p) {
  const RefResult r = keep ? reference_attention_dropout(pr.s, pr.q, pr.k, pr.v, pr.bias, pr.scale, *keep, p)
                           : reference_attention(pr.s, pr.q, pr.k, pr.v, pr.bias, pr.scale);
  double l = 0;
  for (size_t i = 0; i < r.out.size(); ++i) l += r.out[i] * pr.dout[i];
  return l;
}

// Central differences of loss() in every finite entry of *x (0 where the entry is ±inf).
std::vector<double> numeric_grad(Problem& pr, std::vector<double>* x, const std::vector<uint8_t>* keep, double p) {
  const double h = 1e-5;
  std::vector<double> g(x->size(), 0.0);
  for (size_t i = 0; i < x->size(); ++i) {
    const double x0 = (*x)[i];
    if (!std::isfinite(x0)) continue;
    (*x)[i] = x0 + h;
    const double lp = loss(pr, keep, p);
    (*x)[i] = x0 - h;
    const double lm = loss(pr, keep, p);
    (*x)[i] = x0;
    g[i] = (lp - lm) / (2 * h);
  }
  return g;
}

void check_grads(Problem& pr, const std::vector<uint8_t>* keep, double p, const std::string& what) {
  SCOPED_TRACE(what);
  const RefGrads g = reference_backward(pr.s, pr.q, pr.k, pr.v, pr.bias, pr.scale, pr.dout, keep, p);
  EXPECT_LT(relative_error(g.dq, numeric_grad(pr, &pr.q, keep, p)), 1e-6) << "dq";
  EXPECT_LT(relative_error(g.dk, numeric_grad(pr, &pr.k, keep, p)), 1e-6) << "dk";
  EXPECT_LT(relative_error(g.dv, numeric_grad(pr, &pr.v, keep, p)), 1e-6) << "dv";
  if (!pr.bias.empty()) {
    EXPECT_LT(relative_error(g.dbias, numeric_grad(pr, &pr.bias, keep, p)), 1e-6) << "dbias";
    for (size_t i = 0; i < pr.bias.size(); ++i)
      if (pr.bias[i] == -kInf) EXPECT_EQ(g.dbias[i], 0.0) << "dbias at a masked entry " << i;
  }
}

RefShape random_shape(std::mt19937_64& rng) {
  auto pick = [&](int lo, int hi) { return int64_t(std::uniform_int_distribution<int>(lo, hi)(rng)); };
  return RefShape{pick(1, 2), pick(1, 7), pick(1, 7), pick(1, 2), pick(1, 8), pick(1, 8)};
}

TEST(ReferenceGrad, MatchesFiniteDifferences) {
  std::mt19937_64 rng(1234);
  for (int trial = 0; trial < 24; ++trial) {
    const RefShape s = random_shape(rng);
    const bool causal = trial % 2 == 1, with_bias = (trial / 2) % 2 == 1;
    Problem pr = make_problem(rng, s, causal, with_bias);
    check_grads(pr, nullptr, 0.0,
                "trial " + std::to_string(trial) + " B" + std::to_string(s.B) + " Mq" + std::to_string(s.Mq) + " Mkv" +
                    std::to_string(s.Mkv) + " H" + std::to_string(s.H) + " K" + std::to_string(s.K) + " Kv" +
                    std::to_string(s.Kv) + (causal ? " causal" : "") + (with_bias ? " bias" : ""));
  }
}

TEST(ReferenceGrad, FullyMaskedRowsHaveZeroGradient) {
  std::mt19937_64 rng(7);
  // Bottom-right causal with Mq > Mkv masks the first Mq − Mkv query rows completely.
  Problem pr = make_problem(rng, RefShape{2, 6, 3, 2, 5, 4}, /*causal=*/true, /*with_bias=*/true);
  check_grads(pr, nullptr, 0.0, "masked rows");
  const RefGrads g = reference_backward(pr.s, pr.q, pr.k, pr.v, pr.bias, pr.scale, pr.dout);
  const RefShape& s = pr.s;
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t i = 0; i < s.Mq - s.Mkv; ++i)
      for (int64_t h = 0; h < s.H; ++h) {
        for (int64_t d = 0; d < s.K; ++d) EXPECT_EQ(g.dq[size_t(((b * s.Mq + i) * s.H + h) * s.K + d)], 0.0);
        for (int64_t j = 0; j < s.Mkv; ++j) EXPECT_EQ(g.dbias[size_t(((b * s.H + h) * s.Mq + i) * s.Mkv + j)], 0.0);
      }
  for (double x : g.dq) EXPECT_TRUE(std::isfinite(x));
  for (double x : g.dk) EXPECT_TRUE(std::isfinite(x));
  for (double x : g.dv) EXPECT_TRUE(std::isfinite(x));
}

TEST(ReferenceGrad, WithDropoutMatchesFiniteDifferences) {
  std::mt19937_64 rng(99);
  for (int trial = 0; trial < 12; ++trial) {
    const RefShape s = random_shape(rng);
    const bool causal = trial % 2 == 1, with_bias = (trial / 2) % 2 == 1;
    Problem pr = make_problem(rng, s, causal, with_bias);
    const double p = trial % 3 == 0 ? 0.5 : 0.2;
    const auto keep = dropout_keep_mask(1000 + uint64_t(trial), 3, s.B, s.H, s.Mq, s.Mkv, p);
    check_grads(pr, &keep, p, "dropout trial " + std::to_string(trial));
  }
}

TEST(ReferenceGrad, DropoutForwardDefinition) {
  std::mt19937_64 rng(5);
  Problem pr = make_problem(rng, RefShape{2, 5, 7, 2, 4, 3}, true, true);
  const RefResult plain = reference_attention(pr.s, pr.q, pr.k, pr.v, pr.bias, pr.scale);
  // All kept, p = 0: identical to the plain forward.
  const std::vector<uint8_t> all(size_t(2 * 2 * 5 * 7), 1);
  const RefResult same = reference_attention_dropout(pr.s, pr.q, pr.k, pr.v, pr.bias, pr.scale, all, 0.0);
  EXPECT_LT(relative_error(same.out, plain.out), 1e-15);
  EXPECT_EQ(same.lse, plain.lse);
  // With p > 0 the lse stays that of the undropped softmax, and nothing kept gives out = 0.
  const std::vector<uint8_t> none(all.size(), 0);
  const RefResult dropped = reference_attention_dropout(pr.s, pr.q, pr.k, pr.v, pr.bias, pr.scale, none, 0.3);
  EXPECT_EQ(dropped.lse, plain.lse);
  for (double x : dropped.out) EXPECT_EQ(x, 0.0);
  // All kept with p: out is the plain output scaled by 1 / (1 − p).
  const RefResult scaled = reference_attention_dropout(pr.s, pr.q, pr.k, pr.v, pr.bias, pr.scale, all, 0.25);
  std::vector<double> want = plain.out;
  for (auto& x : want) x /= 0.75;
  EXPECT_LT(relative_error(scaled.out, want), 1e-14);
}

// Random123's known-answer vectors (tests/kat_vectors), cross-checked against independent
// implementations (e.g. TensorFlow's stateless-random tests).
TEST(Philox, KnownAnswers) {
  using A4 = std::array<uint32_t, 4>;
  EXPECT_EQ(philox4x32_10({0, 0, 0, 0}, {0, 0}), (A4{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}));
  EXPECT_EQ(philox4x32_10({0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff}),
            (A4{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}));
  EXPECT_EQ(philox4x32_10({0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0}),
            (A4{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}));
}

TEST(Dropout, Threshold) {
  EXPECT_EQ(dropout_threshold(0.0), 0u);
  EXPECT_EQ(dropout_threshold(0.5), uint64_t(1) << 31);
  EXPECT_EQ(dropout_threshold(0.1), uint64_t(std::ceil(0.1 * 4294967296.0)));
  EXPECT_EQ(dropout_threshold(1.0), uint64_t(1) << 32);
}

TEST(Dropout, KeptFractionWithinFourSigma) {
  const int64_t B = 2, H = 2, Mq = 512, Mkv = 512;  // 1,048,576 elements
  for (double p : {0.1, 0.5}) {
    const auto keep = dropout_keep_mask(0x0123456789abcdefull, 17, B, H, Mq, Mkv, p);
    const double n = double(keep.size());
    ASSERT_GE(n, 1e6);
    double kept = 0;
    for (uint8_t x : keep) kept += x;
    const double sigma = std::sqrt(n * p * (1 - p));
    EXPECT_LT(std::fabs(kept - n * (1 - p)), 4 * sigma) << "p=" << p << " kept " << kept << " of " << n;
  }
}

TEST(Dropout, DeterministicPerSeedAndOffset) {
  const auto a = dropout_keep_mask(42, 7, 2, 3, 33, 65, 0.3);
  EXPECT_EQ(a, dropout_keep_mask(42, 7, 2, 3, 33, 65, 0.3));
  EXPECT_NE(a, dropout_keep_mask(42, 8, 2, 3, 33, 65, 0.3));
  EXPECT_NE(a, dropout_keep_mask(43, 7, 2, 3, 33, 65, 0.3));
  const auto all = dropout_keep_mask(42, 7, 1, 1, 9, 11, 0.0);
  for (uint8_t x : all) EXPECT_EQ(x, 1);
}

TEST(Dropout, LayoutMatchesDocumentedCounter) {
  // The contract in philox.h, element by element, with 64-bit seed and offset halves non-zero.
  const uint64_t seed = 0xfeedface12345678ull, offset = 0x0000000300000005ull;
  const int64_t B = 2, H = 2, Mq = 5, Mkv = 7;  // 140 elements: not a multiple of 4 per row
  const double p = 0.4;
  const auto keep = dropout_keep_mask(seed, offset, B, H, Mq, Mkv, p);
  ASSERT_EQ(keep.size(), size_t(B * H * Mq * Mkv));
  for (uint64_t e = 0; e < keep.size(); ++e) {
    const uint64_t g = e / 4;
    const auto r = philox4x32_10({uint32_t(g), uint32_t(g >> 32), uint32_t(offset), uint32_t(offset >> 32)},
                                 {uint32_t(seed), uint32_t(seed >> 32)});
    EXPECT_EQ(keep[e], uint8_t(double(r[e % 4]) * std::ldexp(1.0, -32) >= p ? 1 : 0)) << e;
  }
}

}  // namespace
}  // namespace jitattn::test
