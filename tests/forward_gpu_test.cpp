// The forward kernels against the fp64 reference, on random inputs drawn fresh every run, with
// outputs poisoned (NaN) before each launch so an unwritten element fails the comparison.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "gpu_support.h"
#include "jit/jit_runtime.h"
#include "jitattn/attention.h"
#include "reference.h"

namespace jitattn::test {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

enum class Layout { contiguous, strided, three_d, misaligned };

struct Case {
  DType dtype = DType::bf16;
  std::optional<DType> out_dtype;
  int64_t B = 1, Mq = 1, Mkv = 1, H = 1, K = 64, Kv = 64;
  AttnBias bias;
  bool lse = true;
  Layout layout = Layout::contiguous;
  bool bias_broadcast = false;  // tensor bias as [1, H, Mq, Mkv]
  int masked_row = -1;          // tensor bias: make this query row -inf everywhere
  std::optional<double> scale;

  std::string describe() const {
    std::ostringstream os;
    os << to_string(dtype) << (out_dtype ? std::string("->") + to_string(*out_dtype) : "") << " B=" << B
       << " Mq=" << Mq << " Mkv=" << Mkv << " H=" << H << " K=" << K << " Kv=" << Kv << " bias=" << bias_name(bias)
       << " lse=" << lse << " layout=" << int(layout);
    return os.str();
  }
};

double tolerance(DType in, DType out) {
  const double t_in = in == DType::f32 ? 2e-5 : in == DType::f16 ? 2e-3 : 1e-2;
  const double t_out = out == DType::f32 ? 0 : out == DType::f16 ? 2e-3 : 1e-2;
  return std::max(t_in, t_out);
}

std::mt19937_64& rng() {
  static std::mt19937_64 r([] {
    const uint64_t seed = std::random_device{}();
    std::cout << "[ seed ] " << seed << "\n";
    return seed;
  }());
  return r;
}

// A [B, M, H, D] tensor in device memory with the case's layout; returns the logical values.
struct DeviceTensor {
  DeviceBuffer buf;
  TensorView view;
  std::vector<double> values;  // logical [B, M, H, D], row-major
};

DeviceTensor make_input(int64_t B, int64_t M, int64_t H, int64_t D, DType dt, Layout layout, double stddev = 1.0) {
  DeviceTensor t;
  std::vector<unsigned char> dense;
  random_values(rng(), size_t(B * M * H * D), dt, t.values, dense, stddev);
  const size_t es = element_size(dt);
  int64_t sb, sm, sh, total, offset = 0;
  if (layout == Layout::strided) {  // physically [B, H, M, D + 8]: heads outermost, padded rows
    sm = D + 8, sh = M * sm, sb = H * sh, total = B * sb;
  } else {
    sh = D, sm = H * D, sb = M * sm, total = B * sb;
  }
  if (layout == Layout::misaligned) offset = 1;  // 2 or 4 bytes off a 16-byte boundary
  // Padding and slack are NaN: a kernel that reads them produces NaN and fails.
  std::vector<unsigned char> host(size_t(total + offset) * es, 0xFF);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t m = 0; m < M; ++m)
      for (int64_t h = 0; h < H; ++h)
        std::memcpy(&host[size_t(offset + b * sb + m * sm + h * sh) * es], &dense[size_t(((b * M + m) * H + h) * D) * es],
                    size_t(D) * es);
  t.buf = DeviceBuffer(host.size());
  t.buf.upload(host.data(), host.size());
  void* data = static_cast<char*>(t.buf.get()) + offset * es;
  if (layout == Layout::three_d) {
    EXPECT_EQ(H, 1);
    t.view = TensorView::make(data, dt, {B, M, D}, {sb, sm, 1});
  } else {
    t.view = TensorView::make(data, dt, {B, M, H, D}, {sb, sm, sh, 1});
  }
  return t;
}

void run_case(const Case& c) {
  SCOPED_TRACE(c.describe());
  const DType odt = c.out_dtype.value_or(c.dtype);
  DeviceTensor q = make_input(c.B, c.Mq, c.H, c.K, c.dtype, c.layout);
  DeviceTensor k = make_input(c.B, c.Mkv, c.H, c.K, c.dtype, c.layout);
  DeviceTensor v = make_input(c.B, c.Mkv, c.H, c.Kv, c.dtype, c.layout);

  // Output in the same layout family, poisoned.
  const Layout out_layout = c.layout == Layout::three_d ? Layout::three_d : Layout::contiguous;
  DeviceTensor out = make_input(c.B, c.Mq, c.H, c.Kv, odt, out_layout);
  out.buf.fill(0xFF);
  DeviceBuffer lse_buf(size_t(c.B * c.H * c.Mq) * 4 + 4);
  lse_buf.fill(0xFF);
  const TensorView lse = c.lse ? TensorView::make(lse_buf.get(), DType::f32, {c.B, c.H, c.Mq}) : TensorView{};

  AttnBias bias = c.bias;
  std::vector<double> bias_values;
  DeviceBuffer bias_buf;
  if (std::holds_alternative<TensorBias>(c.bias)) {
    const int64_t bb = c.bias_broadcast ? 1 : c.B;
    std::vector<double> vals;
    std::vector<unsigned char> bytes;
    random_values(rng(), size_t(bb * c.H * c.Mq * c.Mkv), c.dtype, vals, bytes);
    if (c.masked_row >= 0 && c.masked_row < c.Mq) {  // one fully masked row per (b, h)
      const size_t es = element_size(c.dtype);
      for (int64_t bh = 0; bh < bb * c.H; ++bh)
        for (int64_t j = 0; j < c.Mkv; ++j) {
          const size_t idx = size_t((bh * c.Mq + c.masked_row) * c.Mkv + j);
          vals[idx] = -kInf;
          if (c.dtype == DType::f32) {
            const float f = -INFINITY;
            std::memcpy(&bytes[idx * 4], &f, 4);
          } else {
            const uint16_t bits = c.dtype == DType::f16 ? 0xfc00 : 0xff80;
            std::memcpy(&bytes[idx * es], &bits, 2);
          }
        }
    }
    bias_buf = DeviceBuffer(bytes.size());
    bias_buf.upload(bytes.data(), bytes.size());
    bias = TensorBias{TensorView::make(bias_buf.get(), c.dtype, {bb, c.H, c.Mq, c.Mkv})};
    auto host = TensorView::make(vals.data(), DType::f32, {bb, c.H, c.Mq, c.Mkv}, {}, TensorView::kHost);
    std::vector<float> f(vals.begin(), vals.end());
    host.data = f.data();
    bias_values = materialize(TensorBias{host}, c.B, c.H, c.Mq, c.Mkv);
  } else {
    bias_values = materialize(c.bias, c.B, c.H, c.Mq, c.Mkv);
  }

  AttentionOptions opt;
  opt.scale = c.scale;
  opt.output_dtype = c.out_dtype;
  if (c.lse) memory_efficient_attention_forward_requires_grad(q.view, k.view, v.view, bias, out.view, lse, opt);
  else memory_efficient_attention_forward(q.view, k.view, v.view, bias, out.view, opt);
  device_synchronize();

  const double scale = c.scale.value_or(1.0 / std::sqrt(double(c.K)));
  const auto ref = reference_attention({c.B, c.Mq, c.Mkv, c.H, c.K, c.Kv}, q.values, k.values, v.values,
                                       bias_values, scale);
  const auto got = decode(out.buf.download(), odt);  // the output is contiguous [B, Mq, H, Kv]
  const double err = relative_error(got, ref.out);
  EXPECT_LE(err, tolerance(c.dtype, odt)) << "output relative error";
  if (c.lse) {
    std::vector<unsigned char> raw(size_t(c.B * c.H * c.Mq) * 4);
    lse_buf.download(raw.data(), raw.size());
    const auto got_lse = decode(raw, DType::f32);
    EXPECT_LE(relative_error(got_lse, ref.lse), 1e-4) << "lse relative error";
  }
  // A fully masked row is exactly 0 (not merely close to it).
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t i = 0; i < c.Mq; ++i)
      for (int64_t h = 0; h < c.H; ++h)
        if (ref.lse[size_t((b * c.H + h) * c.Mq + i)] == -kInf)
          for (int64_t d = 0; d < c.Kv; ++d)
            ASSERT_EQ(got[size_t(((b * c.Mq + i) * c.H + h) * c.Kv + d)], 0.0) << "masked row b=" << b << " i=" << i;
}

std::vector<AttnBias> all_biases() {
  return {std::monostate{}, LowerTriangularMask{}, LowerTriangularFromBottomRightMask{}, TensorBias{}};
}

class ForwardGpu : public ::testing::Test {
 protected:
  void SetUp() override { JITATTN_REQUIRE_GPU(); }
};

TEST_F(ForwardGpu, EveryDtypeAndBiasOnRandomShapes) {
  std::uniform_int_distribution<int> m(1, 200), b(1, 2), h(1, 3);
  for (DType dt : {DType::f16, DType::bf16, DType::f32})
    for (const AttnBias& bias : all_biases())
      for (auto [K, Kv] : {std::pair<int, int>{64, 64}, {128, 128}, {40, 72}}) {
        Case c;
        c.dtype = dt, c.bias = bias, c.K = K, c.Kv = Kv;
        c.B = b(rng()), c.H = h(rng()), c.Mq = m(rng()), c.Mkv = m(rng());
        if (std::holds_alternative<LowerTriangularFromBottomRightMask>(bias) && c.Mkv < c.Mq) std::swap(c.Mq, c.Mkv);
        run_case(c);
      }
}

TEST_F(ForwardGpu, EveryHeadDim) {
  std::uniform_int_distribution<int> m(1, 150);
  for (int d = 8; d <= 256; d += 8) {
    Case c;
    c.dtype = d % 16 ? DType::f16 : DType::bf16;
    c.K = c.Kv = d;
    c.H = 2;
    c.Mq = m(rng()), c.Mkv = m(rng());
    c.bias = LowerTriangularFromBottomRightMask{};
    run_case(c);
  }
}

TEST_F(ForwardGpu, SingleQueryAndOddLengths) {
  for (DType dt : {DType::bf16, DType::f16, DType::f32})
    for (auto [mq, mkv] : {std::pair<int, int>{1, 1}, {1, 513}, {3, 1}, {129, 65}, {65, 129}, {257, 255}}) {
      Case c;
      c.dtype = dt, c.Mq = mq, c.Mkv = mkv, c.H = 3, c.K = c.Kv = 128;
      run_case(c);
      c.bias = LowerTriangularMask{};
      run_case(c);
    }
}

TEST_F(ForwardGpu, FullyMaskedRowsGiveZeroAndMinusInfinity) {
  for (DType dt : {DType::bf16, DType::f32}) {
    Case c;  // bottom-right causal with more queries than keys: the first Mq - Mkv rows see nothing
    c.dtype = dt, c.Mq = 150, c.Mkv = 40, c.H = 2, c.K = c.Kv = 64;
    c.bias = LowerTriangularFromBottomRightMask{};
    run_case(c);
    Case t;  // a tensor bias with a row of -inf
    t.dtype = dt, t.Mq = 77, t.Mkv = 90, t.H = 2, t.B = 2, t.K = t.Kv = 64;
    t.bias = TensorBias{};
    t.masked_row = 33;
    run_case(t);
  }
}

TEST_F(ForwardGpu, NoKeysAtAll) {
  Case c;
  c.Mq = 17, c.Mkv = 0, c.K = c.Kv = 64;
  run_case(c);
}

TEST_F(ForwardGpu, NonContiguousStridedLayout) {
  for (DType dt : {DType::bf16, DType::f16, DType::f32})
    for (const AttnBias& bias : all_biases()) {
      Case c;
      c.dtype = dt, c.bias = bias, c.layout = Layout::strided, c.B = 2, c.H = 3, c.Mq = 97, c.Mkv = 131;
      c.K = 64, c.Kv = 128;
      run_case(c);
    }
}

TEST_F(ForwardGpu, MisalignedPointersUseTheElementwiseLoader) {
  for (DType dt : {DType::bf16, DType::f16})
    for (const AttnBias& bias : {AttnBias{std::monostate{}}, AttnBias{LowerTriangularMask{}}}) {
      Case c;
      c.dtype = dt, c.bias = bias, c.layout = Layout::misaligned, c.B = 2, c.H = 2, c.Mq = 70, c.Mkv = 99;
      c.K = c.Kv = 64;
      run_case(c);
    }
}

TEST_F(ForwardGpu, ThreeDimensionalInputs) {
  Case c;
  c.layout = Layout::three_d, c.B = 3, c.H = 1, c.Mq = 50, c.Mkv = 80, c.K = 32, c.Kv = 48;
  c.bias = LowerTriangularMask{};
  run_case(c);
}

TEST_F(ForwardGpu, OutputDtypeDiffersFromInput) {
  for (auto [in, out] : {std::pair<DType, DType>{DType::bf16, DType::f32}, {DType::f16, DType::f32}, {DType::f32, DType::bf16}}) {
    Case c;
    c.dtype = in, c.out_dtype = out, c.B = 2, c.H = 2, c.Mq = 100, c.Mkv = 100, c.K = c.Kv = 64;
    c.bias = LowerTriangularMask{};
    run_case(c);
  }
}

TEST_F(ForwardGpu, BroadcastTensorBiasAndCustomScale) {
  Case c;
  c.dtype = DType::f16, c.B = 3, c.H = 2, c.Mq = 64, c.Mkv = 200, c.K = c.Kv = 128;
  c.bias = TensorBias{};
  c.bias_broadcast = true;
  c.scale = 0.3;
  run_case(c);
}

TEST_F(ForwardGpu, LongCausalSequenceSkipsMaskedTiles) {
  for (DType dt : {DType::bf16, DType::f16}) {
    Case c;
    c.dtype = dt, c.B = 1, c.H = 2, c.Mq = 1000, c.Mkv = 1000, c.K = c.Kv = 128, c.lse = true;
    c.bias = LowerTriangularMask{};
    run_case(c);
    c.K = c.Kv = 64, c.Mq = 700, c.Mkv = 1300;
    c.bias = LowerTriangularFromBottomRightMask{};
    run_case(c);
  }
}

TEST_F(ForwardGpu, LargeValuesStayFinite) {
  // Logits of ±hundreds: the online softmax must rescale, not overflow.
  Case c;
  c.dtype = DType::bf16, c.H = 2, c.Mq = 130, c.Mkv = 257, c.K = c.Kv = 64;
  c.scale = 8.0;
  run_case(c);
}

TEST_F(ForwardGpu, WarmCallsHitTheMemoryTable) {
  Case c;
  c.Mq = 33, c.Mkv = 45, c.K = c.Kv = 64;
  run_case(c);
  auto& stats = jit::JitRuntime::get().stats();
  const int64_t compiles = stats.compiles.load(), loads = stats.loads.load(), hits = stats.memory_hits.load();
  run_case(c);
  c.Mq = 300, c.Mkv = 12, c.B = 2;  // a new shape never compiles
  run_case(c);
  EXPECT_EQ(stats.compiles.load(), compiles);
  EXPECT_EQ(stats.loads.load(), loads);
  EXPECT_EQ(stats.memory_hits.load(), hits + 2);
}

}  // namespace
}  // namespace jitattn::test

// ---- the rest of the xFormers bias family, GQA/MQA --------------------------------------------
namespace jitattn::test {
namespace {

// Runs one call with `bias` on q [B, Mq, Hq, K], k/v [B, Mkv, Hkv, K|Kv] and compares with the
// reference built from materialize() (K/V heads repeated on the host for GQA).
void run_bias_case(const AttnBias& bias, DType dt, int64_t B, int64_t Mq, int64_t Mkv, int64_t Hq, int64_t Hkv,
                   int64_t K, int64_t Kv, bool lse = true) {
  SCOPED_TRACE(std::string(bias_name(bias)) + " " + to_string(dt) + " B=" + std::to_string(B) + " Mq=" + std::to_string(Mq) +
               " Mkv=" + std::to_string(Mkv) + " Hq=" + std::to_string(Hq) + " Hkv=" + std::to_string(Hkv) +
               " K=" + std::to_string(K) + " Kv=" + std::to_string(Kv));
  DeviceTensor q = make_input(B, Mq, Hq, K, dt, Layout::contiguous);
  DeviceTensor k = make_input(B, Mkv, Hkv, K, dt, Layout::contiguous);
  DeviceTensor v = make_input(B, Mkv, Hkv, Kv, dt, Layout::contiguous);
  DeviceTensor out = make_input(B, Mq, Hq, Kv, dt, Layout::contiguous);
  out.buf.fill(0xFF);
  DeviceBuffer lse_buf(size_t(B * Hq * Mq) * 4 + 4);
  lse_buf.fill(0xFF);
  const TensorView lse_view = lse ? TensorView::make(lse_buf.get(), DType::f32, {B, Hq, Mq}) : TensorView{};
  if (lse) memory_efficient_attention_forward_requires_grad(q.view, k.view, v.view, bias, out.view, lse_view);
  else memory_efficient_attention_forward(q.view, k.view, v.view, bias, out.view);
  device_synchronize();

  auto repeat_heads = [&](const std::vector<double>& x, int64_t M, int64_t D) {
    std::vector<double> y(size_t(B * M * Hq * D));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t m = 0; m < M; ++m)
        for (int64_t h = 0; h < Hq; ++h)
          for (int64_t d = 0; d < D; ++d)
            y[size_t(((b * M + m) * Hq + h) * D + d)] = x[size_t(((b * M + m) * Hkv + h / (Hq / Hkv)) * D + d)];
    return y;
  };
  const auto ref = reference_attention({B, Mq, Mkv, Hq, K, Kv}, q.values, repeat_heads(k.values, Mkv, K),
                                       repeat_heads(v.values, Mkv, Kv), materialize(bias, B, Hq, Mq, Mkv),
                                       1.0 / std::sqrt(double(K)));
  EXPECT_LE(relative_error(decode(out.buf.download(), dt), ref.out), tolerance(dt, dt)) << "output relative error";
  if (lse) {
    std::vector<unsigned char> raw(size_t(B * Hq * Mq) * 4);
    lse_buf.download(raw.data(), raw.size());
    EXPECT_LE(relative_error(decode(raw, DType::f32), ref.lse), 1e-4) << "lse relative error";
  }
}

std::vector<int32_t> random_lengths(int n, int lo, int hi) {
  std::uniform_int_distribution<int> len(lo, hi);
  std::vector<int32_t> out;
  for (int i = 0; i < n; ++i) out.push_back(len(rng()));
  out.push_back(0);  // an empty sequence
  out.push_back(1);  // a one-token sequence
  std::shuffle(out.begin(), out.end(), rng());
  return out;
}

int64_t sum(const std::vector<int32_t>& v) {
  int64_t s = 0;
  for (int32_t x : v) s += x;
  return s;
}

class BiasGpu : public ::testing::Test {
 protected:
  void SetUp() override { JITATTN_REQUIRE_GPU(); }
};

TEST_F(BiasGpu, LocalWindowsFromBottomRight) {
  std::uniform_int_distribution<int> m(1, 300);
  for (DType dt : {DType::bf16, DType::f16, DType::f32})
    for (int w : {1, 7, 64, 1000}) {
      const int64_t mq = m(rng()), mkv = mq + m(rng()) % 50;
      run_bias_case(LowerTriangularFromBottomRightMask{}.make_local_attention(w), dt, 2, mq, mkv, 2, 2, 64, 64);
    }
  for (auto [wl, wr] : {std::pair<int, int>{0, 0}, {3, 5}, {100, 0}, {0, 40}})
    run_bias_case(LocalAttentionFromBottomRightMask{wl, wr}, DType::bf16, 1, m(rng()), m(rng()), 3, 3, 128, 128);
}

TEST_F(BiasGpu, CausalWithTensorBias) {
  for (DType dt : {DType::bf16, DType::f32}) {
    const int64_t B = 2, H = 2, Mq = 90, Mkv = 90;
    std::vector<double> vals;
    std::vector<unsigned char> bytes;
    random_values(rng(), size_t(B * H * Mq * Mkv), dt, vals, bytes);
    DeviceBuffer dev(bytes.size());
    dev.upload(bytes.data(), bytes.size());
    const auto bias = LowerTriangularMask{}.add_bias(TensorView::make(dev.get(), dt, {B, H, Mq, Mkv}));
    // materialize() reads host memory: run the device call with `bias`, the reference with a host copy.
    DeviceTensor q = make_input(B, Mq, H, 64, dt, Layout::contiguous);
    DeviceTensor k = make_input(B, Mkv, H, 64, dt, Layout::contiguous);
    DeviceTensor v = make_input(B, Mkv, H, 64, dt, Layout::contiguous);
    DeviceTensor out = make_input(B, Mq, H, 64, dt, Layout::contiguous);
    out.buf.fill(0xFF);
    memory_efficient_attention_forward(q.view, k.view, v.view, bias, out.view);
    device_synchronize();
    std::vector<float> host_f(vals.begin(), vals.end());
    const auto host = LowerTriangularMask{}.add_bias(
        TensorView::make(host_f.data(), DType::f32, {B, H, Mq, Mkv}, {}, TensorView::kHost));
    const auto ref = reference_attention({B, Mq, Mkv, H, 64, 64}, q.values, k.values, v.values,
                                         materialize(host, B, H, Mq, Mkv), 1.0 / 8.0);
    EXPECT_LE(relative_error(decode(out.buf.download(), dt), ref.out), tolerance(dt, dt));
  }
}

TEST_F(BiasGpu, BlockDiagonalFamily) {
  for (DType dt : {DType::bf16, DType::f16, DType::f32}) {
    const auto ql = random_lengths(5, 2, 150);
    auto kl = ql;
    for (auto& x : kl) x += int32_t(rng()() % 40);  // keys >= queries per block (bottom-right kinds)
    const auto bd = BlockDiagonalMask::from_seqlens(ql, kl);
    const int64_t mq = sum(ql), mkv = sum(kl);
    run_bias_case(bd, dt, 1, mq, mkv, 3, 3, 64, 64);
    run_bias_case(bd.make_causal_from_bottomright(), dt, 1, mq, mkv, 3, 3, 64, 64);
    run_bias_case(bd.make_local_attention_from_bottomright(9), dt, 1, mq, mkv, 3, 3, 64, 64);
    const auto sq = BlockDiagonalMask::from_seqlens(ql);  // square blocks: top-left kinds
    run_bias_case(sq.make_causal(), dt, 1, mq, mq, 2, 2, 128, 128);
    run_bias_case(BlockDiagonalCausalMask::from_seqlens(ql), dt, 1, mq, mq, 2, 2, 40, 72);
    run_bias_case(sq.make_local_attention(17), dt, 1, mq, mq, 2, 2, 128, 128);
  }
}

TEST_F(BiasGpu, PaddedAndGappyKeys) {
  for (DType dt : {DType::bf16, DType::f32}) {
    const auto ql = random_lengths(4, 1, 60);
    const int32_t padding = 200;
    std::vector<int32_t> kl;
    for (int32_t q : ql) kl.push_back(std::min<int32_t>(padding, q + int32_t(rng()() % 120)));
    const int64_t mq = sum(ql), mkv = int64_t(ql.size()) * padding;
    run_bias_case(BlockDiagonalPaddedKeysMask::from_seqlens(ql, padding, kl), dt, 1, mq, mkv, 2, 2, 64, 64);
    run_bias_case(BlockDiagonalCausalWithOffsetPaddedKeysMask::from_seqlens(ql, padding, kl), dt, 1, mq, mkv, 2, 2, 64, 64);
    const auto padded = BlockDiagonalPaddedKeysMask::from_seqlens(ql, padding, kl);
    run_bias_case(BlockDiagonalLocalAttentionPaddedKeysMask{padded.q_seqinfo, padded.k_seqinfo, 5, 2}, dt, 1, mq, mkv, 2, 2, 64, 64);
    run_bias_case(BlockDiagonalCausalLocalAttentionPaddedKeysMask{padded.q_seqinfo, padded.k_seqinfo, 11}, dt, 1, mq, mkv, 2, 2, 64, 64);
    // Gappy: each block's keys start anywhere in the key tensor, in shuffled order.
    std::vector<int32_t> starts;
    for (size_t b = 0; b < ql.size(); ++b) starts.push_back(int32_t(b) * padding);
    std::shuffle(starts.begin(), starts.end(), rng());
    for (auto& s : starts) s += int32_t(rng()() % 30);
    std::vector<int32_t> gl;
    for (size_t b = 0; b < ql.size(); ++b) gl.push_back(std::min<int32_t>(padding - 30, kl[b]));
    starts.push_back(int32_t(ql.size()) * padding);  // xFormers' gappy seqstart ends with the key length
    const int64_t gkv = int64_t(ql.size()) * padding;
    run_bias_case(BlockDiagonalGappyKeysMask::from_seqlens(ql, starts, gl), dt, 1, mq, gkv, 2, 2, 64, 64);
    run_bias_case(BlockDiagonalCausalWithOffsetGappyKeysMask::from_seqlens(ql, starts, gl), dt, 1, mq, gkv, 2, 2, 64, 64);
  }
}

TEST_F(BiasGpu, FiveDimensionalInputsWithExpandedKeysMatchNativeGqa) {
  // xFormers' BMGHK: q [B, M, G, H, K], k/v [B, N, G, 1, K] expanded to H with stride 0 — read
  // without copies through the GQA head map; must equal the native GQA call on the same memory.
  const int64_t B = 2, M = 65, N = 90, G = 2, H = 3, K = 64;
  for (DType dt : {DType::bf16, DType::f32}) {
    DeviceTensor q = make_input(B, M, G * H, K, dt, Layout::contiguous);
    DeviceTensor k = make_input(B, N, G, K, dt, Layout::contiguous);
    DeviceTensor v = make_input(B, N, G, K, dt, Layout::contiguous);
    DeviceBuffer out5(size_t(B * M * G * H * K) * element_size(dt)), out4(out5.bytes());
    out5.fill(0xFF);
    out4.fill(0xFF);
    auto five = [&](void* p, int64_t m, int64_t h_stride) {
      return TensorView::make(p, dt, {B, m, G, H, K}, {m * G * (h_stride ? H : 1) * K, G * (h_stride ? H : 1) * K,
                                                      (h_stride ? H : 1) * K, h_stride, 1});
    };
    memory_efficient_attention_forward(five(q.buf.get(), M, K), five(k.buf.get(), N, 0), five(v.buf.get(), N, 0),
                                       LowerTriangularMask{}, five(out5.get(), M, K));
    memory_efficient_attention_forward(q.view, k.view, v.view, LowerTriangularMask{},
                                       TensorView::make(out4.get(), dt, {B, M, G * H, K}));
    device_synchronize();
    const auto a = decode(out5.download(), dt), b = decode(out4.download(), dt);
    EXPECT_EQ(relative_error(a, b), 0.0) << "BMGHK and native GQA must run the same kernel on the same data";
    std::vector<double> kk(size_t(B * N * G * H * K)), vv(kk.size());  // K/V repeated over H for the reference
    for (int64_t bn = 0; bn < B * N; ++bn)
      for (int64_t hh = 0; hh < G * H; ++hh)
        for (int64_t d = 0; d < K; ++d) {
          kk[size_t((bn * G * H + hh) * K + d)] = k.values[size_t((bn * G + hh / H) * K + d)];
          vv[size_t((bn * G * H + hh) * K + d)] = v.values[size_t((bn * G + hh / H) * K + d)];
        }
    const auto ref = reference_attention({B, M, N, G * H, K, K}, q.values, kk, vv,
                                         materialize(LowerTriangularMask{}, B, G * H, M, N), 1.0 / 8.0);
    EXPECT_LE(relative_error(a, ref.out), tolerance(dt, dt));
  }
}

TEST_F(BiasGpu, GroupedAndMultiQueryHeads) {
  for (DType dt : {DType::bf16, DType::f32})
    for (auto [hq, hkv] : {std::pair<int, int>{6, 2}, {4, 1}, {8, 8}}) {
      run_bias_case(LowerTriangularMask{}, dt, 2, 77, 130, hq, hkv, 64, 64);
      run_bias_case(AttnBias{}, dt, 1, 40, 33, hq, hkv, 128, 128);
    }
  const auto ql = random_lengths(3, 5, 90);
  run_bias_case(BlockDiagonalCausalMask::from_seqlens(ql), DType::bf16, 1, sum(ql), sum(ql), 8, 2, 128, 128);
}

}  // namespace
}  // namespace jitattn::test
