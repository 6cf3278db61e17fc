// The xFormers bias family on the CPU: materialize() of every kind against small matrices worked
// out by hand (written '0' = visible, 'x' = -inf, or numerically for ALiBi), the layouts'
// constructors, make_* / add_* conversions, split/from_tensor_list, and one bias_reasons() test
// per rule.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "api/src/plan.h"
#include "jit/cuda_driver.h"
#include "jit/signature.h"
#include "jitattn/bias.h"
#include "jitattn/error.h"

namespace jitattn::test {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double X = -kInf;  // a masked entry in a numeric matrix

// One [Mq, Mkv] plane, a string per row: '0' visible, 'x' masked.
std::vector<double> plane(std::initializer_list<std::string> rows) {
  std::vector<double> out;
  for (const std::string& r : rows)
    for (char c : r) out.push_back(c == '0' ? 0.0 : -kInf);
  return out;
}

// The same plane for each of `copies` (batch, head) pairs.
std::vector<double> repeat(const std::vector<double>& p, int copies) {
  std::vector<double> out;
  for (int c = 0; c < copies; ++c) out.insert(out.end(), p.begin(), p.end());
  return out;
}

std::string joined(const std::vector<std::string>& reasons) {
  std::string s;
  for (const auto& r : reasons) s += "\n  " + r;
  return s;
}

bool has_reason(const std::vector<std::string>& reasons, const std::string& needle) {
  for (const auto& r : reasons)
    if (r.find(needle) != std::string::npos) return true;
  return false;
}

#define EXPECT_REASON(reasons, needle) EXPECT_TRUE(has_reason(reasons, needle)) << "want: " << (needle) << joined(reasons)

// Runs f, which must throw jitattn::Error with a reason containing `needle`.
template <class F>
void expect_error(F f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no jitattn::Error; wanted: " << needle;
  } catch (const Error& e) {
    EXPECT_REASON(e.reasons(), needle);
  }
}

// ---- dense masks ---------------------------------------------------------------------------
TEST(BiasMaterialize, LowerTriangularSquareIsTheSameFromEitherCorner) {
  const auto want = plane({"0xxx",  //
                           "00xx",  //
                           "000x",  //
                           "0000"});
  EXPECT_EQ(materialize(LowerTriangularMask{}, 1, 1, 4, 4), want);
  EXPECT_EQ(materialize(LowerTriangularFromBottomRightMask{}, 1, 1, 4, 4), want);
}

TEST(BiasMaterialize, LowerTriangular4x5TopLeftVersusBottomRight) {
  EXPECT_EQ(materialize(LowerTriangularMask{}, 1, 1, 4, 5), plane({"0xxxx",  //
                                                                   "00xxx",  //
                                                                   "000xx",  //
                                                                   "0000x"}));
  EXPECT_EQ(materialize(LowerTriangularFromBottomRightMask{}, 1, 1, 4, 5), plane({"00xxx",  //
                                                                                  "000xx",  //
                                                                                  "0000x",  //
                                                                                  "00000"}));
}

TEST(BiasMaterialize, DenseMasksRepeatOverBatchAndHeads) {
  const auto m = materialize(LowerTriangularMask{}, 2, 3, 2, 2);
  EXPECT_EQ(m, repeat(plane({"0x", "00"}), 6));
}

TEST(BiasMaterialize, LocalAttentionFromBottomRightDocstring4x4And4x5) {
  // xFormers' docstring: LocalAttentionFromBottomRightMask(window_left=1, window_right=2).
  const LocalAttentionFromBottomRightMask bias{1, 2};
  EXPECT_EQ(materialize(bias, 1, 1, 4, 4), plane({"000x",  //
                                                  "0000",  //
                                                  "x000",  //
                                                  "xx00"}));
  EXPECT_EQ(materialize(bias, 1, 1, 4, 5), plane({"0000x",  //
                                                  "x0000",  //
                                                  "xx000",  //
                                                  "xxx00"}));
}

TEST(BiasMaterialize, LocalAttentionWithZeroWindowsIsTheDiagonal) {
  EXPECT_EQ(materialize(LocalAttentionFromBottomRightMask{0, 0}, 1, 1, 3, 3), plane({"0xx",  //
                                                                                     "x0x",  //
                                                                                     "xx0"}));
}

TEST(BiasMaterialize, BottomRightLocalWindowOfTwo) {
  const auto bias = LowerTriangularFromBottomRightMask{}.make_local_attention(2);
  // 4x5: shift 1, key j visible iff i <= j <= i + 1.
  EXPECT_EQ(materialize(bias, 1, 1, 4, 5), plane({"00xxx",  //
                                                  "x00xx",  //
                                                  "xx00x",  //
                                                  "xxx00"}));
  // 4x3: shift -1, key j visible iff i - 2 <= j <= i - 1; the first query sees nothing.
  EXPECT_EQ(materialize(bias, 1, 1, 4, 3), plane({"xxx",  //
                                                  "0xx",  //
                                                  "00x",  //
                                                  "x00"}));
}

TEST(BiasMaterialize, CausalWithTensorBiasAddsPerBatchValues) {
  std::vector<float> values = {1, 2, 3, 4, 5, 6, 10, 20, 30, 40, 50, 60};  // [2, 1, 2, 3]
  const auto t = TensorView::make(values.data(), DType::f32, {2, 1, 2, 3}, {}, TensorView::kHost);
  const auto m = materialize(LowerTriangularMask{}.add_bias(t), 2, 1, 2, 3);
  const std::vector<double> want = {1,  -kInf, -kInf, 4,  5,  -kInf,  //
                                    10, -kInf, -kInf, 40, 50, -kInf};
  EXPECT_EQ(m, want);
}

TEST(BiasMaterialize, TensorBiasDecodesHalfAndBfloat16) {
  const uint16_t f16[3] = {0x3c00, 0xc000, 0x3800};   // 1, -2, 0.5
  const uint16_t bf16[3] = {0x3f80, 0xbf00, 0x4040};  // 1, -0.5, 3
  const auto th = TensorView::make(const_cast<uint16_t*>(f16), DType::f16, {1, 1, 1, 3}, {}, TensorView::kHost);
  const auto tb = TensorView::make(const_cast<uint16_t*>(bf16), DType::bf16, {1, 1, 1, 3}, {}, TensorView::kHost);
  EXPECT_EQ(materialize(TensorBias{th}, 1, 1, 1, 3), (std::vector<double>{1, -2, 0.5}));
  EXPECT_EQ(materialize(TensorBias{tb}, 1, 1, 1, 3), (std::vector<double>{1, -0.5, 3}));
}

TEST(BiasMaterialize, TensorBiasFollowsStridesAndStrideZeroBatch) {
  std::vector<float> buf = {1, 2, 3, 4, 5, 6};  // a 2x3 buffer; the bias is its 2x2 left part
  const auto t = TensorView::make(buf.data(), DType::f32, {2, 1, 2, 2}, {0, 6, 3, 1}, TensorView::kHost);
  EXPECT_EQ(materialize(TensorBias{t}, 2, 1, 2, 2), (std::vector<double>{1, 2, 4, 5, 1, 2, 4, 5}));
}

TEST(BiasMaterialize, TensorBiasMustBeHostMemory) {
  float v = 0;
  const auto t = TensorView::make(&v, DType::f32, {1, 1, 1, 1}, {}, /*device=*/0);
  expect_error([&] { materialize(TensorBias{t}, 1, 1, 1, 1); }, "host memory");
}

// ---- block-diagonal masks ------------------------------------------------------------------
TEST(BiasMaterialize, BlockDiagonalWithEmptyAndSingleBlocks) {
  // q blocks [0,2) [2,2) [2,3); key blocks [0,2) [2,3) [3,4): key 2 belongs to the empty block.
  const auto bias = BlockDiagonalMask::from_seqlens({2, 0, 1}, {2, 1, 1});
  EXPECT_EQ(materialize(bias, 1, 1, 3, 4), plane({"00xx",  //
                                                  "00xx",  //
                                                  "xxx0"}));
  EXPECT_EQ(materialize(bias, 1, 2, 3, 4), repeat(plane({"00xx", "00xx", "xxx0"}), 2));
}

TEST(BiasMaterialize, BlockDiagonalCausalIsTopLeftPerBlock) {
  EXPECT_EQ(materialize(BlockDiagonalCausalMask::from_seqlens({2, 0, 1}, {2, 1, 1}), 1, 1, 3, 4),
            plane({"0xxx",  //
                   "00xx",  //
                   "xxx0"}));
  // More queries than keys in block 0: its last query still sees both keys.
  EXPECT_EQ(materialize(BlockDiagonalCausalMask::from_seqlens({3, 1}, {2, 2}), 1, 1, 4, 4), plane({"0xxx",  //
                                                                                                   "00xx",  //
                                                                                                   "00xx",  //
                                                                                                   "xx0x"}));
}

TEST(BiasMaterialize, BlockDiagonalCausalFromBottomRight) {
  // Block 0: 1 query, 3 keys (it sees all); block 1: no query; block 2: 2x2 causal.
  const auto bias = BlockDiagonalMask::from_seqlens({1, 0, 2}, {3, 1, 2}).make_causal_from_bottomright();
  EXPECT_EQ(materialize(bias, 1, 1, 3, 6), plane({"000xxx",  //
                                                  "xxxx0x",  //
                                                  "xxxx00"}));
}

TEST(BiasMaterialize, BlockDiagonalCausalLocalAttention) {
  // Window 2 from the top left; block 1 has a query but no key, so its row stays -inf.
  const auto bias = BlockDiagonalMask::from_seqlens({4, 1}, {4, 0}).make_local_attention(2);
  EXPECT_EQ(materialize(bias, 1, 1, 5, 4), plane({"0xxx",  //
                                                  "00xx",  //
                                                  "x00x",  //
                                                  "xx00",  //
                                                  "xxxx"}));
}

TEST(BiasMaterialize, BlockDiagonalCausalLocalAttentionFromBottomRight) {
  // Block 0: 2 queries, 4 keys, shift 2, window 2 -> keys i+1, i+2. Block 1 empty; block 2: 1x1.
  const auto bias = BlockDiagonalMask::from_seqlens({2, 0, 1}, {4, 3, 1}).make_local_attention_from_bottomright(2);
  EXPECT_EQ(materialize(bias, 1, 1, 3, 8), plane({"x00xxxxx",  //
                                                  "xx00xxxx",  //
                                                  "xxxxxxx0"}));
}

TEST(BiasMaterialize, PaddedKeysHideThePadding) {
  // kv_padding 3: key blocks [0,1) [3,5) [6,6) of 9 rows.
  const auto bias = BlockDiagonalPaddedKeysMask::from_seqlens({2, 1, 0}, 3, {1, 2, 0});
  EXPECT_EQ(materialize(bias, 1, 1, 3, 9), plane({"0xxxxxxxx",  //
                                                  "0xxxxxxxx",  //
                                                  "xxx00xxxx"}));
}

TEST(BiasMaterialize, CausalWithOffsetPaddedKeys) {
  // kv_padding 4. Block 0: 2 queries on 3 keys (shift 1); block 1: a query with no key;
  // block 2: 1 query on keys 8, 9.
  const auto bias = BlockDiagonalCausalWithOffsetPaddedKeysMask::from_seqlens({2, 1, 1}, 4, {3, 0, 2});
  EXPECT_EQ(materialize(bias, 1, 1, 4, 12), plane({"00xxxxxxxxxx",  //
                                                   "000xxxxxxxxx",  //
                                                   "xxxxxxxxxxxx",  //
                                                   "xxxxxxxx00xx"}));
  // More queries than keys (allowed): the first query sees nothing.
  const auto more_q = BlockDiagonalCausalWithOffsetPaddedKeysMask::from_seqlens({3}, 3, {2});
  EXPECT_EQ(materialize(more_q, 1, 1, 3, 3), plane({"xxx",  //
                                                    "0xx",  //
                                                    "00x"}));
}

TEST(BiasMaterialize, LocalAttentionPaddedKeys) {
  // Windows 1/1 from the bottom right. Block 0: 3 queries, 4 of 5 keys, shift 1 -> i <= j <= i+2.
  // Block 1: 1 query, 1 key at row 5.
  const BlockDiagonalLocalAttentionPaddedKeysMask bias{SeqLenInfo::from_seqlens({3, 1}),
                                                       PaddedSeqLenInfo::from_seqlens_padded({4, 1}, 5), 1, 1};
  EXPECT_EQ(materialize(bias, 1, 1, 4, 10), plane({"000xxxxxxx",  //
                                                   "x000xxxxxx",  //
                                                   "xx00xxxxxx",  //
                                                   "xxxxx0xxxx"}));
}

TEST(BiasMaterialize, CausalLocalAttentionPaddedKeys) {
  // Window 2 from the bottom right. Block 0: 2 queries, 3 keys -> keys i, i+1. Block 1: no key.
  const BlockDiagonalCausalLocalAttentionPaddedKeysMask bias{SeqLenInfo::from_seqlens({2, 1}),
                                                             PaddedSeqLenInfo::from_seqlens_padded({3, 0}, 3), 2};
  EXPECT_EQ(materialize(bias, 1, 1, 3, 6), plane({"00xxxx",  //
                                                  "x00xxx",  //
                                                  "xxxxxx"}));
}

TEST(BiasMaterialize, GappyKeysInAnyOrder) {
  // Key blocks [5,7) [0,1) [3,3) of 8 rows.
  const auto bias = BlockDiagonalGappyKeysMask::from_seqlens({1, 2, 0}, {5, 0, 3, 8}, {2, 1, 0});
  EXPECT_EQ(materialize(bias, 1, 1, 3, 8), plane({"xxxxx00x",  //
                                                  "0xxxxxxx",  //
                                                  "0xxxxxxx"}));
}

TEST(BiasMaterialize, CausalWithOffsetGappyKeys) {
  // Block 0: 2 queries on keys [4,7) (shift 1); block 1: 1 query on key 0.
  const auto bias = BlockDiagonalCausalWithOffsetGappyKeysMask::from_seqlens({2, 1}, {4, 0, 7}, {3, 1});
  EXPECT_EQ(materialize(bias, 1, 1, 3, 7), plane({"xxxx00x",  //
                                                  "xxxx000",  //
                                                  "0xxxxxx"}));
}

// ---- paged keys ----------------------------------------------------------------------------
// Row-major [sequences, max_pages] block tables.
BlockTables tables(std::vector<int32_t> table, int32_t max_pages) { return BlockTables{DeviceInts(std::move(table)), max_pages}; }

TEST(BiasMaterialize, PagedPaddedKeysScatterPagesThroughTheBlockTable) {
  // page_size 2, max_pages 2: each sequence has 4 logical keys. Sequence 0 (2 queries, 3 keys):
  // logical page 0 -> physical page 3 (rows 6, 7), page 1 -> page 1 (rows 2, 3; row 3 is padding).
  // Sequence 1 (1 query, 2 keys): page 0 -> page 4 (rows 8, 9), page 1 -> page 0 (rows 0, 1, padding).
  // Physical page 2 (rows 4, 5) belongs to no one.
  const auto bias = BlockDiagonalPaddedKeysMask::from_seqlens({2, 1}, 3, {3, 2}).make_paged(tables({3, 1, 4, 0}, 2), 2);
  EXPECT_EQ(bias.k_seqinfo.padding, 4);  // the non-paged padding (3) is replaced by max_pages*page_size
  EXPECT_EQ(bias.k_seqinfo.seqstart.host(), (std::vector<int32_t>{0, 4, 8}));
  EXPECT_EQ(bias.k_seqinfo.seqlen.host(), (std::vector<int32_t>{3, 2}));
  EXPECT_EQ(bias.page_size, 2);
  EXPECT_EQ(bias.block_tables.max_pages, 2);
  EXPECT_EQ(materialize(bias, 1, 1, 3, 10), plane({"xx0xxx00xx",  //
                                                   "xx0xxx00xx",  //
                                                   "xxxxxxxx00"}));
  // A pool with more pages than the tables name: the extra keys are -inf.
  EXPECT_EQ(materialize(bias, 1, 2, 3, 12), repeat(plane({"xx0xxx00xxxx",  //
                                                          "xx0xxx00xxxx",  //
                                                          "xxxxxxxx00xx"}),
                                                   2));
}

// materialize() builds a paged mask's logical plane (Mq × sequences·max_pages·page_size) before
// scattering it into [Mq, Mkv]: rows of many large pages must be refused, not allocated (this one
// asked for 16 GiB to return 8 MiB).
TEST(BiasMaterialize, PagedLogicalPlaneIsBounded) {
  const int32_t ps = 1 << 20, max_pages = 2047;
  const auto bias = BlockDiagonalPaddedKeysMask::from_seqlens({1}, 4, {1}).make_paged(
      tables(std::vector<int32_t>(size_t(max_pages), 0), max_pages), ps);
  try {
    (void)materialize(bias, 1, 1, 1, ps);
    ADD_FAILURE() << "a 2047-page logical row was materialized";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("logical plane"), std::string::npos) << e.what();
  }
}

TEST(BiasMaterialize, PagedCausalWithOffsetPaddedKeys) {
  // One sequence: 2 queries on 3 keys, bottom-right (query i sees logical keys 0..i+1);
  // page_size 2, logical pages 0, 1 -> physical pages 1, 0.
  const auto bias =
      BlockDiagonalCausalWithOffsetPaddedKeysMask::from_seqlens({2}, 4, {3}).make_paged(tables({1, 0}, 2), 2);
  EXPECT_EQ(materialize(bias, 1, 1, 2, 4), plane({"xx00",  //
                                                  "0x00"}));
}

TEST(BiasMaterialize, PagedGappyKeysAreOffsetsWithinTheirRow) {
  // Rows of max_pages*page_size = 4 logical keys. The non-paged mask's keys [1, 3) and [6, 8) are
  // row 0's keys [1, 3) and row 1's keys [2, 4): make_paged keeps the offsets 1 and 2.
  const BlockTables bt = tables({2, 0, 1, 3}, 2);
  const auto bias = BlockDiagonalGappyKeysMask::from_seqlens({1, 2}, {1, 6, 8}, {2, 2}).make_paged(bt, 2);
  EXPECT_EQ(bias.k_seqinfo.seqstart.host(), (std::vector<int32_t>{1, 2, 4}));  // the last is the row length
  EXPECT_EQ(bias.k_seqinfo.seqlen.host(), (std::vector<int32_t>{2, 2}));
  // Sequence 0: logical 1 -> page 2 row 5, logical 2 -> page 0 row 0. Sequence 1: logical 2, 3 ->
  // page 3 rows 6, 7.
  EXPECT_EQ(materialize(bias, 1, 1, 3, 8), plane({"0xxxx0xx",  //
                                                  "xxxxxx00",  //
                                                  "xxxxxx00"}));
  // Bottom-right causal within each sequence: sequence 1's first query sees only its first key.
  const auto causal =
      BlockDiagonalCausalWithOffsetGappyKeysMask::from_seqlens({1, 2}, {1, 6, 8}, {2, 2}).make_paged(bt, 2);
  EXPECT_EQ(materialize(causal, 1, 1, 3, 8), plane({"0xxxx0xx",  //
                                                    "xxxxxx0x",  //
                                                    "xxxxxx00"}));
}

TEST(BiasMaterialize, PagedCausalLocalPaddedKeys) {
  // 3 queries, 5 keys, window 2 from the bottom right: query i sees logical keys i+1, i+2.
  // page_size 2, max_pages 3; logical pages 0, 1, 2 -> physical pages 2, 0, 3 (rows 4-5, 0-1, 6-7).
  const BlockDiagonalCausalLocalAttentionPaddedKeysMask m{SeqLenInfo::from_seqlens({3}),
                                                          PaddedSeqLenInfo::from_seqlens_padded({5}, 5), 2};
  const auto bias = m.make_paged(tables({2, 0, 3}, 3), 2);
  EXPECT_EQ(bias.window_size, 2);
  EXPECT_EQ(bias.k_seqinfo.padding, 6);
  EXPECT_EQ(materialize(bias, 1, 1, 3, 8), plane({"0xxxx0xx",  //
                                                  "00xxxxxx",  //
                                                  "x0xxxx0x"}));
}

TEST(BiasMaterialize, PagedEqualsNonPagedWithTheIdentityBlockTable) {
  // Page p of sequence b at physical page b*max_pages + p: the pool is the padded (row-long)
  // non-paged layout, so both masks must agree key for key.
  const std::vector<int32_t> q = {2, 1, 3}, kv = {3, 0, 4};
  const int32_t page_size = 2, max_pages = 3, row = page_size * max_pages;
  std::vector<int32_t> identity;
  for (int32_t e = 0; e < 3 * max_pages; ++e) identity.push_back(e);
  const BlockTables bt = tables(identity, max_pages);
  const int64_t Mq = 6, Mkv = 3 * row;

  const auto padded = BlockDiagonalPaddedKeysMask::from_seqlens(q, row, kv);
  EXPECT_EQ(materialize(BlockDiagonalPaddedKeysMask::from_seqlens(q, 5, kv).make_paged(bt, page_size), 1, 2, Mq, Mkv),
            materialize(padded, 1, 2, Mq, Mkv));
  const auto causal = BlockDiagonalCausalWithOffsetPaddedKeysMask::from_seqlens(q, row, kv);
  EXPECT_EQ(materialize(causal.make_paged(bt, page_size), 1, 1, Mq, Mkv), materialize(causal, 1, 1, Mq, Mkv));
  const BlockDiagonalCausalLocalAttentionPaddedKeysMask local{padded.q_seqinfo, padded.k_seqinfo, 2};
  EXPECT_EQ(materialize(local.make_paged(bt, page_size), 1, 1, Mq, Mkv), materialize(local, 1, 1, Mq, Mkv));

  // Gappy keys at rows [1, 4), [9, 11) and [12, 18): offsets 1, 3 and 0 within their rows.
  const std::vector<int32_t> starts = {1, 9, 12, 18}, lens = {3, 2, 6};
  const auto gappy = BlockDiagonalGappyKeysMask::from_seqlens(q, starts, lens);
  EXPECT_EQ(materialize(gappy.make_paged(bt, page_size), 1, 1, Mq, Mkv), materialize(gappy, 1, 1, Mq, Mkv));
  const auto causal_gappy = BlockDiagonalCausalWithOffsetGappyKeysMask::from_seqlens(q, starts, lens);
  EXPECT_EQ(materialize(causal_gappy.make_paged(bt, page_size), 1, 1, Mq, Mkv), materialize(causal_gappy, 1, 1, Mq, Mkv));
  // (And the masks are not trivially empty.)
  EXPECT_NE(materialize(causal_gappy, 1, 1, Mq, Mkv), materialize(gappy, 1, 1, Mq, Mkv));
}

// ---- ALiBi ---------------------------------------------------------------------------------
TEST(BiasMaterialize, AlibiAloneIsSymmetricPerHead) {
  // geometric(2): slopes 2^-4 and 2^-8; logit -slope*|j - i| on a 3x4 plane.
  const AlibiBias bias{AlibiSlopes::geometric(2)};
  const double a = 1.0 / 16, b = 1.0 / 256;
  const std::vector<double> want = {
      0,      -a,     -2 * a, -3 * a,  // head 0
      -a,     0,      -a,     -2 * a,  //
      -2 * a, -a,     0,      -a,      //
      0,      -b,     -2 * b, -3 * b,  // head 1
      -b,     0,      -b,     -2 * b,  //
      -2 * b, -b,     0,      -b,      //
  };
  EXPECT_EQ(materialize(bias, 1, 2, 3, 4), want);
  // The batch repeats the heads.
  std::vector<double> twice = want;
  twice.insert(twice.end(), want.begin(), want.end());
  EXPECT_EQ(materialize(bias, 2, 2, 3, 4), twice);
}

TEST(BiasMaterialize, CausalWithAlibi) {
  const auto bias = LowerTriangularMask{}.add_alibi(AlibiSlopes{DeviceFloats({0.5f, 0.25f})});
  const std::vector<double> want = {
      0,    X,     X, X,  // head 0, slope 0.5
      -0.5, 0,     X, X,  //
      -1,   -0.5,  0, X,  //
      0,    X,     X, X,  // head 1, slope 0.25
      -.25, 0,     X, X,  //
      -0.5, -0.25, 0, X,  //
  };
  EXPECT_EQ(materialize(bias, 1, 2, 3, 4), want);
}

TEST(BiasMaterialize, BlockDiagonalWithAlibiCountsFromTheBlockStart) {
  // Blocks: query 0 with keys 0-2; queries 1, 2 with keys 3, 4. Slopes 1 and 0.5.
  const AlibiSlopes slopes{DeviceFloats({1.0f, 0.5f})};
  const auto causal = BlockDiagonalCausalMask::from_seqlens({1, 2}, {3, 2}).add_alibi(slopes);
  // Top-left causal per block: query 1 is the block's query 0 and sees key 3 at distance 0.
  const std::vector<double> want_causal = {
      0, X, X, X,    X,     // head 0
      X, X, X, 0,    X,     //
      X, X, X, -1,   0,     //
      0, X, X, X,    X,     // head 1
      X, X, X, 0,    X,     //
      X, X, X, -0.5, 0,     //
  };
  EXPECT_EQ(materialize(causal, 1, 2, 3, 5), want_causal);
  const auto full = BlockDiagonalMask::from_seqlens({1, 2}, {3, 2}).add_alibi(slopes);
  const std::vector<double> want_full = {
      0, -1, -2, X,    X,     // head 0
      X, X,  X,  0,    -1,    //
      X, X,  X,  -1,   0,     //
      0, -.5, -1, X,   X,     // head 1
      X, X,  X,  0,    -0.5,  //
      X, X,  X,  -0.5, 0,     //
  };
  EXPECT_EQ(materialize(full, 1, 2, 3, 5), want_full);
  EXPECT_EQ(causal.slopes.slopes.host(), (std::vector<float>{1.0f, 0.5f}));
  EXPECT_EQ(causal.k_seqinfo.seqstart.host(), (std::vector<int32_t>{0, 3, 5}));
}

TEST(BiasLayouts, GeometricAlibiSlopes) {
  EXPECT_EQ(AlibiSlopes::geometric(2).slopes.host(), (std::vector<float>{1.0f / 16, 1.0f / 256}));
  const auto eight = AlibiSlopes::geometric(8).slopes.host();
  ASSERT_EQ(eight.size(), 8u);
  for (int h = 0; h < 8; ++h) EXPECT_EQ(eight[size_t(h)], std::ldexp(1.0f, -(h + 1))) << h;
  expect_error([] { AlibiSlopes::geometric(0); }, "heads=0 must be >= 1");
}

// ---- 5-D tensor biases ---------------------------------------------------------------------
TEST(BiasMaterialize, FiveDimensionalTensorBiasIsGTimesHHeads) {
  // [B=1, G=2, H=3, Mq=2, Mkv=3] against the same memory read as [1, 6, 2, 3].
  std::vector<float> v(36);
  for (size_t e = 0; e < v.size(); ++e) v[e] = float(e) - 10;
  const auto five = TensorView::make(v.data(), DType::f32, {1, 2, 3, 2, 3}, {}, TensorView::kHost);
  const auto four = TensorView::make(v.data(), DType::f32, {1, 6, 2, 3}, {}, TensorView::kHost);
  EXPECT_EQ(materialize(TensorBias{five}, 1, 6, 2, 3), materialize(TensorBias{four}, 1, 6, 2, 3));
  EXPECT_EQ(materialize(LowerTriangularMask{}.add_bias(five), 1, 6, 2, 3),
            materialize(LowerTriangularMask{}.add_bias(four), 1, 6, 2, 3));
  // Strided: G apart by H*stride[2] with rows padded to 4 floats.
  std::vector<float> wide(48);
  const auto strided = TensorView::make(wide.data(), DType::f32, {1, 2, 3, 2, 3}, {48, 24, 8, 4, 1}, TensorView::kHost);
  const auto strided4 = TensorView::make(wide.data(), DType::f32, {1, 6, 2, 3}, {48, 8, 4, 1}, TensorView::kHost);
  for (size_t e = 0; e < wide.size(); ++e) wide[e] = float(e % 7);
  EXPECT_EQ(materialize(TensorBias{strided}, 1, 6, 2, 3), materialize(TensorBias{strided4}, 1, 6, 2, 3));
  // Both strides 0: one [Mq, Mkv] plane for every head, as the 4-D [1, 1, 2, 3].
  const auto bcast = TensorView::make(v.data(), DType::f32, {1, 2, 3, 2, 3}, {6, 0, 0, 3, 1}, TensorView::kHost);
  const auto one = TensorView::make(v.data(), DType::f32, {1, 1, 2, 3}, {}, TensorView::kHost);
  EXPECT_EQ(materialize(TensorBias{bcast}, 1, 6, 2, 3), materialize(TensorBias{one}, 1, 6, 2, 3));
  // G of size 1 with H = 3, and a fully broadcast [1, 1, 1, Mq, Mkv].
  const auto g1 = TensorView::make(v.data(), DType::f32, {1, 1, 3, 2, 3}, {}, TensorView::kHost);
  const auto h3 = TensorView::make(v.data(), DType::f32, {1, 3, 2, 3}, {}, TensorView::kHost);
  EXPECT_EQ(materialize(TensorBias{g1}, 1, 3, 2, 3), materialize(TensorBias{h3}, 1, 3, 2, 3));
  const auto all1 = TensorView::make(v.data(), DType::f32, {1, 1, 1, 2, 3}, {}, TensorView::kHost);
  EXPECT_EQ(materialize(TensorBias{all1}, 1, 6, 2, 3), materialize(TensorBias{one}, 1, 6, 2, 3));
}

TEST(BiasMaterialize, ThrowsWithTheReasonsWhenTheShapeDoesNotFit) {
  expect_error([] { materialize(BlockDiagonalMask::from_seqlens({2}), 2, 1, 2, 2); }, "query.shape[0]=2 must be 1");
  expect_error([] { materialize(BlockDiagonalMask::from_seqlens({2}), 1, 1, 3, 2); }, "query.shape[1]=3");
}

// ---- sequence layouts ----------------------------------------------------------------------
TEST(BiasLayouts, SeqLenInfoAsXFormersDocstring) {
  const auto s = SeqLenInfo::from_seqlens({2, 3, 2});
  EXPECT_EQ(s.seqstart.host(), (std::vector<int32_t>{0, 2, 5, 7}));
  EXPECT_EQ(s.max_seqlen, 3);
  EXPECT_EQ(s.batch(), 3);
  EXPECT_EQ(s.seqlens(), (std::vector<int32_t>{2, 3, 2}));
  expect_error([] { SeqLenInfo::from_seqlens({1, -2}); }, "seqlens[1]=-2 must be >= 0");
  expect_error([] { BlockDiagonalMask::from_seqlens({1, -2}); }, "q_seqlen[1]=-2 must be >= 0");
}

TEST(BiasLayouts, PaddedSeqLenInfoAsXFormersDocstring) {
  const auto p = PaddedSeqLenInfo::from_seqlens_padded({2, 3, 2}, 4);
  EXPECT_EQ(p.seqstart.host(), (std::vector<int32_t>{0, 4, 8, 12}));
  EXPECT_EQ(p.seqlen.host(), (std::vector<int32_t>{2, 3, 2}));
  EXPECT_EQ(p.padding, 4);
  EXPECT_EQ(p.max_seqlen, 3);
}

TEST(BiasLayouts, PaddedSeqLenInfoRejectsBadArguments) {
  expect_error([] { PaddedSeqLenInfo::from_seqlens_padded({10, 64, 70}, 64); }, "kv_seqlen[2]=70 exceeds kv_padding=64");
  EXPECT_EQ(PaddedSeqLenInfo::from_seqlens_padded({4, 0}, 4).max_seqlen, 4);  // seqlen == padding fits
  expect_error([] { PaddedSeqLenInfo::from_seqlens_padded({4, 5}, 4); }, "kv_seqlen[1]=5 exceeds kv_padding=4");
  expect_error([] { PaddedSeqLenInfo::from_seqlens_padded({1}, 0); }, "kv_padding=0 must be >= 1");
  expect_error([] { PaddedSeqLenInfo::from_seqlens_padded({}, 4); }, "kv_seqlen is empty");
  expect_error([] { PaddedSeqLenInfo::from_seqlens_padded({3, -1}, 4); }, "kv_seqlen[1]=-1 must be >= 0");
  expect_error([] { BlockDiagonalPaddedKeysMask::from_seqlens({1}, 4, {1, 1}); },
               "len(q_seqlen)=1 must equal len(kv_seqlen)=2");
}

TEST(BiasLayouts, GappySeqInfoAsXFormersDocstring) {
  // xFormers: a dimension of 14 rows with blocks of 6, 3 and 1 at rows 0, 7 and 12.
  const auto g = GappySeqInfo::from_seqlens_gappy({0, 7, 12, 14}, {6, 3, 1});
  EXPECT_EQ(g.seqstart.host(), (std::vector<int32_t>{0, 7, 12, 14}));
  EXPECT_EQ(g.seqlen.host(), (std::vector<int32_t>{6, 3, 1}));
  EXPECT_EQ(g.max_seqlen, 6);
}

TEST(BiasLayouts, GappySeqInfoRejectsBadArguments) {
  expect_error([] { GappySeqInfo::from_seqlens_gappy({0, 5}, {1, 2}); }, "len(kv_seqstarts)=2 must be len(kv_seqlen)+1=3");
  expect_error([] { GappySeqInfo::from_seqlens_gappy({0}, {}); }, "kv_seqlen is empty");
  expect_error([] { GappySeqInfo::from_seqlens_gappy({0, 5}, {7}); },
               "kv_seqstarts[0]+kv_seqlen[0]=7 exceeds kv_seqstarts[-1]=5");
  expect_error([] { GappySeqInfo::from_seqlens_gappy({-1, 5}, {1}); }, "kv_seqstarts[0]=-1 must be >= 0");
  expect_error([] { BlockDiagonalGappyKeysMask::from_seqlens({1, 1}, {0, 4}, {1}); },
               "len(q_seqlen)=2 must equal len(kv_seqlen)=1");
}

// ---- conversions ---------------------------------------------------------------------------
TEST(BiasConversions, MakeStarKeepsTheSequencesAndSetsTheWindow) {
  const auto m = BlockDiagonalMask::from_seqlens({2, 3}, {3, 4});
  const std::vector<int32_t> q = {0, 2, 5}, k = {0, 3, 7};
  const auto causal = m.make_causal();
  const auto br = m.make_causal_from_bottomright();
  const auto local = m.make_local_attention(2);
  const auto local_br = m.make_local_attention_from_bottomright(3);
  EXPECT_EQ(causal.q_seqinfo.seqstart.host(), q);
  EXPECT_EQ(causal.k_seqinfo.seqstart.host(), k);
  EXPECT_EQ(br.q_seqinfo.seqstart.host(), q);
  EXPECT_EQ(br.k_seqinfo.seqstart.host(), k);
  EXPECT_EQ(local.k_seqinfo.seqstart.host(), k);
  EXPECT_EQ(local.window_size, 2);
  EXPECT_EQ(local_br.q_seqinfo.seqstart.host(), q);
  EXPECT_EQ(local_br.window_size, 3);
  EXPECT_EQ(materialize(causal, 1, 1, 5, 7), materialize(BlockDiagonalCausalMask::from_seqlens({2, 3}, {3, 4}), 1, 1, 5, 7));
  // Block 0 is 2x3 top-left causal, block 1 is 3x4 top-left causal.
  EXPECT_EQ(materialize(causal, 1, 1, 5, 7), plane({"0xxxxxx",  //
                                                    "00xxxxx",  //
                                                    "xxx0xxx",  //
                                                    "xxx00xx",  //
                                                    "xxx000x"}));
}

TEST(BiasConversions, KeysDefaultToTheQueries) {
  const auto m = BlockDiagonalMask::from_seqlens({3, 1});
  EXPECT_EQ(m.k_seqinfo.seqstart.host(), (std::vector<int32_t>{0, 3, 4}));
  EXPECT_EQ(m.k_seqinfo.max_seqlen, 3);
  expect_error([] { BlockDiagonalMask::from_seqlens({1, 2}, {1}); }, "len(q_seqlen)=2 must equal len(kv_seqlen)=1");
}

TEST(BiasConversions, MakeStarChecksWhatXFormersPostInitChecks) {
  expect_error([] { BlockDiagonalMask::from_seqlens({3}, {2}).make_causal_from_bottomright(); },
               "kv_seqlen[0]=2 is less than q_seqlen[0]=3");
  expect_error([] { BlockDiagonalMask::from_seqlens({1, 3}, {1, 2}).make_local_attention_from_bottomright(4); },
               "kv_seqlen[1]=2 is less than q_seqlen[1]=3");
  expect_error([] { BlockDiagonalMask::from_seqlens({2}).make_local_attention_from_bottomright(0); },
               "window_size=0 must be >= 1");
  expect_error([] { BlockDiagonalMask::from_seqlens({2}).make_local_attention(0); }, "window_size=0 must be >= 1");
  expect_error([] { BlockDiagonalMask::from_seqlens({3}, {1}).make_local_attention(2); },
               "q_seqlen[0]=3 minus window_size=2 is not below kv_seqlen[0]=1");
  expect_error([] { LowerTriangularFromBottomRightMask{}.make_local_attention(0); }, "window_size=0 must be >= 1");
  EXPECT_EQ(LowerTriangularFromBottomRightMask{}.make_local_attention(3).window_size, 3);
}

TEST(BiasConversions, AddBiasKeepsTheTensor) {
  float v[4] = {};
  const auto t = TensorView::make(v, DType::f32, {1, 1, 2, 2}, {}, TensorView::kHost);
  const auto b = LowerTriangularMask{}.add_bias(t);
  EXPECT_EQ(b.tensor.data, static_cast<void*>(v));
  EXPECT_EQ(b.tensor.shape[3], 2);
}

// ---- split / from_tensor_list --------------------------------------------------------------
TEST(BiasSplit, FromTensorListThenSplitGivesBlockViews) {
  std::vector<float> buf(15);
  const auto a = TensorView::make(buf.data(), DType::f32, {1, 2, 2}, {}, TensorView::kHost);
  const auto b = TensorView::make(buf.data(), DType::f32, {1, 0, 2}, {}, TensorView::kHost);
  const auto c = TensorView::make(buf.data(), DType::f32, {1, 3, 2}, {}, TensorView::kHost);
  const auto mask = BlockDiagonalMask::from_tensor_list({a, b, c});
  EXPECT_EQ(mask.q_seqinfo.seqstart.host(), (std::vector<int32_t>{0, 2, 2, 5}));
  EXPECT_EQ(materialize(mask, 1, 1, 5, 5), plane({"00xxx",  //
                                                  "00xxx",  //
                                                  "xx000",  //
                                                  "xx000",  //
                                                  "xx000"}));
  // The concatenated tensor: rows of 2 values, 3 apart in memory.
  const auto x = TensorView::make(buf.data(), DType::f32, {1, 5, 2}, {15, 3, 1}, TensorView::kHost);
  const auto views = mask.split(x);
  ASSERT_EQ(views.size(), 3u);
  EXPECT_EQ(views[0].data, static_cast<void*>(buf.data()));
  EXPECT_EQ(views[1].data, static_cast<void*>(buf.data() + 2 * 3));
  EXPECT_EQ(views[2].data, static_cast<void*>(buf.data() + 2 * 3));
  EXPECT_EQ(views[0].shape[1], 2);
  EXPECT_EQ(views[1].shape[1], 0);
  EXPECT_EQ(views[2].shape[1], 3);
  EXPECT_EQ(views[2].shape[2], 2);
  EXPECT_EQ(views[2].stride[1], 3);
}

TEST(BiasSplit, RejectsWhatXFormersRejects) {
  float v[12] = {};
  const auto mask = BlockDiagonalMask::from_seqlens({2, 3});
  expect_error([&] { mask.split(TensorView::make(v, DType::f32, {2, 5, 1}, {}, TensorView::kHost)); },
               "tensor.shape[0]=2 must be 1");
  expect_error([&] { mask.split(TensorView::make(v, DType::f32, {1, 4, 1}, {}, TensorView::kHost)); },
               "tensor.shape[1]=4 must equal sum(q_seqlen)=5");
  expect_error([&] { BlockDiagonalMask::from_seqlens({2}, {3}).split(TensorView::make(v, DType::f32, {1, 2, 1})); },
               "split needs kv_seqlen == q_seqlen");
  const auto one = TensorView::make(v, DType::f32, {1, 2, 3}, {}, TensorView::kHost);
  const auto two = TensorView::make(v, DType::f32, {2, 2, 3}, {}, TensorView::kHost);
  const auto wide = TensorView::make(v, DType::f32, {1, 2, 4}, {}, TensorView::kHost);
  expect_error([&] { BlockDiagonalMask::from_tensor_list({one, two}); }, "tensors[1].shape[0]=2 must be 1");
  expect_error([&] { BlockDiagonalMask::from_tensor_list({one, wide}); }, "tensors[1].shape=[1, 2, 4] must match");
  expect_error([] { BlockDiagonalMask::from_tensor_list({}); }, "tensors is empty");
}

// ---- bias_reasons, one rule at a time ------------------------------------------------------
TEST(BiasReasons, FittingBiasesHaveNone) {
  EXPECT_TRUE(bias_reasons(AttnBias{}, 2, 3, 4, 5).empty());
  EXPECT_TRUE(bias_reasons(LowerTriangularMask{}, 2, 3, 4, 5).empty());
  EXPECT_TRUE(bias_reasons(LocalAttentionFromBottomRightMask{0, 0}, 1, 1, 4, 4).empty());  // xFormers allows 0
  const auto r = bias_reasons(BlockDiagonalCausalMask::from_seqlens({2, 3}), 1, 8, 5, 5);
  EXPECT_TRUE(r.empty()) << joined(r);
  // Bottom-right causal with fewer keys than queries is allowed where xFormers allows it.
  EXPECT_TRUE(bias_reasons(LowerTriangularFromBottomRightMask{}, 1, 1, 4, 2).empty());
  EXPECT_TRUE(bias_reasons(BlockDiagonalCausalWithOffsetPaddedKeysMask::from_seqlens({3}, 3, {2}), 1, 1, 3, 3).empty());
}

TEST(BiasReasons, BlockDiagonalNeedsBatchOfOne) {
  const auto r = bias_reasons(BlockDiagonalCausalMask::from_seqlens({2, 3}), 2, 1, 5, 5);
  ASSERT_EQ(r.size(), 1u) << joined(r);
  EXPECT_REASON(r, "query.shape[0]=2 must be 1 with BlockDiagonalCausalMask");
}

TEST(BiasReasons, QuerySeqlensMustSumToMq) {
  const auto r = bias_reasons(BlockDiagonalCausalMask::from_seqlens({2, 3}), 1, 1, 6, 5);
  ASSERT_EQ(r.size(), 1u) << joined(r);
  EXPECT_REASON(r, "query.shape[1]=6 must equal sum(q_seqlen)=5 with BlockDiagonalCausalMask");
}

TEST(BiasReasons, KeysMustFillMkv) {
  EXPECT_REASON(bias_reasons(BlockDiagonalMask::from_seqlens({2, 3}), 1, 1, 5, 4),
                "key.shape[1]=4 must equal sum(kv_seqlen)=5 with BlockDiagonalMask");
  EXPECT_REASON(bias_reasons(BlockDiagonalPaddedKeysMask::from_seqlens({1, 1}, 4, {2, 3}), 1, 1, 2, 7),
                "key.shape[1]=7 must equal len(kv_seqlen)*kv_padding=8 with BlockDiagonalPaddedKeysMask");
  EXPECT_REASON(bias_reasons(BlockDiagonalGappyKeysMask::from_seqlens({1, 2, 0}, {5, 0, 3, 8}, {2, 1, 0}), 1, 1, 3, 9),
                "key.shape[1]=9 must equal kv_seqstarts[-1]=8 with BlockDiagonalGappyKeysMask");
}

TEST(BiasReasons, PaddedSeqlenMustFitThePadding) {
  PaddedSeqLenInfo p;
  p.seqstart = DeviceInts({0, 64, 128, 192});
  p.seqlen = DeviceInts({10, 64, 70});
  p.padding = 64;
  p.max_seqlen = 70;
  const auto r = bias_reasons(BlockDiagonalPaddedKeysMask{SeqLenInfo::from_seqlens({1, 1, 1}), p}, 1, 1, 3, 192);
  ASSERT_EQ(r.size(), 1u) << joined(r);
  EXPECT_REASON(r, "kv_seqlen[2]=70 exceeds kv_padding=64");
  p.seqstart = DeviceInts({0, 60, 128, 192});
  p.seqlen = DeviceInts({10, 60, 64});
  EXPECT_REASON(bias_reasons(BlockDiagonalPaddedKeysMask{SeqLenInfo::from_seqlens({1, 1, 1}), p}, 1, 1, 3, 192),
                "k_seqinfo.seqstart[1]=60 must be 1*kv_padding=64");
}

TEST(BiasReasons, GappyBlocksMustEndWithinTheKeys) {
  const GappySeqInfo g{DeviceInts({3, 0, 5}), DeviceInts({4, 1}), 4};
  const auto r = bias_reasons(BlockDiagonalGappyKeysMask{SeqLenInfo::from_seqlens({1, 1}), g}, 1, 1, 2, 5);
  ASSERT_EQ(r.size(), 1u) << joined(r);
  EXPECT_REASON(r, "kv_seqstarts[0]+kv_seqlen[0]=7 exceeds kv_seqstarts[-1]=5");
}

TEST(BiasReasons, BottomRightCausalBlocksNeedAtLeastAsManyKeysAsQueries) {
  const BlockDiagonalCausalFromBottomRightMask br{SeqLenInfo::from_seqlens({1, 3}), SeqLenInfo::from_seqlens({1, 2})};
  EXPECT_REASON(bias_reasons(br, 1, 1, 4, 3),
                "kv_seqlen[1]=2 is less than q_seqlen[1]=3: BlockDiagonalCausalFromBottomRightMask needs");
  const BlockDiagonalCausalLocalAttentionFromBottomRightMask local{br.q_seqinfo, br.k_seqinfo, 2};
  EXPECT_REASON(bias_reasons(local, 1, 1, 4, 3), "BlockDiagonalCausalLocalAttentionFromBottomRightMask needs");
}

TEST(BiasReasons, WindowsMustBePositiveOrNonNegative) {
  EXPECT_REASON(bias_reasons(LowerTriangularFromBottomRightLocalAttentionMask{0}, 1, 1, 4, 4),
                "window_size=0 must be >= 1 with LowerTriangularFromBottomRightLocalAttentionMask");
  EXPECT_REASON(bias_reasons(LocalAttentionFromBottomRightMask{-1, 2}, 1, 1, 4, 4), "window_left=-1 must be >= 0");
  EXPECT_REASON(bias_reasons(LocalAttentionFromBottomRightMask{1, -3}, 1, 1, 4, 4), "window_right=-3 must be >= 0");
  const auto q = SeqLenInfo::from_seqlens({2});
  const auto kp = PaddedSeqLenInfo::from_seqlens_padded({2}, 2);
  EXPECT_REASON(bias_reasons(BlockDiagonalCausalLocalAttentionPaddedKeysMask{q, kp, 0}, 1, 1, 2, 2),
                "window_size=0 must be >= 1 with BlockDiagonalCausalLocalAttentionPaddedKeysMask");
  EXPECT_REASON(bias_reasons(BlockDiagonalLocalAttentionPaddedKeysMask{q, kp, -1, 0}, 1, 1, 2, 2),
                "window_left=-1 must be >= 0 with BlockDiagonalLocalAttentionPaddedKeysMask");
  EXPECT_REASON(bias_reasons(BlockDiagonalCausalLocalAttentionMask{q, q, 0}, 1, 1, 2, 2),
                "window_size=0 must be >= 1 with BlockDiagonalCausalLocalAttentionMask");
}

TEST(BiasReasons, TopLeftLocalWindowMustReachAKey) {
  const BlockDiagonalCausalLocalAttentionMask m{SeqLenInfo::from_seqlens({2}), SeqLenInfo::from_seqlens({1}), 1};
  EXPECT_REASON(bias_reasons(m, 1, 1, 2, 1), "q_seqlen[0]=2 minus window_size=1 is not below kv_seqlen[0]=1");
}

TEST(BiasReasons, QueryAndKeyBlockCountsMustMatch) {
  const BlockDiagonalMask m{SeqLenInfo::from_seqlens({1, 2}), SeqLenInfo::from_seqlens({3})};
  EXPECT_REASON(bias_reasons(m, 1, 1, 3, 3), "len(q_seqlen)=2 must equal len(kv_seqlen)=1 with BlockDiagonalMask");
}

TEST(BiasReasons, SeqstartsMustStartAtZeroAndNotDecrease) {
  const SeqLenInfo bad{DeviceInts({1, 3, 2}), 3};
  const auto r = bias_reasons(BlockDiagonalMask{bad, SeqLenInfo::from_seqlens({1, 1})}, 1, 1, 2, 2);
  EXPECT_REASON(r, "q_seqinfo.seqstart[0]=1 must be 0");
  EXPECT_REASON(r, "q_seqinfo.seqstart[2]=2 is less than q_seqinfo.seqstart[1]=3");
  const SeqLenInfo short_max{DeviceInts({0, 3}), 1};
  EXPECT_REASON(bias_reasons(BlockDiagonalMask{short_max, short_max}, 1, 1, 3, 3),
                "q_seqinfo.max_seqlen=1 is less than its longest sequence (3)");
}

TEST(BiasReasons, TensorBiasMustBroadcastToTheCall) {
  float v[256] = {};
  auto t = [&](std::initializer_list<int64_t> shape, std::initializer_list<int64_t> strides = {}) {
    return TensorView::make(v, DType::f32, shape, strides, TensorView::kHost);
  };
  EXPECT_TRUE(bias_reasons(TensorBias{t({2, 3, 4, 5})}, 2, 3, 4, 5).empty());
  EXPECT_TRUE(bias_reasons(TensorBias{t({1, 1, 4, 5})}, 2, 3, 4, 5).empty());
  EXPECT_TRUE(bias_reasons(TensorBias{t({2, 3, 4, 5}, {0, 0, 5, 1})}, 2, 3, 4, 5).empty());
  EXPECT_REASON(bias_reasons(TensorBias{t({3, 4, 5})}, 2, 3, 4, 5), "attn_bias.ndim=3 must be 4");
  EXPECT_REASON(bias_reasons(TensorBias{t({3, 3, 4, 5})}, 2, 3, 4, 5), "attn_bias.shape[0]=3 must equal B=query.shape[0]=2 or 1");
  EXPECT_REASON(bias_reasons(TensorBias{t({2, 2, 4, 5})}, 2, 3, 4, 5), "attn_bias.shape[1]=2 must equal H (query heads)=3 or 1");
  EXPECT_REASON(bias_reasons(TensorBias{t({2, 3, 4, 5})}, 2, 3, 6, 5), "attn_bias.shape[2]=4 must equal query.shape[1]=6");
  EXPECT_REASON(bias_reasons(TensorBias{t({2, 3, 4, 5})}, 2, 3, 4, 7), "attn_bias.shape[3]=5 must equal key.shape[1]=7");
  EXPECT_REASON(bias_reasons(TensorBias{t({1, 1, 4, 5}, {40, 40, 10, 2})}, 1, 1, 4, 5), "attn_bias.stride[3]=2 must be 1");
  TensorView null_data = t({1, 1, 4, 5});
  null_data.data = nullptr;
  EXPECT_REASON(bias_reasons(TensorBias{null_data}, 1, 1, 4, 5), "attn_bias.data is null");
  // The causal mask with a tensor follows the same rules.
  EXPECT_REASON(bias_reasons(LowerTriangularMask{}.add_bias(t({2, 3, 4, 5})), 2, 3, 4, 6),
                "attn_bias.shape[3]=5 must equal key.shape[1]=6");
}

// ---- bias_reasons: paged keys --------------------------------------------------------------
// A fitting paged mask: 2 sequences (1 and 2 queries, 3 and 2 keys), page_size 2, max_pages 2,
// a pool of 4 pages (Mkv = 8).
PagedBlockDiagonalPaddedKeysMask paged_padded() {
  return BlockDiagonalPaddedKeysMask::from_seqlens({1, 2}, 4, {3, 2}).make_paged(tables({3, 1, 0, 2}, 2), 2);
}
PagedBlockDiagonalGappyKeysMask paged_gappy() {
  return BlockDiagonalGappyKeysMask::from_seqlens({1, 2}, {1, 4, 8}, {3, 2}).make_paged(tables({3, 1, 0, 2}, 2), 2);
}

TEST(BiasReasons, PagedMasksThatFitHaveNone) {
  auto r = bias_reasons(paged_padded(), 1, 4, 3, 8);
  EXPECT_TRUE(r.empty()) << joined(r);
  r = bias_reasons(paged_gappy(), 1, 4, 3, 8);
  EXPECT_TRUE(r.empty()) << joined(r);
  r = bias_reasons(paged_padded(), 1, 1, 3, 16);  // a larger pool is fine
  EXPECT_TRUE(r.empty()) << joined(r);
}

TEST(BiasReasons, PagedNeedsBatchOfOneAndQueriesSummingToMq) {
  EXPECT_REASON(bias_reasons(paged_padded(), 2, 1, 3, 8), "query.shape[0]=2 must be 1 with PagedBlockDiagonalPaddedKeysMask");
  EXPECT_REASON(bias_reasons(paged_gappy(), 1, 1, 4, 8),
                "query.shape[1]=4 must equal sum(q_seqlen)=3 with PagedBlockDiagonalGappyKeysMask");
}

TEST(BiasReasons, PagedPageSizeMustBePositive) {
  auto m = paged_padded();
  m.page_size = 0;
  EXPECT_REASON(bias_reasons(m, 1, 1, 3, 8), "page_size=0 must be >= 1 with PagedBlockDiagonalPaddedKeysMask");
  expect_error([] { BlockDiagonalPaddedKeysMask::from_seqlens({1}, 2, {1}).make_paged(tables({0}, 1), 0); },
               "page_size=0 must be >= 1");
  m.page_size = -2;  // still read as a paged mask
  const auto r = bias_reasons(m, 1, 1, 3, 8);
  EXPECT_REASON(r, "page_size=-2 must be >= 1");
  EXPECT_REASON(r, "k_seqinfo.padding=4 must equal block_tables.max_pages*page_size=0");
}

TEST(BiasReasons, PagedMaxPagesMustBePositive) {
  auto m = paged_gappy();
  m.block_tables = tables({}, 0);
  EXPECT_REASON(bias_reasons(m, 1, 1, 3, 8), "block_tables.max_pages=0 must be >= 1 with PagedBlockDiagonalGappyKeysMask");
}

TEST(BiasReasons, PagedBlockTableHasOneRowPerSequence) {
  auto m = paged_padded();
  m.block_tables.table = DeviceInts({3, 1, 0});
  EXPECT_REASON(bias_reasons(m, 1, 1, 3, 8), "block_tables.table has 3 entries, not len(kv_seqlen)*block_tables.max_pages=4");
  expect_error([] { BlockDiagonalGappyKeysMask::from_seqlens({1}, {0, 2}, {2}).make_paged(tables({0, 1}, 1), 2); },
               "block_tables.table has 2 entries, not len(kv_seqlen)*block_tables.max_pages=1");
}

TEST(BiasReasons, PagedKeyLengthMustBeAMultipleOfThePageSize) {
  EXPECT_REASON(bias_reasons(paged_padded(), 1, 1, 3, 9),
                "key.shape[1]=9 must be a multiple of page_size=2 with PagedBlockDiagonalPaddedKeysMask");
}

TEST(BiasReasons, PagedTableEntriesMustBePagesOfTheKeyTensor) {
  // 3 pages in a pool of Mkv = 6: entry 3 (table[0]) is past it.
  auto r = bias_reasons(paged_padded(), 1, 1, 3, 6);
  ASSERT_EQ(r.size(), 1u) << joined(r);
  EXPECT_REASON(r, "block_tables.table[0]=3 is not a page of the key tensor: key.shape[1]/page_size=3 pages");
  EXPECT_REASON(bias_reasons(paged_padded(), 1, 1, 3, 2), "(and 2 more entries)");
  auto m = paged_gappy();
  m.block_tables.table = DeviceInts({3, -1, 0, 2});
  EXPECT_REASON(bias_reasons(m, 1, 1, 3, 8), "block_tables.table[1]=-1 must be >= 0");
}

TEST(BiasReasons, PagedSequencesMustFitTheirBlockTableRow) {
  // Padded: a row holds max_pages*page_size = 4 keys.
  auto p = paged_padded();
  p.k_seqinfo.seqlen = DeviceInts({3, 5});
  p.k_seqinfo.max_seqlen = 5;
  auto r = bias_reasons(p, 1, 1, 3, 8);
  ASSERT_EQ(r.size(), 1u) << joined(r);
  EXPECT_REASON(r, "kv_seqlen[1]=5 exceeds max_pages*page_size=4");
  expect_error([] { BlockDiagonalPaddedKeysMask::from_seqlens({1}, 8, {5}).make_paged(tables({0, 1}, 2), 2); },
               "kv_seqlen[0]=5 exceeds max_pages*page_size=4");
  // Gappy: seqstart (the offset in the row) + seqlen.
  auto g = paged_gappy();
  g.k_seqinfo.seqstart = DeviceInts({2, 0, 4});
  EXPECT_REASON(bias_reasons(g, 1, 1, 3, 8), "kv_seqstarts[0]+kv_seqlen[0]=5 exceeds max_pages*page_size=4");
  // make_paged: keys [3, 5) of a 2-row layout start in row 0 but end in row 1.
  expect_error([] { BlockDiagonalGappyKeysMask::from_seqlens({1, 1}, {3, 4, 8}, {2, 1}).make_paged(tables({0, 1, 2, 3}, 2), 2); },
               "kv_seqstarts[0]+kv_seqlen[0]=5 exceeds max_pages*page_size=4");
  // ... and keys before their row's start.
  expect_error([] { BlockDiagonalGappyKeysMask::from_seqlens({1, 1}, {0, 2, 8}, {1, 1}).make_paged(tables({0, 1, 2, 3}, 2), 2); },
               "kv_seqstarts[1]=-2 must be >= 0");
}

TEST(BiasReasons, PagedPaddingIsTheBlockTableRow) {
  auto m = paged_padded();
  m.k_seqinfo = PaddedSeqLenInfo::from_seqlens_padded({3, 2}, 3);
  EXPECT_REASON(bias_reasons(m, 1, 1, 3, 8), "k_seqinfo.padding=3 must equal block_tables.max_pages*page_size=4");
}

TEST(BiasReasons, PagedKeepsTheUnderlyingMaskRules) {
  auto p = paged_padded();
  p.k_seqinfo.seqlen = DeviceInts({-1, 2});
  EXPECT_REASON(bias_reasons(p, 1, 1, 3, 8), "kv_seqlen[0]=-1 must be >= 0");
  const BlockDiagonalCausalLocalAttentionPaddedKeysMask local{SeqLenInfo::from_seqlens({1}),
                                                              PaddedSeqLenInfo::from_seqlens_padded({2}, 2), 1};
  auto paged_local = local.make_paged(tables({1, 0}, 2), 2);
  EXPECT_TRUE(bias_reasons(paged_local, 1, 1, 1, 4).empty());
  paged_local.window_size = 0;
  EXPECT_REASON(bias_reasons(paged_local, 1, 1, 1, 4),
                "window_size=0 must be >= 1 with PagedBlockDiagonalCausalLocalPaddedKeysMask");
  auto g = paged_gappy();
  g.q_seqinfo = SeqLenInfo::from_seqlens({3});
  EXPECT_REASON(bias_reasons(g, 1, 1, 3, 8), "len(q_seqlen)=1 must equal len(kv_seqlen)=2 with PagedBlockDiagonalGappyKeysMask");
}

// ---- bias_reasons: ALiBi -------------------------------------------------------------------
TEST(BiasReasons, AlibiNeedsOneSlopePerHead) {
  const AlibiBias bias{AlibiSlopes::geometric(3)};
  EXPECT_TRUE(bias_reasons(bias, 2, 3, 4, 5).empty());
  EXPECT_REASON(bias_reasons(bias, 2, 2, 4, 5), "len(slopes)=3 must equal H (query heads)=2 with AlibiBias");
  EXPECT_REASON(bias_reasons(BlockDiagonalMask::from_seqlens({2}).add_alibi(AlibiSlopes::geometric(4)), 1, 8, 2, 2),
                "len(slopes)=4 must equal H (query heads)=8 with BlockDiagonalMaskWithAlibi");
}

TEST(BiasReasons, AlibiSlopesMustBeFinite) {
  const AlibiSlopes bad{DeviceFloats({0.5f, std::numeric_limits<float>::quiet_NaN(), -std::numeric_limits<float>::infinity()})};
  const auto r = bias_reasons(LowerTriangularMaskWithAlibi{bad}, 1, 3, 2, 2);
  EXPECT_REASON(r, "slopes[1]=nan must be finite with LowerTriangularMaskWithAlibi");
  EXPECT_REASON(r, "slopes[2]=-inf must be finite");
  EXPECT_EQ(r.size(), 2u) << joined(r);
  expect_error([&] { LowerTriangularMask{}.add_alibi(bad); }, "slopes[1]=nan must be finite");
}

TEST(BiasReasons, AlibiKeepsTheBlockDiagonalRules) {
  const AlibiSlopes s = AlibiSlopes::geometric(1);
  EXPECT_REASON(bias_reasons(BlockDiagonalCausalMask::from_seqlens({2, 3}).add_alibi(s), 1, 1, 5, 4),
                "key.shape[1]=4 must equal sum(kv_seqlen)=5 with BlockDiagonalCausalMaskWithAlibi");
  EXPECT_REASON(bias_reasons(BlockDiagonalCausalMask::from_seqlens({2, 3}).add_alibi(s), 2, 1, 5, 5),
                "query.shape[0]=2 must be 1 with BlockDiagonalCausalMaskWithAlibi");
  const BlockDiagonalMaskWithAlibi m{SeqLenInfo::from_seqlens({1, 2}), SeqLenInfo::from_seqlens({3}), s};
  EXPECT_REASON(bias_reasons(m, 1, 1, 3, 3), "len(q_seqlen)=2 must equal len(kv_seqlen)=1 with BlockDiagonalMaskWithAlibi");
}

// ---- bias_reasons: 5-D tensor biases -------------------------------------------------------
TEST(BiasReasons, FiveDimensionalTensorBiasIsReadAsGTimesHHeads) {
  float v[256] = {};
  auto t = [&](std::initializer_list<int64_t> shape, std::initializer_list<int64_t> strides = {}) {
    return TensorView::make(v, DType::f32, shape, strides, TensorView::kHost);
  };
  EXPECT_TRUE(bias_reasons(TensorBias{t({2, 2, 3, 4, 5})}, 2, 6, 4, 5).empty());
  EXPECT_TRUE(bias_reasons(TensorBias{t({1, 1, 1, 4, 5})}, 2, 6, 4, 5).empty());
  EXPECT_TRUE(bias_reasons(TensorBias{t({2, 2, 3, 4, 5}, {20, 0, 0, 5, 1})}, 2, 6, 4, 5).empty());
  EXPECT_TRUE(bias_reasons(TensorBias{t({2, 1, 6, 4, 5})}, 2, 6, 4, 5).empty());
  EXPECT_TRUE(bias_reasons(LowerTriangularMask{}.add_bias(t({1, 2, 3, 4, 5})), 2, 6, 4, 5).empty());
  // G and H strides that are not one head stride.
  EXPECT_REASON(bias_reasons(TensorBias{t({1, 2, 3, 4, 5}, {160, 80, 20, 5, 1})}, 1, 6, 4, 5),
                "attn_bias.stride[1]=80 must equal shape[2]·stride[2]=60");
  EXPECT_REASON(bias_reasons(TensorBias{t({1, 2, 3, 4, 5}, {20, 0, 20, 5, 1})}, 1, 6, 4, 5),
                "attn_bias.stride[1]=0 must equal shape[2]·stride[2]=60");
  // Shapes name the 5-D dimensions.
  EXPECT_REASON(bias_reasons(TensorBias{t({1, 2, 3, 4, 5})}, 1, 4, 4, 5),
                "attn_bias.shape[1]·shape[2]=6 must equal H (query heads)=4 or 1");
  EXPECT_REASON(bias_reasons(TensorBias{t({1, 2, 3, 4, 5})}, 1, 6, 4, 7), "attn_bias.shape[4]=5 must equal key.shape[1]=7");
  EXPECT_REASON(bias_reasons(TensorBias{t({1, 2, 3, 4, 5})}, 1, 6, 3, 5), "attn_bias.shape[3]=4 must equal query.shape[1]=3");
  EXPECT_REASON(bias_reasons(TensorBias{t({1, 1, 1, 4, 5}, {40, 40, 40, 10, 2})}, 1, 1, 4, 5),
                "attn_bias.stride[4]=2 must be 1");
  EXPECT_REASON(bias_reasons(TensorBias{t({4, 5})}, 1, 1, 4, 5), "attn_bias.ndim=2 must be 4");
}

// ---- names and device arrays ---------------------------------------------------------------
template <size_t... I>
std::vector<std::string> all_names(std::index_sequence<I...>) {
  return {bias_name(AttnBias(std::in_place_index<I>))...};
}

// jit/bias_kinds.h lists, for each kernel kind, the xFormers biases it serves: every bias's
// kind (api/src/plan.cpp describe) lists it, so the table stays true to the mapping.
template <size_t... I>
std::vector<std::pair<std::string, jit::BiasKind>> all_kinds(std::index_sequence<I...>) {
  return {{bias_name(AttnBias(std::in_place_index<I>)), detail::describe(AttnBias(std::in_place_index<I>)).kind}...};
}

TEST(BiasName, EveryBiasIsListedByItsKernelKind) {
  for (const auto& [name, kind] : all_kinds(std::make_index_sequence<std::variant_size_v<AttnBias>>{})) {
    const std::string listed = jit::xformers_biases(kind);
    if (name == "None") {
      EXPECT_EQ(listed, "no bias");
      continue;
    }
    bool found = false;  // a whole name in the comma-separated list
    for (size_t at = 0; (at = listed.find(name, at)) != std::string::npos; at += name.size()) {
      const size_t end = at + name.size();
      found |= (at == 0 || listed[at - 1] == ' ') && (end == listed.size() || listed[end] == ',' || listed[end] == ' ');
    }
    EXPECT_TRUE(found) << name << " maps to kind " << jit::to_string(kind) << ", which lists \"" << listed << "\"";
  }
}

TEST(BiasName, IsTheXFormersClassName) {
  const std::vector<std::string> want = {
      "None",
      "TensorBias",
      "LowerTriangularMask",
      "LowerTriangularMaskWithTensorBias",
      "LowerTriangularFromBottomRightMask",
      "LowerTriangularFromBottomRightLocalAttentionMask",
      "LocalAttentionFromBottomRightMask",
      "BlockDiagonalMask",
      "BlockDiagonalCausalMask",
      "BlockDiagonalCausalFromBottomRightMask",
      "BlockDiagonalCausalLocalAttentionMask",
      "BlockDiagonalCausalLocalAttentionFromBottomRightMask",
      "BlockDiagonalPaddedKeysMask",
      "BlockDiagonalCausalWithOffsetPaddedKeysMask",
      "BlockDiagonalLocalAttentionPaddedKeysMask",
      "BlockDiagonalCausalLocalAttentionPaddedKeysMask",
      "BlockDiagonalGappyKeysMask",
      "BlockDiagonalCausalWithOffsetGappyKeysMask",
      "PagedBlockDiagonalPaddedKeysMask",
      "PagedBlockDiagonalCausalWithOffsetPaddedKeysMask",
      "PagedBlockDiagonalCausalLocalPaddedKeysMask",
      "PagedBlockDiagonalGappyKeysMask",
      "PagedBlockDiagonalCausalWithOffsetGappyKeysMask",
      "AlibiBias",
      "LowerTriangularMaskWithAlibi",
      "BlockDiagonalMaskWithAlibi",
      "BlockDiagonalCausalMaskWithAlibi",
      "BlockSparseMask",
  };
  EXPECT_EQ(all_names(std::make_index_sequence<std::variant_size_v<AttnBias>>()), want);
  EXPECT_STREQ(bias_name(BlockDiagonalMask::from_seqlens({1}).make_local_attention(1)), "BlockDiagonalCausalLocalAttentionMask");
}

TEST(BiasDeviceInts, CallerPointerIsReturnedWithoutAGpu) {
  const auto* ptr = reinterpret_cast<const int32_t*>(uintptr_t(0x1000));
  const DeviceInts d({1, 2, 3}, ptr);
  const DeviceInts copy = d;
  EXPECT_EQ(d.device(0), ptr);
  EXPECT_EQ(copy.device(0), ptr);
  EXPECT_EQ(copy.host(), (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(DeviceInts().device(0), nullptr);  // nothing to upload
  EXPECT_TRUE(DeviceInts().empty());
}

TEST(BiasDeviceInts, UploadNeedsADriver) {
  if (jit::CudaDriver::get().available) GTEST_SKIP() << "a CUDA driver is present; the GPU tests cover uploads";
  expect_error([] { DeviceInts({1, 2}).device(0); }, "CUDA");
  expect_error([] { DeviceFloats({0.5f}).device(0); }, "CUDA");
}

TEST(BiasDeviceInts, FloatArraysWorkTheSame) {
  const auto* ptr = reinterpret_cast<const float*>(uintptr_t(0x2000));
  const DeviceFloats d({0.5f, 0.25f}, ptr);
  const DeviceFloats copy = d;
  EXPECT_EQ(copy.device(0), ptr);
  EXPECT_EQ(copy.host(), (std::vector<float>{0.5f, 0.25f}));
  EXPECT_EQ(DeviceFloats().device(0), nullptr);
  EXPECT_TRUE(DeviceFloats().empty());
}

}  // namespace
}  // namespace jitattn::test
