// The backward over the whole input domain xFormers accepts, drawn at random the way its
// create_attn_bias generator draws: every trainable bias kind (gappy keys with overlapping
// ranges, empty and one-token sequences), 4-D, native GQA, key/value expanded over their heads
// by stride 0 (4-D, and 5-D BMGHK with G = 1..3) with dK/dV given as the same stride-0 views
// (then the sum over the heads that share them) or as per-head tensors, dense tensor biases with
// dbias, dropout, the deterministic mode, f32/f16/bf16. Every output is poisoned (NaN) before the
// call and checked against the fp64 reference; a layout the library must refuse is checked to
// be refused.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <sstream>
#include <tuple>

#include "gpu_support.h"
#include "jitattn/attention.h"
#include "philox.h"
#include "reference.h"

namespace jitattn::test {
namespace {

// How key/value (and their gradients) are laid out. Query, out and grad are contiguous 4-D
// [B, M, Hq, K] or, for the bmghk layouts, 5-D [B, M, G, H, K] with Hq = G·H.
enum class Layout {
  dense,         // k/v [B, M, Hq, K]
  gqa,           // k/v [B, M, Hkv, K], Hkv < Hq dividing it
  shared4d,      // k/v one head [B, M, 1, K] viewed as [B, M, Hq, K] with head stride 0
  bmghk_shared,  // k/v [B, M, G, 1, K] viewed as [B, M, G, H, K] with stride[3] = 0 (xFormers' MQA/GQA)
  bmghk,         // k/v [B, M, G, H, K], every head its own
};
const char* name(Layout l) {
  switch (l) {
    case Layout::dense: return "dense";
    case Layout::gqa: return "gqa";
    case Layout::shared4d: return "shared4d";
    case Layout::bmghk_shared: return "bmghk_shared";
    case Layout::bmghk: return "bmghk";
  }
  return "?";
}
bool five_d(Layout l) { return l == Layout::bmghk_shared || l == Layout::bmghk; }

struct Case {
  DType dt = DType::bf16;
  Layout layout = Layout::dense;
  int64_t B = 1, Mq = 1, Mkv = 1, G = 1, H = 1, Hs = 1, K = 64, Kv = 64;  // Hs: key/value heads in memory
  bool per_head_grads = false;  // dk/dv as [B, M, Hq, K] tensors rather than the key/value views
  AttnBias bias;                // without the tensor part
  bool tensor_bias = false, dbias = false, deterministic = false;
  double p = 0.0;
  int64_t Hq() const { return G * H; }
  std::string describe() const {
    std::ostringstream os;
    os << to_string(dt) << " " << name(layout) << " B=" << B << " Mq=" << Mq << " Mkv=" << Mkv << " G=" << G
       << " H=" << H << " Hs=" << Hs << " K=" << K << " Kv=" << Kv << " bias=" << bias_name(bias)
       << (tensor_bias ? "+tensor" : "") << (dbias ? " dbias" : "") << (per_head_grads ? " per-head dk/dv" : "")
       << " p=" << p << (deterministic ? " deterministic" : "");
    return os.str();
  }
};

int64_t draw(int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng()); }
bool chance(double p) { return std::uniform_real_distribution<double>(0, 1)(rng()) < p; }

// Sequence lengths for the block-diagonal kinds: 1..4 drawn sequences plus an empty and a
// one-token one; key lengths at least the query's where the kind requires it.
void draw_lengths(std::vector<int32_t>& ql, std::vector<int32_t>& kl, bool kv_at_least_q) {
  ql = random_lengths(int(draw(1, 4)), 2, 70);
  kl.clear();
  for (int32_t x : ql) kl.push_back(int32_t(kv_at_least_q ? x + draw(0, 30) : draw(0, x + 30)));
}

// The bias (and the batch geometry it implies). Dense kinds keep B, Mq, Mkv.
AttnBias draw_bias(Case& c, const AlibiSlopes& slopes) {
  const int kind = int(draw(0, 21));
  std::vector<int32_t> ql, kl;
  auto varlen = [&](bool kv_at_least_q) {
    draw_lengths(ql, kl, kv_at_least_q);
    c.B = 1, c.Mq = sum(ql), c.Mkv = sum(kl);
  };
  switch (kind) {
    case 0: return {};
    case 1: return LowerTriangularMask{};
    case 2: return LowerTriangularFromBottomRightMask{};
    case 3: return LowerTriangularFromBottomRightMask{}.make_local_attention(int32_t(draw(1, 40)));
    case 4: return LocalAttentionFromBottomRightMask{int32_t(draw(0, 30)), int32_t(draw(0, 30))};
    case 5: c.tensor_bias = true; return {};
    case 6: c.tensor_bias = true; return LowerTriangularMask{};
    case 7: return AlibiBias{slopes};
    case 8: return LowerTriangularMask{}.add_alibi(slopes);
    case 9: varlen(false); return BlockDiagonalMask::from_seqlens(ql, kl);
    case 10: varlen(false); return BlockDiagonalCausalMask::from_seqlens(ql, kl);
    case 11: varlen(true); return BlockDiagonalMask::from_seqlens(ql, kl).make_causal_from_bottomright();
    case 12: varlen(true); return BlockDiagonalMask::from_seqlens(ql, kl).make_local_attention(int32_t(draw(1, 30)));
    case 13:
      varlen(true);
      return BlockDiagonalMask::from_seqlens(ql, kl).make_local_attention_from_bottomright(int32_t(draw(1, 30)));
    case 14: varlen(false); return BlockDiagonalMask::from_seqlens(ql, kl).add_alibi(slopes);
    case 15: varlen(false); return BlockDiagonalCausalMask::from_seqlens(ql, kl).add_alibi(slopes);
    case 16: case 17: case 18: case 19: {
      draw_lengths(ql, kl, false);
      const int32_t pad = *std::max_element(kl.begin(), kl.end()) + int32_t(draw(1, 10));
      c.B = 1, c.Mq = sum(ql), c.Mkv = int64_t(ql.size()) * pad;
      const auto m = BlockDiagonalCausalWithOffsetPaddedKeysMask::from_seqlens(ql, pad, kl);
      if (kind == 16) return BlockDiagonalPaddedKeysMask::from_seqlens(ql, pad, kl);
      if (kind == 17) return m;
      if (kind == 18)
        return BlockDiagonalLocalAttentionPaddedKeysMask{m.q_seqinfo, m.k_seqinfo, int32_t(draw(0, 20)), int32_t(draw(0, 20))};
      return BlockDiagonalCausalLocalAttentionPaddedKeysMask{m.q_seqinfo, m.k_seqinfo, int32_t(draw(1, 20))};
    }
    default: {  // gappy: key ranges anywhere in the key tensor, overlapping as they fall
      draw_lengths(ql, kl, false);
      const int32_t total = *std::max_element(kl.begin(), kl.end()) + int32_t(draw(0, 60));
      std::vector<int32_t> starts;
      for (int32_t x : kl) starts.push_back(int32_t(draw(0, total - x)));
      starts.push_back(total);
      c.B = 1, c.Mq = sum(ql), c.Mkv = total;
      if (kind == 20) return BlockDiagonalGappyKeysMask::from_seqlens(ql, starts, kl);
      return BlockDiagonalCausalWithOffsetGappyKeysMask::from_seqlens(ql, starts, kl);
    }
  }
}

// Device memory of random values in `dt` (with the values), or poisoned.
struct Buffer {
  DeviceBuffer mem;
  std::vector<double> values;
};
Buffer random_buffer(int64_t n, DType dt) {
  Buffer b;
  std::vector<unsigned char> bytes;
  random_values(rng(), size_t(n), dt, b.values, bytes);
  b.mem = DeviceBuffer(bytes.size() + 16);
  b.mem.upload(bytes.data(), bytes.size());
  return b;
}
Buffer poisoned_buffer(int64_t n, DType dt) {
  Buffer b;
  b.mem = DeviceBuffer(size_t(n) * element_size(dt) + 16);
  b.mem.fill(0xFF);
  return b;
}
std::vector<double> read(const Buffer& b, int64_t n, DType dt) {
  std::vector<unsigned char> raw(size_t(n) * element_size(dt));
  b.mem.download(raw.data(), raw.size());
  return decode(raw, dt);
}

// Where `got` and `want` ([B, M, H, D] row-major) disagree on which entries are finite — what a
// relative error of inf means — as the count and the first few (b, m, h, d), and the values.
std::string nonfinite_report(const std::vector<double>& got, const std::vector<double>& want, int64_t M, int64_t H,
                             int64_t D) {
  std::ostringstream os;
  int64_t n = 0;
  for (size_t x = 0; x < got.size() && x < want.size(); ++x) {
    if (std::isfinite(got[x]) == std::isfinite(want[x])) continue;
    if (n++ < 6) {
      const int64_t d = int64_t(x) % D, h = int64_t(x) / D % H, m = int64_t(x) / (D * H) % M, b = int64_t(x) / (D * H * M);
      os << " (" << b << ", " << m << ", " << h << ", " << d << "): got " << got[x] << " want " << want[x] << ";";
    }
  }
  if (n == 0) return "";
  return " — " + std::to_string(n) + " entries disagree on finiteness:" + os.str();
}

// Query-like tensors: [B, M, Hq, D] in memory, 4-D or 5-D.
TensorView query_view(const Case& c, void* data, int64_t M, int64_t D) {
  if (five_d(c.layout)) return TensorView::make(data, c.dt, {c.B, M, c.G, c.H, D});
  return TensorView::make(data, c.dt, {c.B, M, c.Hq(), D});
}
// Key-like tensors: [B, M, Hs, D] in memory, viewed per the layout.
TensorView key_view(const Case& c, void* data, int64_t M, int64_t D) {
  switch (c.layout) {
    case Layout::dense: case Layout::gqa: return TensorView::make(data, c.dt, {c.B, M, c.Hs, D});
    case Layout::shared4d: return TensorView::make(data, c.dt, {c.B, M, c.Hq(), D}, {M * D, D, 0, 1});
    case Layout::bmghk_shared: return TensorView::make(data, c.dt, {c.B, M, c.G, c.H, D}, {M * c.G * D, c.G * D, D, 0, 1});
    case Layout::bmghk: return TensorView::make(data, c.dt, {c.B, M, c.G, c.H, D});
  }
  return {};
}

Case draw_case(DType dt) {
  Case c;
  c.dt = dt;
  c.layout = Layout(draw(0, 4));
  switch (c.layout) {
    case Layout::dense: c.H = draw(1, 3), c.Hs = c.H; break;
    case Layout::gqa: c.Hs = draw(1, 2), c.H = c.Hs * draw(2, 3); break;
    case Layout::shared4d: c.H = draw(2, 4), c.Hs = 1; break;
    case Layout::bmghk_shared: c.G = draw(1, 3), c.H = draw(2, 3), c.Hs = c.G; break;
    case Layout::bmghk: c.G = draw(1, 2), c.H = draw(1, 2), c.Hs = c.G * c.H; break;
  }
  c.per_head_grads = (c.layout == Layout::shared4d || c.layout == Layout::bmghk_shared) && chance(0.3);
  const int64_t dims[] = {32, 64, 64, 128};
  c.K = dims[draw(0, 3)];
  c.Kv = chance(0.2) ? (c.K == 64 ? 128 : 64) : c.K;
  c.B = draw(1, 3), c.Mq = chance(0.05) ? 0 : draw(1, 150), c.Mkv = chance(0.05) ? 0 : draw(1, 150);
  c.deterministic = chance(0.3);
  c.p = chance(0.25) ? 0.2 : 0.0;
  return c;
}

// Runs one case (drawing its bias unless `keep_bias`) and checks it against the reference, or,
// for per-head gradients of key/value shared across G >= 2 groups' heads (which cannot be
// read as G heads), that it is refused. The deterministic mode must also repeat bit for bit.
void run_case(Case c, bool draw_its_bias = true) {
  const AlibiSlopes slopes = AlibiSlopes::geometric(int32_t(c.Hq()));
  if (draw_its_bias) c.bias = draw_bias(c, slopes);
  c.dbias = c.tensor_bias && chance(0.5);
  SCOPED_TRACE(c.describe());
  const DType dt = c.dt;
  const int64_t Hq = c.Hq();
  Buffer q = random_buffer(c.B * c.Mq * Hq * c.K, dt), k = random_buffer(c.B * c.Mkv * c.Hs * c.K, dt),
         v = random_buffer(c.B * c.Mkv * c.Hs * c.Kv, dt), dout = random_buffer(c.B * c.Mq * Hq * c.Kv, dt);
  Buffer out = poisoned_buffer(c.B * c.Mq * Hq * c.Kv, dt), lse = poisoned_buffer(c.B * Hq * c.Mq, DType::f32);
  const TensorView qv = query_view(c, q.mem.get(), c.Mq, c.K), kv = key_view(c, k.mem.get(), c.Mkv, c.K),
                   vv = key_view(c, v.mem.get(), c.Mkv, c.Kv), ov = query_view(c, out.mem.get(), c.Mq, c.Kv),
                   gv = query_view(c, dout.mem.get(), c.Mq, c.Kv);
  const TensorView lv = TensorView::make(lse.mem.get(), DType::f32, {c.B, Hq, c.Mq});

  AttnBias bias = c.bias;
  Buffer tb, db;
  if (c.tensor_bias) {
    tb = random_buffer(c.B * Hq * c.Mq * c.Mkv, dt);
    const TensorView t = TensorView::make(tb.mem.get(), dt, {c.B, Hq, c.Mq, c.Mkv});
    bias = std::holds_alternative<LowerTriangularMask>(c.bias) ? AttnBias(LowerTriangularMask{}.add_bias(t))
                                                               : AttnBias(TensorBias{t});
    db = poisoned_buffer(c.B * Hq * c.Mq * c.Mkv, dt);
  }
  const TensorView dbv = c.dbias ? TensorView::make(db.mem.get(), dt, {c.B, Hq, c.Mq, c.Mkv}) : TensorView{};

  AttentionOptions fo;
  fo.p = c.p, fo.seed = rng()(), fo.offset = rng()() % 1000;
  memory_efficient_attention_forward_requires_grad(qv, kv, vv, bias, ov, lv, fo);

  // Gradients: dq like the query; dk/dv like key/value (stride-0 views over Hs heads), or per head.
  const int64_t Hg = c.per_head_grads ? Hq : c.Hs;
  Buffer dq = poisoned_buffer(c.B * c.Mq * Hq * c.K, dt), dk = poisoned_buffer(c.B * c.Mkv * Hg * c.K, dt),
         dv = poisoned_buffer(c.B * c.Mkv * Hg * c.Kv, dt);
  const TensorView dqv = query_view(c, dq.mem.get(), c.Mq, c.K);
  const TensorView dkv = c.per_head_grads ? query_view(c, dk.mem.get(), c.Mkv, c.K) : key_view(c, dk.mem.get(), c.Mkv, c.K);
  const TensorView dvv = c.per_head_grads ? query_view(c, dv.mem.get(), c.Mkv, c.Kv) : key_view(c, dv.mem.get(), c.Mkv, c.Kv);
  BackwardOptions bo;
  bo.p = fo.p, bo.seed = fo.seed, bo.offset = fo.offset, bo.deterministic = c.deterministic;
  if (c.per_head_grads && c.layout == Layout::bmghk_shared && c.G > 1) {
    // Key/value are G heads in memory; per-head gradients of G·H heads cannot be read that way.
    try {
      memory_efficient_attention_backward(gv, ov, lv, qv, kv, vv, bias, dqv, dkv, dvv, dbv, bo);
      ADD_FAILURE() << "per-head dk/dv of key/value expanded over G >= 2 groups were accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("expanded"), std::string::npos) << e.what();
    }
    return;
  }
  memory_efficient_attention_backward(gv, ov, lv, qv, kv, vv, bias, dqv, dkv, dvv, dbv, bo);
  device_synchronize();
  if (c.deterministic) {  // the same call again, into the same (re-poisoned) gradients
    const auto first = std::make_tuple(dq.mem.download(), dk.mem.download(), dv.mem.download());
    for (Buffer* b : {&dq, &dk, &dv}) b->mem.fill(0xFF);
    memory_efficient_attention_backward(gv, ov, lv, qv, kv, vv, bias, dqv, dkv, dvv, dbv, bo);
    device_synchronize();
    EXPECT_TRUE(first == std::make_tuple(dq.mem.download(), dk.mem.download(), dv.mem.download()))
        << "the deterministic mode gave different bits on a second run";
  }

  const RefShape s{c.B, c.Mq, c.Mkv, Hq, c.K, c.Kv};
  const double scale = 1.0 / std::sqrt(double(c.K));
  std::vector<double> mask = materialize(c.bias, c.B, Hq, c.Mq, c.Mkv);
  if (c.tensor_bias)
    for (size_t i = 0; i < mask.size(); ++i) mask[i] += tb.values[i];
  const auto kk = repeat_heads(k.values, c.B, c.Mkv, c.Hs, Hq, c.K);
  const auto vvals = repeat_heads(v.values, c.B, c.Mkv, c.Hs, Hq, c.Kv);
  std::vector<uint8_t> keep;
  if (c.p > 0) keep = dropout_keep_mask(fo.seed, fo.offset, c.B, Hq, c.Mq, c.Mkv, c.p);
  const RefResult fwd = c.p > 0 ? reference_attention_dropout(s, q.values, kk, vvals, mask, scale, keep, c.p)
                                : reference_attention(s, q.values, kk, vvals, mask, scale);
  const auto got_out = read(out, c.B * c.Mq * Hq * c.Kv, dt);
  EXPECT_LE(relative_error(got_out, fwd.out), dtype_tolerance(dt)) << "forward out" << nonfinite_report(got_out, fwd.out, c.Mq, Hq, c.Kv);
  const auto got_lse = read(lse, c.B * Hq * c.Mq, DType::f32);  // [B, H, Mq]: rows as (b, h, i, 0)
  EXPECT_LE(relative_error(got_lse, fwd.lse), dtype_tolerance(dt)) << "forward lse" << nonfinite_report(got_lse, fwd.lse, Hq, c.Mq, 1);
  const RefGrads ref = reference_backward(s, q.values, kk, vvals, mask, scale, dout.values, c.p > 0 ? &keep : nullptr, c.p);
  const double tol = grad_tolerance(dt);
  const auto got_dq = read(dq, c.B * c.Mq * Hq * c.K, dt);
  EXPECT_LE(gradient_error(got_dq, ref.dq, ref.dq_mag), tol) << "dq" << nonfinite_report(got_dq, ref.dq, c.Mq, Hq, c.K);
  const auto want_dk = c.per_head_grads ? ref.dk : sum_heads(ref.dk, c.B, c.Mkv, c.Hs, Hq, c.K);
  const auto dk_mag = c.per_head_grads ? ref.dk_mag : sum_heads(ref.dk_mag, c.B, c.Mkv, c.Hs, Hq, c.K);
  const auto want_dv = c.per_head_grads ? ref.dv : sum_heads(ref.dv, c.B, c.Mkv, c.Hs, Hq, c.Kv);
  const auto got_dk = read(dk, c.B * c.Mkv * Hg * c.K, dt), got_dv = read(dv, c.B * c.Mkv * Hg * c.Kv, dt);
  EXPECT_LE(gradient_error(got_dk, want_dk, dk_mag), tol) << "dk" << nonfinite_report(got_dk, want_dk, c.Mkv, Hg, c.K);
  EXPECT_LE(relative_error(got_dv, want_dv), tol) << "dv" << nonfinite_report(got_dv, want_dv, c.Mkv, Hg, c.Kv);
  if (c.dbias) EXPECT_LE(gradient_error(read(db, c.B * Hq * c.Mq * c.Mkv, dt), ref.dbias, ref.dbias_mag), tol) << "dbias";
}

class BackwardFamilyGpu : public ::testing::Test {
 protected:
  void SetUp() override { JITATTN_REQUIRE_GPU(); }
};

// Six instances (each dtype twice) draw JITATTN_TEST_FAMILY_CASES / 6 cases each (default 90 in
// all), so sharded runs compile their kernels in parallel.
class BackwardFamilyRandom : public ::testing::TestWithParam<std::tuple<DType, int>> {
 protected:
  void SetUp() override { JITATTN_REQUIRE_GPU(); }
};

TEST_P(BackwardFamilyRandom, CasesFromTheWholeFamily) {
  const char* env = std::getenv("JITATTN_TEST_FAMILY_CASES");
  const int n = std::max(1, (env ? std::atoi(env) : 90) / 6);
  const DType dt = std::get<0>(GetParam());
  reseed(uint64_t(dt) * 2 + uint64_t(std::get<1>(GetParam())) + 1);  // replay: JITATTN_TEST_SEED and this test alone
  for (int i = 0; i < n; ++i) {
    SCOPED_TRACE("case " + std::to_string(i));
    run_case(draw_case(dt));
    if (HasFailure()) break;  // the first failing case, with its description, is enough to replay
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, BackwardFamilyRandom,
                         ::testing::Combine(::testing::Values(DType::f32, DType::f16, DType::bf16), ::testing::Values(0, 1)),
                         [](const auto& info) {
                           return std::string(to_string(std::get<0>(info.param))) + "_" +
                                  std::to_string(std::get<1>(info.param));
                         });

// The two classes the suite never drew before, each on its own: xFormers' 5-D MQA (G = 1) with
// dk/dv as the same stride-0 views, and gappy keys whose ranges overlap (key 8 in all three
// sequences, keys 9..10 in two).
TEST_F(BackwardFamilyGpu, MqaStrideZeroGradientsAreSums) {
  for (DType dt : {DType::bf16, DType::f32}) {
    Case c;
    c.dt = dt, c.layout = Layout::bmghk_shared, c.B = 2, c.Mq = 70, c.Mkv = 90, c.G = 1, c.H = 4, c.Hs = 1;
    run_case(c, false);
  }
}

// MQA over 3 query heads, a bottom-right local window, more queries than keys (the first rows
// see no key), f16, K = 128, every window from 1 key to 40. A window of one key makes dQ and dK
// exactly 0 (each row's P is 1 on its one key), which the kernels give to within rounding: the
// random test drew such cases and a plain relative error called them infinitely wrong
// (gradient_error in tests/reference.h says how they are judged).
TEST_F(BackwardFamilyGpu, MqaLocalWindowsWithMoreQueriesThanKeys) {
  for (bool deterministic : {false, true})
    for (int32_t w = 1; w <= 40; ++w) {
      Case c;
      c.dt = DType::f16, c.layout = Layout::gqa, c.B = 1, c.Mq = 64, c.Mkv = 53, c.H = 3, c.Hs = 1, c.K = c.Kv = 128;
      c.deterministic = deterministic;
      c.bias = LowerTriangularFromBottomRightMask{}.make_local_attention(w);
      SCOPED_TRACE("window_size " + std::to_string(w));
      run_case(c, false);
      if (HasFailure()) return;
    }
}

TEST_F(BackwardFamilyGpu, OverlappingGappyKeysSumOverSequences) {
  const std::vector<int32_t> ql{5, 3, 6}, starts{7, 2, 8, 20}, kl{4, 7, 10};
  for (bool deterministic : {false, true})
    for (DType dt : {DType::bf16, DType::f16, DType::f32})
      for (const AttnBias& bias : {AttnBias{BlockDiagonalGappyKeysMask::from_seqlens(ql, starts, kl)},
                                   AttnBias{BlockDiagonalCausalWithOffsetGappyKeysMask::from_seqlens(ql, starts, kl)}}) {
        Case c;
        c.dt = dt, c.B = 1, c.Mq = 14, c.Mkv = 20, c.H = 2, c.Hs = 2, c.deterministic = deterministic;
        c.bias = bias;
        run_case(c, false);
      }
}

// Head dims past 128 + 128, where bwd_mma.cuh gives each key block to two blocks, each computing
// dK, dV and dQ over half of the head dims (kernel_src/params.h bwd_mma_slices): cases drawn over
// the same family (every layout and trainable bias kind, dropout, dbias, the deterministic mode),
// K from 160 to 256 and Kv the same or another, and the overlapping gappy keys whose dK/dV are
// summed through the fp32 accumulators.
class BackwardWideHeadDims : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override { JITATTN_REQUIRE_GPU(); }
};

TEST_P(BackwardWideHeadDims, CasesFromTheWholeFamily) {
  reseed(100 + uint64_t(GetParam()));
  for (int i = 0; i < 10; ++i) {
    SCOPED_TRACE("case " + std::to_string(i));
    Case c = draw_case(GetParam());
    const int64_t dims[] = {160, 192, 256, 256};
    c.K = dims[draw(0, 3)];
    const int64_t vdims[] = {c.K, c.K, 64, 128, 256};
    c.Kv = vdims[draw(0, 4)];
    run_case(c);
    if (HasFailure()) break;
  }
  const std::vector<int32_t> ql{5, 3, 6}, starts{7, 2, 8, 20}, kl{4, 7, 10};
  for (bool deterministic : {false, true}) {
    Case c;
    c.dt = GetParam(), c.B = 1, c.Mq = 14, c.Mkv = 20, c.H = 2, c.Hs = 2, c.K = 256, c.Kv = 192;
    c.deterministic = deterministic;
    c.bias = BlockDiagonalGappyKeysMask::from_seqlens(ql, starts, kl);
    run_case(c, false);
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, BackwardWideHeadDims, ::testing::Values(DType::f16, DType::bf16),
                         [](const auto& info) { return std::string(to_string(info.param)); });

}  // namespace
}  // namespace jitattn::test
