// SwiGLU's gate on the GPU against fp64 on the host, f16/bf16/f32, with row strides (x12 a slice of
// a wider buffer), a column count that is not a multiple of 8, and poisoned outputs.
#include <gtest/gtest.h>

#include <cmath>
#include <tuple>

#include "gpu_support.h"
#include "jitattn/swiglu.h"
#include "reference.h"

namespace jitattn::test {
namespace {

double silu(double x) { return x / (1 + std::exp(-x)); }

class SwigluGpu : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override { JITATTN_REQUIRE_GPU(); }
};

TEST_P(SwigluGpu, ForwardAndBackwardMatchFp64) {
  reseed(11);
  const DType dt = GetParam();
  const size_t es = element_size(dt);
  for (auto [N, H, pad] : {std::tuple<int64_t, int64_t, int64_t>{257, 96, 0}, {33, 13, 5}, {1, 8, 0}}) {
    SCOPED_TRACE(std::to_string(N) + "x" + std::to_string(H) + " pad " + std::to_string(pad));
    const int64_t row = 2 * H + pad;  // x12's row stride
    std::vector<double> x, g;
    std::vector<unsigned char> xb, gb;
    random_values(rng(), size_t(N * row), dt, x, xb, 2.0);
    random_values(rng(), size_t(N * H), dt, g, gb);
    DeviceBuffer xd(xb.size()), gd(gb.size()), hd(size_t(N * H) * es), dxd(size_t(N * 2 * H) * es);
    xd.upload(xb.data(), xb.size());
    gd.upload(gb.data(), gb.size());
    hd.fill(0xFF), dxd.fill(0xFF);
    const TensorView x12 = TensorView::make(xd.get(), dt, {N, 2 * H}, {row, 1});
    const TensorView h = TensorView::make(hd.get(), dt, {N, H}), dh = TensorView::make(gd.get(), dt, {N, H});
    const TensorView dx12 = TensorView::make(dxd.get(), dt, {N, 2 * H});
    swiglu_gate_forward(x12, h);
    swiglu_gate_backward(x12, dh, dx12);
    device_synchronize();
    std::vector<double> want_h(size_t(N * H)), want_dx(size_t(N * 2 * H));
    for (int64_t r = 0; r < N; ++r)
      for (int64_t c = 0; c < H; ++c) {
        const double a = x[size_t(r * row + c)], b = x[size_t(r * row + H + c)], d = g[size_t(r * H + c)];
        const double s = 1 / (1 + std::exp(-a));
        want_h[size_t(r * H + c)] = silu(a) * b;
        want_dx[size_t(r * 2 * H + c)] = d * b * s * (1 + a * (1 - s));
        want_dx[size_t(r * 2 * H + H + c)] = d * silu(a);
      }
    EXPECT_LE(relative_error(decode(hd.download(), dt), want_h), dtype_tolerance(dt)) << "h";
    EXPECT_LE(relative_error(decode(dxd.download(), dt), want_dx), dtype_tolerance(dt)) << "dx12";
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, SwigluGpu, ::testing::Values(DType::f16, DType::bf16, DType::f32),
                         [](const auto& info) { return std::string(to_string(info.param)); });

}  // namespace
}  // namespace jitattn::test
