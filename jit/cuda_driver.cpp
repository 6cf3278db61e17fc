#include "jit/cuda_driver.h"

#include <dlfcn.h>

#include "jitattn/error.h"

namespace jitattn::jit {

namespace {
CudaDriver load_driver() {
  CudaDriver d;
  void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    const char* err = dlerror();
    d.unavailable_reason = err ? err : "libcuda.so.1 not found";
    return d;
  }
  using GetProc = CUresult (*)(const char*, void**, int, cuuint64_t, CUdriverProcAddressQueryResult*);
  auto get_proc = reinterpret_cast<GetProc>(dlsym(lib, "cuGetProcAddress_v2"));
  auto driver_version = reinterpret_cast<decltype(&::cuDriverGetVersion)>(dlsym(lib, "cuDriverGetVersion"));
  if (!get_proc || !driver_version) {
    d.unavailable_reason = "libcuda.so.1 is older than CUDA 12 (no cuGetProcAddress_v2)";
    return d;
  }
  driver_version(&d.version);
  // Ask for every entry point as of CUDA 12.0: cuda.h's plain names declare those prototypes,
  // while newer versions may change them (cuCtxSynchronize takes a context as of 13.0).
  constexpr int want = 12000;
  if (d.version < want) {
    d.unavailable_reason = "the CUDA driver is version " + std::to_string(d.version) + "; jitattn needs 12.0 or newer";
    return d;
  }
  bool ok = true;
#define JITATTN_LOAD(name)                                                                          \
  if (ok) {                                                                                         \
    CUdriverProcAddressQueryResult status;                                                          \
    void* fn = nullptr;                                                                             \
    if (get_proc(#name, &fn, want, CU_GET_PROC_ADDRESS_DEFAULT, &status) != CUDA_SUCCESS || !fn) { \
      ok = false;                                                                                   \
      d.unavailable_reason = "libcuda.so.1 does not provide " #name;                               \
    } else {                                                                                        \
      d.name = reinterpret_cast<decltype(d.name)>(fn);                                              \
    }                                                                                               \
  }
  JITATTN_DRIVER_FUNCTIONS(JITATTN_LOAD)
#undef JITATTN_LOAD
  if (!ok) return d;
  const CUresult rc = d.cuInit(0);
  if (rc != CUDA_SUCCESS) {
    const char* msg = nullptr;
    d.cuGetErrorString(rc, &msg);
    d.unavailable_reason = std::string("cuInit failed: ") + (msg ? msg : "unknown error");
    return d;
  }
  d.available = true;
  return d;
}
}  // namespace

const CudaDriver& CudaDriver::get() {
  static const CudaDriver driver = load_driver();
  return driver;
}

const CudaDriver& CudaDriver::require() {
  const CudaDriver& d = get();
  if (!d.available) throw Error(ErrorKind::cuda, "no CUDA driver: " + d.unavailable_reason);
  return d;
}

void check_cuda(CUresult rc, const char* what) {
  if (rc == CUDA_SUCCESS) return;
  const CudaDriver& d = CudaDriver::get();
  const char *name = nullptr, *msg = nullptr;
  if (d.cuGetErrorName) d.cuGetErrorName(rc, &name);
  if (d.cuGetErrorString) d.cuGetErrorString(rc, &msg);
  throw Error(rc == CUDA_ERROR_OUT_OF_MEMORY ? ErrorKind::out_of_memory : ErrorKind::cuda,
              std::string(what) + ": " + (name ? name : std::to_string(int(rc))) + " (" + (msg ? msg : "") + ")");
}

}  // namespace jitattn::jit
