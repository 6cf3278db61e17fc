// The ring's transports (jitattn/ring.h): LocalRing, R ranks simulated on one device with
// device-to-device copies, and NcclRing, NCCL point-to-point through a dlopen'ed libnccl.so.2
// (docs/design.md decision 1: nothing links against CUDA, NCCL included; no nccl.h is needed).
#include <dlfcn.h>

#include <cstdlib>
#include <mutex>
#include <type_traits>
#include <string>
#include <vector>

#include "device_scope.h"
#include "jit/cuda_driver.h"
#include "jitattn/error.h"
#include "jitattn/ring.h"

namespace jitattn {

using jit::check_cuda;
using jit::CudaDriver;

namespace {

std::string S(int64_t x) { return std::to_string(x); }

// Every local rank passes as many buffers, of the same sizes, as the others (so sends and
// receives pair up), and a stream per rank.
void check_shift(const std::vector<std::vector<RingTransport::Buffer>>& buffers, const std::vector<void*>& streams,
                 size_t local) {
  std::vector<std::string> R;
  if (buffers.size() != local)
    R.push_back("shift: buffers for " + S(int64_t(buffers.size())) + " ranks, the transport drives " + S(int64_t(local)));
  if (streams.size() != local)
    R.push_back("shift: " + S(int64_t(streams.size())) + " streams, the transport drives " + S(int64_t(local)) + " ranks");
  for (size_t i = 1; i < buffers.size() && R.empty(); ++i) {
    if (buffers[i].size() != buffers[0].size()) R.push_back("shift: every rank must pass as many buffers as rank 0");
    for (size_t b = 0; b < buffers[i].size() && b < buffers[0].size(); ++b)
      if (buffers[i][b].bytes != buffers[0][b].bytes)
        R.push_back("shift: buffers[" + S(int64_t(i)) + "][" + S(int64_t(b)) + "].bytes=" + S(int64_t(buffers[i][b].bytes)) +
                    " must equal buffers[0][" + S(int64_t(b)) + "].bytes=" + S(int64_t(buffers[0][b].bytes)));
  }
  if (!R.empty()) throw Error(ErrorKind::invalid_argument, R);
}

}  // namespace

// ---- LocalRing ---------------------------------------------------------------------------------------

LocalRing::LocalRing(int world, int device) : world_(world), device_(device) {
  if (world < 1) throw Error(ErrorKind::invalid_argument, "LocalRing: world=" + S(world) + " must be >= 1");
  if (device < 0) throw Error(ErrorKind::invalid_argument, "LocalRing: device=" + S(device) + " must be >= 0");
}

LocalRing::~LocalRing() {
  const CudaDriver& d = CudaDriver::get();
  if (events_.empty() || !d.available) return;
  try {
    detail::DeviceScope scope(device_);
    for (void* e : events_) (void)d.cuEventDestroy(static_cast<CUevent>(e));
  } catch (...) {
  }
}

std::vector<int> LocalRing::local_ranks() const {
  std::vector<int> r(static_cast<size_t>(world_));
  for (int i = 0; i < world_; ++i) r[size_t(i)] = i;
  return r;
}

void LocalRing::shift(const std::vector<std::vector<Buffer>>& buffers, const std::vector<void*>& streams) {
  check_shift(buffers, streams, size_t(world_));
  const CudaDriver& d = CudaDriver::require();
  detail::DeviceScope scope(device_);
  if (events_.empty())
    for (int i = 0; i < 2 * world_; ++i) {
      CUevent e;
      check_cuda(d.cuEventCreate(&e, CU_EVENT_DISABLE_TIMING), "cuEventCreate (LocalRing)");
      events_.push_back(e);
    }
  auto stream = [&](int r) { return static_cast<CUstream>(streams[size_t(r)]); };
  auto ready = [&](int r) { return static_cast<CUevent>(events_[size_t(2 * r)]); };     // r's sends are written
  auto read = [&](int r) { return static_cast<CUevent>(events_[size_t(2 * r + 1)]); };  // r has read its prev's sends
  for (int r = 0; r < world_; ++r) check_cuda(d.cuEventRecord(ready(r), stream(r)), "cuEventRecord");
  for (int r = 0; r < world_; ++r) {
    const int prev = (r + world_ - 1) % world_;
    check_cuda(d.cuStreamWaitEvent(stream(r), ready(prev), 0), "cuStreamWaitEvent");
    for (size_t b = 0; b < buffers[size_t(r)].size(); ++b) {
      const Buffer& to = buffers[size_t(r)][b];
      const Buffer& from = buffers[size_t(prev)][b];
      if (to.bytes)
        check_cuda(d.cuMemcpyDtoDAsync(reinterpret_cast<CUdeviceptr>(to.recv), reinterpret_cast<CUdeviceptr>(from.send),
                                       to.bytes, stream(r)),
                   "cuMemcpyDtoDAsync (LocalRing)");
    }
    check_cuda(d.cuEventRecord(read(r), stream(r)), "cuEventRecord");
  }
  // A rank may overwrite what it sent once its next rank has copied it.
  for (int r = 0; r < world_; ++r)
    check_cuda(d.cuStreamWaitEvent(stream(r), read((r + 1) % world_), 0), "cuStreamWaitEvent");
}

// ---- NcclRing ---------------------------------------------------------------------------------------

// nccl.h's entry points as it declares them (ncclResult_t is an int enum, ncclSuccess = 0;
// ncclComm_t and cudaStream_t are pointers; ncclInt8 = 0).
struct NcclRing::Api {
  using Result = int;
  Result (*send)(const void*, size_t, int, int, void*, void*) = nullptr;
  Result (*recv)(void*, size_t, int, int, void*, void*) = nullptr;
  Result (*group_start)() = nullptr;
  Result (*group_end)() = nullptr;
  const char* (*error_string)(Result) = nullptr;
  Result (*comm_count)(void*, int*) = nullptr;
  Result (*comm_user_rank)(void*, int*) = nullptr;
  Result (*comm_cu_device)(void*, int*) = nullptr;
  std::string where;  // the library's path, or why none was loaded
  bool loaded = false;
};

namespace {

constexpr int kNcclInt8 = 0;

void check_nccl(const NcclRing::Api& api, int rc, const std::string& what) {
  if (rc == 0) return;
  const char* msg = api.error_string ? api.error_string(rc) : nullptr;
  throw Error(ErrorKind::cuda, what + " failed: NCCL error " + S(rc) + " (" + (msg ? msg : "unknown") + ")");
}

NcclRing::Api load_nccl(const std::string& library) {
  NcclRing::Api api;
  void* lib = dlopen("libnccl.so.2", RTLD_NOW | RTLD_NOLOAD);  // the process's own copy (torch's)
  std::string tried = "libnccl.so.2 (already loaded)";
  if (!lib) {
    setenv("NCCL_NVLS_ENABLE", "0", 0);  // NVLink multicast off unless the caller decided
    if (!library.empty()) {
      lib = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
      tried += ", " + library;
    }
    if (!lib) {
      lib = dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
      tried += ", libnccl.so.2";
    }
  }
  if (!lib) {
    const char* err = dlerror();
    api.where = "no NCCL library: tried " + tried + (err ? std::string(" (") + err + ")" : "") +
                "; install the nvidia-nccl-cu12/-cu13 wheel or pass its libnccl.so.2";
    return api;
  }
  bool ok = true;
  auto sym = [&](auto& fn, const char* name) {
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(lib, name));
    if (!fn && ok) ok = false, api.where = std::string("the NCCL library has no ") + name;
  };
  sym(api.send, "ncclSend");
  sym(api.recv, "ncclRecv");
  sym(api.group_start, "ncclGroupStart");
  sym(api.group_end, "ncclGroupEnd");
  sym(api.error_string, "ncclGetErrorString");
  sym(api.comm_count, "ncclCommCount");
  sym(api.comm_user_rank, "ncclCommUserRank");
  sym(api.comm_cu_device, "ncclCommCuDevice");
  api.loaded = ok;
  return api;
}

}  // namespace

const NcclRing::Api& NcclRing::load(const std::string& library) {
  static std::mutex mu;
  static Api api;
  static bool tried = false;
  std::lock_guard<std::mutex> lock(mu);
  if (!tried || !api.loaded) api = load_nccl(library), tried = true;
  if (!api.loaded) throw Error(ErrorKind::cuda, api.where);
  return api;
}

NcclRing::NcclRing(std::vector<void*> comms, const std::string& library) : api_(&load(library)), comms_(std::move(comms)) {
  if (comms_.empty()) throw Error(ErrorKind::invalid_argument, "NcclRing: comms is empty (one ncclComm_t per local rank)");
  for (size_t i = 0; i < comms_.size(); ++i) {
    if (!comms_[i]) throw Error(ErrorKind::invalid_argument, "NcclRing: comms[" + S(int64_t(i)) + "] is null");
    int count = 0, rank = 0, device = 0;
    check_nccl(*api_, api_->comm_count(comms_[i], &count), "ncclCommCount");
    check_nccl(*api_, api_->comm_user_rank(comms_[i], &rank), "ncclCommUserRank");
    check_nccl(*api_, api_->comm_cu_device(comms_[i], &device), "ncclCommCuDevice");
    if (i > 0 && count != world_)
      throw Error(ErrorKind::invalid_argument, "NcclRing: comms[" + S(int64_t(i)) + "] has " + S(count) +
                                                   " ranks but comms[0] has " + S(world_) + ": one communicator, please");
    world_ = count;
    ranks_.push_back(rank), devices_.push_back(device);
  }
}

void NcclRing::shift(const std::vector<std::vector<Buffer>>& buffers, const std::vector<void*>& streams) {
  check_shift(buffers, streams, comms_.size());
  if (world_ == 1) {  // to itself: a copy (no NCCL self-send needed)
    const CudaDriver& d = CudaDriver::require();
    detail::DeviceScope scope(devices_[0]);
    for (const Buffer& b : buffers[0])
      if (b.bytes)
        check_cuda(d.cuMemcpyDtoDAsync(reinterpret_cast<CUdeviceptr>(b.recv), reinterpret_cast<CUdeviceptr>(b.send), b.bytes,
                                       static_cast<CUstream>(streams[0])),
                   "cuMemcpyDtoDAsync (NcclRing, one rank)");
    return;
  }
  check_nccl(*api_, api_->group_start(), "ncclGroupStart");
  int rc = 0;
  std::string what;
  for (size_t i = 0; i < comms_.size() && rc == 0; ++i) {
    const int next = (ranks_[i] + 1) % world_, prev = (ranks_[i] + world_ - 1) % world_;
    for (const Buffer& b : buffers[i]) {
      if (!b.bytes) continue;
      if ((rc = api_->send(b.send, b.bytes, kNcclInt8, next, comms_[i], streams[i])) != 0) {
        what = "ncclSend";
        break;
      }
      if ((rc = api_->recv(b.recv, b.bytes, kNcclInt8, prev, comms_[i], streams[i])) != 0) {
        what = "ncclRecv";
        break;
      }
    }
  }
  const int end = api_->group_end();
  check_nccl(*api_, rc, what);
  check_nccl(*api_, end, "ncclGroupEnd");
}

}  // namespace jitattn
