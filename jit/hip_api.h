// The HIP C ABI jitattn calls, declared here so that nothing is built against ROCm's headers: the
// library, like the CUDA side (decision 1), loads libamdhip64/libhiprtc at run time, and builds on
// a machine without ROCm. Only the calls below; their types are the ABI's (enums are int,
// handles are pointers).
#pragma once
#include <cstddef>

namespace jitattn::jit::hip {

using hiprtcProgram = struct hiprtc_program_opaque*;
using hipModule_t = struct hip_module_opaque*;
using hipFunction_t = struct hip_function_opaque*;
using hipStream_t = struct hip_stream_opaque*;
using hiprtcResult = int;  // HIPRTC_SUCCESS = 0
using hipError_t = int;    // hipSuccess = 0

extern "C" {
using hiprtcVersion_t = hiprtcResult (*)(int* major, int* minor);
using hiprtcGetErrorString_t = const char* (*)(hiprtcResult);
using hiprtcCreateProgram_t = hiprtcResult (*)(hiprtcProgram*, const char* src, const char* name, int num_headers,
                                               const char* const* headers, const char* const* include_names);
using hiprtcDestroyProgram_t = hiprtcResult (*)(hiprtcProgram*);
using hiprtcCompileProgram_t = hiprtcResult (*)(hiprtcProgram, int num_options, const char* const* options);
using hiprtcGetProgramLogSize_t = hiprtcResult (*)(hiprtcProgram, size_t*);
using hiprtcGetProgramLog_t = hiprtcResult (*)(hiprtcProgram, char*);
using hiprtcGetCodeSize_t = hiprtcResult (*)(hiprtcProgram, size_t*);
using hiprtcGetCode_t = hiprtcResult (*)(hiprtcProgram, char*);

using hipInit_t = hipError_t (*)(unsigned flags);
using hipRuntimeGetVersion_t = hipError_t (*)(int*);
using hipGetErrorString_t = const char* (*)(hipError_t);
using hipGetDeviceCount_t = hipError_t (*)(int*);
using hipSetDevice_t = hipError_t (*)(int device);
using hipDeviceGetName_t = hipError_t (*)(char*, int, int device);
using hipGetDeviceProperties_t = hipError_t (*)(void* props, int device);  // hipDeviceProp_t, layout per version
using hipModuleLoadData_t = hipError_t (*)(hipModule_t*, const void* image);
using hipModuleUnload_t = hipError_t (*)(hipModule_t);
using hipModuleGetFunction_t = hipError_t (*)(hipFunction_t*, hipModule_t, const char* name);
using hipModuleLaunchKernel_t = hipError_t (*)(hipFunction_t, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                                               unsigned bz, unsigned shared_bytes, hipStream_t, void** params, void** extra);
}

}  // namespace jitattn::jit::hip
