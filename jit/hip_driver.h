// The HIP module API, loaded at run time like the CUDA driver (decision 1): JITATTN_HIP, then
// libamdhip64.so.6, then .5. It finds AMD GPUs and their gfx targets (what `jitattn doctor`
// shows, and what a prewarm without --arch would compile for) and binds the calls that load and
// launch a code object (hipModuleLoadData, hipModuleGetFunction, hipModuleLaunchKernel), which
// the runtime uses where there is no CUDA driver (jit/jit_runtime.cpp, jit/launch.cpp).
// NEVER RUN: nothing here has run on an AMD GPU (docs/amd.md).
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "jit/hip_api.h"
#include "jit/signature.h"

namespace jitattn::jit {

struct HipDevice {
  int index = 0;
  std::string name;      // hipDeviceGetName, e.g. "AMD Instinct MI250X"
  std::string gcn_arch;  // hipDeviceProp_t::gcnArchName, e.g. "gfx90a:sramecc+:xnack-"
  std::optional<Arch> arch;  // its kGfxTargets entry, or none for a target jitattn does not compile for
};

struct HipDriver {
  hip::hipInit_t hipInit = nullptr;
  hip::hipRuntimeGetVersion_t hipRuntimeGetVersion = nullptr;
  hip::hipGetErrorString_t hipGetErrorString = nullptr;
  hip::hipGetDeviceCount_t hipGetDeviceCount = nullptr;
  hip::hipDeviceGetName_t hipDeviceGetName = nullptr;
  hip::hipGetDeviceProperties_t hipGetDeviceProperties = nullptr;
  hip::hipModuleLoadData_t hipModuleLoadData = nullptr;
  hip::hipModuleUnload_t hipModuleUnload = nullptr;
  hip::hipModuleGetFunction_t hipModuleGetFunction = nullptr;
  hip::hipModuleLaunchKernel_t hipModuleLaunchKernel = nullptr;
  hip::hipSetDevice_t hipSetDevice = nullptr;

  bool loaded = false;          // the library and every call above were found
  std::string path;             // the library loaded
  std::string unavailable_reason;  // why not loaded, or why no device (hipInit's error)
  int version = 0;              // hipRuntimeGetVersion, e.g. 50221153
  std::vector<HipDevice> devices;

  // Loads and initializes once. Never throws.
  static const HipDriver& get();
};

// Whether this machine has AMD's GPU kernel driver (/dev/kfd, which the HIP runtime needs): the
// runtime looks for AMD GPUs only then, so a process on a machine without one never loads ROCm.
bool amd_kernel_driver_present();

// 50221153 -> "5.2.21153" (HIP_VERSION = major·10^7 + minor·10^5 + patch).
std::string hip_version_string(int version);

// The gfx target named in a hipDeviceProp_t, found as the string starting "gfx" in its bytes (the
// struct's layout differs between ROCm 5 and 6; its gcnArchName is the only such string).
std::string find_gcn_arch(const unsigned char* props, size_t size);

}  // namespace jitattn::jit
