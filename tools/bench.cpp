#include "tools/bench.h"

#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <thread>

#include "jit/cuda_driver.h"
#include "jit/jit_runtime.h"
#include "jitattn/attention.h"

namespace jitattn::tools {

using jit::check_cuda;
using jit::CudaDriver;
namespace fs = std::filesystem;

// ---- device helpers ---------------------------------------------------------------------

bool gpu_available(std::string* why) {
  const CudaDriver& d = CudaDriver::get();
  if (!d.available) {
    *why = "no CUDA driver: " + d.unavailable_reason;
    return false;
  }
  int count = 0;
  if (d.cuDeviceGetCount(&count) != CUDA_SUCCESS || count == 0) {
    *why = "the CUDA driver sees no device";
    return false;
  }
  jit::JitRuntime::get().context(0);  // device 0's primary context, as the API calls will use it
  return true;
}

jit::Arch device_arch(CUdevice device) {
  const CudaDriver& d = CudaDriver::require();
  int major = 0, minor = 0;
  check_cuda(d.cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, device), "cuDeviceGetAttribute");
  check_cuda(d.cuDeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, device), "cuDeviceGetAttribute");
  jit::Arch arch;
  arch.sm = uint8_t(major * 10 + minor);
  arch.specific = arch.sm == 90;  // same rule as JitRuntime::context
  return arch;
}

DeviceBuffer::DeviceBuffer(size_t bytes) : bytes_(bytes) {
  check_cuda(CudaDriver::require().cuMemAlloc(&ptr_, bytes ? bytes : 1), "cuMemAlloc");
}

DeviceBuffer::~DeviceBuffer() {
  if (ptr_) CudaDriver::get().cuMemFree(ptr_);
}

void DeviceBuffer::upload(const std::vector<unsigned char>& bytes) {
  check_cuda(CudaDriver::get().cuMemcpyHtoD(ptr_, bytes.data(), std::min(bytes.size(), bytes_)), "cuMemcpyHtoD");
}

std::vector<unsigned char> DeviceBuffer::download() const {
  std::vector<unsigned char> out(bytes_);
  check_cuda(CudaDriver::get().cuMemcpyDtoH(out.data(), ptr_, bytes_), "cuMemcpyDtoH");
  return out;
}

void DeviceBuffer::fill(unsigned char byte) {
  check_cuda(CudaDriver::get().cuMemsetD8(ptr_, byte, bytes_), "cuMemsetD8");
}

void DeviceBuffer::fill_tiled(const std::vector<unsigned char>& pattern) {
  if (pattern.empty()) return;
  for (size_t at = 0; at < bytes_; at += pattern.size())
    check_cuda(CudaDriver::get().cuMemcpyHtoD(ptr_ + at, pattern.data(), std::min(pattern.size(), bytes_ - at)),
               "cuMemcpyHtoD");
}

namespace {

uint32_t float_bits(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  return x;
}

// Round to nearest even, as the device's conversions do.
uint16_t to_bf16(float f) {
  const uint32_t x = float_bits(f);
  if ((x & 0x7fffffff) > 0x7f800000) return 0x7fc0;  // NaN stays NaN
  return uint16_t((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}

uint16_t to_f16(float f) {
  const uint32_t x = float_bits(f), sign = (x >> 16) & 0x8000, a = x & 0x7fffffff;
  if (a > 0x7f800000) return uint16_t(sign | 0x7e00);       // NaN
  if (a >= 0x477ff000) return uint16_t(sign | 0x7c00);      // >= 65520 rounds to infinity
  if (a < 0x38800000) {                                     // below 2^-14: subnormal
    float m;
    std::memcpy(&m, &a, 4);
    return uint16_t(sign | uint32_t(std::nearbyint(m * 16777216.0f)));  // units of 2^-24
  }
  return uint16_t(sign | ((a + 0xfff + ((a >> 13) & 1) - (112u << 23)) >> 13));  // rebias 127 -> 15
}

double from_f16(uint16_t h) {
  const int exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  const double sign = (h & 0x8000) ? -1.0 : 1.0;
  if (exp == 0) return sign * std::ldexp(mant, -24);
  if (exp == 31) return mant ? NAN : sign * INFINITY;
  return sign * std::ldexp(1024 + mant, exp - 25);
}

}  // namespace

std::vector<unsigned char> random_normal(size_t n, DType dtype, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<unsigned char> out(n * element_size(dtype));
  for (size_t i = 0; i < n; ++i) {
    const float x = normal(rng);
    if (dtype == DType::f32) {
      std::memcpy(&out[4 * i], &x, 4);
    } else {
      const uint16_t h = dtype == DType::bf16 ? to_bf16(x) : to_f16(x);
      std::memcpy(&out[2 * i], &h, 2);
    }
  }
  return out;
}

double decode(const std::vector<unsigned char>& bytes, size_t i, DType dtype) {
  if (dtype == DType::f32) {
    float f;
    std::memcpy(&f, &bytes[4 * i], 4);
    return f;
  }
  uint16_t h;
  std::memcpy(&h, &bytes[2 * i], 2);
  if (dtype == DType::f16) return from_f16(h);
  const uint32_t x = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

// ---- the benchmark ----------------------------------------------------------------------

namespace {

struct Shape {
  int64_t B, M, H, K;
  // 4·B·H·M·M·K for the two matmuls; the causal mask skips half of them.
  double flops(bool causal) const { return 4.0 * B * H * M * M * K * (causal ? 0.5 : 1.0); }
};

// q, k, v and out of one contiguous [B, M, H, K] shape on the device, inputs random.
class Problem {
 public:
  Problem(const Shape& s, DType dtype, uint64_t seed)
      : shape_(s), dtype_(dtype), q_(bytes()), k_(bytes()), v_(bytes()), out_(bytes()) {
    DeviceBuffer* inputs[3] = {&q_, &k_, &v_};
    std::vector<unsigned char> host[3];
    std::vector<std::thread> threads;  // ~100M normals per large shape: one thread per tensor
    for (int i = 0; i < 3; ++i)
      threads.emplace_back([&, i] { host[i] = random_normal(numel(), dtype, seed + i); });
    for (auto& t : threads) t.join();
    for (int i = 0; i < 3; ++i) inputs[i]->upload(host[i]);
  }

  // One forward call, queued on the legacy default stream.
  void run(bool causal) const { run(causal ? AttnBias{LowerTriangularMask{}} : AttnBias{}); }
  void run(const AttnBias& bias) const {
    memory_efficient_attention_forward(view(q_), view(k_), view(v_), bias, view(out_));
  }

  // The backward's buffers, and the forward's out and lse for `bias` that it reads (dropout p:
  // the forward's and the backward's, seed 1).
  void prepare_backward(const AttnBias& bias, double p = 0) {
    if (!dout_) {
      dout_ = std::make_unique<DeviceBuffer>(bytes());
      dout_->upload(random_normal(numel(), dtype_, 99));
      for (auto* b : {&dq_, &dk_, &dv_}) *b = std::make_unique<DeviceBuffer>(bytes());
      lse_ = std::make_unique<DeviceBuffer>(size_t(shape_.B * shape_.H * shape_.M) * 4);
    }
    AttentionOptions o;
    o.p = p, o.seed = 1;
    memory_efficient_attention_forward_requires_grad(view(q_), view(k_), view(v_), bias, view(out_), lse_view(), o);
  }
  // One backward call (after prepare_backward with the same bias).
  void run_backward(const AttnBias& bias, bool deterministic, double p = 0) const {
    BackwardOptions o;
    o.deterministic = deterministic;
    o.p = p, o.seed = 1;
    memory_efficient_attention_backward(view(*dout_), view(out_), lse_view(), view(q_), view(k_), view(v_), bias,
                                        view(*dq_), view(*dk_), view(*dv_), {}, o);
  }

 private:
  TensorView view(const DeviceBuffer& b) const {
    return TensorView::make(b.get(), dtype_, {shape_.B, shape_.M, shape_.H, shape_.K});
  }
  TensorView lse_view() const { return TensorView::make(lse_->get(), DType::f32, {shape_.B, shape_.H, shape_.M}); }

  size_t numel() const { return size_t(shape_.B * shape_.M * shape_.H * shape_.K); }
  size_t bytes() const { return numel() * element_size(dtype_); }

  Shape shape_;
  DType dtype_;
  DeviceBuffer q_, k_, v_, out_;
  std::unique_ptr<DeviceBuffer> dout_, dq_, dk_, dv_, lse_;
};

// n + 1 events recorded between n calls, so each call's time can be read on its own.
class EventChain {
 public:
  explicit EventChain(int calls) : events_(size_t(calls) + 1) {
    for (CUevent& e : events_) check_cuda(CudaDriver::get().cuEventCreate(&e, CU_EVENT_DEFAULT), "cuEventCreate");
  }
  ~EventChain() {
    for (CUevent e : events_) CudaDriver::get().cuEventDestroy(e);
  }
  void record(int i) { check_cuda(CudaDriver::get().cuEventRecord(events_[size_t(i)], nullptr), "cuEventRecord"); }
  float call_ms(int i) const {
    float ms = 0;
    check_cuda(CudaDriver::get().cuEventElapsedTime(&ms, events_[size_t(i)], events_[size_t(i) + 1]), "cuEventElapsedTime");
    return ms;
  }
  void wait_last() const { check_cuda(CudaDriver::get().cuEventSynchronize(events_.back()), "cuEventSynchronize"); }

 private:
  std::vector<CUevent> events_;
};

void synchronize() { check_cuda(CudaDriver::get().cuCtxSynchronize(), "cuCtxSynchronize"); }

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Median per-call milliseconds of `reps` calls of `call` after one warm-up call.
template <class F>
double median_ms_of(F call, int reps) {
  call();
  EventChain events(reps);
  for (int i = 0; i < reps; ++i) {
    events.record(i);
    call();
  }
  events.record(reps);
  events.wait_last();
  std::vector<float> ms(size_t(reps), 0.f);
  for (int i = 0; i < reps; ++i) ms[size_t(i)] = events.call_ms(i);
  std::sort(ms.begin(), ms.end());
  return reps % 2 ? ms[size_t(reps / 2)] : 0.5 * (ms[size_t(reps / 2) - 1] + ms[size_t(reps / 2)]);
}
double median_ms(const Problem& p, const AttnBias& bias, int reps) {
  return median_ms_of([&] { p.run(bias); }, reps);
}

// Host cost of a warm call (hash, lookup, argument packing, launch) on a shape too small for
// the GPU to be the bottleneck. The calls are only queued; the clock stops before the sync.
// requires_grad: the forward that keeps lse, once its backward has run (so its check that the
// backward's kernels are loaded, jit/ops/backward.h prefetch_backward, finds them).
double host_overhead_us(DType dtype, bool requires_grad) {
  constexpr int kCalls = 1000;
  Problem tiny(Shape{1, 1, 1, 64}, dtype, 7);
  auto call = [&] { requires_grad ? tiny.prepare_backward(AttnBias{}) : tiny.run(false); };
  call();
  if (requires_grad) tiny.run_backward(AttnBias{}, false);
  synchronize();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < kCalls; ++i) call();
  const double us = 1e6 * seconds_since(t0) / kCalls;
  synchronize();
  return us;
}

std::vector<bool> causal_modes(const std::string& causal) {
  if (causal == "yes") return {true};
  if (causal == "no") return {false};
  return {false, true};
}

}  // namespace

// ---- timing helpers ---------------------------------------------------------------------

std::string device_name() {
  char name[256] = {};
  CudaDriver::get().cuDeviceGetName(name, sizeof name, 0);
  return name;
}

double first_call_ms(const std::function<void()>& call, std::string* what) {
  jit::JitStats& st = jit::JitRuntime::get().stats();
  const int64_t compiles = st.compiles, hits = st.db_hits;
  const auto t0 = std::chrono::steady_clock::now();
  call();
  synchronize();
  const double ms = 1e3 * seconds_since(t0);
  *what = std::to_string(st.compiles - compiles) + " compiled, " + std::to_string(st.db_hits - hits) + " from the cache DB";
  return ms;
}

double flushed_median_ms(const std::function<void()>& call, int min_calls, int* calls) {
  static DeviceBuffer l2_flush(size_t(256) << 20);  // triton's 256e6 bytes, rounded up
  call();
  synchronize();
  {  // estimate one call from 5, as do_bench does
    EventChain est(1);
    est.record(0);
    for (int i = 0; i < 5; ++i) l2_flush.fill(0), call();
    est.record(1);
    est.wait_last();
    const double each = std::max(1e-3, double(est.call_ms(0)) / 5);
    for (int i = 0, warm = std::max(1, int(25 / each)); i < warm; ++i) call();
    const int lo = std::max(1, min_calls);
    *calls = std::clamp(int(100 / each), lo, std::max(lo, 10000));
  }
  std::vector<std::unique_ptr<EventChain>> pairs;
  pairs.reserve(size_t(*calls));
  for (int i = 0; i < *calls; ++i) {
    l2_flush.fill(0);
    pairs.push_back(std::make_unique<EventChain>(1));
    pairs.back()->record(0);
    call();
    pairs.back()->record(1);
  }
  synchronize();
  std::vector<float> ms;
  for (const auto& p : pairs) ms.push_back(p->call_ms(0));
  std::sort(ms.begin(), ms.end());
  const size_t n = ms.size();
  return n % 2 ? ms[n / 2] : 0.5 * (ms[n / 2 - 1] + ms[n / 2]);
}

// {"impl", "device", "arch", "dtype", "reps", "rows": [...], ...}: bench's rows are {"op", "K", "M",
// "B", "H", "causal", "ms", "tflops"} (backward rows also "dropout") with "first_call_ms", "host_overhead_us" and "host_overhead_requires_grad_us" beside them;
// --decode's are in tools/decode_bench.cpp.
void write_json(const std::string& path, const nlohmann::json& doc) {
  std::ofstream f(path);
  if (!f) throw Error("--json: cannot write " + path);
  f << doc.dump(2) << "\n";
}

// In a directory of its own (mode 0700): the cache refuses a user DB in a world-writable one such
// as /tmp itself, and would keep the kernels in memory only.
FreshCache::FreshCache() {
  std::string dir = (fs::temp_directory_path() / "jitattn-bench-cold-XXXXXX").string();
  if (!mkdtemp(dir.data())) throw Error(ErrorKind::internal, "--cold: cannot create a directory like " + dir);
  dir_ = dir;
  setenv("JITATTN_CACHE", (dir_ + "/cache.sqlite").c_str(), 1);
  unsetenv("JITATTN_CACHE_RO");
}
FreshCache::~FreshCache() {
  std::error_code ec;
  fs::remove_all(dir_, ec);
}

// --masks: the shapes of `.gpu/anchors.py --masks`; TFLOP/s counted on visible elements only.
int run_mask_bench(const BenchOptions& o) {
  const int64_t M = o.seqlens.back();
  const int K = o.head_dims.back();
  const Shape s{1, M, o.hidden / K, K};
  std::vector<int32_t> lens(o.doc_lens.begin(), o.doc_lens.end());
  if (lens.empty()) {  // 16 documents with random cut points
    std::mt19937_64 rng(1);
    std::vector<int64_t> cuts;
    std::uniform_int_distribution<int64_t> pick(1, M - 1);
    while (cuts.size() < 15) {
      const int64_t c = pick(rng);
      if (std::find(cuts.begin(), cuts.end(), c) == cuts.end()) cuts.push_back(c);
    }
    std::sort(cuts.begin(), cuts.end());
    int64_t prev = 0;
    for (int64_t c : cuts) lens.push_back(int32_t(c - prev)), prev = c;
    lens.push_back(int32_t(M - prev));
  }
  int64_t total = 0, doc_visible = 0;
  for (int32_t n : lens) total += n, doc_visible += int64_t(n) * (n + 1) / 2;
  if (total != M) throw Error("--doc-lens sum to " + std::to_string(total) + ", not M=" + std::to_string(M));
  int64_t window_visible = 0;
  for (int64_t i = 0; i < M; ++i) window_visible += std::min<int64_t>(i + 1, o.window);
  const Problem p(s, o.dtype, 42);
  struct Case { std::string name; AttnBias bias; int64_t visible; };
  const std::vector<Case> cases = {
      {"causal", LowerTriangularMask{}, M * (M + 1) / 2},
      {"window" + std::to_string(o.window), LowerTriangularFromBottomRightMask{}.make_local_attention(o.window), window_visible},
      {"docs" + std::to_string(lens.size()), BlockDiagonalCausalMask::from_seqlens(lens), doc_visible}};
  std::printf("jitattn masks on %s: %s M=%lld K=%d H=%lld, median of %d calls\n", device_name().c_str(),
              to_string(o.dtype), (long long)M, K, (long long)s.H, o.reps);
  for (const Case& c : cases) {
    const double ms = median_ms(p, c.bias, o.reps);
    std::printf("jitattn   mask=%-10s M=%lld K=%d %8.3f ms %4.0f TFLOP/s (unmasked)\n", c.name.c_str(), (long long)M, K, ms,
                4.0 * s.H * double(c.visible) * K / (ms * 1e-3) / 1e12);
  }
  return 0;
}

int run_bench(const BenchOptions& o) {
  std::unique_ptr<FreshCache> fresh;
  if (o.cold) fresh = std::make_unique<FreshCache>();
  std::string why;
  if (!gpu_available(&why)) {
    std::fprintf(stderr, "jitattn bench needs a CUDA GPU, and this machine has none usable: %s\n", why.c_str());
    return 1;
  }
  if (o.masks) return run_mask_bench(o);
  const jit::Arch arch = device_arch(0);
  std::printf("jitattn bench on %s (%s): %s, median of %d calls timed with CUDA events\n", device_name().c_str(),
              arch.name().c_str(), to_string(o.dtype), o.reps);
  nlohmann::json doc = {{"impl", "jitattn"}, {"device", device_name()}, {"arch", arch.name()},
                        {"dtype", to_string(o.dtype)}, {"reps", o.reps}, {"rows", nlohmann::json::array()}};
  bool first = true;
  for (int K : o.head_dims) {
    if (K <= 0 || o.hidden % K != 0) throw Error("--hidden " + std::to_string(o.hidden) + " is not a multiple of head dim " + std::to_string(K));
    for (int64_t M : o.seqlens) {
      const Shape s{std::max<int64_t>(1, o.tokens / M), M, o.hidden / K, K};
      Problem p(s, o.dtype, uint64_t(K * 1000003 + M));
      for (bool causal : causal_modes(o.causal)) {
        if (first) {
          std::string what;
          const double ms = first_call_ms([&] { p.run(causal); }, &what);
          std::printf("first call in this process (K=%d M=%lld causal=%d%s): %.1f ms (%s)\n", K, (long long)M, int(causal),
                      o.cold ? ", fresh cache" : "", ms, what.c_str());
          doc["first_call_ms"] = ms;
          first = false;
        }
        const double ms = median_ms(p, causal ? AttnBias{LowerTriangularMask{}} : AttnBias{}, o.reps);
        const double tflops = s.flops(causal) / (ms * 1e-3) / 1e12;
        std::printf("jitattn   K=%3d M=%5lld causal=%d fwd %4.0f TFLOP/s %6.3f ms\n", K, (long long)M, int(causal), tflops, ms);
        std::fflush(stdout);
        doc["rows"].push_back({{"op", "fwd"}, {"K", K}, {"M", M}, {"B", s.B}, {"H", s.H},
                               {"causal", causal}, {"ms", ms}, {"tflops", tflops}});
        if (o.backward) {  // anchors.py's convention: a backward is 2.5 forwards of FLOPs
          const AttnBias bias = causal ? AttnBias{LowerTriangularMask{}} : AttnBias{};
          p.prepare_backward(bias, o.dropout);
          const double bms = median_ms_of([&] { p.run_backward(bias, o.deterministic, o.dropout); }, o.reps);
          const double btf = 2.5 * s.flops(causal) / (bms * 1e-3) / 1e12;
          char drop[32] = "";
          if (o.dropout > 0) std::snprintf(drop, sizeof drop, " (dropout %g)", o.dropout);
          std::printf("jitattn   K=%3d M=%5lld causal=%d bwd %4.0f TFLOP/s %6.3f ms%s%s\n", K, (long long)M, int(causal), btf,
                      bms, o.deterministic ? " (deterministic)" : "", drop);
          std::fflush(stdout);
          doc["rows"].push_back({{"op", o.deterministic ? "bwd_deterministic" : "bwd"}, {"K", K}, {"M", M}, {"B", s.B},
                                 {"H", s.H}, {"causal", causal}, {"dropout", o.dropout}, {"ms", bms}, {"tflops", btf}});
        }
      }
    }
  }
  const double us = host_overhead_us(o.dtype, false), grad_us = host_overhead_us(o.dtype, true);
  std::printf("host overhead of a warm call (B=1 H=1 M=1 K=64, 1000 calls queued back to back): %.2f us; "
              "forward_requires_grad %.2f us\n", us, grad_us);
  doc["host_overhead_us"] = us;
  doc["host_overhead_requires_grad_us"] = grad_us;
  if (!o.json_path.empty()) write_json(o.json_path, doc);
  return 0;
}

}  // namespace jitattn::tools
