// The forward kernels against the fp64 reference, on random inputs drawn fresh every run, with
// outputs poisoned (NaN) before each launch so an unwritten element fails the comparison.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <sstream>

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

// An f32 output adds no rounding of its own.
double tolerance(DType in, DType out) {
  return std::max(dtype_tolerance(in), out == DType::f32 ? 0.0 : dtype_tolerance(out));
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
      for (auto [K, Kv] : {std::pair<int, int>{64, 64}, {128, 128}, {256, 256}, {192, 128}, {40, 72}}) {
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

// Head dims that are multiples of 8 but not of 64 (on sm_90a the tma forward pads them to 64-column
// panels of zeros): every dense bias, query and key lengths over several tiles with partial tails,
// value head dims unlike the query's, contiguous and strided views.
TEST_F(ForwardGpu, PaddedHeadDimsOnEveryDenseBias) {
  std::uniform_int_distribution<int> m(1, 420), h(1, 3);
  const std::pair<int, int> dims[] = {{72, 72}, {80, 80}, {96, 96}, {112, 112}, {160, 160}, {96, 160}, {248, 200}};
  int n = 0;
  for (auto [K, Kv] : dims)
    for (const AttnBias& bias : all_biases()) {
      Case c;
      c.dtype = n % 2 ? DType::f16 : DType::bf16;
      c.layout = n % 3 == 2 ? Layout::strided : Layout::contiguous;
      c.bias = bias, c.K = K, c.Kv = Kv, c.H = h(rng()), c.Mq = m(rng()), c.Mkv = m(rng());
      if (std::holds_alternative<LowerTriangularFromBottomRightMask>(bias) && c.Mkv < c.Mq) std::swap(c.Mq, c.Mkv);
      run_case(c);
      ++n;
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
// `seen`: when given, the [first, end) key rows (batch 0) some sequence sees; every other key
// and value row is NaN on the device (padding, gaps: memory a kernel may load but must not let
// into a sum; the reference reads the finite values there, under a mask).
using RowRanges = std::vector<std::pair<int64_t, int64_t>>;
void run_bias_case(const AttnBias& bias, DType dt, int64_t B, int64_t Mq, int64_t Mkv, int64_t Hq, int64_t Hkv,
                   int64_t K, int64_t Kv, bool lse = true, const RowRanges* seen = nullptr) {
  SCOPED_TRACE(std::string(bias_name(bias)) + " " + to_string(dt) + " B=" + std::to_string(B) + " Mq=" + std::to_string(Mq) +
               " Mkv=" + std::to_string(Mkv) + " Hq=" + std::to_string(Hq) + " Hkv=" + std::to_string(Hkv) +
               " K=" + std::to_string(K) + " Kv=" + std::to_string(Kv));
  DeviceTensor q = make_input(B, Mq, Hq, K, dt, Layout::contiguous);
  DeviceTensor k = make_input(B, Mkv, Hkv, K, dt, Layout::contiguous);
  DeviceTensor v = make_input(B, Mkv, Hkv, Kv, dt, Layout::contiguous);
  if (seen) {
    std::vector<bool> used(size_t(Mkv), false);
    for (const auto& [first, end] : *seen)
      for (int64_t r = first; r < end; ++r) used[size_t(r)] = true;
    for (int64_t r = 0; r < Mkv; ++r) {
      if (used[size_t(r)]) continue;
      for (auto [t, d] : {std::pair<DeviceTensor*, int64_t>{&k, K}, {&v, Kv}}) {
        const size_t row_bytes = size_t(Hkv * d) * element_size(dt);
        const std::vector<unsigned char> nan(row_bytes, 0xFF);
        t->buf.upload(nan.data(), row_bytes, size_t(r) * row_bytes);
      }
    }
  }
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
    // The padding NaN: a key tile that runs past a sequence's keys loads it (the tma forward's
    // boxes, at head dims 64 and 128, and at head dims its shared memory pads to 64-column panels).
    RowRanges padded_rows;
    for (size_t b = 0; b < ql.size(); ++b) padded_rows.push_back({int64_t(b) * padding, int64_t(b) * padding + kl[b]});
    for (auto [d, dv] : {std::pair<int64_t, int64_t>{64, 64}, {128, 128}, {80, 80}, {160, 112}}) {
      run_bias_case(BlockDiagonalPaddedKeysMask::from_seqlens(ql, padding, kl), dt, 1, mq, mkv, 4, 2, d, dv, true, &padded_rows);
      run_bias_case(BlockDiagonalCausalWithOffsetPaddedKeysMask::from_seqlens(ql, padding, kl), dt, 1, mq, mkv, 2, 2, d, dv,
                    false, &padded_rows);
    }
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
    RowRanges gappy_rows;  // the gaps NaN
    for (size_t b = 0; b < ql.size(); ++b) gappy_rows.push_back({starts[b], starts[b] + gl[b]});
    run_bias_case(BlockDiagonalGappyKeysMask::from_seqlens(ql, starts, gl), dt, 1, mq, gkv, 2, 1, 128, 128, true, &gappy_rows);
    run_bias_case(BlockDiagonalGappyKeysMask::from_seqlens(ql, starts, gl), dt, 1, mq, gkv, 2, 2, 96, 96, true, &gappy_rows);
    run_bias_case(BlockDiagonalCausalWithOffsetGappyKeysMask::from_seqlens(ql, starts, gl), dt, 1, mq, gkv, 2, 2, 64, 64, true,
                  &gappy_rows);
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

// ---- paged keys, ALiBi, 5-D tensor bias, a decode step in a CUDA graph ---------------------------
namespace jitattn::test {
namespace {

// [B, M, Hkv, D] → [B, M, Hq, D], each key/value head repeated for its Hq / Hkv query heads.
std::vector<double> repeat_kv_heads(const std::vector<double>& x, int64_t B, int64_t M, int64_t Hkv, int64_t Hq,
                                    int64_t D) {
  std::vector<double> y(size_t(B * M * Hq * D));
  for (int64_t bm = 0; bm < B * M; ++bm)
    for (int64_t h = 0; h < Hq; ++h)
      for (int64_t d = 0; d < D; ++d) y[size_t((bm * Hq + h) * D + d)] = x[size_t((bm * Hkv + h / (Hq / Hkv)) * D + d)];
  return y;
}

// Overwrites rows [row0, row0 + rows) of a contiguous [1, M, H, D] DeviceTensor with fresh random
// values (device and host copies).
void refill_rows(DeviceTensor& t, int64_t row0, int64_t rows, int64_t H, int64_t D, DType dt) {
  if (rows <= 0) return;
  std::vector<double> vals;
  std::vector<unsigned char> bytes;
  random_values(rng(), size_t(rows * H * D), dt, vals, bytes);
  t.buf.upload(bytes.data(), bytes.size(), size_t(row0 * H * D) * element_size(dt));
  std::copy(vals.begin(), vals.end(), t.values.begin() + row0 * H * D);
}

int32_t uniform(int32_t lo, int32_t hi) { return std::uniform_int_distribution<int32_t>(lo, hi)(rng()); }

// Counts the entries where a materialized [1, H, Mq, Mkv] bias differs from `expected` [Mq, Mkv]
// (the same for every head): 0 / -inf must match exactly.
int64_t mask_mismatches(const std::vector<double>& got, const std::vector<double>& expected, int64_t H) {
  if (got.size() != expected.size() * size_t(H)) return -1;
  int64_t bad = 0;
  for (int64_t h = 0; h < H; ++h)
    for (size_t i = 0; i < expected.size(); ++i) bad += got[size_t(h) * expected.size() + i] != expected[i];
  return bad;
}

// ---- paged keys ----

enum class PagedKind { padded, causal_offset, causal_local, gappy, causal_offset_gappy };

const char* paged_kind_name(PagedKind k) {
  switch (k) {
    case PagedKind::padded:
      return "BlockDiagonalPaddedKeysMask";
    case PagedKind::causal_offset:
      return "BlockDiagonalCausalWithOffsetPaddedKeysMask";
    case PagedKind::causal_local:
      return "BlockDiagonalCausalLocalAttentionPaddedKeysMask";
    case PagedKind::gappy:
      return "BlockDiagonalGappyKeysMask";
    case PagedKind::causal_offset_gappy:
      return "BlockDiagonalCausalWithOffsetGappyKeysMask";
  }
  return "?";
}

// A pool of num_pages pages of page_size key rows; sequence b's logical keys
// [kstart[b], kstart[b] + klen[b]) of its row of max_pages pages (kstart = 0 for padded kinds).
struct PagedSetup {
  std::vector<int32_t> ql, kstart, klen;
  std::vector<int32_t> table;  // [B, max_pages], a random choice of distinct pages in random order
  int32_t page_size = 0, max_pages = 0, num_pages = 0;
  int32_t row() const { return max_pages * page_size; }
  int64_t pool_rows() const { return int64_t(num_pages) * page_size; }
};

PagedSetup make_paged_setup(PagedKind kind, int32_t page_size) {
  PagedSetup s;
  s.page_size = page_size;
  s.max_pages = std::max<int32_t>(2, (200 + page_size - 1) / page_size);
  s.ql = random_lengths(5, 1, 40);  // includes a 0- and a 1-query block
  const int32_t B = int32_t(s.ql.size()), row = s.row();
  s.num_pages = B * s.max_pages + uniform(2, 6);  // pages no table names: reading one shows
  std::vector<int32_t> pages(size_t(s.num_pages));
  for (int32_t p = 0; p < s.num_pages; ++p) pages[size_t(p)] = p;
  std::shuffle(pages.begin(), pages.end(), rng());
  s.table.assign(pages.begin(), pages.begin() + B * s.max_pages);
  // Gappy: sequences may share pages (a common prefix, as with prefix caching), so the physical
  // key rows of two sequences overlap; every sequence must still see its own keys.
  if (kind == PagedKind::gappy || kind == PagedKind::causal_offset_gappy)
    for (int32_t b = 1; b < B; ++b)
      if (uniform(0, 1)) s.table[size_t(b * s.max_pages)] = s.table[size_t((b - 1) * s.max_pages)];

  // The longest query block: full row of keys, or (causal with offset) fewer keys than queries.
  const int32_t longest = int32_t(std::max_element(s.ql.begin(), s.ql.end()) - s.ql.begin());
  for (int32_t b = 0; b < B; ++b) {
    const int32_t q = s.ql[size_t(b)];
    int32_t len = 0, start = 0;
    switch (kind) {
      case PagedKind::padded:
        len = b == longest ? row : uniform(0, row);
        break;
      case PagedKind::causal_offset:  // kv < q allowed: the block's first queries see no key
        len = (b == longest || (q > 0 && uniform(0, 2) == 0)) ? uniform(0, std::max(0, q - 1)) : uniform(q, row);
        break;
      case PagedKind::causal_local:
        len = b == longest ? row : uniform(q, row);
        break;
      case PagedKind::gappy:
        len = uniform(0, row);
        start = uniform(0, row - len);
        break;
      case PagedKind::causal_offset_gappy:
        len = uniform(q, row);
        start = uniform(0, row - len);
        break;
    }
    s.klen.push_back(len);
    s.kstart.push_back(start);
  }
  return s;
}

AttnBias make_paged_bias(PagedKind kind, const PagedSetup& s, int32_t window) {
  const BlockTables bt{DeviceInts(s.table), s.max_pages};
  // Gappy: make_paged reads the non-paged layout as B rows of max_pages * page_size keys (xFormers'
  // notional_padding): block b starts at b * row + its offset in row b; the last entry is B * row.
  std::vector<int32_t> starts;
  for (size_t b = 0; b < s.kstart.size(); ++b) starts.push_back(int32_t(b) * s.row() + s.kstart[b]);
  starts.push_back(int32_t(s.kstart.size()) * s.row());
  switch (kind) {
    case PagedKind::padded:
      return BlockDiagonalPaddedKeysMask::from_seqlens(s.ql, s.row(), s.klen).make_paged(bt, s.page_size);
    case PagedKind::causal_offset:
      return BlockDiagonalCausalWithOffsetPaddedKeysMask::from_seqlens(s.ql, s.row(), s.klen)
          .make_paged(bt, s.page_size);
    case PagedKind::causal_local: {
      const auto p = BlockDiagonalPaddedKeysMask::from_seqlens(s.ql, s.row(), s.klen);
      return BlockDiagonalCausalLocalAttentionPaddedKeysMask{p.q_seqinfo, p.k_seqinfo, window}.make_paged(bt,
                                                                                                          s.page_size);
    }
    case PagedKind::gappy:
      return BlockDiagonalGappyKeysMask::from_seqlens(s.ql, starts, s.klen).make_paged(bt, s.page_size);
    case PagedKind::causal_offset_gappy:
      return BlockDiagonalCausalWithOffsetGappyKeysMask::from_seqlens(s.ql, starts, s.klen).make_paged(bt, s.page_size);
  }
  return {};
}

// The physical [Mq, pool_rows] mask, written from bias.h's definition (independent of materialize).
std::vector<double> expected_paged_mask(PagedKind kind, const PagedSetup& s, int32_t window) {
  const int64_t Mq = sum(s.ql), Mkv = s.pool_rows();
  std::vector<double> m(size_t(Mq * Mkv), -kInf);
  int64_t q0 = 0;
  for (size_t b = 0; b < s.ql.size(); ++b) {
    const int32_t q = s.ql[b], len = s.klen[b], start = s.kstart[b];
    for (int32_t i = 0; i < q; ++i)
      for (int32_t x = start; x < start + len; ++x) {
        const int64_t d = int64_t(x - start) - i - (len - q);  // <= 0: bottom-right causal
        bool visible = true;
        if (kind == PagedKind::causal_offset || kind == PagedKind::causal_offset_gappy) visible = d <= 0;
        if (kind == PagedKind::causal_local) visible = d <= 0 && d > -window;
        const int64_t phys =
            int64_t(s.table[b * size_t(s.max_pages) + size_t(x / s.page_size)]) * s.page_size + x % s.page_size;
        if (visible) m[size_t((q0 + i) * Mkv + phys)] = 0.0;
      }
    q0 += q;
  }
  return m;
}

TEST_F(BiasGpu, PagedKeys) {
  struct Config {
    DType dt;
    int32_t page_size;
    int64_t Hq, Hkv, K;
  };
  std::vector<Config> configs;
  for (DType dt : {DType::bf16, DType::f16})
    for (int32_t ps : {16, 64, 256, 3})
      configs.push_back(dt == DType::bf16 ? Config{dt, ps, 4, 2, 128} : Config{dt, ps, 2, 2, 64});
  configs.push_back({DType::f32, 16, 4, 2, 64});
  const std::vector<std::pair<PagedKind, int32_t>> kinds = {
      {PagedKind::padded, 0},          {PagedKind::causal_offset, 0}, {PagedKind::causal_local, 1},
      {PagedKind::causal_local, 1000}, {PagedKind::gappy, 0},         {PagedKind::causal_offset_gappy, 0}};
  for (const Config& c : configs)
    for (auto [kind, window] : kinds) {
      const PagedSetup s = make_paged_setup(kind, c.page_size);
      std::ostringstream os;
      os << paged_kind_name(kind) << ".make_paged page_size=" << c.page_size << " max_pages=" << s.max_pages
         << " num_pages=" << s.num_pages << " window=" << window << " q_seqlen=[";
      for (size_t b = 0; b < s.ql.size(); ++b) os << s.ql[b] << (b + 1 < s.ql.size() ? "," : "] kv=[");
      for (size_t b = 0; b < s.ql.size(); ++b)
        os << s.kstart[b] << "+" << s.klen[b] << (b + 1 < s.ql.size() ? "," : "]");
      SCOPED_TRACE(os.str());
      const AttnBias bias = make_paged_bias(kind, s, window);
      const int64_t Mq = sum(s.ql), Mkv = s.pool_rows();
      // materialize() is the reference's mask: check it against the definition first.
      EXPECT_EQ(mask_mismatches(materialize(bias, 1, c.Hq, Mq, Mkv), expected_paged_mask(kind, s, window), c.Hq), 0)
          << "materialize() of the paged mask";
      // K/V: the whole pool, unused pages and the rows past each length included, is random.
      run_bias_case(bias, c.dt, 1, Mq, Mkv, c.Hq, c.Hkv, c.K, c.K);
    }
}

// ---- ALiBi ----

// -slopes[h]·|j − i| within each block (positions from the block's start), -inf outside the blocks
// or above the top-left causal diagonal: [B, H, Mq, Mkv], from bias.h's definition.
std::vector<double> expected_alibi(const std::vector<float>& slopes, int64_t B, int64_t Mq, int64_t Mkv,
                                   const std::vector<int32_t>& ql, const std::vector<int32_t>& kl, bool causal) {
  const int64_t H = int64_t(slopes.size());
  std::vector<double> m(size_t(B * H * Mq * Mkv), -kInf);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      int64_t q0 = 0, k0 = 0;
      for (size_t blk = 0; blk < ql.size(); ++blk) {
        for (int64_t i = 0; i < ql[blk]; ++i)
          for (int64_t j = 0; j < kl[blk]; ++j)
            if (!causal || j <= i)
              m[size_t(((b * H + h) * Mq + q0 + i) * Mkv + k0 + j)] =
                  -double(slopes[size_t(h)]) * double(std::abs(j - i));
        q0 += ql[blk], k0 += kl[blk];
      }
    }
  return m;
}

TEST_F(BiasGpu, AlibiAloneAndWithMasks) {
  std::uniform_int_distribution<int> m(1, 150);
  for (DType dt : {DType::bf16, DType::f16, DType::f32})
    for (int64_t K : {64, 128})
      for (bool geometric : {true, false}) {
        // geometric: 4 query heads (a power of two); random: 3, with MQA or GQA at K = 128.
        const int64_t Hq = geometric ? 4 : 3, Hkv = K == 128 ? (geometric ? 2 : 1) : Hq;
        AlibiSlopes slopes;
        std::vector<float> sl;
        if (geometric) {
          slopes = AlibiSlopes::geometric(int32_t(Hq));
          sl = slopes.slopes.host();
          ASSERT_EQ(int64_t(sl.size()), Hq);
          for (int64_t h = 0; h < Hq; ++h) EXPECT_FLOAT_EQ(sl[size_t(h)], std::exp2(-8.0 * double(h + 1) / double(Hq)));
        } else {
          std::uniform_real_distribution<float> u(0.001f, 0.5f);
          for (int64_t h = 0; h < Hq; ++h) sl.push_back(u(rng()));
          slopes = AlibiSlopes{DeviceFloats(sl)};
        }
        SCOPED_TRACE(std::string(geometric ? "geometric" : "random") + " slopes, K=" + std::to_string(K));
        auto check = [&](const AttnBias& bias, int64_t B, int64_t Mq, int64_t Mkv, const std::vector<int32_t>& ql,
                         const std::vector<int32_t>& kl, bool causal) {
          SCOPED_TRACE(bias_name(bias));
          EXPECT_LE(relative_error(materialize(bias, B, Hq, Mq, Mkv), expected_alibi(sl, B, Mq, Mkv, ql, kl, causal)),
                    1e-6)
              << "materialize() of the ALiBi bias";
          run_bias_case(bias, dt, B, Mq, Mkv, Hq, Hkv, K, K);
        };
        {  // no mask: one block per batch entry
          const int32_t mq = m(rng()), mkv = m(rng()) + 50;
          check(AlibiBias{slopes}, 2, mq, mkv, {mq}, {mkv}, false);
        }
        {
          const int32_t mq = m(rng()), mkv = m(rng());
          check(LowerTriangularMask{}.add_alibi(slopes), 2, mq, mkv, {mq}, {mkv}, true);
        }
        const auto ql = random_lengths(4, 2, 100);
        std::vector<int32_t> kl;
        for (size_t b = 0; b < ql.size(); ++b) kl.push_back(uniform(0, 120));
        check(BlockDiagonalMask::from_seqlens(ql, kl).add_alibi(slopes), 1, sum(ql), sum(kl), ql, kl, false);
        check(BlockDiagonalCausalMask::from_seqlens(ql).add_alibi(slopes), 1, sum(ql), sum(ql), ql, ql, true);
      }
}

// ---- 5-D tensor bias ----

TEST_F(BiasGpu, FiveDimensionalTensorBias) {
  const int64_t B = 2, Mq = 70, Mkv = 93, G = 2, H = 3, K = 64;
  enum class Variant { full, batch_of_one, batch_stride_zero, causal_full };
  for (DType dt : {DType::bf16, DType::f16, DType::f32})
    for (Variant var : {Variant::full, Variant::batch_of_one, Variant::batch_stride_zero, Variant::causal_full}) {
      if (var == Variant::causal_full && dt != DType::bf16) continue;
      SCOPED_TRACE(std::string(to_string(dt)) + " variant " + std::to_string(int(var)));
      const bool broadcast = var == Variant::batch_of_one || var == Variant::batch_stride_zero;
      const int64_t bb = broadcast ? 1 : B;  // batch entries stored
      std::vector<double> vals;
      std::vector<unsigned char> bytes;
      random_values(rng(), size_t(bb * G * H * Mq * Mkv), dt, vals, bytes);
      DeviceBuffer dev(bytes.size());
      dev.upload(bytes.data(), bytes.size());
      std::vector<float> host_f(vals.begin(), vals.end());
      auto view = [&](void* p, DType t, int device) {
        if (var == Variant::batch_stride_zero)
          return TensorView::make(p, t, {B, G, H, Mq, Mkv}, {0, H * Mq * Mkv, Mq * Mkv, Mkv, 1}, device);
        return TensorView::make(p, t, {bb, G, H, Mq, Mkv}, {}, device);
      };
      AttnBias bias = TensorBias{view(dev.get(), dt, 0)};
      AttnBias host_bias = TensorBias{view(host_f.data(), DType::f32, TensorView::kHost)};
      if (var == Variant::causal_full) {
        bias = LowerTriangularMask{}.add_bias(view(dev.get(), dt, 0));
        host_bias = LowerTriangularMask{}.add_bias(view(host_f.data(), DType::f32, TensorView::kHost));
      }
      // q/k/v/out [B, M, G, H, K]: contiguous, so the same memory as [B, M, G·H, K].
      DeviceTensor q = make_input(B, Mq, G * H, K, dt, Layout::contiguous);
      DeviceTensor k = make_input(B, Mkv, G * H, K, dt, Layout::contiguous);
      DeviceTensor v = make_input(B, Mkv, G * H, K, dt, Layout::contiguous);
      DeviceBuffer out(size_t(B * Mq * G * H * K) * element_size(dt)), lse(size_t(B * G * H * Mq) * 4);
      out.fill(0xFF);
      lse.fill(0xFF);
      auto five = [&](void* p, int64_t M) { return TensorView::make(p, dt, {B, M, G, H, K}); };
      memory_efficient_attention_forward_requires_grad(five(q.buf.get(), Mq), five(k.buf.get(), Mkv),
                                                       five(v.buf.get(), Mkv), bias, five(out.get(), Mq),
                                                       TensorView::make(lse.get(), DType::f32, {B, G, H, Mq}));
      device_synchronize();
      const auto ref = reference_attention({B, Mq, Mkv, G * H, K, K}, q.values, k.values, v.values,
                                           materialize(host_bias, B, G * H, Mq, Mkv), 1.0 / std::sqrt(double(K)));
      EXPECT_LE(relative_error(decode(out.download(), dt), ref.out), tolerance(dt, dt)) << "output relative error";
      EXPECT_LE(relative_error(decode(lse.download(), DType::f32), ref.lse), 1e-4) << "lse relative error";
    }
}

// ---- a decode step replayed in a CUDA graph ----

TEST_F(BiasGpu, DecodeStepReplaysInACudaGraph) {
  // B sequences, one new query each, keys padded to `padding` rows per sequence; the key lengths
  // live in a caller-owned device buffer that changes between replays of one captured graph.
  for (DType dt : {DType::bf16, DType::f16}) {
    const int32_t B = 6, padding = 256, replays = 3;
    const int64_t Hq = 8, Hkv = 2, K = dt == DType::bf16 ? 128 : 64, Kv = K;
    const bool with_lse = dt == DType::f16;
    SCOPED_TRACE(std::string(to_string(dt)) + " K=" + std::to_string(K));

    std::vector<std::vector<int32_t>> growth(replays);
    std::vector<int32_t> total(B, 0);
    for (auto& g : growth)
      for (int32_t b = 0; b < B; ++b) g.push_back(uniform(1, 5)), total[size_t(b)] += g.back();
    std::vector<int32_t> kl;
    for (int32_t b = 0; b < B; ++b) kl.push_back(uniform(0, padding - total[size_t(b)]));
    kl[0] = 0;                   // no key yet: the query sees nothing (out 0) on the first call
    kl[1] = padding - total[1];  // fills its padding exactly on the last replay
    const std::vector<int32_t> ql(B, 1);
    const int64_t Mq = B, Mkv = int64_t(B) * padding;

    DeviceTensor q = make_input(1, Mq, Hq, K, dt, Layout::contiguous);
    DeviceTensor k = make_input(1, Mkv, Hkv, K, dt, Layout::contiguous);
    DeviceTensor v = make_input(1, Mkv, Hkv, Kv, dt, Layout::contiguous);
    DeviceBuffer out(size_t(Mq * Hq * Kv) * element_size(dt)), lse(size_t(Hq * Mq) * 4);
    DeviceBuffer seqlen(size_t(B) * sizeof(int32_t));
    seqlen.upload(kl.data(), seqlen.bytes());

    auto mask = BlockDiagonalCausalWithOffsetPaddedKeysMask::from_seqlens(ql, padding, kl);
    mask.k_seqinfo.seqlen = DeviceInts(kl, static_cast<const int32_t*>(seqlen.get()));
    Stream stream;
    auto enqueue = [&] {
      const TensorView o = TensorView::make(out.get(), dt, {1, Mq, Hq, Kv});
      if (with_lse)
        memory_efficient_attention_forward_requires_grad(
            q.view, k.view, v.view, mask, o, TensorView::make(lse.get(), DType::f32, {1, Hq, Mq}), {}, stream.get());
      else
        memory_efficient_attention_forward(q.view, k.view, v.view, mask, o, {}, stream.get());
    };
    auto poison = [&] {
      out.fill(0xFF);
      lse.fill(0xFF);
      device_synchronize();  // the fills and uploads ran on the legacy stream; ours does not wait for it
    };
    auto check = [&](const std::vector<int32_t>& lens, const std::string& what) {
      SCOPED_TRACE(what);
      const auto host_mask = BlockDiagonalCausalWithOffsetPaddedKeysMask::from_seqlens(ql, padding, lens);
      const auto ref =
          reference_attention({1, Mq, Mkv, Hq, K, Kv}, q.values, repeat_kv_heads(k.values, 1, Mkv, Hkv, Hq, K),
                              repeat_kv_heads(v.values, 1, Mkv, Hkv, Hq, Kv), materialize(host_mask, 1, Hq, Mq, Mkv),
                              1.0 / std::sqrt(double(K)));
      const auto got = decode(out.download(), dt);
      EXPECT_LE(relative_error(got, ref.out), tolerance(dt, dt)) << "output relative error";
      if (with_lse) {
        EXPECT_LE(relative_error(decode(lse.download(), DType::f32), ref.lse), 1e-4) << "lse relative error";
      }
      for (int32_t b = 0; b < B; ++b) {
        if (lens[size_t(b)] != 0) continue;
        for (int64_t x = 0; x < Hq * Kv; ++x) ASSERT_EQ(got[size_t(b * Hq * Kv + x)], 0.0) << "no keys: b=" << b;
      }
    };

    // 1. Outside capture: compiles (or loads) the kernel and uploads the library-owned arrays.
    poison();
    enqueue();
    stream.synchronize();
    check(kl, "eager call");

    // 2. Capture: nothing compiles, loads or runs.
    auto& stats = jit::JitRuntime::get().stats();
    const int64_t compiles = stats.compiles.load(), loads = stats.loads.load();
    poison();
    Graph graph = Graph::capture(stream.get(), enqueue);
    stream.synchronize();
    device_synchronize();
    EXPECT_EQ(stats.compiles.load(), compiles) << "compiled during capture";
    EXPECT_EQ(stats.loads.load(), loads) << "loaded a module during capture";
    {
      const auto raw = out.download();
      EXPECT_TRUE(std::all_of(raw.begin(), raw.end(), [](unsigned char c) { return c == 0xFF; }))
          << "the captured call ran instead of being recorded";
    }

    // 3. Replays: every sequence grows by 1..5 tokens (new K/V rows written, a new query), the
    // device lengths are updated in place, and the same graph runs again.
    for (int r = 0; r < replays; ++r) {
      std::vector<int32_t> nl = kl;
      for (int32_t b = 0; b < B; ++b) {
        nl[size_t(b)] += growth[size_t(r)][size_t(b)];
        const int64_t row0 = int64_t(b) * padding + kl[size_t(b)], rows = nl[size_t(b)] - kl[size_t(b)];
        refill_rows(k, row0, rows, Hkv, K, dt);
        refill_rows(v, row0, rows, Hkv, Kv, dt);
      }
      refill_rows(q, 0, Mq, Hq, K, dt);
      seqlen.upload(nl.data(), seqlen.bytes());
      kl = nl;
      poison();
      graph.launch(stream.get());
      stream.synchronize();
      check(kl, "replay " + std::to_string(r + 1));
    }
    EXPECT_EQ(stats.compiles.load(), compiles);
    EXPECT_EQ(stats.loads.load(), loads);
  }
}

}  // namespace
}  // namespace jitattn::test
