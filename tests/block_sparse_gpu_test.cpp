// BlockSparseMask on the GPU against the fp64 reference over its materialize() (tests/reference.h):
// random layouts at 10%, 50% and 90% density, every block size 16..256, one layout for all heads
// or one per head, with and without causal, Mq ≠ Mkv and lengths that are no multiple of the
// block, GQA, forward and backward (default and deterministic) in f16, bf16 and f32. Outputs are
// poisoned first. Rows whose blocks are all zero must give out = 0 and lse = -inf.
#include <gtest/gtest.h>

#include <cmath>
#include <sstream>

#include "gpu_support.h"
#include "jitattn/attention.h"
#include "reference.h"

namespace jitattn::test {
namespace {

struct SparseCase {
  DType dt = DType::bf16;
  int64_t B = 1, Mq = 300, Mkv = 300, Hq = 2, Hkv = 2, K = 64;
  int32_t block = 64;
  double density = 0.5;
  bool per_head = true, causal = false, deterministic = false, backward = true;
  std::string describe() const {
    std::ostringstream os;
    os << to_string(dt) << " B=" << B << " Mq=" << Mq << " Mkv=" << Mkv << " Hq=" << Hq << " Hkv=" << Hkv << " K=" << K
       << " block=" << block << " density=" << density << " per_head=" << per_head << " causal=" << causal
       << " deterministic=" << deterministic;
    return os.str();
  }
};

// A layout [H or 1, rows, cols] with each block set with probability `density`; its bytes.
std::vector<uint8_t> random_layout(int64_t heads, int64_t rows, int64_t cols, double density) {
  std::bernoulli_distribution on(density);
  std::vector<uint8_t> l(size_t(heads * rows * cols));
  for (auto& x : l) x = on(rng()) ? uint8_t(1 + rng()() % 255) : 0;  // any nonzero byte is "set"
  return l;
}

void run_sparse(const SparseCase& c) {
  SCOPED_TRACE(c.describe());
  const DType dt = c.dt;
  const int64_t rows = (c.Mq + c.block - 1) / c.block, cols = (c.Mkv + c.block - 1) / c.block;
  const int64_t lh = c.per_head ? c.Hq : 1;
  std::vector<uint8_t> layout = random_layout(lh, rows, cols, c.density);
  DeviceBuffer layout_buf(layout.size() + 16);
  layout_buf.upload(layout.data(), layout.size());
  BlockSparseMask mask{TensorView::make(layout_buf.get(), DType::u8, {lh, rows, cols}), c.block, c.causal};
  BlockSparseMask host_mask = mask;
  host_mask.layout = TensorView::make(layout.data(), DType::u8, {lh, rows, cols}, {}, TensorView::kHost);
  const std::vector<double> bias = materialize(host_mask, c.B, c.Hq, c.Mq, c.Mkv);

  Dense q = random_dense(c.B, c.Mq, c.Hq, c.K, dt), k = random_dense(c.B, c.Mkv, c.Hkv, c.K, dt),
        v = random_dense(c.B, c.Mkv, c.Hkv, c.K, dt), dout = random_dense(c.B, c.Mq, c.Hq, c.K, dt);
  Dense out = poisoned(c.B, c.Mq, c.Hq, c.K, dt);
  DeviceBuffer lse_buf(size_t(c.B * c.Hq * c.Mq) * 4 + 4);
  lse_buf.fill(0xFF);
  const TensorView lse = TensorView::make(lse_buf.get(), DType::f32, {c.B, c.Hq, c.Mq});
  memory_efficient_attention_forward_requires_grad(q.view, k.view, v.view, mask, out.view, lse);
  Dense dq, dk, dv;
  if (c.backward) {
    dq = poisoned(c.B, c.Mq, c.Hq, c.K, dt), dk = poisoned(c.B, c.Mkv, c.Hkv, c.K, dt), dv = poisoned(c.B, c.Mkv, c.Hkv, c.K, dt);
    BackwardOptions bo;
    bo.deterministic = c.deterministic;
    memory_efficient_attention_backward(dout.view, out.view, lse, q.view, k.view, v.view, mask, dq.view, dk.view, dv.view, {}, bo);
  }
  device_synchronize();

  const RefShape s{c.B, c.Mq, c.Mkv, c.Hq, c.K, c.K};
  const double scale = 1.0 / std::sqrt(double(c.K));
  const auto kk = repeat_heads(k.values, c.B, c.Mkv, c.Hkv, c.Hq, c.K);
  const auto vv = repeat_heads(v.values, c.B, c.Mkv, c.Hkv, c.Hq, c.K);
  const RefResult ref = reference_attention(s, q.values, kk, vv, bias, scale);
  EXPECT_LE(relative_error(read(out), ref.out), dtype_tolerance(dt)) << "out";
  std::vector<unsigned char> lse_raw(size_t(c.B * c.Hq * c.Mq) * 4);
  lse_buf.download(lse_raw.data(), lse_raw.size());
  EXPECT_LE(relative_error(decode(lse_raw, DType::f32), ref.lse), dtype_tolerance(dt)) << "lse";
  if (c.backward) {
    const RefGrads g = reference_backward(s, q.values, kk, vv, bias, scale, dout.values);
    const double tol = grad_tolerance(dt);
    EXPECT_LE(gradient_error(read(dq), g.dq, g.dq_mag), tol) << "dq";
    EXPECT_LE(gradient_error(read(dk), sum_heads(g.dk, c.B, c.Mkv, c.Hkv, c.Hq, c.K), sum_heads(g.dk_mag, c.B, c.Mkv, c.Hkv, c.Hq, c.K)),
              tol)
        << "dk";
    EXPECT_LE(relative_error(read(dv), sum_heads(g.dv, c.B, c.Mkv, c.Hkv, c.Hq, c.K)), tol) << "dv";
  }
}

class BlockSparseGpu : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override { JITATTN_REQUIRE_GPU(); }
};

// The three densities of the issue, with each block size and both layout forms.
TEST_P(BlockSparseGpu, DensitiesAndBlockSizes) {
  reseed(41);
  int n = 0;
  for (double density : {0.1, 0.5, 0.9})
    for (int32_t block : {16, 32, 64, 128, 256}) {
      SparseCase c;
      c.dt = GetParam(), c.density = density, c.block = block, c.per_head = ++n % 2 == 0;
      c.Mq = 200 + int64_t(rng()() % 300), c.Mkv = 200 + int64_t(rng()() % 300);
      run_sparse(c);
    }
}

// Combined with causal; GQA; several batch rows sharing the layout; the deterministic backward.
TEST_P(BlockSparseGpu, CausalGqaAndDeterministic) {
  reseed(42);
  for (bool deterministic : {false, true}) {
    SparseCase c;
    c.dt = GetParam(), c.causal = true, c.deterministic = deterministic;
    c.B = 2, c.Hq = 4, c.Hkv = 2, c.Mq = 333, c.Mkv = 333, c.block = deterministic ? 32 : 128, c.density = 0.5;
    run_sparse(c);
  }
  SparseCase wide;  // the value/key head dim the wgmma forward takes, and a longer key axis
  wide.dt = GetParam(), wide.K = 128, wide.Mq = 130, wide.Mkv = 700, wide.block = 64, wide.density = 0.3;
  run_sparse(wide);
}

// All-zero layouts: every row is fully masked (out 0, lse -inf; zero gradients); one row of
// blocks zero in an otherwise dense layout.
TEST_P(BlockSparseGpu, EmptyBlocksAndRows) {
  reseed(43);
  SparseCase c;
  c.dt = GetParam(), c.density = 0.0, c.Mq = 100, c.Mkv = 150, c.block = 32;
  run_sparse(c);
  c.density = 1.0, c.causal = true;
  run_sparse(c);
}

INSTANTIATE_TEST_SUITE_P(DTypes, BlockSparseGpu, ::testing::Values(DType::f16, DType::bf16, DType::f32),
                         [](const auto& info) { return std::string(to_string(info.param)); });

}  // namespace
}  // namespace jitattn::test
