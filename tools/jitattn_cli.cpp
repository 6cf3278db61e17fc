// The jitattn command-line tool: look at what the machine offers (doctor), fill caches ahead of
// time (prewarm), read them (ls, show), measure (bench) and walk through the whole path of a
// call (demo). Every command prints `jitattn: error: ...` and exits 1 when something fails,
// and 2 for a usage error.
#include <CLI/CLI.hpp>
#include <dlfcn.h>
#include <link.h>

#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>

#include "cache/sqlite_store.h"
#include "jit/codegen.h"
#include "jit/cuda_driver.h"
#include "jit/env.h"
#include "jit/jit_runtime.h"
#include "jit/kernel_sources.h"
#include "jit/hip_driver.h"
#include "jit/hiprtc_compiler.h"
#include "jit/nvrtc_compiler.h"
#include "jit/recorder.h"
#include "jitattn/jitattn.h"
#include "tools/bench.h"
#include "tools/cli_common.h"
#include "tools/cache_commands.h"
#include "tools/manifest.h"
#include "tools/prewarm.h"

namespace jitattn::tools {
namespace {

using jit::CudaDriver;
using jit::KernelSpec;
namespace fs = std::filesystem;

// ---- small formatting helpers -----------------------------------------------------------

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// ---- what the machine offers ------------------------------------------------------------

std::string driver_summary() {
  const CudaDriver& d = CudaDriver::get();
  if (!d.available) return "unavailable: " + d.unavailable_reason;
  return std::to_string(d.version / 1000) + "." + std::to_string(d.version % 1000 / 10) + " (" +
         std::to_string(d.version) + ")";
}

struct Gpu {
  std::string name;
  jit::Arch arch;
  int sms = 0;
  size_t bytes = 0;
};

std::vector<Gpu> list_gpus() {
  const CudaDriver& d = CudaDriver::get();
  int count = 0;
  if (!d.available || d.cuDeviceGetCount(&count) != CUDA_SUCCESS) return {};
  std::vector<Gpu> gpus;
  for (int i = 0; i < count; ++i) {
    CUdevice dev;
    jit::check_cuda(d.cuDeviceGet(&dev, i), "cuDeviceGet");
    Gpu g;
    char name[256] = {};
    d.cuDeviceGetName(name, sizeof name, dev);
    g.name = name;
    g.arch = device_arch(dev);
    d.cuDeviceGetAttribute(&g.sms, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev);
    d.cuDeviceTotalMem(&g.bytes, dev);
    gpus.push_back(g);
  }
  return gpus;
}

// The file the dynamic loader actually opened for `lib` (NVRTC may be found as a bare soname).
std::string loaded_file(const std::string& lib) {
  void* handle = dlopen(lib.c_str(), RTLD_LAZY | RTLD_NOLOAD);
  if (!handle) return lib;
  link_map* map = nullptr;
  std::string path = lib;
  if (dlinfo(handle, RTLD_DI_LINKMAP, &map) == 0 && map && map->l_name && *map->l_name) path = map->l_name;
  dlclose(handle);
  return path;
}

// "nvrtc 13.0 from /usr/local/cuda/lib64/libnvrtc.so.13", or why there is no NVRTC.
std::string nvrtc_summary(bool* ok = nullptr) {
  try {
    const auto& c = jit::NvrtcCompiler::get();
    if (ok) *ok = true;
    return c.identity() + " from " + loaded_file(c.library_path());
  } catch (const std::exception& e) {
    if (ok) *ok = false;
    return std::string("unavailable: ") + e.what();
  }
}

// "hiprtc 5.2.21153 from /usr/lib/x86_64-linux-gnu/libamdhip64.so.5", or why there is no hiprtc.
std::string hiprtc_summary() {
  try {
    const auto& c = jit::HiprtcCompiler::get();
    return c.identity() + " from " + loaded_file(c.library_path());
  } catch (const std::exception& e) {
    return std::string("unavailable: ") + e.what();
  }
}

// The HIP runtime and its devices: what a prewarm without --arch compiles AMD kernels for.
void print_hip() {
  const jit::HipDriver& h = jit::HipDriver::get();
  if (!h.loaded) {
    std::printf("HIP runtime   unavailable: %s\n", h.unavailable_reason.c_str());
  } else {
    std::printf("HIP runtime   %s %s from %s%s%s (the module API, used where there is no CUDA driver; never run on an AMD GPU)\n",
                h.version ? "HIP" : "HIP, version unknown,", h.version ? jit::hip_version_string(h.version).c_str() : "",
                loaded_file(h.path).c_str(), h.unavailable_reason.empty() ? "" : "; ", h.unavailable_reason.c_str());
    if (h.devices.empty() && h.unavailable_reason.empty()) std::printf("AMD GPUs      none\n");
    for (const auto& dev : h.devices)
      std::printf("AMD GPU %d     %s: %s%s\n", dev.index, dev.name.c_str(), dev.gcn_arch.empty() ? "gfx?" : dev.gcn_arch.c_str(),
                  dev.arch ? "" : " (not a target jitattn compiles for)");
  }
  std::printf("hiprtc        %s\n", hiprtc_summary().c_str());
}

// ---- cache layers -----------------------------------------------------------------------

std::string layer_summary(Layer& l) {
  if (!l.store) return l.problem;
  return human_bytes(double(l.store->file_bytes())) + ", " + std::to_string(l.store->row_count()) + " rows";
}

// ---- doctor -----------------------------------------------------------------------------

void print_gpus() {
  const auto gpus = list_gpus();
  if (gpus.empty()) std::printf("GPUs          none\n");
  for (size_t i = 0; i < gpus.size(); ++i)
    std::printf("GPU %zu         %s: %s, %d SMs, %s\n", i, gpus[i].name.c_str(), gpus[i].arch.name().c_str(),
                gpus[i].sms, human_bytes(double(gpus[i].bytes)).c_str());
}

void print_environment() {
  std::printf("environment (key: changes the cache key):\n");
  for (const jit::EnvVarInfo& v : jit::kEnvVars) {
    const char* value = std::getenv(v.name);
    std::printf("  %-17s %-6s %-40s %s\n", v.name, v.changes_key ? "key" : "-", value ? value : "(unset)", v.meaning);
  }
}

// What happens after the last layer misses, under each policy.
const char* miss_action(jit::JitPolicy policy) {
  switch (policy) {
    case jit::JitPolicy::on: return "a miss is compiled (NVRTC for NVIDIA targets, hiprtc for AMD) and stored in the user DB";
    case jit::JitPolicy::off: return "a miss is an error (JITATTN_JIT=off)";
    case jit::JitPolicy::readonly: return "a miss is compiled (NVRTC or hiprtc) and not stored (JITATTN_JIT=readonly)";
    case jit::JitPolicy::redo: return "no layer is read: every kernel is recompiled and replaces its row (JITATTN_JIT=redo)";
  }
  return "?";
}

int cmd_doctor() {
  std::printf("CUDA driver   %s\n", driver_summary().c_str());
  print_gpus();
  std::printf("NVRTC         %s\n", nvrtc_summary().c_str());
  print_hip();
  std::printf("kernel_src    %s\n", jit::kernel_sources_hash().c_str());
  const jit::Env* env = nullptr;
  try {
    env = &jit::Env::get();
  } catch (const std::exception& e) {  // a malformed variable: still show the rest
    std::printf("environment   error: %s\n", e.what());
  }
  if (env) {
    std::printf("JIT policy    %s (JITATTN_JIT)\n", jit::to_string(env->jit));
    std::printf("recording     %s\n", env->record_path.empty() ? "off (JITATTN_RECORD unset)"
                                                             : ("to " + env->record_path + " (JITATTN_RECORD)").c_str());
    std::printf("cache layers, in lookup order:\n");
    std::printf("  1. %-18s per process and CUDA context; empty when a process starts\n", "memory table");
    int i = 1;
    for (Layer& l : open_layers(*env))
      std::printf("  %d. %-18s %s: %s\n", ++i, l.kind(), l.path.c_str(), layer_summary(l).c_str());
    std::printf("  %-21s %s\n", "then", miss_action(env->jit));
  }
  print_environment();
  return 0;
}

// `jitattn doctor --kernel X`: X is a canonical name, or a manifest entry for one kernel (such
// as the line a JITATTN_JIT=off error prints).
KernelSpec kernel_to_diagnose(const std::string& what) {
  if (auto spec = KernelSpec::parse(what)) return *spec;
  if (what.find('{') != std::string::npos) {
    const auto specs = parse_manifest_text(what, {}, "--kernel");
    if (specs.size() != 1) throw Error("--kernel: the entry stands for " + std::to_string(specs.size()) + " kernels, not one");
    return specs[0];
  }
  throw Error("--kernel: \"" + what + "\" is neither a canonical kernel name (e.g. " +
              "fwd.sm_90a.bf16.d128.v128.causal.lse.a16.wgmma_m128n128w8) nor a manifest entry");
}

// Which layer would serve a kernel, asked the way the runtime asks (jit/jit_runtime.cpp): the
// same key, each layer's get() in lookup order. Exit code 1 when the kernel would fail.
int cmd_doctor_kernel(const std::string& what) {
  const KernelSpec spec = kernel_to_diagnose(what);
  const jit::Env& env = jit::Env::get();
  std::printf("kernel        %s\n", spec.name().c_str());
  const KernelSpec chosen = jit::make_spec(spec.sig);
  if (chosen.name() != spec.name()) std::printf("note          calls with this signature use %s\n", chosen.name().c_str());
  const std::string problem = jit::validate_spec(spec);
  if (!problem.empty()) {
    std::printf("verdict       would fail: %s\n", problem.c_str());
    return 1;
  }
  std::string key, identity;
  try {
    identity = jit::compiler_for(jit::Backend(spec.sig.backend)).identity();
    key = jit::kernel_key(spec, identity);
  } catch (const std::exception& e) {
    std::printf("verdict       would fail: the key names the compiler, and %s is unavailable: %s\n",
                jit::compiled_by(jit::Backend(spec.sig.backend)), e.what());
    return 1;
  }
  std::printf("key           %s (%s, kernel_src %.12s)\n", key.c_str(), identity.c_str(), jit::kernel_sources_hash().c_str());
  std::printf("JIT policy    %s\n", jit::to_string(env.jit));
  std::printf("lookup:\n  1. %-18s not in a new process\n", "memory table");
  std::string served_by;
  int i = 1;
  for (Layer& l : open_layers(env)) {
    std::printf("  %d. %-18s %s: ", ++i, l.kind(), l.path.c_str());
    if (!l.store) {
      std::printf("%s\n", l.problem.c_str());
      continue;
    }
    const int64_t dropped = l.store->dropped_rows();
    if (auto r = l.store->get(key, jit::binding_problem)) {  // what the runtime would accept
      std::printf("%s (%s, %d registers, created %s)\n", served_by.empty() ? "HIT, serves it" : "hit, shadowed by the layer above",
                  human_bytes(double(r->binary.size())).c_str(), r->registers, date(r->created_at).c_str());
      if (served_by.empty()) served_by = l.path;
    } else if (l.store->dropped_rows() != dropped) {
      std::printf("its row failed its checks (%s)\n", l.shipped ? "skipped" : "dropped, so it is recompiled");
    } else if (auto stale = l.store->find_by_name(spec.name())) {
      std::printf("miss; a row under key %s (%s) is stale: another compiler or kernel_src\n", stale->key.c_str(),
                  stale->compiler.c_str());
    } else {
      std::printf("miss\n");
    }
  }
  if (env.jit == jit::JitPolicy::redo) {
    std::printf("verdict       recompiled by NVRTC, replacing any row (JITATTN_JIT=redo reads no layer)\n");
  } else if (!served_by.empty()) {
    std::printf("verdict       served by %s, no compile\n", served_by.c_str());
  } else if (env.jit == jit::JitPolicy::off) {
    std::printf("verdict       would FAIL: JITATTN_JIT=off and no layer holds it; prewarm this manifest line:\n"
                "              %s\n", jit::manifest_line(spec).c_str());
    return 1;
  } else if (env.jit == jit::JitPolicy::readonly) {
    std::printf("verdict       compiled by NVRTC on first use and not stored (JITATTN_JIT=readonly)\n");
  } else {
    std::printf("verdict       compiled by NVRTC on first use, then stored in %s\n", env.cache_path.c_str());
  }
  return 0;
}

// ---- show -------------------------------------------------------------------------------

void print_spec(const KernelSpec& spec) {
  const jit::Signature& s = spec.sig;
  std::printf("name          %s\n", spec.name().c_str());
  std::printf("op            %s\n", jit::to_string(s.op));
  std::printf("arch          %s\n", s.arch().name().c_str());
  std::printf("dtype         %s -> %s\n", to_string(s.dtype), to_string(s.out_dtype));
  std::printf("head dims     qk %d, v %d\n", s.head_dim, s.head_dim_v);
  std::printf("bias          %s\n", jit::to_string(s.bias));
  std::printf("lse           %s\n", s.lse ? "yes" : "no");
  std::printf("align         %d bytes\n", s.align);
  std::printf("family        %s\n", jit::to_string(spec.family));
  std::printf("tile          %s (block_m %d, block_n %d, %d warps)\n", spec.tile.name().c_str(), spec.tile.block_m,
              spec.tile.block_n, spec.tile.warps);
  std::printf("threads       %d\n", spec.threads());
  std::printf("dynamic smem  %d bytes\n", spec.smem_bytes());
  const std::string problem = jit::validate_spec(spec);
  std::printf("valid         %s\n", problem.empty() ? "yes" : ("no: " + problem).c_str());
  // A name can spell any tile; calls use the one the tile table picks for the signature.
  const KernelSpec chosen = jit::make_spec(s);
  if (chosen.name() != spec.name()) std::printf("note          calls with this signature use %s\n", chosen.name().c_str());
}

void print_row(const cache::KernelRecord& r, const Layer& l, const std::string& key) {
  std::printf("cached in     %s (%s)\n", l.path.c_str(), l.kind());
  std::printf("  registers   %d\n  shared      %d bytes\n  compile     %.1f ms\n  size        %zu bytes\n",
              r.registers, r.shared_bytes, r.compile_ms, r.binary.size());
  std::printf("  compiler    %s\n  created     %s\n  last used   %s\n", r.compiler.c_str(), date(r.created_at).c_str(),
              date(r.last_used_at).c_str());
  if (!key.empty() && r.key != key)
    std::printf("  stale       stored under key %s (another compiler or kernel_src): calls will not use it\n", r.key.c_str());
}

// `show --compile`: compiles the kernel now, as a first call would (nothing is stored), and
// prints NVRTC's time, split into its phases where NVRTC reports them (`--time=FILE`, CUDA 12.1+).
// The phases' option is not part of the key, so these binaries are measurements only.
struct ShowOptions {
  bool source = false, compile = false;
  int repeat = 1;
  std::string cubin_path;  // writes the (last) binary compiled with the key's options only
};

// NVRTC's `--time` file: "File name, phase name, metric, unit" then one line per phase.
std::vector<std::pair<std::string, double>> read_phases(const std::string& path) {
  std::vector<std::pair<std::string, double>> phases;
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);  // the header
  while (std::getline(in, line)) {
    std::vector<std::string> cols;
    std::stringstream ss(line);
    for (std::string c; std::getline(ss, c, ',');) cols.push_back(c.substr(c.find_first_not_of(' ') == std::string::npos ? 0 : c.find_first_not_of(' ')));
    if (cols.size() >= 3) phases.emplace_back(cols[1], std::atof(cols[2].c_str()));
  }
  return phases;
}

void show_compile(const KernelSpec& spec, const std::string& key, double load_ms, const ShowOptions& o) {
  const jit::Compiler& nvrtc = jit::compiler_for(jit::Backend(spec.sig.backend));
  const std::string source = jit::generate_source(spec, key);
  std::printf("compile       %s, %s; loaded in %.1f ms; nothing stored\n", nvrtc.identity().c_str(),
              nvrtc.library_path().c_str(), load_ms);
  std::string opts;
  for (const auto& opt : jit::compile_options(spec)) opts += (opts.empty() ? "" : " ") + opt;
  std::printf("  options     %s\n", opts.c_str());
  std::string dir = (std::filesystem::temp_directory_path() / "jitattn-show-XXXXXX").string();
  if (!mkdtemp(dir.data())) throw Error("cannot create a temporary directory under " + std::filesystem::temp_directory_path().string());
  bool phases_ok = nvrtc.backend() == jit::Backend::cuda;  // NVRTC's --time; hiprtc has none
  for (int i = 0; i < o.repeat; ++i) {
    const std::string time_file = dir + "/time" + std::to_string(i) + ".csv";
    jit::CompiledKernel ck;
    std::vector<std::pair<std::string, double>> phases;
    if (phases_ok) {
      try {
        ck = nvrtc.compile(spec, source, {"--time=" + time_file});
        phases = read_phases(time_file);
      } catch (const Error&) {  // an NVRTC without --time: the same compile without phases
        phases_ok = false;
      }
    }
    if (!phases_ok) ck = nvrtc.compile(spec, source);
    std::string split;
    for (const auto& [phase, ms] : phases) split += (split.empty() ? "" : ", ") + phase + " " + std::to_string(int(std::lround(ms))) + " ms";
    std::printf("  run %-7d %.1f ms%s%s%s, %d registers, %zu bytes\n", i + 1, ck.compile_ms, i == 0 ? " (first in this process)" : "",
                split.empty() ? "" : ": ", split.c_str(), ck.registers, ck.cubin.size());
    std::filesystem::remove(time_file);
  }
  std::filesystem::remove(dir);
  if (!o.cubin_path.empty()) {  // with the key's options only: what a first call would store
    const jit::CompiledKernel ck = nvrtc.compile(spec, source);
    // Checked to the close: a directory, a full disk or a missing parent must not print success.
    std::ofstream out(o.cubin_path, std::ios::binary | std::ios::trunc);
    out.write(ck.cubin.data(), std::streamsize(ck.cubin.size()));
    out.close();
    if (!out) throw Error("--cubin " + o.cubin_path + ": cannot write the " + std::to_string(ck.cubin.size()) + "-byte binary there");
    std::printf("  cubin       %s (%zu bytes, %.1f ms)\n", o.cubin_path.c_str(), ck.cubin.size(), ck.compile_ms);
  }
}

int cmd_show(const std::string& name, const ShowOptions& o) {
  const auto spec = KernelSpec::parse(name);
  if (!spec)
    throw Error("\"" + name + "\" is not a canonical kernel name, e.g. fwd.sm_90a.bf16.d128.v128.causal.lse.a16.wgmma_m128n128w8");
  print_spec(*spec);
  std::string key;
  double load_ms = 0;
  try {
    const auto t0 = std::chrono::steady_clock::now();
    const std::string& identity = jit::compiler_for(jit::Backend(spec->sig.backend)).identity();
    load_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    key = jit::kernel_key(*spec, identity);
    std::printf("key           %s\n", key.c_str());
  } catch (const std::exception& e) {  // the key names the compiler
    std::printf("key           unknown: %s\n", e.what());
    if (o.compile) throw;
  }
  bool found = false;
  for (Layer& l : open_layers(jit::Env::get())) {
    if (!l.store) continue;
    if (auto r = l.store->find_by_name(name)) {
      print_row(*r, l, key);
      found = true;
      break;
    }
  }
  if (!found) std::printf("cached in     no layer (prewarm it, or the first call compiles it)\n");
  if (o.compile) show_compile(*spec, key, load_ms, o);
  if (o.source) std::printf("\n%s", jit::generate_source(*spec, key).c_str());
  return 0;
}

// ---- demo -------------------------------------------------------------------------------

void print_summary() {
  const auto gpus = list_gpus();
  std::printf("CUDA driver %s", driver_summary().c_str());
  if (!gpus.empty()) std::printf("; GPU 0: %s (%s, %d SMs)", gpus[0].name.c_str(), gpus[0].arch.name().c_str(), gpus[0].sms);
  const jit::Env& env = jit::Env::get();
  std::printf("\nNVRTC %s; kernel_src %.12s...; JITATTN_JIT=%s\n", nvrtc_summary().c_str(),
              jit::kernel_sources_hash().c_str(), jit::to_string(env.jit));
  std::printf("cache: %zu shipped DB(s), then user DB %s\n", env.cache_ro.size(), env.cache_path.c_str());
}

jit::Signature demo_signature(jit::Arch arch, DType dtype, int head_dim, jit::BiasKind bias, bool lse) {
  jit::Signature s;
  s.bias = bias;
  s.dtype = s.out_dtype = dtype;
  s.head_dim = s.head_dim_v = uint16_t(head_dim);
  s.set_arch(arch);
  s.lse = lse;
  s.align = dtype == DType::f32 ? 4 : 16;
  return s;
}

// Gets each demo kernel's binary the way a first call would, and says where it came from.
void fetch_demo_kernels(const std::vector<jit::Arch>& archs) {
  for (const jit::Arch& arch : archs)
    for (const jit::Signature& sig : {demo_signature(arch, DType::bf16, 128, jit::BiasKind::causal, true),
                                      demo_signature(arch, DType::f16, 64, jit::BiasKind::none, false),
                                      demo_signature(arch, DType::f32, 64, jit::BiasKind::causal, false)}) {
      const KernelSpec spec = jit::make_spec(sig);
      const std::string problem = jit::validate_spec(spec);
      if (!problem.empty()) throw Error(spec.name() + ": " + problem);
      std::string served_by;
      const auto t0 = std::chrono::steady_clock::now();
      const auto rec = jit::JitRuntime::get().binary(spec, &served_by);
      std::printf("  %-58s %s in %7.1f ms (%s, %d registers)\n", spec.name().c_str(),
                  jit::is_compiled(served_by) ? (served_by == "hiprtc" ? "compiled by hiprtc" : "compiled by NVRTC") : "loaded from cache", ms_since(t0),
                  human_bytes(double(rec.binary.size())).c_str(), rec.registers);
    }
}

// One query row of causal attention in fp64, from the xFormers definition:
// out = softmax(q kᵀ · scale, keys j <= i) v, lse = log Σ exp(scores). Layout [B, M, H, K].
void reference_row(const std::vector<double> (&qkv)[3], int64_t M, int64_t H, int64_t K, int64_t b, int64_t h,
                   int64_t i, std::vector<double>& out, double& lse) {
  auto at = [&](const std::vector<double>& t, int64_t m, int64_t d) { return t[size_t(((b * M + m) * H + h) * K + d)]; };
  const double scale = 1.0 / std::sqrt(double(K));
  std::vector<double> s(size_t(i + 1));
  double mx = -INFINITY;
  for (int64_t j = 0; j <= i; ++j) {
    double dot = 0;
    for (int64_t d = 0; d < K; ++d) dot += at(qkv[0], i, d) * at(qkv[1], j, d);
    s[size_t(j)] = dot * scale;
    mx = std::max(mx, s[size_t(j)]);
  }
  double sum = 0;
  for (double& x : s) sum += (x = std::exp(x - mx));
  out.assign(size_t(K), 0.0);
  for (int64_t j = 0; j <= i; ++j)
    for (int64_t d = 0; d < K; ++d) out[size_t(d)] += s[size_t(j)] / sum * at(qkv[2], j, d);
  lse = mx + std::log(sum);
}

// Runs the README's call on the GPU and checks a few rows against the fp64 reference.
int demo_gpu_check() {
  constexpr int64_t B = 2, M = 300, H = 4, K = 128;
  constexpr DType dt = DType::bf16;
  const size_t n = size_t(B * M * H * K);
  std::vector<unsigned char> host[3];
  std::vector<double> values[3];
  DeviceBuffer dq(n * 2), dk(n * 2), dv(n * 2), dout(n * 2), dlse(size_t(B * H * M) * 4);
  DeviceBuffer* inputs[3] = {&dq, &dk, &dv};
  for (int t = 0; t < 3; ++t) {
    host[t] = random_normal(n, dt, uint64_t(std::random_device{}()));
    values[t].resize(n);
    for (size_t i = 0; i < n; ++i) values[t][i] = decode(host[t], i, dt);
    inputs[t]->upload(host[t]);
  }
  dout.fill(0xFF);  // NaN: a row the kernel does not write fails the check
  auto view = [&](const DeviceBuffer& b) { return TensorView::make(b.get(), dt, {B, M, H, K}); };
  const TensorView lse = TensorView::make(dlse.get(), DType::f32, {B, H, M});
  double call_ms[2];
  for (double& ms : call_ms) {
    const auto t0 = std::chrono::steady_clock::now();
    memory_efficient_attention_forward_requires_grad(view(dq), view(dk), view(dv), LowerTriangularMask{}, view(dout), lse);
    jit::check_cuda(CudaDriver::get().cuCtxSynchronize(), "cuCtxSynchronize");
    ms = ms_since(t0);
  }
  const auto out = dout.download(), lse_bytes = dlse.download();
  double max_err = 0;
  bool pass = true;
  int rows = 0;
  std::vector<double> ref;
  for (int64_t b : {0, 1})
    for (int64_t h : {0, 3})
      for (int64_t i : {0, 1, 63, 64, 127, 128, 299}) {
        double ref_lse = 0;
        ++rows;
        reference_row(values, M, H, K, b, h, i, ref, ref_lse);
        for (int64_t d = 0; d < K; ++d) {
          const double got = decode(out, size_t(((b * M + i) * H + h) * K + d), dt), err = std::fabs(got - ref[size_t(d)]);
          max_err = std::max(max_err, std::isnan(err) ? INFINITY : err);
          pass &= err <= 2e-2 + 1e-2 * std::fabs(ref[size_t(d)]);  // bf16 output and bf16 P in the second matmul
        }
        const double lse_err = std::fabs(decode(lse_bytes, size_t((b * H + h) * M + i), DType::f32) - ref_lse);
        pass &= lse_err <= 1e-3 * (1 + std::fabs(ref_lse));
      }
  std::printf("memory_efficient_attention_forward_requires_grad bf16 B=%lld M=%lld H=%lld K=%lld causal: "
              "first call %.1f ms, second %.3f ms\n", (long long)B, (long long)M, (long long)H, (long long)K,
              call_ms[0], call_ms[1]);
  std::printf("%d rows vs fp64 reference: max abs error %.3g: %s\n", rows, max_err, pass ? "PASS" : "FAIL");
  return pass ? 0 : 1;
}

int cmd_demo() {
  print_summary();
  std::string why;
  const bool gpu = gpu_available(&why);
  const std::vector<jit::Arch> archs = gpu ? std::vector<jit::Arch>{list_gpus()[0].arch}
                                           : std::vector<jit::Arch>{*jit::Arch::parse("sm_90a"), *jit::Arch::parse("sm_80")};
  std::printf("kernels:\n");
  fetch_demo_kernels(archs);
  if (gpu) return demo_gpu_check();
  std::printf("the kernels are ready in the cache layers listed above (compiled ones stored in %s); "
              "launching them needs a CUDA driver (%s)\n",
              jit::Env::get().cache_path.c_str(), why.c_str());
  return 0;
}

// ---- main -------------------------------------------------------------------------------

int run(int argc, char** argv) {
  CLI::App app{"jitattn: JIT-compiled attention kernels, their caches and their speed"};
  app.require_subcommand(1);
  std::string doctor_kernel;
  auto* doctor = app.add_subcommand("doctor", "CUDA driver, GPUs, NVRTC, the HIP runtime and hiprtc, cache layers and environment");
  doctor->add_option("--kernel", doctor_kernel,
                     "which layer would serve this canonical name or manifest entry (exit 1 if it would fail)");

  const Subcommand prewarm = add_prewarm_command(app);  // tools/prewarm.cpp

  add_cache_commands(app);  // ls, export, import, merge, verify, gc: tools/cache_commands.cpp

  std::string show_name;
  ShowOptions show_opts;
  auto* show = app.add_subcommand("show", "a kernel's spec, cache key and cached row");
  show->add_option("NAME", show_name, "canonical kernel name")->required();
  show->add_flag("--source", show_opts.source, "also print the generated CUDA source");
  auto* show_compile_flag = show->add_flag("--compile", show_opts.compile,
                                           "compile it now, as a first call would (nothing stored), and print NVRTC's time per phase");
  show->add_option("--repeat", show_opts.repeat, "--compile: compiles in this process (1)")
      ->check(CLI::Range(1, 100))->needs(show_compile_flag);
  show->add_option("--cubin", show_opts.cubin_path, "--compile: also write the binary a first call would store to this file")
      ->needs(show_compile_flag);

  BenchOptions bo;
  std::string bench_dtype = "bf16";
  auto* bench = app.add_subcommand("bench", "forward TFLOP/s on the companion PyTorch script's shapes");
  bench->add_option("--dtype", bench_dtype, "f16, bf16 or f32")->check(CLI::IsMember({"f16", "bf16", "f32"}));
  bench->add_option("--head-dims", bo.head_dims, "head dims K")->delimiter(',');
  bench->add_option("--seqlens", bo.seqlens, "sequence lengths M")->delimiter(',');
  bench->add_option("--causal", bo.causal, "both, yes or no")->check(CLI::IsMember({"both", "yes", "no"}));
  bench->add_option("--tokens", bo.tokens, "B = max(1, tokens / M)")->check(CLI::PositiveNumber);
  bench->add_option("--hidden", bo.hidden, "H = hidden / K")->check(CLI::PositiveNumber);
  bench->add_option("--reps", bo.reps, "timed calls per shape")->check(CLI::PositiveNumber);
  bench->add_option("--json", bo.json_path, "also write the results to this JSON file");
  bench->add_flag("--cold", bo.cold, "use a fresh empty cache, so the first call includes its compile");
  bench->add_flag("--bwd", bo.backward, "also time the backward (TFLOP/s counted as 2.5 forwards, as anchors.py)");
  bench->add_flag("--deterministic", bo.deterministic, "time the backward's deterministic mode");
  bench->add_option("--dropout", bo.dropout,
                    "time the backward with this dropout probability (the forward it reads ran with it; the timed forward did not)")
      ->check(CLI::Range(0.0, 0.99))
      ->needs("--bwd");
  bench->add_flag("--masks", bo.masks, "causal, a local window and packed documents, as anchors.py --masks");
  bench->add_option("--window", bo.window, "--masks: local window size")->check(CLI::PositiveNumber);
  bench->add_option("--doc-lens", bo.doc_lens, "--masks: document lengths summing to M")->delimiter(',');

  // --decode (tools/decode_bench.cpp): its own shape options; --dtype, --reps, --json and --cold are shared.
  DecodeBenchOptions dbo;
  bool decode = false;
  auto* decode_flag = bench->add_flag("--decode", decode, "decode-step TB/s (K + V read once): dense, padded and paged KV caches, "
                                      "as anchors.py --decode");
  auto* bench_reps = bench->get_option("--reps");
  for (auto* opt : {
           bench->add_option("--batch", dbo.batch, "--decode: sequences B (8)"),
           bench->add_option("--heads", dbo.heads, "--decode: query heads (32)"),
           bench->add_option("--kv-heads", dbo.kv_heads, "--decode: key/value heads, a divisor of --heads (8)"),
           bench->add_option("--head-dim", dbo.head_dim, "--decode: head dim K (128)"),
           bench->add_option("--queries", dbo.queries, "--decode: queries per sequence (1)"),
           bench->add_option("--kv-lens", dbo.kv_lens, "--decode: KV lengths N (4096,32768)")->delimiter(','),
           bench->add_option("--page-size", dbo.page_size, "--decode: page size of the paged layout, 0 for none (256)"),
           bench->add_option("--layouts", dbo.layouts, "--decode: any of dense, dense_hm ([B, Hkv, N, K] memory), padded, paged (default: dense, padded, paged)")->delimiter(','),
       })
    opt->needs(decode_flag);
  decode_flag->excludes("--masks")->excludes("--bwd")->excludes("--head-dims")->excludes("--seqlens");

  auto* demo = app.add_subcommand("demo", "compile, cache, launch and check a few kernels");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help; and CLI::RuntimeError, which carries the exit code of a command that ran in its
    // callback and already printed its own errors (tools/cache_commands.cpp).
    if (e.get_exit_code() == 0 || e.get_name() == "RuntimeError") return app.exit(e);
    std::fprintf(stderr, "jitattn: error: %s\nrun `jitattn --help` for usage\n", e.what());
    return 2;
  }
  return guarded([&] {
    if (*doctor) return doctor_kernel.empty() ? cmd_doctor() : cmd_doctor_kernel(doctor_kernel);
    if (*prewarm.app) return prewarm.run();
    if (*show) return cmd_show(show_name, show_opts);
    if (*bench && decode) {
      dbo.dtype = *jit::parse_dtype(bench_dtype);
      if (bench_reps->count()) dbo.reps = bo.reps;
      dbo.json_path = bo.json_path;
      dbo.cold = bo.cold;
      try {
        check_decode_options(dbo);
      } catch (const Error& e) {  // a usage error: exit 2, as a CLI11 parse error
        for (const auto& reason : e.reasons()) std::fprintf(stderr, "jitattn: error: %s\n", reason.c_str());
        std::fprintf(stderr, "run `jitattn bench --help` for usage\n");
        return 2;
      }
      return run_decode_bench(dbo);
    }
    if (*bench) {
      bo.dtype = *jit::parse_dtype(bench_dtype);
      return run_bench(bo);
    }
    if (*demo) return cmd_demo();
    return 2;
  });
}

}  // namespace
}  // namespace jitattn::tools

int main(int argc, char** argv) { return jitattn::tools::run(argc, argv); }
