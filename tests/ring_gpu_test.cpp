// Ring attention on the GPU (jitattn/ring.h): R = 2, 4, 8 ranks simulated on one device
// (LocalRing) and, where two GPUs are present, the NCCL ring — forward and backward against full
// attention from the fp64 reference (tests/reference.h), for every layout, causal and not,
// windows, GQA, f16/bf16/f32. The sequence is drawn fresh (the seed is printed), sharded by the
// layout (ring_global_position), every output poisoned (0xFF: NaN) before the ring writes it,
// and the ranks' results gathered back into global order before the comparison.
#include <dlfcn.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <limits>
#include <memory>
#include <sstream>

#include "gpu_support.h"
#include "jit/cuda_driver.h"
#include "jitattn/ring.h"
#include "reference.h"

namespace jitattn::test {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

struct RingCase {
  RingLayout layout = RingLayout::zigzag;
  int world = 2;
  int64_t M = 64;  // rows per rank
  int64_t B = 2, H = 2, Hkv = 2, K = 64, Kv = 64;
  DType dtype = DType::bf16;
  DType out_dtype = DType::bf16;
  const char* mask = "causal";
  AttnBias bias = LowerTriangularMask{};
  std::string describe() const {
    std::ostringstream o;
    o << to_string(layout) << " R=" << world << " M=" << M << " B=" << B << " H=" << H << " Hkv=" << Hkv << " K=" << K
      << " Kv=" << Kv << " " << to_string(dtype) << "->" << to_string(out_dtype) << " " << mask;
    return o.str();
  }
};

// The device's primary context current (the tests' buffers and streams are made in it).
void use_device(int device) {
  const auto& d = jit::CudaDriver::require();
  CUdevice dev;
  jit::check_cuda(d.cuDeviceGet(&dev, device), "cuDeviceGet");
  CUcontext ctx;
  jit::check_cuda(d.cuDevicePrimaryCtxRetain(&ctx, dev), "cuDevicePrimaryCtxRetain");
  jit::check_cuda(d.cuCtxSetCurrent(ctx), "cuCtxSetCurrent");
}

// [B, N, H, D] global values → rank r's [B, M, H, D] rows, and back.
std::vector<double> shard(const std::vector<double>& g, const RingCase& c, int r, int64_t H, int64_t D) {
  const int64_t N = c.M * c.world;
  std::vector<double> l(size_t(c.B * c.M * H * D));
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t i = 0; i < c.M; ++i) {
      const int64_t gi = ring_global_position(c.layout, c.world, r, c.M, i);
      std::memcpy(&l[size_t(((b * c.M + i) * H) * D)], &g[size_t(((b * N + gi) * H) * D)], size_t(H * D) * sizeof(double));
    }
  return l;
}
void unshard(std::vector<double>& g, const std::vector<double>& l, const RingCase& c, int r, int64_t H, int64_t D) {
  const int64_t N = c.M * c.world;
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t i = 0; i < c.M; ++i) {
      const int64_t gi = ring_global_position(c.layout, c.world, r, c.M, i);
      std::memcpy(&g[size_t(((b * N + gi) * H) * D)], &l[size_t(((b * c.M + i) * H) * D)], size_t(H * D) * sizeof(double));
    }
}
// lse [B, H, M] of rank r → [B, H, N].
void unshard_lse(std::vector<double>& g, const std::vector<double>& l, const RingCase& c, int r) {
  const int64_t N = c.M * c.world;
  for (int64_t bh = 0; bh < c.B * c.H; ++bh)
    for (int64_t i = 0; i < c.M; ++i) g[size_t(bh * N + ring_global_position(c.layout, c.world, r, c.M, i))] = l[size_t(bh * c.M + i)];
}

struct Tensor {
  DeviceBuffer buf;
  TensorView view;
};
Tensor upload(const std::vector<double>& values, DType dt, std::initializer_list<int64_t> shape, int device) {
  Tensor t;
  const auto bytes = encode(values, dt);
  t.buf = DeviceBuffer(bytes.size() + 16);
  t.buf.upload(bytes.data(), bytes.size());
  t.view = TensorView::make(t.buf.get(), dt, shape, {}, device);
  return t;
}
Tensor poisoned_tensor(DType dt, std::initializer_list<int64_t> shape, int device) {
  Tensor t;
  t.view = TensorView::make(nullptr, dt, shape, {}, device);
  t.buf = DeviceBuffer(size_t(t.view.numel()) * element_size(dt) + 16);
  t.buf.fill(0xFF);
  t.view.data = t.buf.get();
  return t;
}
std::vector<double> read(const Tensor& t) {
  std::vector<unsigned char> raw(size_t(t.view.numel()) * element_size(t.view.dtype));
  t.buf.download(raw.data(), raw.size());
  return decode(raw, t.view.dtype);
}

// Forward and backward of one case over `transport` (its local ranks are all the ranks, on
// `devices`), checked against the fp64 reference of the whole sequence.
void run_ring_case(const RingCase& c, RingTransport& transport, const std::vector<int>& devices) {
  SCOPED_TRACE(c.describe());
  const int R = c.world;
  const int64_t N = c.M * R, B = c.B, H = c.H, Hkv = c.Hkv, K = c.K, Kv = c.Kv, M = c.M;
  const DType dt = c.dtype;
  std::vector<double> q, k, v, dout;
  std::vector<unsigned char> unused;
  random_values(rng(), size_t(B * N * H * K), dt, q, unused);
  random_values(rng(), size_t(B * N * Hkv * K), dt, k, unused);
  random_values(rng(), size_t(B * N * Hkv * Kv), dt, v, unused);
  random_values(rng(), size_t(B * N * H * Kv), dt, dout, unused);

  RingMask band;
  ASSERT_TRUE(ring_mask(c.bias, band));
  std::vector<double> mask(size_t(B * H * N * N));
  for (int64_t bh = 0; bh < B * H; ++bh)
    for (int64_t i = 0; i < N; ++i)
      for (int64_t j = 0; j < N; ++j) mask[size_t((bh * N + i) * N + j)] = band.visible(i, j) ? 0.0 : -kInf;
  const RefShape s{B, N, N, H, K, Kv};
  const double scale = 1.0 / std::sqrt(double(K));
  const auto kk = repeat_heads(k, B, N, Hkv, H, K), vv = repeat_heads(v, B, N, Hkv, H, Kv);
  const RefResult ref = reference_attention(s, q, kk, vv, mask, scale);
  const RefGrads gref = reference_backward(s, q, kk, vv, mask, scale, dout);

  std::vector<Tensor> tq, tk, tv, tdo, tout, tlse, tdq, tdk, tdv;
  std::vector<std::unique_ptr<Stream>> streams;
  for (int r = 0; r < R; ++r) {
    const int dev = devices[size_t(r)];
    use_device(dev);
    tq.push_back(upload(shard(q, c, r, H, K), dt, {B, M, H, K}, dev));
    tk.push_back(upload(shard(k, c, r, Hkv, K), dt, {B, M, Hkv, K}, dev));
    tv.push_back(upload(shard(v, c, r, Hkv, Kv), dt, {B, M, Hkv, Kv}, dev));
    tdo.push_back(upload(shard(dout, c, r, H, Kv), dt, {B, M, H, Kv}, dev));
    tout.push_back(poisoned_tensor(c.out_dtype, {B, M, H, Kv}, dev));
    tlse.push_back(poisoned_tensor(DType::f32, {B, H, M}, dev));
    tdq.push_back(poisoned_tensor(dt, {B, M, H, K}, dev));
    tdk.push_back(poisoned_tensor(dt, {B, M, Hkv, K}, dev));
    tdv.push_back(poisoned_tensor(dt, {B, M, Hkv, Kv}, dev));
    streams.push_back(std::make_unique<Stream>());
    device_synchronize();  // uploads and fills ran on the legacy stream
  }
  use_device(devices[0]);

  std::vector<RingForwardArgs> fa(static_cast<size_t>(R));
  for (int r = 0; r < R; ++r)
    fa[size_t(r)] = {tq[size_t(r)].view, tk[size_t(r)].view, tv[size_t(r)].view, tout[size_t(r)].view, tlse[size_t(r)].view,
                     streams[size_t(r)]->get()};
  RingOptions o;
  o.layout = c.layout;
  ring_attention_forward(transport, fa, c.bias, o);
  for (auto& st : streams) st->synchronize();

  std::vector<double> out(size_t(B * N * H * Kv)), lse(size_t(B * H * N)), dq(q.size()), dk(k.size()), dv(v.size());
  for (int r = 0; r < R; ++r) {
    unshard(out, read(tout[size_t(r)]), c, r, H, Kv);
    unshard_lse(lse, read(tlse[size_t(r)]), c, r);
  }
  EXPECT_LE(relative_error(out, ref.out), dtype_tolerance(c.out_dtype == DType::f32 ? dt : c.out_dtype)) << "ring out";
  EXPECT_LE(relative_error(lse, ref.lse), dt == DType::f32 ? 1e-6 : 1e-4) << "ring lse";

  // The backward takes the ring's own out (in its dtype) and lse, as training would.
  std::vector<RingBackwardArgs> ba(static_cast<size_t>(R));
  for (int r = 0; r < R; ++r) {
    const size_t i = size_t(r);
    ba[i] = {tdo[i].view, tout[i].view, tlse[i].view, tq[i].view, tk[i].view, tv[i].view,
             tdq[i].view, tdk[i].view, tdv[i].view, streams[i]->get()};
  }
  if (c.out_dtype != dt) return;  // the backward's out has q's dtype
  ring_attention_backward(transport, ba, c.bias, o);
  for (auto& st : streams) st->synchronize();
  for (int r = 0; r < R; ++r) {
    unshard(dq, read(tdq[size_t(r)]), c, r, H, K);
    unshard(dk, read(tdk[size_t(r)]), c, r, Hkv, K);
    unshard(dv, read(tdv[size_t(r)]), c, r, Hkv, Kv);
  }
  const double tol = grad_tolerance(dt);
  EXPECT_LE(gradient_error(dq, gref.dq, gref.dq_mag), tol) << "dq";
  EXPECT_LE(gradient_error(dk, sum_heads(gref.dk, B, N, Hkv, H, K), sum_heads(gref.dk_mag, B, N, Hkv, H, K)), tol) << "dk";
  EXPECT_LE(relative_error(dv, sum_heads(gref.dv, B, N, Hkv, H, Kv)), tol) << "dv";
}

std::vector<RingCase> simulated_cases() {
  std::vector<RingCase> cases;
  const std::pair<const char*, AttnBias> masks[] = {{"none", std::monostate{}},
                                                    {"causal", LowerTriangularMask{}},
                                                    {"window37", LowerTriangularFromBottomRightLocalAttentionMask{37}},
                                                    {"local20_9", LocalAttentionFromBottomRightMask{20, 9}}};
  for (RingLayout layout : {RingLayout::contiguous, RingLayout::zigzag, RingLayout::striped})
    for (int world : {2, 4, 8})
      for (const auto& [name, bias] : masks)
        for (DType dt : {DType::bf16, DType::f16}) {
          if ((std::string(name) == "window37" || std::string(name) == "local20_9") && dt == DType::f16) continue;
          RingCase c;
          c.layout = layout, c.world = world, c.M = 256 / world, c.dtype = c.out_dtype = dt, c.mask = name, c.bias = bias;
          cases.push_back(c);
        }
  // Documents (B = 1): lengths cut across chunk and rank boundaries, an empty one included.
  for (RingLayout layout : {RingLayout::contiguous, RingLayout::zigzag})
    for (int world : {2, 4, 8})
      for (bool causal : {false, true}) {
        RingCase c;
        c.layout = layout, c.world = world, c.M = 512 / world, c.B = 1, c.H = 4, c.Hkv = 2;
        std::vector<int32_t> lens;
        const int32_t pattern[] = {77, 0, 130, 1, 45, 96, 3, 64, 200, 33};
        for (int64_t used = 0, i = 0; used < c.M * world; ++i) {
          lens.push_back(int32_t(std::min<int64_t>(pattern[i % 10], c.M * world - used)));
          used += lens.back();
        }
        c.mask = causal ? "causal_documents" : "documents";
        c.bias = causal ? AttnBias{BlockDiagonalCausalMask::from_seqlens(lens)} : AttnBias{BlockDiagonalMask::from_seqlens(lens)};
        cases.push_back(c);
      }
  // Ragged tiles (chunks of 20 and 9 rows), GQA, value head dim != key head dim, f32, an f32 out.
  RingCase c;
  c.layout = RingLayout::zigzag, c.world = 4, c.M = 40, c.H = 4, c.Hkv = 2, c.K = 64, c.Kv = 32;
  cases.push_back(c);
  c.layout = RingLayout::striped, c.world = 3, c.M = 18, c.H = 2, c.Hkv = 1, c.K = 128, c.Kv = 128;
  c.dtype = c.out_dtype = DType::f16;
  cases.push_back(c);
  c = RingCase{};
  c.world = 4, c.M = 32, c.dtype = c.out_dtype = DType::f32;
  cases.push_back(c);
  c.dtype = DType::bf16, c.out_dtype = DType::f32;  // forward only (the backward's out has q's dtype)
  cases.push_back(c);
  c = RingCase{};
  c.world = 1, c.M = 96, c.layout = RingLayout::contiguous;  // a ring of one: plain attention
  cases.push_back(c);
  return cases;
}

class RingSimulated : public ::testing::TestWithParam<RingCase> {};

TEST_P(RingSimulated, MatchesFullAttention) {
  JITATTN_REQUIRE_GPU();
  reseed(uint64_t(GetParam().world) * 1000 + uint64_t(GetParam().M));
  LocalRing ring(GetParam().world, 0);
  run_ring_case(GetParam(), ring, std::vector<int>(size_t(GetParam().world), 0));
}

INSTANTIATE_TEST_SUITE_P(Ring, RingSimulated, ::testing::ValuesIn(simulated_cases()),
                         [](const ::testing::TestParamInfo<RingCase>& info) {
                           std::string n = std::to_string(info.index) + "_" + to_string(info.param.layout) + "_R" +
                                           std::to_string(info.param.world) + "_" + info.param.mask + "_" +
                                           to_string(info.param.dtype);
                           for (char& ch : n)
                             if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           return n;
                         });

// A second call reuses the ring (its events) and gives the same result on fresh inputs.
TEST(RingSimulatedReuse, OneRingServesManyCalls) {
  JITATTN_REQUIRE_GPU();
  LocalRing ring(4, 0);
  RingCase c;
  c.world = 4, c.M = 32;
  run_ring_case(c, ring, {0, 0, 0, 0});
  c.layout = RingLayout::striped;
  run_ring_case(c, ring, {0, 0, 0, 0});
}

// ---- NCCL on two GPUs ---------------------------------------------------------------------------

// ncclCommInitAll / ncclCommDestroy from the library NcclRing loads ($JITATTN_TEST_NCCL, else
// libnccl.so.2 on the loader's path).
struct NcclComms {
  std::vector<void*> comms;
  int (*destroy)(void*) = nullptr;
  ~NcclComms() {
    for (void* c : comms)
      if (destroy && c) destroy(c);
  }
};

TEST(RingNccl, TwoGpusMatchFullAttention) {
  JITATTN_REQUIRE_GPU();
  int count = 0;
  jit::check_cuda(jit::CudaDriver::get().cuDeviceGetCount(&count), "cuDeviceGetCount");
  if (count < 2) GTEST_SKIP() << "needs 2 GPUs, this machine has " << count;
  setenv("NCCL_NVLS_ENABLE", "0", 1);
  const char* path = std::getenv("JITATTN_TEST_NCCL");
  void* lib = dlopen(path ? path : "libnccl.so.2", RTLD_NOW | RTLD_GLOBAL);
  if (!lib) GTEST_SKIP() << "no libnccl.so.2 (set JITATTN_TEST_NCCL to its path): " << dlerror();
  using InitAll = int (*)(void**, int, const int*);
  auto init_all = reinterpret_cast<InitAll>(dlsym(lib, "ncclCommInitAll"));
  NcclComms comms;
  comms.destroy = reinterpret_cast<int (*)(void*)>(dlsym(lib, "ncclCommDestroy"));
  ASSERT_TRUE(init_all && comms.destroy);
  comms.comms.assign(2, nullptr);
  const int devs[2] = {0, 1};
  ASSERT_EQ(init_all(comms.comms.data(), 2, devs), 0) << "ncclCommInitAll";
  NcclRing ring(comms.comms, path ? path : "");
  ASSERT_EQ(ring.world_size(), 2);
  ASSERT_EQ(ring.local_devices(), (std::vector<int>{0, 1}));
  for (RingLayout layout : {RingLayout::zigzag, RingLayout::striped, RingLayout::contiguous})
    for (DType dt : {DType::bf16, DType::f16}) {
      RingCase c;
      c.layout = layout, c.world = 2, c.M = 128, c.dtype = c.out_dtype = dt;
      run_ring_case(c, ring, {0, 1});
      c.bias = std::monostate{}, c.mask = "none";
      run_ring_case(c, ring, {0, 1});
    }
}

}  // namespace
}  // namespace jitattn::test
