#include "gpu_support.h"

#include <cstdlib>

#include <algorithm>
#include <iostream>

#include "jit/jit_runtime.h"
#include "jitattn/error.h"
#include "reference.h"

namespace jitattn::test {

using jit::check_cuda;
using jit::CudaDriver;

bool gpu_available(std::string* why) {
  const CudaDriver& d = CudaDriver::get();
  if (!d.available) {
    if (why) *why = "no CUDA driver: " + d.unavailable_reason;
    return false;
  }
  int count = 0;
  if (d.cuDeviceGetCount(&count) != CUDA_SUCCESS || count == 0) {
    if (why) *why = "no CUDA device";
    return false;
  }
  jit::JitRuntime::get().context(0);  // make device 0's primary context current
  return true;
}

DeviceBuffer::DeviceBuffer(size_t bytes) : bytes_(bytes) {
  check_cuda(CudaDriver::require().cuMemAlloc(&ptr_, bytes ? bytes : 1), "cuMemAlloc");
}

DeviceBuffer::~DeviceBuffer() {
  if (ptr_) CudaDriver::get().cuMemFree(ptr_);
}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    if (ptr_) CudaDriver::get().cuMemFree(ptr_);
    ptr_ = o.ptr_, bytes_ = o.bytes_;
    o.ptr_ = 0, o.bytes_ = 0;
  }
  return *this;
}

void DeviceBuffer::upload(const void* src, size_t bytes, size_t offset) {
  check_cuda(CudaDriver::get().cuMemcpyHtoD(ptr_ + offset, src, bytes), "cuMemcpyHtoD");
}

void DeviceBuffer::download(void* dst, size_t bytes, size_t offset) const {
  check_cuda(CudaDriver::get().cuMemcpyDtoH(dst, ptr_ + offset, bytes), "cuMemcpyDtoH");
}

std::vector<unsigned char> DeviceBuffer::download() const {
  std::vector<unsigned char> out(bytes_);
  download(out.data(), bytes_);
  return out;
}

void DeviceBuffer::fill(unsigned char byte) {
  check_cuda(CudaDriver::get().cuMemsetD8(ptr_, byte, bytes_), "cuMemsetD8");
}

void device_synchronize() { check_cuda(CudaDriver::get().cuCtxSynchronize(), "cuCtxSynchronize"); }

Stream::Stream() {
  check_cuda(CudaDriver::require().cuStreamCreate(&stream_, CU_STREAM_NON_BLOCKING), "cuStreamCreate");
}

Stream::~Stream() {
  if (stream_) CudaDriver::get().cuStreamDestroy(stream_);
}

void Stream::synchronize() const { check_cuda(CudaDriver::get().cuStreamSynchronize(stream_), "cuStreamSynchronize"); }

Graph Graph::capture(CUstream stream, const std::function<void()>& enqueue) {
  const CudaDriver& d = CudaDriver::require();
  check_cuda(d.cuStreamBeginCapture(stream, CU_STREAM_CAPTURE_MODE_GLOBAL), "cuStreamBeginCapture");
  Graph g;
  try {
    enqueue();
  } catch (...) {
    CUgraph partial = nullptr;
    if (d.cuStreamEndCapture(stream, &partial) == CUDA_SUCCESS && partial) d.cuGraphDestroy(partial);
    throw;
  }
  check_cuda(d.cuStreamEndCapture(stream, &g.graph_),
             "cuStreamEndCapture (capture invalidated: was a call not allowed during capture made?)");
  if (!g.graph_) throw Error("cuStreamEndCapture returned no graph");
  check_cuda(d.cuGraphInstantiateWithFlags(&g.exec_, g.graph_, 0), "cuGraphInstantiateWithFlags");
  return g;
}

void Graph::reset() {
  const CudaDriver& d = CudaDriver::get();
  if (exec_) d.cuGraphExecDestroy(exec_);
  if (graph_) d.cuGraphDestroy(graph_);
  exec_ = nullptr, graph_ = nullptr;
}

Graph::~Graph() { reset(); }

Graph& Graph::operator=(Graph&& o) noexcept {
  if (this != &o) {
    reset();
    graph_ = o.graph_, exec_ = o.exec_;
    o.graph_ = nullptr, o.exec_ = nullptr;
  }
  return *this;
}

void Graph::launch(CUstream stream) const {
  if (!exec_) throw Error("Graph::launch: no graph");
  check_cuda(CudaDriver::get().cuGraphLaunch(exec_, stream), "cuGraphLaunch");
}

namespace {
uint64_t process_seed() {
  static const uint64_t seed = [] {
    const char* fixed = std::getenv("JITATTN_TEST_SEED");  // replays a printed seed
    const uint64_t s = fixed ? std::strtoull(fixed, nullptr, 10) : std::random_device{}();
    std::cout << "[ seed ] " << s << "\n";
    return s;
  }();
  return seed;
}
}  // namespace

std::mt19937_64& rng() {
  static std::mt19937_64 r(process_seed());
  return r;
}

void reseed(uint64_t salt) { rng().seed(process_seed() ^ (salt * 0x9e3779b97f4a7c15ull)); }

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

double dtype_tolerance(DType dtype) { return dtype == DType::f32 ? 2e-5 : dtype == DType::f16 ? 2e-3 : 1e-2; }
double grad_tolerance(DType dtype) { return dtype == DType::f32 ? 1e-4 : dtype == DType::f16 ? 5e-3 : 3e-2; }

Dense random_dense(int64_t B, int64_t M, int64_t H, int64_t D, DType dt) {
  Dense t;
  std::vector<unsigned char> bytes;
  random_values(rng(), size_t(B * M * H * D), dt, t.values, bytes);
  t.buf = DeviceBuffer(bytes.size() + 16);
  t.buf.upload(bytes.data(), bytes.size());
  t.view = TensorView::make(t.buf.get(), dt, {B, M, H, D});
  return t;
}

Dense poisoned(int64_t B, int64_t M, int64_t H, int64_t D, DType dt) {
  Dense t;
  t.buf = DeviceBuffer(size_t(B * M * H * D) * element_size(dt) + 16);
  t.buf.fill(0xFF);
  t.view = TensorView::make(t.buf.get(), dt, {B, M, H, D});
  return t;
}

std::vector<double> read(const Dense& t) {
  std::vector<unsigned char> raw(size_t(t.view.numel()) * element_size(t.view.dtype));
  t.buf.download(raw.data(), raw.size());
  return decode(raw, t.view.dtype);
}

}  // namespace jitattn::test
