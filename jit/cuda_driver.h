// The CUDA driver API, loaded at run time from libcuda.so.1 (docs/design.md decision 1): entry points
// come from cuGetProcAddress, so nothing links against CUDA and a machine without a GPU can
// still compile and cache kernels.
#pragma once
#include <cuda.h>

#include <string>

namespace jitattn::jit {

struct CudaDriver {
#define JITATTN_DRIVER_FN(name) decltype(&::name) name = nullptr;
#define JITATTN_DRIVER_FUNCTIONS(X)                                                                  \
  X(cuInit) X(cuDriverGetVersion) X(cuGetErrorString) X(cuGetErrorName) X(cuDeviceGet)              \
  X(cuDeviceGetCount) X(cuDeviceGetAttribute) X(cuDeviceGetName) X(cuDeviceTotalMem)                \
  X(cuDevicePrimaryCtxRetain) X(cuCtxGetCurrent) X(cuCtxSetCurrent) X(cuCtxGetDevice)               \
  X(cuCtxSynchronize) X(cuModuleLoadData) X(cuModuleUnload) X(cuModuleGetFunction)                  \
  X(cuFuncSetAttribute) X(cuFuncGetAttribute) X(cuLaunchKernel) X(cuMemAlloc) X(cuMemFree)          \
  X(cuMemcpyHtoD) X(cuMemcpyDtoH) X(cuMemsetD8) X(cuStreamCreate) X(cuStreamDestroy)                \
  X(cuStreamSynchronize) X(cuEventCreate) X(cuEventDestroy) X(cuEventRecord)                        \
  X(cuEventSynchronize) X(cuEventElapsedTime) X(cuStreamBeginCapture) X(cuStreamEndCapture)         \
  X(cuGraphInstantiateWithFlags) X(cuGraphLaunch) X(cuGraphExecDestroy) X(cuGraphDestroy)          \
  X(cuMemsetD8Async) X(cuMemAllocAsync) X(cuMemFreeAsync)            \
  X(cuStreamIsCapturing) X(cuMemsetD32Async) X(cuOccupancyMaxActiveBlocksPerMultiprocessor) \
  X(cuMemcpyDtoDAsync) X(cuStreamWaitEvent) X(cuTensorMapEncodeTiled)
  JITATTN_DRIVER_FUNCTIONS(JITATTN_DRIVER_FN)
#undef JITATTN_DRIVER_FN

  bool available = false;
  std::string unavailable_reason;  // why not, e.g. "libcuda.so.1: cannot open shared object file"
  int version = 0;                 // cuDriverGetVersion, e.g. 13000

  // Loads and initializes once. Never throws: check `available`.
  static const CudaDriver& get();
  // get(), or a jitattn::Error "no CUDA driver: ..." when there is none.
  static const CudaDriver& require();
};

// Throws jitattn::Error "<what>: CUDA_ERROR_... (<message>)" unless rc is CUDA_SUCCESS.
void check_cuda(CUresult rc, const char* what);

}  // namespace jitattn::jit
