// The AMD backend without an AMD GPU: every variant of the portable family (forward, backward,
// merge and the backward's row kernels; every bias kind × dtype) and the MFMA forward compile
// through hiprtc for gfx90a and gfx1030, each binary is an AMDGPU code object for its target that
// defines its entry, and the MFMA forward's disassembly (Debian's llvm-objdump) holds v_mfma.
//
// Without hiprtc these skip, unless JITATTN_TEST_REQUIRE_HIPRTC=1 (tools/test.sh sets it after
// tools/setup.sh installed Debian's ROCm packages), where they fail: CI must compile them.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <thread>

#include "jit/codegen.h"
#include "jit/cubin.h"
#include "jit/compiler.h"
#include "jit/hiprtc_compiler.h"
#include "jit/signature.h"
#include "temp_dir.h"

namespace jitattn::jit {
namespace {

const Compiler* hiprtc_or_skip(std::string& why) {
  try {
    return &HiprtcCompiler::get();
  } catch (const std::exception& e) {
    why = e.what();
    return nullptr;
  }
}

#define REQUIRE_HIPRTC(compiler)                                                               \
  std::string why_;                                                                            \
  const Compiler* compiler = hiprtc_or_skip(why_);                                             \
  if (!compiler) {                                                                             \
    const char* req = std::getenv("JITATTN_TEST_REQUIRE_HIPRTC");                              \
    if (req && std::string(req) == "1") FAIL() << "hiprtc is required here: " << why_;         \
    GTEST_SKIP() << "no hiprtc: " << why_;                                                     \
  }

Signature base(const char* arch) {
  Signature s;
  s.set_arch(*Arch::parse(arch));
  s.lse = 1;
  return s;
}

// The portable family for one target: every bias kind × dtype of the forward and of the three
// backward kernels that apply the bias (paged kinds are inference only), dropout and dbias, the
// head-dim tile classes (AMD's 64 KiB of LDS), and the row kernels.
std::vector<KernelSpec> portable_variants(const char* arch) {
  std::vector<KernelSpec> specs;
  for (DType dt : {DType::f16, DType::bf16, DType::f32}) {
    Signature s = base(arch);
    s.dtype = s.out_dtype = dt;
    s.align = uint8_t(dt == DType::f32 ? 4 : 16);
    s.head_dim = s.head_dim_v = 64;
    for (BiasKind bias : kAllBiasKinds) {
      s.bias = bias;
      s.op = Op::fwd;
      s.dbias = 0;
      specs.push_back(make_spec(s));
      if (!has_backward(bias) || is_paged(bias)) continue;
      for (Op op : {Op::bwd, Op::bwd_kv, Op::bwd_dq}) {
        s.op = op;
        s.dbias = has_tensor_bias(bias) && op != Op::bwd_dq;
        specs.push_back(make_spec(s));
      }
    }
    s.dbias = 0;
    s.bias = BiasKind::causal;
    s.dropout = 1;
    for (Op op : {Op::fwd, Op::bwd, Op::bwd_kv, Op::bwd_dq}) {
      s.op = op;
      specs.push_back(make_spec(s));
    }
    s.dropout = 0;
    for (int d : {128, 256}) {  // the larger tile classes
      s.head_dim = s.head_dim_v = uint16_t(d);
      for (Op op : {Op::fwd, Op::bwd, Op::bwd_dq}) {
        s.op = op;
        specs.push_back(make_spec(s));
      }
    }
    s.head_dim = s.head_dim_v = 64;
    s.bias = BiasKind::none;
    for (Op op : {Op::bwd_pre, Op::bwd_post, Op::merge}) {
      s.op = op;
      s.lse = op == Op::merge;
      specs.push_back(make_spec(s));
    }
  }
  return specs;
}

// The MFMA forward (gfx90a): every bias kind × f16/bf16, and the head-dim tile classes.
std::vector<KernelSpec> mfma_variants() {
  std::vector<KernelSpec> specs;
  auto add = [&](const Signature& s) {
    KernelSpec spec = make_spec(s);  // the simt family unless JITATTN_AMD_MFMA=on
    spec.family = Family::mfma;
    spec.tile = s.head_dim <= 128 && s.head_dim_v <= 128 ? TileConfig{64, 32, 4} : TileConfig{32, 32, 2};
    specs.push_back(spec);
  };
  for (DType dt : {DType::f16, DType::bf16}) {
    Signature s = base("gfx90a");
    s.dtype = s.out_dtype = dt;
    s.head_dim = s.head_dim_v = 64;
    for (BiasKind bias : kAllBiasKinds) {
      s.bias = bias;
      add(s);
    }
    s.bias = BiasKind::causal;
    s.dropout = 1;
    add(s);
    s.dropout = 0;
    for (int d : {128, 256}) {
      s.head_dim = s.head_dim_v = uint16_t(d);
      add(s);
    }
  }
  return specs;
}

void compile_all(const Compiler& compiler, const std::vector<KernelSpec>& specs) {
  std::atomic<size_t> next{0};
  std::mutex mu;
  std::vector<std::string> failures;
  size_t compiled = 0;
  auto worker = [&] {
    for (size_t i; (i = next++) < specs.size();) {
      const KernelSpec& spec = specs[i];
      std::string error = validate_spec(spec);
      if (error.empty()) {
        try {
          const std::string key = "0123456789abcdef0123456789abcdef";
          const CompiledKernel k = compiler.compile(spec, generate_source(spec, key));
          error = binary_problem(k.cubin, kernel_entry(spec, key), spec.sig.arch());
          if (error.empty() && spec.sig.backend == uint8_t(Backend::cuda) && k.registers <= 0) error = "no register count";
        } catch (const std::exception& e) {
          error = e.what();
        }
      } else {
        error = "invalid spec: " + error;
      }
      std::lock_guard<std::mutex> lock(mu);
      if (error.empty()) ++compiled;
      else if (failures.size() < 20) failures.push_back(spec.name() + ": " + error.substr(0, 4000));
    }
  };
  const unsigned n = std::max(2u, std::thread::hardware_concurrency());
  std::vector<std::thread> threads;
  for (unsigned i = 0; i < n; ++i) threads.emplace_back(worker);
  for (auto& t : threads) t.join();
  for (const auto& f : failures) ADD_FAILURE() << f;
  EXPECT_EQ(compiled, specs.size());
  std::cout << "compiled " << compiled << " of " << specs.size() << " variants with " << compiler.identity() << "\n";
}

TEST(AmdCompile, SpecsAreThePortableFamilyOnAmdTargets) {
  for (const char* arch : {"gfx90a", "gfx1030"})
    for (const KernelSpec& spec : portable_variants(arch)) {
      EXPECT_EQ(spec.family, Family::simt) << spec.name();
      EXPECT_EQ(spec.sig.arch().name(), arch);
      EXPECT_LE(spec.smem_bytes(), 65536) << spec.name();  // what one workgroup's LDS holds
      EXPECT_EQ(validate_spec(spec), "") << spec.name();
    }
}

std::vector<KernelSpec> of_dtype(const std::vector<KernelSpec>& specs, DType dt) {
  std::vector<KernelSpec> out;
  for (const KernelSpec& s : specs)
    if (s.sig.dtype == dt) out.push_back(s);
  return out;
}

// One test per (target, dtype): hiprtc compiles one kernel at a time per process
// (jit/hiprtc_compiler.cpp), so the parallelism is ctest's, one process per test.
class AmdPortableCompile : public testing::TestWithParam<std::tuple<const char*, DType>> {};

TEST_P(AmdPortableCompile, EveryVariant) {
  REQUIRE_HIPRTC(compiler);
  const auto [arch, dt] = GetParam();
  const std::vector<KernelSpec> specs = of_dtype(portable_variants(arch), dt);
  ASSERT_GT(specs.size(), 80u);  // every bias kind of the forward and the backward at least
  compile_all(*compiler, specs);
}

INSTANTIATE_TEST_SUITE_P(Targets, AmdPortableCompile,
                         testing::Combine(testing::Values("gfx90a", "gfx1030"),
                                          testing::Values(DType::f16, DType::bf16, DType::f32)),
                         [](const testing::TestParamInfo<std::tuple<const char*, DType>>& info) {
                           return std::string(std::get<0>(info.param)) + "_" + to_string(std::get<1>(info.param));
                         });

class AmdMfmaCompile : public testing::TestWithParam<DType> {};

TEST_P(AmdMfmaCompile, EveryForwardForGfx90a) {
  REQUIRE_HIPRTC(compiler);
  const std::vector<KernelSpec> specs = of_dtype(mfma_variants(), GetParam());
  ASSERT_GT(specs.size(), 20u);
  compile_all(*compiler, specs);
}

INSTANTIATE_TEST_SUITE_P(Dtypes, AmdMfmaCompile, testing::Values(DType::f16, DType::bf16),
                         [](const testing::TestParamInfo<DType>& info) { return std::string(to_string(info.param)); });

// The same portable source through NVRTC: the f16/bf16 variants JITATTN_FAMILY=portable selects on
// NVIDIA (the f32 ones are the fp32 path, compiled by tests/compile_test.cpp), forced to the
// simt family here because this process does not set the variable.
TEST(AmdCompile, ThePortableFamilyCompilesWithNvrtcToo) {
  const Compiler* nvrtc = nullptr;
  try {
    nvrtc = &compiler_for(Backend::cuda);
  } catch (const std::exception& e) {
    FAIL() << "NVRTC is required for this test: " << e.what();
  }
  std::vector<KernelSpec> specs;
  for (KernelSpec spec : portable_variants("sm_80")) {
    if (spec.sig.dtype == DType::f32) continue;
    Signature f32 = spec.sig;  // the simt tile: the same shared memory for every dtype (fp32 staging)
    f32.dtype = f32.out_dtype = DType::f32;
    f32.align = 4;
    spec.family = Family::simt;
    spec.tile = make_spec(f32).tile;
    specs.push_back(spec);
  }
  compile_all(*nvrtc, specs);
}

// The binary of one target is refused as another's: the code object's EF_AMDGPU_MACH is checked.
TEST(AmdCompile, ACodeObjectBindsToItsTarget) {
  REQUIRE_HIPRTC(compiler);
  Signature s = base("gfx1030");
  s.dtype = s.out_dtype = DType::f16;
  s.head_dim = s.head_dim_v = 64;
  const KernelSpec spec = make_spec(s);
  const std::string key = "00000000000000000000000000000001";
  const std::string code = compiler->compile(spec, generate_source(spec, key)).cubin;
  EXPECT_EQ(binary_problem(code, kernel_entry(spec, key), *Arch::parse("gfx1030")), "");
  EXPECT_NE(binary_problem(code, kernel_entry(spec, key), *Arch::parse("gfx90a")), "");
  EXPECT_NE(binary_problem(code, kernel_entry(spec, key), *Arch::parse("sm_80")), "");  // not a cubin
  EXPECT_NE(binary_problem(code, kernel_entry(spec, "00000000000000000000000000000002"), *Arch::parse("gfx1030")), "");
}

std::string run(const std::string& cmd) {
  std::string out;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return out;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  pclose(p);
  return out;
}

size_t count(const std::string& text, const std::string& word) {
  size_t n = 0;
  for (size_t at = 0; (at = text.find(word, at)) != std::string::npos; at += word.size()) ++n;
  return n;
}

// The MFMA forward really runs on matrix cores: its gfx90a code holds v_mfma instructions (and
// the portable forward of the same signature holds none).
TEST(AmdCompile, MfmaForwardDisassemblesToMfmaInstructions) {
  REQUIRE_HIPRTC(compiler);
  const char* objdump = "/usr/lib/llvm-15/bin/llvm-objdump";
  if (std::ifstream(objdump).fail()) {
    const char* req = std::getenv("JITATTN_TEST_REQUIRE_HIPRTC");
    if (req && std::string(req) == "1") FAIL() << objdump << " is required here (Debian's llvm-15)";
    GTEST_SKIP() << "no " << objdump;
  }
  test::TempDir dir("jitattn_amd_disasm");
  Signature s = base("gfx90a");
  s.dtype = s.out_dtype = DType::bf16;
  s.head_dim = s.head_dim_v = 128;
  s.bias = BiasKind::causal;
  KernelSpec mfma = make_spec(s);
  const KernelSpec simt = mfma;
  mfma.family = Family::mfma;
  mfma.tile = {64, 32, 4};
  ASSERT_EQ(validate_spec(mfma), "");
  auto disassemble = [&](const KernelSpec& spec, const std::string& file) {
    const std::string code = compiler->compile(spec, generate_source(spec)).cubin;
    const std::string path = dir.file(file);
    std::ofstream(path, std::ios::binary).write(code.data(), std::streamsize(code.size()));
    return run(std::string(objdump) + " -d --mcpu=gfx90a " + path);
  };
  const std::string mfma_asm = disassemble(mfma, "mfma.co");
  const std::string simt_asm = disassemble(simt, "simt.co");
  EXPECT_GT(count(mfma_asm, "v_mfma_f32_16x16x16bf16_1k"), 0u) << mfma_asm.substr(0, 2000);
  EXPECT_GT(count(simt_asm, "v_fma"), 0u) << simt_asm.substr(0, 2000);  // the disassembler read the code
  EXPECT_EQ(count(simt_asm, "v_mfma"), 0u);
}

}  // namespace
}  // namespace jitattn::jit
