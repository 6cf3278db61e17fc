// The backward kernels and dropout against the fp64 reference (tests/reference.h: gradients from
// the softmax formula, dropout mask from tests/philox.h), on fresh random inputs with every
// output poisoned (NaN) before the call.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <sstream>

#include "gpu_support.h"
#include "jitattn/attention.h"
#include "philox.h"
#include "reference.h"

namespace jitattn::test {
namespace {


struct BwdCase {
  DType dt = DType::bf16;
  int64_t B = 1, Mq = 1, Mkv = 1, Hq = 1, Hkv = 1, K = 64, Kv = 64;
  AttnBias bias;
  bool tensor_bias = false;  // a random dense bias (with dbias); `bias` then says causal or not
  double p = 0.0;
  bool deterministic = false;
  std::string describe() const {
    std::ostringstream os;
    os << to_string(dt) << " B=" << B << " Mq=" << Mq << " Mkv=" << Mkv << " Hq=" << Hq << " Hkv=" << Hkv << " K=" << K
       << " Kv=" << Kv << " bias=" << bias_name(bias) << (tensor_bias ? "+tensor" : "") << " p=" << p
       << (deterministic ? " deterministic" : "");
    return os.str();
  }
};

struct BwdResult {
  std::vector<double> dq, dk, dv, dbias;
};

// Runs forward + backward on the GPU and checks every gradient against the reference; returns
// what the GPU produced (for the determinism test).
BwdResult run_bwd_case(const BwdCase& c, bool check = true) {
  SCOPED_TRACE(c.describe());
  const DType dt = c.dt;
  Dense q = random_dense(c.B, c.Mq, c.Hq, c.K, dt), k = random_dense(c.B, c.Mkv, c.Hkv, c.K, dt),
        v = random_dense(c.B, c.Mkv, c.Hkv, c.Kv, dt), dout = random_dense(c.B, c.Mq, c.Hq, c.Kv, dt);
  Dense out = poisoned(c.B, c.Mq, c.Hq, c.Kv, dt);
  DeviceBuffer lse_buf(size_t(c.B * c.Hq * c.Mq) * 4 + 4);
  lse_buf.fill(0xFF);
  const TensorView lse = TensorView::make(lse_buf.get(), DType::f32, {c.B, c.Hq, c.Mq});

  AttnBias bias = c.bias;
  std::vector<double> bias_host;
  DeviceBuffer bias_buf;
  Dense dbias;
  if (c.tensor_bias) {
    std::vector<unsigned char> bytes;
    random_values(rng(), size_t(c.B * c.Hq * c.Mq * c.Mkv), dt, bias_host, bytes);
    bias_buf = DeviceBuffer(bytes.size());
    bias_buf.upload(bytes.data(), bytes.size());
    const TensorView t = TensorView::make(bias_buf.get(), dt, {c.B, c.Hq, c.Mq, c.Mkv});
    bias = std::holds_alternative<LowerTriangularMask>(c.bias) ? AttnBias(LowerTriangularMask{}.add_bias(t)) : AttnBias(TensorBias{t});
    dbias.buf = DeviceBuffer(bytes.size());
    dbias.buf.fill(0xFF);
    dbias.view = TensorView::make(dbias.buf.get(), dt, {c.B, c.Hq, c.Mq, c.Mkv});
  }
  std::vector<double> mask = materialize(c.tensor_bias ? c.bias : bias, c.B, c.Hq, c.Mq, c.Mkv);
  if (c.tensor_bias)
    for (size_t i = 0; i < mask.size(); ++i) mask[i] += bias_host[i];

  AttentionOptions fo;
  fo.p = c.p, fo.seed = rng()(), fo.offset = rng()() % 1000;
  memory_efficient_attention_forward_requires_grad(q.view, k.view, v.view, bias, out.view, lse, fo);

  Dense dq = poisoned(c.B, c.Mq, c.Hq, c.K, dt), dk = poisoned(c.B, c.Mkv, c.Hkv, c.K, dt),
        dv = poisoned(c.B, c.Mkv, c.Hkv, c.Kv, dt);
  BackwardOptions bo;
  bo.p = fo.p, bo.seed = fo.seed, bo.offset = fo.offset, bo.deterministic = c.deterministic;
  memory_efficient_attention_backward(dout.view, out.view, lse, q.view, k.view, v.view, bias, dq.view, dk.view,
                                      dv.view, dbias.view, bo);
  device_synchronize();

  BwdResult got{read(dq), read(dk), read(dv), c.tensor_bias ? read(dbias) : std::vector<double>{}};
  if (!check) return got;
  const RefShape s{c.B, c.Mq, c.Mkv, c.Hq, c.K, c.Kv};
  const double scale = 1.0 / std::sqrt(double(c.K));
  const auto kk = repeat_heads(k.values, c.B, c.Mkv, c.Hkv, c.Hq, c.K);
  const auto vv = repeat_heads(v.values, c.B, c.Mkv, c.Hkv, c.Hq, c.Kv);
  std::vector<uint8_t> keep;
  if (c.p > 0) keep = dropout_keep_mask(fo.seed, fo.offset, c.B, c.Hq, c.Mq, c.Mkv, c.p);
  const RefResult fwd = c.p > 0 ? reference_attention_dropout(s, q.values, kk, vv, mask, scale, keep, c.p)
                                : reference_attention(s, q.values, kk, vv, mask, scale);
  EXPECT_LE(relative_error(read(out), fwd.out), dtype_tolerance(dt)) << "forward out";
  const RefGrads ref = reference_backward(s, q.values, kk, vv, mask, scale, dout.values, c.p > 0 ? &keep : nullptr, c.p);
  const double tol = grad_tolerance(dt);
  EXPECT_LE(gradient_error(got.dq, ref.dq, ref.dq_mag), tol) << "dq";
  EXPECT_LE(gradient_error(got.dk, sum_heads(ref.dk, c.B, c.Mkv, c.Hkv, c.Hq, c.K), sum_heads(ref.dk_mag, c.B, c.Mkv, c.Hkv, c.Hq, c.K)), tol)
      << "dk";
  EXPECT_LE(relative_error(got.dv, sum_heads(ref.dv, c.B, c.Mkv, c.Hkv, c.Hq, c.Kv)), tol) << "dv";
  if (c.tensor_bias) EXPECT_LE(gradient_error(got.dbias, ref.dbias, ref.dbias_mag), tol) << "dbias";
  return got;
}

class BackwardGpu : public ::testing::Test {
 protected:
  void SetUp() override { JITATTN_REQUIRE_GPU(); }
};

TEST_F(BackwardGpu, DenseMasksAndTensorBias) {
  for (DType dt : {DType::bf16, DType::f16, DType::f32}) {
    for (const AttnBias& b : {AttnBias{}, AttnBias{LowerTriangularMask{}}, AttnBias{LowerTriangularFromBottomRightMask{}},
                              AttnBias{LowerTriangularFromBottomRightMask{}.make_local_attention(40)},
                              AttnBias{LocalAttentionFromBottomRightMask{17, 5}}})
      run_bwd_case({dt, 2, 150, 203, 3, 3, 64, 64, b});
    BwdCase t{dt, 2, 97, 130, 2, 2, 64, 64, AttnBias{}};
    t.tensor_bias = true;
    run_bwd_case(t);
    t.bias = LowerTriangularMask{};
    run_bwd_case(t);
  }
}

TEST_F(BackwardGpu, HeadDims) {
  for (auto [K, Kv] : {std::pair<int, int>{32, 32}, {96, 96}, {128, 128}, {256, 256}, {64, 128}, {8, 24}})
    run_bwd_case({DType::bf16, 1, 190, 190, 2, 2, K, Kv, LowerTriangularMask{}});
}

TEST_F(BackwardGpu, GroupedQueryHeadsSumIntoSharedKeys) {
  for (auto [hq, hkv] : {std::pair<int, int>{6, 2}, {4, 1}})
    for (DType dt : {DType::bf16, DType::f32}) run_bwd_case({dt, 2, 77, 300, hq, hkv, 128, 128, LowerTriangularFromBottomRightMask{}});
}

TEST_F(BackwardGpu, BlockDiagonalPaddedGappyAndAlibi) {
  for (DType dt : {DType::bf16, DType::f16, DType::f32}) {
    const auto ql = random_lengths(4, 2, 150);
    auto kl = ql;
    for (auto& x : kl) x += int32_t(rng()() % 40);
    const int64_t mq = sum(ql), mkv = sum(kl);
    const auto bd = BlockDiagonalMask::from_seqlens(ql, kl);
    run_bwd_case({dt, 1, mq, mkv, 2, 2, 64, 64, bd});
    run_bwd_case({dt, 1, mq, mkv, 4, 2, 64, 64, bd.make_causal_from_bottomright()});
    run_bwd_case({dt, 1, mq, mkv, 2, 2, 64, 64, bd.make_local_attention_from_bottomright(9)});
    const auto sq = BlockDiagonalMask::from_seqlens(ql);
    run_bwd_case({dt, 1, mq, mq, 2, 2, 128, 128, sq.make_causal()});
    run_bwd_case({dt, 1, mq, mq, 2, 2, 64, 64, sq.make_local_attention(17)});
    const int32_t pad = 200;
    std::vector<int32_t> pl;
    for (int32_t x : ql) pl.push_back(std::min<int32_t>(pad, x + int32_t(rng()() % 60)));
    const int64_t pkv = int64_t(ql.size()) * pad;
    const auto padded = BlockDiagonalCausalWithOffsetPaddedKeysMask::from_seqlens(ql, pad, pl);
    run_bwd_case({dt, 1, mq, pkv, 2, 2, 64, 64, padded});
    run_bwd_case({dt, 1, mq, pkv, 2, 2, 64, 64, BlockDiagonalPaddedKeysMask::from_seqlens(ql, pad, pl)});
    run_bwd_case({dt, 1, mq, pkv, 2, 2, 64, 64, BlockDiagonalLocalAttentionPaddedKeysMask{padded.q_seqinfo, padded.k_seqinfo, 6, 3}});
    run_bwd_case({dt, 1, mq, pkv, 2, 2, 64, 64, BlockDiagonalCausalLocalAttentionPaddedKeysMask{padded.q_seqinfo, padded.k_seqinfo, 13}});
    std::vector<int32_t> starts;
    for (size_t i = 0; i < ql.size(); ++i) starts.push_back(int32_t(i) * pad + int32_t(rng()() % 20));
    std::shuffle(starts.begin(), starts.end(), rng());
    starts.push_back(int32_t(pkv));
    std::vector<int32_t> gl;
    for (int32_t x : pl) gl.push_back(std::min<int32_t>(x, pad - 20));
    run_bwd_case({dt, 1, mq, pkv, 2, 2, 64, 64, BlockDiagonalGappyKeysMask::from_seqlens(ql, starts, gl)});
    const auto slopes = AlibiSlopes::geometric(4);
    run_bwd_case({dt, 2, 100, 120, 4, 4, 64, 64, AlibiBias{slopes}});
    run_bwd_case({dt, 2, 100, 100, 4, 2, 64, 64, LowerTriangularMask{}.add_alibi(slopes)});
    run_bwd_case({dt, 1, mq, mq, 4, 4, 64, 64, sq.make_causal().add_alibi(slopes)});
    run_bwd_case({dt, 1, mq, mkv, 4, 4, 64, 64, bd.add_alibi(slopes)});
    run_bwd_case({dt, 1, mq, mq, 4, 2, 64, 64, sq.make_causal()});  // GQA over packed sequences
  }
}

// Key lengths of 170 (a row's keys start anywhere in a group of four draws) and 168 (every row's
// keys start a group: the tensor-core backwards share each draw between lanes, bwd_tile.cuh).
TEST_F(BackwardGpu, DropoutUsesTheForwardMask) {
  for (DType dt : {DType::bf16, DType::f16, DType::f32})
    for (const AttnBias& b : {AttnBias{}, AttnBias{LowerTriangularMask{}}})
      for (int64_t mkv : {170, 168}) {
        BwdCase c{dt, 2, 130, mkv, 2, 2, 64, 64, b};
        c.p = 0.3;
        run_bwd_case(c);
        c.deterministic = true;
        run_bwd_case(c);
      }
  for (DType dt : {DType::bf16, DType::f16}) {
    BwdCase c{dt, 1, 200, 264, 4, 2, 128, 128, LowerTriangularFromBottomRightMask{}};
    c.p = 0.2;
    run_bwd_case(c);
  }
  const auto ql = random_lengths(3, 20, 90);
  BwdCase c{DType::bf16, 1, sum(ql), sum(ql), 2, 2, 64, 64, BlockDiagonalCausalMask::from_seqlens(ql)};
  c.p = 0.1;
  run_bwd_case(c);
}

// The kept fraction over > 1e6 elements is within 4 standard deviations of 1 - p, and the mask is
// bit for bit tests/philox.h's: with scale 0 every probability is 1/Mkv, and with V the identity
// out[i, j] = keep[i, j] / (Mkv (1 - p)), so the forward's output spells out its mask.
TEST_F(BackwardGpu, DropoutKeepsOneMinusPAndMatchesPhilox) {
  const int64_t B = 2, H = 8, Mq = 512, N = 128;
  const double p = 0.25;
  for (DType dt : {DType::bf16, DType::f32}) {
    Dense q = random_dense(B, Mq, H, N, dt), k = random_dense(B, N, H, N, dt);
    std::vector<double> eye(size_t(B * N * H * N), 0.0);
    std::vector<unsigned char> bytes(eye.size() * element_size(dt), 0);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t j = 0; j < N; ++j)
        for (int64_t h = 0; h < H; ++h) {
          const size_t idx = size_t(((b * N + j) * H + h) * N + j);
          if (dt == DType::f32) {
            const float one = 1.f;
            std::memcpy(&bytes[idx * 4], &one, 4);
          } else {
            const uint16_t one = to_bits(1.0, dt);
            std::memcpy(&bytes[idx * 2], &one, 2);
          }
        }
    DeviceBuffer vb(bytes.size());
    vb.upload(bytes.data(), bytes.size());
    const TensorView v = TensorView::make(vb.get(), dt, {B, N, H, N});
    Dense out = poisoned(B, Mq, H, N, dt);
    AttentionOptions o;
    o.scale = 0.0, o.p = p, o.seed = rng()(), o.offset = 7;
    memory_efficient_attention_forward(q.view, k.view, v, AttnBias{}, out.view, o);
    device_synchronize();
    const auto got = read(out);
    const auto keep = dropout_keep_mask(o.seed, o.offset, B, H, Mq, N, p);
    int64_t kept = 0, mismatches = 0;
    const double one = 1.0 / (double(N) * (1.0 - p));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < Mq; ++i)
        for (int64_t h = 0; h < H; ++h)
          for (int64_t j = 0; j < N; ++j) {
            const double x = got[size_t(((b * Mq + i) * H + h) * N + j)];
            const bool k_gpu = x > 0.5 * one;
            EXPECT_TRUE(std::abs(x - (k_gpu ? one : 0.0)) < 0.02 * one) << "out is not 0 or 1/(N(1-p)): " << x;
            kept += k_gpu;
            mismatches += k_gpu != bool(keep[size_t(((b * H + h) * Mq + i) * N + j)]);
          }
    const double n = double(B * H * Mq * N), sd = std::sqrt(n * p * (1 - p));
    EXPECT_GE(n, 1e6);
    EXPECT_LE(std::abs(double(kept) - n * (1 - p)), 4 * sd) << "kept " << kept << " of " << n;
    EXPECT_EQ(mismatches, 0) << "the kernel's mask differs from tests/philox.h's";
  }
}

TEST_F(BackwardGpu, DeterministicModeIsBitwiseStable) {
  BwdCase c{DType::bf16, 2, 300, 520, 6, 2, 128, 128, LowerTriangularFromBottomRightMask{}};
  c.deterministic = true;
  // Same inputs five times: draw them once by fixing the generator state.
  const auto state = rng();
  std::vector<BwdResult> runs;
  for (int r = 0; r < 5; ++r) {
    rng() = state;
    runs.push_back(run_bwd_case(c, r == 0));
  }
  for (int r = 1; r < 5; ++r) {
    EXPECT_TRUE(runs[r].dq == runs[0].dq) << "dq differs in run " << r;
    EXPECT_TRUE(runs[r].dk == runs[0].dk) << "dk differs in run " << r;
    EXPECT_TRUE(runs[r].dv == runs[0].dv) << "dv differs in run " << r;
  }
}

TEST_F(BackwardGpu, CallerWorkspaceAndWorkspaceSize) {
  const int64_t B = 1, M = 200, H = 2, K = 64;
  Dense q = random_dense(B, M, H, K, DType::bf16), k = random_dense(B, M, H, K, DType::bf16),
        v = random_dense(B, M, H, K, DType::bf16), g = random_dense(B, M, H, K, DType::bf16);
  Dense out = poisoned(B, M, H, K, DType::bf16);
  DeviceBuffer lse_buf(size_t(B * H * M) * 4);
  const TensorView lse = TensorView::make(lse_buf.get(), DType::f32, {B, H, M});
  memory_efficient_attention_forward_requires_grad(q.view, k.view, v.view, LowerTriangularMask{}, out.view, lse);
  BackwardOptions bo;
  const size_t bytes = memory_efficient_attention_backward_workspace_bytes(q.view, k.view, v.view, LowerTriangularMask{}, bo);
  EXPECT_GE(bytes, size_t(B * H * M) * 4 * (1 + K));  // delta and the fp32 dQ accumulator
  DeviceBuffer ws(bytes);
  ws.fill(0xFF);  // the backward must not rely on zeroed scratch
  bo.workspace = ws.get();
  Dense dq = poisoned(B, M, H, K, DType::bf16), dk = poisoned(B, M, H, K, DType::bf16), dv = poisoned(B, M, H, K, DType::bf16);
  memory_efficient_attention_backward(g.view, out.view, lse, q.view, k.view, v.view, LowerTriangularMask{}, dq.view,
                                      dk.view, dv.view, {}, bo);
  device_synchronize();
  const RefShape s{B, M, M, H, K, K};
  const auto mask = materialize(LowerTriangularMask{}, B, H, M, M);
  const auto ref = reference_backward(s, q.values, k.values, v.values, mask, 1.0 / 8.0, g.values);
  EXPECT_LE(relative_error(read(dq), ref.dq), grad_tolerance(DType::bf16));
  EXPECT_LE(relative_error(read(dk), ref.dk), grad_tolerance(DType::bf16));
  EXPECT_LE(relative_error(read(dv), ref.dv), grad_tolerance(DType::bf16));
}

}  // namespace
}  // namespace jitattn::test
