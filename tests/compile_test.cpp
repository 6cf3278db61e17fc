// Every specialization of the forward compiles through NVRTC for sm_80 and sm_90a, so CI proves
// the kernels build without a GPU.
#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <thread>
#include <tuple>

#include "jit/codegen.h"
#include "jit/nvrtc_compiler.h"
#include "jit/signature.h"

namespace jitattn::jit {
namespace {

std::vector<KernelSpec> every_variant() {
  std::vector<KernelSpec> specs;
  auto add = [&](Signature s) { specs.push_back(make_spec(s)); };
  for (const char* arch : {"sm_80", "sm_90a"}) {
    const Arch a = *Arch::parse(arch);
    Signature s;
    s.arch_sm = a.sm;
    s.arch_specific = a.specific;
    // Every bias kind × dtype × LSE × alignment class at one head dim...
    for (DType dt : {DType::f16, DType::bf16, DType::f32})
      for (BiasKind bias : {BiasKind::none, BiasKind::causal, BiasKind::causal_bottom_right, BiasKind::tensor})
        for (int lse : {0, 1})
          for (int align : {16, 2}) {
            if (dt == DType::f32 && align == 2) continue;
            s.dtype = s.out_dtype = dt;
            s.bias = bias;
            s.lse = uint8_t(lse);
            s.align = uint8_t(dt == DType::f32 ? 4 : align);
            s.head_dim = s.head_dim_v = 128;
            add(s);
          }
    // ...every other bias kind × dtype (issue 3's family)...
    for (BiasKind bias : kAllBiasKinds) {
      if (bias == BiasKind::none || bias == BiasKind::causal || bias == BiasKind::causal_bottom_right ||
          bias == BiasKind::tensor)
        continue;  // covered above
      for (DType dt : {DType::f16, DType::bf16, DType::f32}) {
        s.dtype = s.out_dtype = dt;
        s.bias = bias;
        s.lse = 1;
        s.align = uint8_t(dt == DType::f32 ? 4 : 16);
        s.head_dim = s.head_dim_v = 64;
        add(s);
      }
    }
    // ...every head dim, value head dims that differ, and output dtypes that differ.
    s.dtype = s.out_dtype = DType::bf16;
    s.bias = BiasKind::causal;
    s.lse = 1;
    s.align = 16;
    for (int d = 8; d <= 256; d += 8) {
      s.head_dim = s.head_dim_v = uint16_t(d);
      add(s);
    }
    s.head_dim = 64, s.head_dim_v = 128;
    add(s);
    s.head_dim = 256, s.head_dim_v = 40;
    add(s);
    s.head_dim = s.head_dim_v = 96;
    s.out_dtype = DType::f32;
    add(s);
    s.dtype = DType::f32;
    s.out_dtype = DType::bf16;
    s.align = 4;
    add(s);
    s.head_dim = s.head_dim_v = 256;
    s.out_dtype = DType::f32;
    add(s);

    // The forward with dropout, per dtype.
    for (DType dt : {DType::f16, DType::bf16, DType::f32}) {
      Signature f;
      f.arch_sm = a.sm, f.arch_specific = a.specific;
      f.dtype = f.out_dtype = dt;
      f.bias = BiasKind::causal;
      f.lse = 1, f.dropout = 1;
      f.align = uint8_t(dt == DType::f32 ? 4 : 16);
      f.head_dim = f.head_dim_v = 128;
      add(f);
    }
  }
  return specs;
}

// Every backward kernel: each bias kind × dtype for the three kernels that apply the bias (bwd,
// bwd_kv, bwd_dq), dropout and dbias variants, the row kernels, and the head dims' tile classes
// (per arch: the tile table fits each arch's shared memory).
std::vector<KernelSpec> every_backward_variant() {
  std::vector<KernelSpec> specs;
  for (const char* arch : {"sm_80", "sm_90a"}) {
    const Arch a = *Arch::parse(arch);
    Signature s;
    s.arch_sm = a.sm, s.arch_specific = a.specific;
    s.lse = 1;
    for (DType dt : {DType::f16, DType::bf16, DType::f32}) {
      s.dtype = s.out_dtype = dt;
      s.align = uint8_t(dt == DType::f32 ? 4 : 16);
      s.head_dim = s.head_dim_v = 64;
      for (BiasKind bias : kAllBiasKinds) {
        if (is_paged(bias)) continue;  // inference only
        s.bias = bias;
        for (Op op : {Op::bwd, Op::bwd_kv, Op::bwd_dq}) {
          s.op = op;
          s.dbias = (bias == BiasKind::tensor || bias == BiasKind::causal_tensor) && op != Op::bwd_dq;
          specs.push_back(make_spec(s));
        }
      }
      s.dbias = 0;
      s.bias = BiasKind::causal;
      s.dropout = 1;
      for (Op op : {Op::bwd, Op::bwd_kv, Op::bwd_dq}) {
        s.op = op;
        specs.push_back(make_spec(s));
      }
      s.dropout = 0;
      s.bias = BiasKind::none;
      for (Op op : {Op::bwd_pre, Op::bwd_post}) {
        s.op = op;
        specs.push_back(make_spec(s));
      }
      if (dt == DType::f32) continue;
      s.bias = BiasKind::causal;
      for (auto [d, dv] : {std::pair<int, int>{128, 128}, {256, 256}, {64, 128}, {40, 40}})
        for (Op op : {Op::bwd, Op::bwd_dq}) {
          s.op = op;
          s.head_dim = uint16_t(d), s.head_dim_v = uint16_t(dv);
          specs.push_back(make_spec(s));
        }
      s.head_dim = s.head_dim_v = 64;
      s.align = 2;  // element-wise loads
      s.op = Op::bwd;
      specs.push_back(make_spec(s));
      if (dt != DType::bf16) continue;
      // Head dims past 128 + 128, whose dK/dV/dQ the mma backward slices over two blocks
      // (bwd_mma_slices; m32n128w8 where the query slice is a multiple of 32 columns), and one
      // that stays whole (136: its padded head dim does not halve into 16-column pairs); dropout,
      // dbias and element alignment at 256.
      for (auto [d, dv] : {std::pair<int, int>{160, 160}, {192, 192}, {256, 128}, {128, 256}, {96, 256}, {256, 64}, {136, 136}})
        for (Op op : {Op::bwd, Op::bwd_kv}) {
          s.op = op, s.align = 16;
          s.head_dim = uint16_t(d), s.head_dim_v = uint16_t(dv);
          specs.push_back(make_spec(s));
        }
      s.head_dim = s.head_dim_v = 256, s.op = Op::bwd;
      s.dropout = 1, specs.push_back(make_spec(s)), s.dropout = 0;
      s.bias = BiasKind::tensor, s.dbias = 1, specs.push_back(make_spec(s)), s.dbias = 0, s.bias = BiasKind::causal;
      s.align = 2, specs.push_back(make_spec(s)), s.align = 16;
      s.head_dim = s.head_dim_v = 64;
    }
  }
  // sm_90a's dK/dV kernel in the cp.async form, which JITATTN_BWD_FAMILY=wgmma asks for (the
  // warp-specialized form serves 64 and 128 by default), at both head dims, with dropout at 128.
  {
    Signature s;
    s.arch_sm = 90, s.arch_specific = 1;
    s.dtype = s.out_dtype = DType::bf16;
    s.lse = 1;
    s.bias = BiasKind::causal;
    for (int d : {64, 128})
      for (Op op : {Op::bwd, Op::bwd_kv})
        for (int dropout : {0, 1}) {
          if (dropout && d == 64) continue;
          s.head_dim = s.head_dim_v = uint16_t(d), s.op = op, s.dropout = uint8_t(dropout);
          KernelSpec spec = make_spec(s);
          spec.family = Family::wgmma, spec.tile = {64, 128, 8};
          specs.push_back(spec);
        }
  }
  // The smaller tiles the table picks where shared memory is 99 KB (sm_86, sm_89).
  Signature s;
  const Arch a = *Arch::parse("sm_86");
  s.arch_sm = a.sm, s.arch_specific = a.specific;
  s.dtype = s.out_dtype = DType::bf16;
  s.bias = BiasKind::causal;
  s.lse = 1;
  for (int d : {64, 128, 256})
    for (Op op : {Op::bwd, Op::bwd_kv, Op::bwd_dq}) {
      s.op = op;
      s.head_dim = s.head_dim_v = uint16_t(d);
      specs.push_back(make_spec(s));
    }
  return specs;
}

void compile_all(const std::vector<KernelSpec>& specs);

TEST(Compile, EveryVariantForSm80AndSm90a) { compile_all(every_variant()); }

TEST(Compile, EveryBackwardVariantForSm80AndSm90a) { compile_all(every_backward_variant()); }

// The decode kernels (kernel_src/decode.cuh; the tma family on sm_90a where tensor maps serve,
// mma elsewhere): every bias kind in bf16 on sm_90a with the LSE, a few in f16 without it, and the
// head dims and archs whose tiles differ (m16n128w8, m16n64w4, m16n32w2, m16n16w1), with Kv != K
// and element alignment, paged and not.
std::vector<KernelSpec> every_decode_variant() {
  std::vector<KernelSpec> specs;
  Signature s;
  s.op = Op::decode;
  s.arch_sm = 90, s.arch_specific = 1;
  s.head_dim = s.head_dim_v = 128;
  for (BiasKind bias : kAllBiasKinds) {
    s.dtype = s.out_dtype = DType::bf16;
    s.bias = bias, s.lse = 1;
    specs.push_back(make_spec(s));
  }
  s.lse = 0;
  for (BiasKind bias : {BiasKind::none, BiasKind::pbd_causal_local_br, BiasKind::causal_tensor}) {
    s.dtype = s.out_dtype = DType::f16;
    s.bias = bias;
    specs.push_back(make_spec(s));
  }
  s.dtype = DType::bf16, s.out_dtype = DType::f32, s.bias = BiasKind::bd_causal_br;
  specs.push_back(make_spec(s));
  s.out_dtype = DType::bf16;
  for (BiasKind bias : {BiasKind::pbd_causal_br, BiasKind::none})
    for (auto [sm, d, dv, align] : {std::tuple<int, int, int, int>{90, 256, 256, 16}, {90, 128, 64, 2}, {90, 128, 64, 16},
                                    {90, 64, 64, 16}, {80, 128, 128, 16}, {80, 256, 256, 2}, {86, 256, 256, 16}}) {
      s.arch_sm = uint8_t(sm), s.arch_specific = sm == 90;
      s.head_dim = uint16_t(d), s.head_dim_v = uint16_t(dv), s.align = uint8_t(align);
      s.bias = bias;
      specs.push_back(make_spec(s));
    }
  return specs;
}

TEST(Compile, EveryDecodeVariant) { compile_all(every_decode_variant()); }

// The tma forward at head dims padded to 64-column panels (kernel_src/fwd_tma.cuh kDP), the
// default there: the head dims of common models that are not multiples of 64, Kv != K, a mask,
// varlen with dropout, f16; with their default tiles.
std::vector<KernelSpec> padded_tma_forward_variants() {
  std::vector<KernelSpec> specs;
  Signature s;
  s.arch_sm = 90, s.arch_specific = 1;
  s.dtype = s.out_dtype = DType::bf16;
  s.lse = 1;
  for (auto [d, dv, bias] : {std::tuple<int, int, BiasKind>{72, 72, BiasKind::none}, {80, 80, BiasKind::causal},
                             {96, 96, BiasKind::none}, {96, 128, BiasKind::causal_bottom_right}, {112, 112, BiasKind::bd_causal},
                             {160, 160, BiasKind::none}, {200, 136, BiasKind::causal}}) {
    s.head_dim = uint16_t(d), s.head_dim_v = uint16_t(dv), s.bias = bias;
    const KernelSpec spec = make_spec(s);
    EXPECT_EQ(spec.family, Family::tma) << spec.name();
    specs.push_back(spec);
  }
  s.head_dim = s.head_dim_v = 96, s.bias = BiasKind::bd_causal_br, s.dropout = 1, s.dtype = s.out_dtype = DType::f16;
  const KernelSpec spec = make_spec(s);
  EXPECT_EQ(spec.family, Family::tma) << spec.name();
  specs.push_back(spec);
  return specs;
}

TEST(Compile, PaddedHeadDimsOnTheTmaForward) { compile_all(padded_tma_forward_variants()); }

void compile_all(const std::vector<KernelSpec>& specs) {
  NvrtcCompiler* compiler = nullptr;
  try {
    compiler = &NvrtcCompiler::get();
  } catch (const std::exception& e) {
    FAIL() << "NVRTC is required for this test: " << e.what();
  }
  std::atomic<size_t> next{0};
  std::mutex mu;
  std::vector<std::string> failures;
  size_t compiled = 0;
  auto worker = [&] {
    for (size_t i; (i = next++) < specs.size();) {
      const KernelSpec& spec = specs[i];
      std::string problem = validate_spec(spec);
      std::string error;
      if (problem.empty()) {
        try {
          const CompiledKernel k = compiler->compile(spec, generate_source(spec));
          if (k.cubin.size() < 1000) error = "cubin of " + std::to_string(k.cubin.size()) + " bytes";
          else if (k.registers <= 0) error = "no register count in the ptxas report";
          // Too few registers for the wgmma pipeline: ptxas then waits after every wgmma, which
          // runs correctly and slowly (C7510-C7512); the wgmma kernels are sized to avoid it.
          else if ((spec.family == Family::wgmma || (spec.family == Family::tma && spec.sig.op != Op::decode)) &&
                   k.log.find("wgmma.mma_async instructions are serialized") != std::string::npos)
            error = "ptxas serializes its wgmma pipeline:\n" + k.log;
          // fwd_tma.cuh's and bwd_wgmma.cuh's (kTma) setmaxnreg.inc waits until the producer's
          // setmaxnreg.dec has freed enough: the block must start with at least what it hands
          // out (forward: 40/232 per thread for two warpgroups that multiply, 24/160 for three;
          // backward 24/240), or the kernel hangs.
          else if (spec.family == Family::tma && (spec.sig.op == Op::fwd || spec.sig.op == Op::bwd || spec.sig.op == Op::bwd_kv)) {
            const int mma_threads = spec.threads() - 128, two = spec.tile.block_m == 128;
            const int needed = spec.sig.op != Op::fwd ? 128 * 24 + mma_threads * 240
                                                      : 128 * (two ? 40 : 24) + mma_threads * (two ? 232 : 160);
            if (k.registers * spec.threads() < needed)
              error = std::to_string(k.registers) + " registers per thread at launch, fewer than setmaxnreg hands out";
          }
        } catch (const std::exception& e) {
          error = e.what();
        }
      } else {
        error = "invalid spec: " + problem;
      }
      std::lock_guard<std::mutex> lock(mu);
      if (error.empty()) ++compiled;
      else failures.push_back(spec.name() + ": " + error);
    }
  };
  const unsigned n = std::max(2u, std::thread::hardware_concurrency());
  std::vector<std::thread> threads;
  for (unsigned i = 0; i < n; ++i) threads.emplace_back(worker);
  for (auto& t : threads) t.join();
  for (const auto& f : failures) ADD_FAILURE() << f;
  EXPECT_EQ(compiled, specs.size());
  std::cout << "compiled " << compiled << " of " << specs.size() << " variants\n";
}

}  // namespace
}  // namespace jitattn::jit
