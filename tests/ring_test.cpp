// CPU tests of ring attention (jitattn/ring.h): the schedule against a brute-force global mask
// for every layout, band and ring size; the causal work per rank; the masks a ring accepts; and
// validation through a fake transport (every bad argument named, nothing queued).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <map>
#include <set>
#include <variant>

#include "jitattn/ring.h"
#include "gpu_support.h"
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

// Documents over a sequence of n positions: lengths cut at random-looking but fixed places,
// empty and one-token documents included.
std::vector<int32_t> document_lengths(int64_t n) {
  std::vector<int32_t> lens;
  const int32_t pattern[] = {5, 1, 0, 9, 3, 17, 2, 0, 7, 1, 11, 4};
  int64_t used = 0;
  for (size_t i = 0; used < n; ++i) {
    const int32_t l = int32_t(std::min<int64_t>(pattern[i % 12], n - used));
    lens.push_back(l);
    used += l;
  }
  return lens;
}

const RingLayout kLayouts[] = {RingLayout::contiguous, RingLayout::zigzag, RingLayout::striped};

// The calls of one (rank, src) pair draw exactly the global mask: each visible pair in one call
// and seen there, each hidden pair hidden (by the call's bias or by being outside every call),
// every call non-empty.
void check_pair(RingLayout layout, const RingMask& mask, int world, int rank, int src, int64_t m) {
  std::vector<int> seen(size_t(m * m), 0);  // times (i, j) is visible in some call
  std::vector<int> covered(size_t(m * m), 0);
  for (const RingCall& c : ring_step_calls(layout, mask, world, rank, src, m)) {
    ASSERT_LT(c.q_begin, c.q_end);
    ASSERT_LT(c.k_begin, c.k_end);
    ASSERT_GE(c.q_begin, 0);
    ASSERT_LE(c.q_end, m);
    ASSERT_GE(c.k_begin, 0);
    ASSERT_LE(c.k_end, m);
    const int64_t mq = c.q_end - c.q_begin, mk = c.k_end - c.k_begin;
    ASSERT_TRUE(bias_reasons(c.bias, 1, 1, mq, mk).empty()) << joined(bias_reasons(c.bias, 1, 1, mq, mk));
    const std::vector<double> dense = materialize(c.bias, 1, 1, mq, mk);
    bool any = false;
    for (int64_t i = 0; i < mq; ++i)
      for (int64_t j = 0; j < mk; ++j) {
        const size_t e = size_t((c.q_begin + i) * m + c.k_begin + j);
        ++covered[e];
        if (dense[size_t(i * mk + j)] == 0.0) ++seen[e], any = true;
      }
    EXPECT_TRUE(any) << "a call with nothing visible: rank " << rank << " src " << src;
  }
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < m; ++j) {
      const int64_t gi = ring_global_position(layout, world, rank, m, i);
      const int64_t gj = ring_global_position(layout, world, src, m, j);
      const size_t e = size_t(i * m + j);
      ASSERT_LE(covered[e], 1) << "pair in two calls: rank " << rank << " src " << src << " (" << i << ", " << j << ")";
      ASSERT_EQ(seen[e], mask.visible(gi, gj) ? 1 : 0)
          << "rank " << rank << " src " << src << " local (" << i << ", " << j << ") global (" << gi << ", " << gj << ")";
    }
}

TEST(RingSchedule, CallsDrawTheGlobalMaskExactly) {
  for (const auto& bc : bands())
    for (RingLayout layout : kLayouts)
      for (int world : {1, 2, 3, 4, 8})
        for (int64_t m : {2, 4, 6, 10}) {
          RingMask mask;
          ASSERT_TRUE(ring_mask(bc.bias, mask));
          SCOPED_TRACE(std::string(bc.name) + " " + to_string(layout) + " R=" + std::to_string(world) + " M=" +
                       std::to_string(m));
          for (int rank = 0; rank < world; ++rank)
            for (int src = 0; src < world; ++src) check_pair(layout, mask, world, rank, src, m);
        }
}

TEST(RingSchedule, DocumentsAreSlicedPerChunkPair) {
  for (bool causal : {false, true})
    for (RingLayout layout : {RingLayout::contiguous, RingLayout::zigzag})
      for (int world : {1, 2, 3, 4, 8})
        for (int64_t m : {2, 6, 10}) {
          const auto lens = document_lengths(m * world);
          const AttnBias bias = causal ? AttnBias{BlockDiagonalCausalMask::from_seqlens(lens)}
                                       : AttnBias{BlockDiagonalMask::from_seqlens(lens)};
          RingMask mask;
          ASSERT_TRUE(ring_mask(bias, mask));
          ASSERT_EQ(mask.doc_start.back(), m * world);
          SCOPED_TRACE(std::string(causal ? "causal " : "") + "documents " + to_string(layout) + " R=" +
                       std::to_string(world) + " M=" + std::to_string(m));
          for (int rank = 0; rank < world; ++rank)
            for (int src = 0; src < world; ++src) check_pair(layout, mask, world, rank, src, m);
        }
  // One document over everything is a plain (causal) mask on every pair.
  RingMask one;
  ASSERT_TRUE(ring_mask(BlockDiagonalCausalMask::from_seqlens({16}), one));
  for (const RingCall& c : ring_step_calls(RingLayout::zigzag, one, 2, 0, 0, 8))
    EXPECT_TRUE(std::holds_alternative<LowerTriangularMask>(c.bias) || std::holds_alternative<std::monostate>(c.bias));
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
  RingMask causal;
  causal.hi = 0;
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
  RingMask b;
  std::string why;
  ASSERT_TRUE(ring_mask(LowerTriangularFromBottomRightLocalAttentionMask{4}, b, &why));
  EXPECT_EQ(b.lo, -3);
  EXPECT_EQ(b.hi, 0);
  ASSERT_TRUE(ring_mask(LocalAttentionFromBottomRightMask{2, 7}, b, &why));
  EXPECT_EQ(b.lo, -2);
  EXPECT_EQ(b.hi, 7);
  EXPECT_FALSE(ring_mask(BlockDiagonalCausalFromBottomRightMask{}, b, &why));
  EXPECT_NE(why.find("attn_bias=BlockDiagonalCausalFromBottomRightMask"), std::string::npos) << why;
  EXPECT_FALSE(ring_mask(BlockDiagonalMask::from_seqlens({3, 4}, {4, 3}), b, &why));
  EXPECT_NE(why.find("q_seqlen must equal kv_seqlen"), std::string::npos) << why;
  EXPECT_FALSE(ring_mask(LowerTriangularFromBottomRightLocalAttentionMask{0}, b, &why));
  EXPECT_NE(why.find("window_size=0 must be >= 1"), std::string::npos) << why;
}

// ---- validation, through a fake transport ------------------------------------------------------

// Records shifts; never touches a device.
class FakeTransport final : public RingTransport {
 public:
  FakeTransport(int world, std::vector<int> ranks, std::vector<int> devices)
      : world_(world), ranks_(std::move(ranks)), devices_(std::move(devices)) {}
  int world_size() const override { return world_; }
  std::vector<int> local_ranks() const override { return ranks_; }
  std::vector<int> local_devices() const override { return devices_; }
  void shift(const std::vector<std::vector<Buffer>>&, const std::vector<void*>&) override { ++shifts; }
  int shifts = 0;

 private:
  int world_;
  std::vector<int> ranks_, devices_;
};

TensorView tensor(DType dt, std::initializer_list<int64_t> shape) { return TensorView::make(fake(), dt, shape); }

RingForwardArgs forward_args(int64_t M = 8, int64_t H = 2, int64_t K = 64, DType dt = DType::bf16) {
  RingForwardArgs a;
  a.q = tensor(dt, {2, M, H, K});
  a.k = tensor(dt, {2, M, H, K});
  a.v = tensor(dt, {2, M, H, K});
  a.out = tensor(dt, {2, M, H, K});
  a.lse = tensor(DType::f32, {2, H, M});
  return a;
}

RingBackwardArgs backward_args(int64_t M = 8, int64_t H = 2, int64_t K = 64, DType dt = DType::bf16) {
  RingBackwardArgs a;
  for (TensorView* t : {&a.grad, &a.out, &a.q, &a.k, &a.v, &a.dq, &a.dk, &a.dv}) *t = tensor(dt, {2, M, H, K});
  a.lse = tensor(DType::f32, {2, H, M});
  return a;
}

TEST(RingValidation, AGoodCallHasNoReasons) {
  FakeTransport t(4, {0, 1, 2, 3}, {0, 0, 0, 0});
  std::vector<RingForwardArgs> f(4, forward_args());
  for (auto& a : f) a = forward_args();
  RingOptions o;
  o.layout = RingLayout::zigzag;
  EXPECT_TRUE(ring_forward_not_supported_reasons(t, f, LowerTriangularMask{}, o).empty())
      << joined(ring_forward_not_supported_reasons(t, f, LowerTriangularMask{}, o));
  std::vector<RingBackwardArgs> b(4);
  for (auto& a : b) a = backward_args();
  EXPECT_TRUE(ring_backward_not_supported_reasons(t, b, LowerTriangularMask{}, o).empty())
      << joined(ring_backward_not_supported_reasons(t, b, LowerTriangularMask{}, o));
}

TEST(RingValidation, EveryBadArgumentIsNamed) {
  FakeTransport t(2, {0, 1}, {0, 0});
  auto reasons = [&](std::vector<RingForwardArgs> f, const AttnBias& bias = std::monostate{}, RingOptions o = {}) {
    const auto r = ring_forward_not_supported_reasons(t, f, bias, o);
    EXPECT_FALSE(r.empty());
    try {  // the call throws the same reasons, before the transport moves anything
      ring_attention_forward(t, f, bias, o);
      ADD_FAILURE() << "ring_attention_forward did not throw";
    } catch (const Error& e) {
      EXPECT_EQ(e.reasons(), r);
    }
    EXPECT_EQ(t.shifts, 0);
    return r;
  };
  auto r = reasons({forward_args()});
  EXPECT_TRUE(mentions(r, "ranks: 1 ranks' tensors given, but the transport drives 2 local rank(s)")) << joined(r);
  r = reasons({forward_args(), forward_args()}, BlockDiagonalGappyKeysMask::from_seqlens({8, 8}, {0, 8, 16}, {8, 8}));
  EXPECT_TRUE(mentions(r, "attn_bias=BlockDiagonalGappyKeysMask: ring attention takes")) << joined(r);
  {
    RingOptions st;
    st.layout = RingLayout::striped;
    r = reasons({forward_args(), forward_args()}, BlockDiagonalMask::from_seqlens({10, 7}), st);
    EXPECT_TRUE(mentions(r, "documents need the contiguous or zigzag layout")) << joined(r);
    EXPECT_TRUE(mentions(r, "q.shape[0]=2 must be 1 with documents")) << joined(r);
    EXPECT_TRUE(mentions(r, "the documents cover 17 positions but the sequence has 16 (2 ranks of 8)")) << joined(r);
  }
  RingOptions zz;
  zz.layout = RingLayout::zigzag;
  r = reasons({forward_args(7), forward_args(7)}, LowerTriangularMask{}, zz);
  EXPECT_TRUE(mentions(r, "q.shape[1]=7 must be even for the zigzag layout")) << joined(r);
  r = reasons({forward_args(8), forward_args(16)});
  EXPECT_TRUE(mentions(r, "ranks[1].q.shape=[2, 16, 2, 64] must equal ranks[0].q.shape=[2, 8, 2, 64]")) << joined(r);
  {
    auto a = forward_args();
    a.k = TensorView::make(fake(), DType::bf16, {2, 8, 2, 64}, {8 * 2 * 128, 2 * 128, 128, 1});  // a slice of packed K/V
    r = reasons({a, forward_args()});
    EXPECT_TRUE(mentions(r, "ranks[0].k must be contiguous: key blocks travel the ring as bytes")) << joined(r);
  }
  {
    auto a = forward_args();
    a.k.shape[1] = 4, a.v.shape[1] = 4;
    r = reasons({a, a});
    EXPECT_TRUE(mentions(r, "ranks[0].k.shape[1]=4 must equal q.shape[1]=8")) << joined(r);
  }
  {
    auto a = forward_args();
    a.q.device = a.k.device = a.v.device = a.out.device = a.lse.device = 1;
    r = reasons({forward_args(), a});
    EXPECT_TRUE(mentions(r, "ranks[1].q is on device 1 but the transport's local rank 1 is on device 0")) << joined(r);
  }
  r = reasons({forward_args(8, 2, 100), forward_args(8, 2, 100)});
  EXPECT_TRUE(mentions(r, "ranks[0]: ")) << joined(r);
  EXPECT_TRUE(mentions(r, "100")) << joined(r);
  {
    auto a = forward_args();
    a.out.dtype = DType::f16;
    r = reasons({a, a});
    EXPECT_TRUE(mentions(r, "ranks[0].out.dtype=f16 must be q's dtype (bf16) or f32")) << joined(r);
  }
  {
    auto a = forward_args();
    a.lse = {};
    a.lse.ndim = 3;
    r = reasons({a, a});
    EXPECT_TRUE(mentions(r, "ranks[0].lse is undefined")) << joined(r);
  }
  {
    auto a = forward_args();
    a.q = tensor(DType::bf16, {2, 8, 64});
    r = reasons({a, a});
    EXPECT_TRUE(mentions(r, "ranks[0].q must be 4-D, got 3-D")) << joined(r);
  }
}

TEST(RingValidation, BackwardNamesTheGradients) {
  FakeTransport t(2, {0, 1}, {0, 0});
  auto a = backward_args();
  a.dk = tensor(DType::bf16, {2, 8, 2, 32});
  std::vector<RingBackwardArgs> b{a, backward_args()};
  const auto r = ring_backward_not_supported_reasons(t, b, LowerTriangularMask{});
  EXPECT_TRUE(mentions(r, "ranks[0]: dk.shape=[2, 8, 2, 32] must match its input")) << joined(r);
  EXPECT_THROW(ring_attention_backward(t, b, LowerTriangularMask{}), Error);
  EXPECT_EQ(t.shifts, 0);
}

TEST(RingValidation, TransportRanksAreChecked) {
  FakeTransport t(2, {0, 5}, {0, 0});
  const auto r = ring_forward_not_supported_reasons(t, {forward_args(), forward_args()}, std::monostate{});
  EXPECT_TRUE(mentions(r, "transport.local_ranks() has rank 5 outside [0, 2)")) << joined(r);
}

// Without a GPU a valid call fails on the driver, before anything is sent.
TEST(RingValidation, NoDriverMeansNoShift) {
  if (gpu_available()) GTEST_SKIP() << "a GPU is present: the fake pointers would be launched on";
  FakeTransport t(2, {0, 1}, {0, 0});
  try {
    ring_attention_forward(t, {forward_args(), forward_args()}, LowerTriangularMask{});
  } catch (const Error& e) {
    EXPECT_TRUE(e.kind() == ErrorKind::cuda || e.kind() == ErrorKind::out_of_memory) << e.what();
  }
  EXPECT_EQ(t.shifts, 0);
}

TEST(RingTransports, BadConstructionAndShiftsAreNamed) {
  EXPECT_THROW(LocalRing(0), Error);
  try {
    LocalRing ring(0);
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::invalid_argument);
    EXPECT_TRUE(mentions(e.reasons(), "LocalRing: world=0 must be >= 1")) << joined(e.reasons());
  }
  LocalRing ring(2);
  EXPECT_EQ(ring.local_ranks(), (std::vector<int>{0, 1}));
  EXPECT_EQ(ring.local_devices(), (std::vector<int>{0, 0}));
  int x = 0, y = 0;
  try {  // sizes that do not pair up are refused before any device work
    ring.shift({{{&x, &y, 4}}, {{&x, &y, 8}}}, {nullptr, nullptr});
    ADD_FAILURE() << "shift did not throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::invalid_argument);
    EXPECT_TRUE(mentions(e.reasons(), "shift: buffers[1][0].bytes=8 must equal buffers[0][0].bytes=4")) << joined(e.reasons());
  }
  try {
    ring.shift({{{&x, &y, 4}}}, {nullptr});
    ADD_FAILURE() << "shift did not throw";
  } catch (const Error& e) {
    EXPECT_TRUE(mentions(e.reasons(), "shift: buffers for 1 ranks, the transport drives 2")) << joined(e.reasons());
  }
  // No communicator (and, on a machine without NCCL, no library): a clear error either way.
  try {
    NcclRing nccl({nullptr});
    ADD_FAILURE() << "NcclRing did not throw";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_TRUE(what.find("NCCL") != std::string::npos || what.find("comms[0] is null") != std::string::npos) << what;
  }
}

}  // namespace
}  // namespace jitattn::test
