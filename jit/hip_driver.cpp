#include "jit/hip_driver.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cstring>

#include "jit/env.h"

namespace jitattn::jit {

bool amd_kernel_driver_present() {
  static const bool present = access("/dev/kfd", F_OK) == 0;
  return present;
}

std::string hip_version_string(int v) {
  return std::to_string(v / 10000000) + "." + std::to_string(v / 100000 % 100) + "." + std::to_string(v % 100000);
}

std::string find_gcn_arch(const unsigned char* props, size_t size) {
  for (size_t i = 0; i + 4 <= size; ++i) {
    if (std::memcmp(props + i, "gfx", 3) != 0 || (i > 0 && props[i - 1] != 0)) continue;
    size_t n = 3;
    while (i + n < size && props[i + n] > 0x20 && props[i + n] < 0x7f) ++n;
    if (i + n < size && props[i + n] == 0 && n > 3) return std::string(reinterpret_cast<const char*>(props + i), n);
  }
  return "";
}

namespace {
HipDriver load_hip() {
  HipDriver d;
  // JITATTN_HIP first when it is a runtime library (on ROCm 6 it may name libhiprtc.so.6, which
  // has no module API: then the default search finds the runtime).
  std::vector<std::string> candidates = {"libamdhip64.so.6", "libamdhip64.so.5", "/opt/rocm/lib/libamdhip64.so.6",
                                         "/opt/rocm/lib/libamdhip64.so.5"};
  if (!Env::get().hip_path.empty()) candidates.insert(candidates.begin(), Env::get().hip_path);
  void* lib = nullptr;
  std::string tried;
  for (const auto& p : candidates) {
    if ((lib = dlopen(p.c_str(), RTLD_NOW | RTLD_LOCAL)) && dlsym(lib, "hipModuleLaunchKernel")) {
      d.path = p;
      break;
    }
    lib = nullptr;
    tried += (tried.empty() ? "" : ", ") + p;
  }
  if (!lib) {
    d.unavailable_reason = "no HIP runtime library (tried " + tried + ")";
    return d;
  }
  bool ok = true;
  auto bind = [&](auto& fn, const char* name) {
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(lib, name));
    if (!fn && ok) {
      ok = false;
      d.unavailable_reason = d.path + " does not provide " + name;
    }
  };
  bind(d.hipInit, "hipInit");
  bind(d.hipRuntimeGetVersion, "hipRuntimeGetVersion");
  bind(d.hipGetErrorString, "hipGetErrorString");
  bind(d.hipGetDeviceCount, "hipGetDeviceCount");
  bind(d.hipDeviceGetName, "hipDeviceGetName");
  // ROCm 6 renamed the call with its new struct layout; ROCm 5 has only the plain name.
  d.hipGetDeviceProperties = reinterpret_cast<hip::hipGetDeviceProperties_t>(dlsym(lib, "hipGetDevicePropertiesR0600"));
  if (!d.hipGetDeviceProperties) bind(d.hipGetDeviceProperties, "hipGetDeviceProperties");
  bind(d.hipModuleLoadData, "hipModuleLoadData");
  bind(d.hipModuleUnload, "hipModuleUnload");
  bind(d.hipModuleGetFunction, "hipModuleGetFunction");
  bind(d.hipModuleLaunchKernel, "hipModuleLaunchKernel");
  bind(d.hipSetDevice, "hipSetDevice");
  if (!ok) return d;
  d.loaded = true;
  d.hipRuntimeGetVersion(&d.version);
  if (!amd_kernel_driver_present()) {
    d.unavailable_reason = "no AMD GPU (/dev/kfd is absent)";
    return d;
  }
  if (const int rc = d.hipInit(0); rc != 0) {
    d.unavailable_reason = std::string("hipInit failed: ") + d.hipGetErrorString(rc);
    return d;
  }
  int count = 0;
  if (const int rc = d.hipGetDeviceCount(&count); rc != 0) {
    d.unavailable_reason = std::string("hipGetDeviceCount failed: ") + d.hipGetErrorString(rc);
    return d;
  }
  for (int i = 0; i < count; ++i) {
    HipDevice dev;
    dev.index = i;
    char name[256] = {};
    if (d.hipDeviceGetName(name, sizeof name - 1, i) == 0) dev.name = name;
    std::vector<unsigned char> props(16384, 0);  // larger than either version's hipDeviceProp_t
    if (d.hipGetDeviceProperties(props.data(), i) == 0) dev.gcn_arch = find_gcn_arch(props.data(), props.size());
    dev.arch = Arch::gfx(dev.gcn_arch);
    d.devices.push_back(dev);
  }
  return d;
}
}  // namespace

const HipDriver& HipDriver::get() {
  static const HipDriver driver = load_hip();
  return driver;
}

}  // namespace jitattn::jit
