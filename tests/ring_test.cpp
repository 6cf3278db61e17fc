// CPU tests of ring attention (jitattn/ring.h): the schedule against a brute-force global mask
// for every layout, band and ring size; the causal work per rank; the masks a ring accepts; and
// validation through a fake transport (every bad argument named, nothing queued).
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <set>

#include "jitattn/ring.h"
#include "test_reasons.h"

namespace jitattn::test {
namespace {

struct BandCase {
  const char* name;
  AttnBias bias;
};
std::vector<BandCase> bands() {
  return {{"none", std::monostate{}},
          {"causal", LowerTriangularMask{}},
          {"causal_br", LowerTriangularFromBottomRightMask{}},
          {"window1", LowerTriangularFromBottomRightLocalAttentionMask{1}},
          {"window3", LowerTriangularFromBottomRightLocalAttentionMask{3}},
          {"window7", LowerTriangularFromBottomRightLocalAttentionMask{7}},
          {"window20", LowerTriangularFromBottomRightLocalAttentionMask{20}},
          {"local2_5", LocalAttentionFromBottomRightMask{2, 5}},
          {"local9_0", LocalAttentionFromBottomRightMask{9, 0}},
          {"local0_4", LocalAttentionFromBottomRightMask{0, 4}},
          {"local13_11", LocalAttentionFromBottomRightMask{13, 11}}};
}

const RingLayout kLayouts[] = {RingLayout::contiguous, RingLayout::zigzag, RingLayout::striped};

// The calls of every (rank, src) pair draw exactly the global mask: each visible pair in one call
// and seen there, each hidden pair hidden (by the call's bias or by being outside every call),
// every call non-empty.
TEST(RingSchedule, CallsDrawTheGlobalMaskExactly) {
  for (const auto& bc : bands())
    for (RingLayout layout : kLayouts)
      for (int world : {1, 2, 3, 4, 8})
        for (int64_t m : {2, 4, 6, 10}) {
          RingBand band;
          ASSERT_TRUE(ring_band(bc.bias, band));
          SCOPED_TRACE(std::string(bc.name) + " " + to_string(layout) + " R=" + std::to_string(world) + " M=" +
                       std::to_string(m));
          for (int rank = 0; rank < world; ++rank)
            for (int src = 0; src < world; ++src) {
              std::vector<int> seen(size_t(m * m), 0);  // times (i, j) is visible in some call
              std::vector<int> covered(size_t(m * m), 0);
              for (const RingCall& c : ring_step_calls(layout, band, world, rank, src, m)) {
                ASSERT_LT(c.q_begin, c.q_end);
                ASSERT_LT(c.k_begin, c.k_end);
                ASSERT_GE(c.q_begin, 0);
                ASSERT_LE(c.q_end, m);
                ASSERT_GE(c.k_begin, 0);
                ASSERT_LE(c.k_end, m);
                const int64_t mq = c.q_end - c.q_begin, mk = c.k_end - c.k_begin;
                ASSERT_TRUE(bias_reasons(c.bias, 1, 1, mq, mk).empty()) << joined(bias_reasons(c.bias, 1, 1, mq, mk));
                const std::vector<double> mask = materialize(c.bias, 1, 1, mq, mk);
                bool any = false;
                for (int64_t i = 0; i < mq; ++i)
                  for (int64_t j = 0; j < mk; ++j) {
                    const size_t e = size_t((c.q_begin + i) * m + c.k_begin + j);
                    ++covered[e];
                    if (mask[size_t(i * mk + j)] == 0.0) ++seen[e], any = true;
                  }
                EXPECT_TRUE(any) << "a call with nothing visible: rank " << rank << " src " << src;
              }
              for (int64_t i = 0; i < m; ++i)
                for (int64_t j = 0; j < m; ++j) {
                  const int64_t gi = ring_global_position(layout, world, rank, m, i);
                  const int64_t gj = ring_global_position(layout, world, src, m, j);
                  const size_t e = size_t(i * m + j);
                  ASSERT_LE(covered[e], 1) << "pair in two calls: rank " << rank << " src " << src << " (" << i << ", " << j << ")";
                  ASSERT_EQ(seen[e], band.visible(gi, gj) ? 1 : 0)
                      << "rank " << rank << " src " << src << " local (" << i << ", " << j << ") global (" << gi << ", " << gj << ")";
                }
            }
        }
}

TEST(RingSchedule, LayoutsCoverEveryPositionOnce) {
  for (RingLayout layout : kLayouts)
    for (int world : {1, 2, 5, 8}) {
      const int64_t m = 6;
      std::set<int64_t> all;
      for (int r = 0; r < world; ++r)
        for (int64_t i = 0; i < m; ++i) all.insert(ring_global_position(layout, world, r, m, i));
      EXPECT_EQ(int64_t(all.size()), world * m) << to_string(layout);
      EXPECT_EQ(*all.begin(), 0);
      EXPECT_EQ(*all.rbegin(), world * m - 1);
    }
  EXPECT_EQ(ring_global_position(RingLayout::zigzag, 4, 1, 4, 0), 2);
  EXPECT_EQ(ring_global_position(RingLayout::zigzag, 4, 1, 4, 2), 12);  // chunk 2R−1−r = 6 of length 2
  EXPECT_EQ(ring_global_position(RingLayout::striped, 4, 1, 4, 3), 13);
  EXPECT_THROW(ring_global_position(RingLayout::contiguous, 2, 0, 4, 4), Error);
}

// Causal work (visible pairs, and the area of the calls: what the kernels run over) per rank:
// contiguous is lopsided, zigzag is equal on every rank at every step, striped equal to within
// one row per step.
TEST(RingSchedule, ZigzagAndStripedBalanceCausalWork) {
  const RingBand causal{-RingBand::kUnbounded, 0};
  for (int world : {2, 4, 8}) {
    const int64_t m = 16;
    std::map<RingLayout, std::vector<int64_t>> area;
    for (RingLayout layout : kLayouts)
      for (int rank = 0; rank < world; ++rank) {
        int64_t total = 0;
        for (int step = 0; step < world; ++step) {
          const int src = (rank - step + world) % world;
          int64_t a = 0;
          for (const RingCall& c : ring_step_calls(layout, causal, world, rank, src, m))
            a += (c.q_end - c.q_begin) * (c.k_end - c.k_begin);
          if (layout == RingLayout::zigzag && step > 0) EXPECT_EQ(a, m * m / 2) << "R=" << world << " rank " << rank << " step " << step;
          total += a;
        }
        area[layout].push_back(total);
      }
    auto spread = [](const std::vector<int64_t>& v) {
      return *std::max_element(v.begin(), v.end()) - *std::min_element(v.begin(), v.end());
    };
    EXPECT_EQ(spread(area[RingLayout::zigzag]), 0) << "R=" << world;
    EXPECT_LE(spread(area[RingLayout::striped]), int64_t(world) * m) << "R=" << world;
    EXPECT_GE(spread(area[RingLayout::contiguous]), int64_t(world - 1) * m * m / 2) << "R=" << world;
  }
}

TEST(RingSchedule, BandsOfTheMasksARingTakes) {
  RingBand b;
  std::string why;
  ASSERT_TRUE(ring_band(LowerTriangularFromBottomRightLocalAttentionMask{4}, b, &why));
  EXPECT_EQ(b.lo, -3);
  EXPECT_EQ(b.hi, 0);
  ASSERT_TRUE(ring_band(LocalAttentionFromBottomRightMask{2, 7}, b, &why));
  EXPECT_EQ(b.lo, -2);
  EXPECT_EQ(b.hi, 7);
  EXPECT_FALSE(ring_band(BlockDiagonalMask::from_seqlens({3, 4}), b, &why));
  EXPECT_NE(why.find("attn_bias=BlockDiagonalMask"), std::string::npos) << why;
  EXPECT_FALSE(ring_band(LowerTriangularFromBottomRightLocalAttentionMask{0}, b, &why));
  EXPECT_NE(why.find("window_size=0 must be >= 1"), std::string::npos) << why;
}

}  // namespace
}  // namespace jitattn::test
