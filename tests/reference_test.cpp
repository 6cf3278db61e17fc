// The reference and materialize() against hand-worked examples.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "jitattn/bias.h"
#include "reference.h"

namespace jitattn::test {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

TEST(Materialize, LowerTriangular4x5) {
  // xFormers: LowerTriangularMask is top-left aligned.
  const auto m = materialize(LowerTriangularMask{}, 1, 1, 4, 5);
  const double x = -kInf;
  const std::vector<double> want = {0, x, x, x, x,  //
                                    0, 0, x, x, x,  //
                                    0, 0, 0, x, x,  //
                                    0, 0, 0, 0, x};
  EXPECT_EQ(m, want);
}

TEST(Materialize, FromBottomRight4x5) {
  // xFormers' docs: the last query sees every key.
  const auto m = materialize(LowerTriangularFromBottomRightMask{}, 1, 1, 4, 5);
  const double x = -kInf;
  const std::vector<double> want = {0, 0, x, x, x,  //
                                    0, 0, 0, x, x,  //
                                    0, 0, 0, 0, x,  //
                                    0, 0, 0, 0, 0};
  EXPECT_EQ(m, want);
}

TEST(Materialize, FromBottomRightWithMoreQueriesThanKeysMasksLeadingRows) {
  const auto m = materialize(LowerTriangularFromBottomRightMask{}, 1, 1, 4, 2);
  const double x = -kInf;
  const std::vector<double> want = {x, x, x, x, 0, x, 0, 0};
  EXPECT_EQ(m, want);
}

TEST(Materialize, TensorBiasBroadcastsBatchAndHeads) {
  std::vector<float> bias = {1, 2, 3, 4, 5, 6};  // [1, 1, 2, 3]
  const auto t = TensorView::make(bias.data(), DType::f32, {1, 1, 2, 3}, {}, TensorView::kHost);
  const auto m = materialize(TensorBias{t}, 2, 3, 2, 3);
  ASSERT_EQ(m.size(), 2u * 3 * 2 * 3);
  for (int bh = 0; bh < 6; ++bh)
    for (int e = 0; e < 6; ++e) EXPECT_EQ(m[size_t(bh * 6 + e)], bias[size_t(e)]);
}

TEST(Reference, TwoKeysByHand) {
  // One query [1, 0], keys [1, 0] and [0, 1], values [1, 2] and [3, 4], scale 1:
  // logits 1 and 0, p = [e/(e+1), 1/(e+1)].
  const RefShape s{1, 1, 2, 1, 2, 2};
  const auto r = reference_attention(s, {1, 0}, {1, 0, 0, 1}, {1, 2, 3, 4}, {}, 1.0);
  const double e = std::exp(1.0), p0 = e / (e + 1), p1 = 1 / (e + 1);
  EXPECT_NEAR(r.out[0], p0 * 1 + p1 * 3, 1e-12);
  EXPECT_NEAR(r.out[1], p0 * 2 + p1 * 4, 1e-12);
  EXPECT_NEAR(r.lse[0], std::log(e + 1), 1e-12);
}

TEST(Reference, FullyMaskedRowGivesZeroAndMinusInfinity) {
  const RefShape s{1, 1, 2, 1, 2, 2};
  const auto r = reference_attention(s, {1, 0}, {1, 0, 0, 1}, {1, 2, 3, 4}, {-kInf, -kInf}, 1.0);
  EXPECT_EQ(r.out[0], 0.0);
  EXPECT_EQ(r.out[1], 0.0);
  EXPECT_EQ(r.lse[0], -kInf);
}

TEST(Reference, SixteenBitEncodingsRoundToNearestEven) {
  EXPECT_EQ(to_bits(1.0, DType::f16), 0x3c00);
  EXPECT_EQ(to_bits(-2.0, DType::f16), 0xc000);
  EXPECT_EQ(to_bits(65504.0, DType::f16), 0x7bff);
  EXPECT_EQ(to_bits(1e6, DType::f16), 0x7c00);
  EXPECT_EQ(to_bits(std::ldexp(1.0, -24), DType::f16), 0x0001);
  EXPECT_EQ(to_bits(1.0 + std::ldexp(1.0, -11), DType::f16), 0x3c00);  // tie → even
  EXPECT_EQ(to_bits(1.0, DType::bf16), 0x3f80);
  EXPECT_EQ(to_bits(-0.5, DType::bf16), 0xbf00);
  for (uint16_t bits : {0x3c00, 0x0001, 0x7bff, 0xbc01, 0x3555})
    EXPECT_EQ(to_bits(from_bits(bits, DType::f16), DType::f16), bits);
  for (uint16_t bits : {0x3f80, 0x0001, 0xc2f7, 0x7f7f})
    EXPECT_EQ(to_bits(from_bits(bits, DType::bf16), DType::bf16), bits);
}

TEST(Reference, RelativeErrorRejectsNaNAndMismatchedInfinities) {
  EXPECT_EQ(relative_error({1, 2}, {1, 2}), 0.0);
  EXPECT_NEAR(relative_error({1, 2.2}, {1, 2}), 0.2 / std::sqrt(5.0), 1e-12);
  EXPECT_EQ(relative_error({std::nan(""), 2}, {1, 2}), kInf);
  EXPECT_EQ(relative_error({-kInf, 2}, {-kInf, 2}), 0.0);
  EXPECT_EQ(relative_error({0, 2}, {-kInf, 2}), kInf);
}

}  // namespace
}  // namespace jitattn::test
