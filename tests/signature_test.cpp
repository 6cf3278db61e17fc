// Signatures, canonical names and cache keys: stable, readable, and sensitive to exactly what
// changes the generated code.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "jit/codegen.h"
#include "jit/compiler.h"
#include "jit/hip_driver.h"
#include "jit/jit_runtime.h"
#include "jit/signature.h"

namespace jitattn::jit {
namespace {

Signature base_sig() {
  Signature s;
  s.op = Op::fwd;
  s.bias = BiasKind::causal;
  s.dtype = s.out_dtype = DType::bf16;
  s.head_dim = s.head_dim_v = 128;
  s.arch_sm = 90;
  s.arch_specific = 1;
  s.lse = 1;
  s.align = 16;
  return s;
}

// The rows of jit/bias_kinds.h: distinct names that parse back, values in table order (they are
// in cache keys), and traits that agree with each other.
TEST(Signature, BiasKindTableIsConsistent) {
  std::set<std::string> names;
  uint8_t value = 0;
  for (BiasKind kind : kAllBiasKinds) {
    EXPECT_EQ(uint8_t(kind), value++) << to_string(kind);
    EXPECT_TRUE(names.insert(to_string(kind)).second) << "duplicate name " << to_string(kind);
    EXPECT_EQ(parse_bias_kind(to_string(kind)), kind);
    EXPECT_EQ(has_backward(kind), !is_paged(kind)) << to_string(kind) << ": paged kinds are the ones without a backward";
    EXPECT_TRUE(!is_paged(kind) || is_block_diagonal(kind)) << to_string(kind);
    EXPECT_NE(std::string(policy_template(kind)).find("jitattn::"), std::string::npos) << to_string(kind);
    EXPECT_EQ(has_tensor_bias(kind), std::string(policy_template(kind)).find("TensorBiasPolicy") != std::string::npos)
        << to_string(kind);
  }
  EXPECT_EQ(names.size(), std::size(kAllBiasKinds));
  EXPECT_EQ(to_string(BiasKind(uint8_t(std::size(kAllBiasKinds)))), std::string("?"));
}

TEST(Signature, CanonicalNameIsReadable) {
  const KernelSpec spec = make_spec(base_sig());
  EXPECT_EQ(spec.name(), "fwd.sm_90a.bf16.d128.v128.causal.lse.a16.tma_" + spec.tile.name());
  const auto parsed = KernelSpec::parse(spec.name());
  ASSERT_TRUE(parsed.has_value());
  EXPECT_EQ(parsed->family, Family::tma);
}

// tma (warp-specialized wgmma) serves the sm_90a forward at f16/bf16, head dims 64..256 in steps
// of 8, 16-byte alignment, and wgmma (cp.async) the paged kinds and left windows there at multiples
// of 64; mma the
// other tensor-core cases; simt fp32 and the row kernels.
TEST(Signature, FamilyFollowsArchDtypeHeadDimAndAlignment) {
  auto family = [](auto mutate) {
    Signature s = base_sig();
    mutate(s);
    return make_spec(s).family;
  };
  EXPECT_EQ(family([](Signature&) {}), Family::tma);
  EXPECT_EQ(family([](Signature& s) { s.head_dim = s.head_dim_v = 64; s.dtype = s.out_dtype = DType::f16; }), Family::tma);
  EXPECT_EQ(family([](Signature& s) { s.bias = BiasKind::pbd_causal_br; }), Family::wgmma);
  EXPECT_EQ(family([](Signature& s) { s.bias = BiasKind::bd_causal_local; }), Family::wgmma);
  EXPECT_EQ(family([](Signature& s) { s.bias = BiasKind::bd_causal; }), Family::tma);
  EXPECT_EQ(family([](Signature& s) { s.arch_sm = 80, s.arch_specific = 0; }), Family::mma);
  EXPECT_EQ(family([](Signature& s) { s.head_dim = s.head_dim_v = 256; }), Family::tma);
  EXPECT_EQ(family([](Signature& s) { s.head_dim = s.head_dim_v = 96; }), Family::tma);  // padded panels
  EXPECT_EQ(family([](Signature& s) { s.head_dim = 192; }), Family::tma);  // MLA-like 192 / 128
  EXPECT_EQ(family([](Signature& s) { s.head_dim_v = 96; }), Family::tma);
  EXPECT_EQ(family([](Signature& s) { s.head_dim = s.head_dim_v = 56; }), Family::mma);  // below 64
  EXPECT_EQ(family([](Signature& s) { s.head_dim = s.head_dim_v = 100; }), Family::mma);  // not a multiple of 8
  EXPECT_EQ(family([](Signature& s) { s.bias = BiasKind::pbd_causal_br; s.head_dim = s.head_dim_v = 96; }), Family::mma);
  EXPECT_EQ(family([](Signature& s) { s.align = 2; }), Family::mma);
  // The backward's dK/dV kernel: tma (bwd_wgmma.cuh warp-specialized) at head dims 64/64, 128/64
  // and 128/128, else mma; its deterministic dQ kernel stays mma.
  EXPECT_EQ(family([](Signature& s) { s.op = Op::bwd; }), Family::tma);
  EXPECT_EQ(family([](Signature& s) { s.op = Op::bwd_kv; }), Family::tma);
  EXPECT_EQ(family([](Signature& s) { s.op = Op::bwd; s.head_dim = s.head_dim_v = 64; }), Family::tma);
  EXPECT_EQ(family([](Signature& s) { s.op = Op::bwd_kv; s.head_dim = s.head_dim_v = 64; }), Family::tma);
  EXPECT_EQ(family([](Signature& s) { s.op = Op::bwd; s.head_dim_v = 64; }), Family::tma);
  EXPECT_EQ(family([](Signature& s) { s.op = Op::bwd; s.head_dim = 64; }), Family::mma);  // 64 / 128
  EXPECT_EQ(family([](Signature& s) { s.op = Op::bwd; s.head_dim = s.head_dim_v = 256; }), Family::mma);
  EXPECT_EQ(family([](Signature& s) { s.op = Op::bwd; s.align = 2; }), Family::mma);
  EXPECT_EQ(family([](Signature& s) { s.op = Op::bwd; s.arch_sm = 80, s.arch_specific = 0; }), Family::mma);
  EXPECT_EQ(family([](Signature& s) { s.op = Op::bwd_dq; }), Family::mma);
  {
    Signature bwd = base_sig();
    bwd.op = Op::bwd;
    bwd.head_dim = bwd.head_dim_v = 64;
    EXPECT_EQ(make_spec(bwd).name(), "bwd.sm_90a.bf16.d64.v64.causal.lse.a16.tma_m64n128w12");
    EXPECT_EQ(validate_spec(make_spec(bwd)), "");
    KernelSpec wrong = make_spec(bwd);  // a producer warpgroup and a warpgroup per 64 keys
    wrong.tile = {64, 128, 8};
    EXPECT_NE(validate_spec(wrong).find("producer warpgroup and one warpgroup (4 warps) per 64 keys"), std::string::npos);
    wrong.tile = {32, 128, 12};
    EXPECT_NE(validate_spec(wrong).find("block_m must be 64 or 128"), std::string::npos);
    wrong = make_spec(bwd);
    wrong.sig.head_dim = wrong.sig.head_dim_v = 96;
    EXPECT_NE(validate_spec(wrong).find("tma backward needs"), std::string::npos);
    // The cp.async form (JITATTN_BWD_FAMILY=wgmma): no producer.
    wrong = make_spec(bwd);
    wrong.family = Family::wgmma;
    EXPECT_NE(validate_spec(wrong).find("one warpgroup (4 warps) per 64 keys"), std::string::npos);
    wrong.tile = {64, 128, 8};
    EXPECT_EQ(validate_spec(wrong), "");
    EXPECT_EQ(wrong.name(), "bwd.sm_90a.bf16.d64.v64.causal.lse.a16.wgmma_m64n128w8");
    wrong.sig.head_dim = wrong.sig.head_dim_v = 96;
    EXPECT_NE(validate_spec(wrong).find("wgmma backward needs"), std::string::npos);
  }
  EXPECT_EQ(family([](Signature& s) { s.dtype = s.out_dtype = DType::f32; s.align = 4; }), Family::simt);
  // A local window gets the small tile: its blocks are short.
  Signature local = base_sig();
  local.bias = BiasKind::causal_local_br;
  EXPECT_EQ(make_spec(local).tile.name(), "m64n64w4");
  // A wgmma tile must give each warpgroup 64 query rows; a tma tile has two and a producer's.
  KernelSpec bad = make_spec(base_sig());
  bad.family = Family::wgmma;
  bad.tile = *TileConfig::parse("m64n128w8");
  EXPECT_NE(validate_spec(bad).find("warpgroup"), std::string::npos) << validate_spec(bad);
  bad.tile = *TileConfig::parse("m128n32w8");
  EXPECT_NE(validate_spec(bad).find("block_n must be 64 or 128"), std::string::npos) << validate_spec(bad);
  bad.family = Family::tma;
  EXPECT_NE(validate_spec(bad).find("producer warpgroup"), std::string::npos) << validate_spec(bad);
  bad.tile = *TileConfig::parse("m128n32w12");
  EXPECT_NE(validate_spec(bad).find("block_n must be 64 or 128"), std::string::npos) << validate_spec(bad);
  bad.tile = *TileConfig::parse("m128n128w12");
  bad.sig.bias = BiasKind::pbd;
  EXPECT_NE(validate_spec(bad).find("the tma forward needs"), std::string::npos) << validate_spec(bad);
}

TEST(Signature, NameRoundTrips) {
  Signature s = base_sig();
  s.out_dtype = DType::f32;
  s.head_dim_v = 64;
  s.bias = BiasKind::tensor;
  s.lse = 0;
  s.align = 2;
  const KernelSpec spec = make_spec(s);
  const auto parsed = KernelSpec::parse(spec.name());
  ASSERT_TRUE(parsed.has_value()) << spec.name();
  EXPECT_TRUE(parsed->sig == spec.sig);
  EXPECT_EQ(parsed->name(), spec.name());
  EXPECT_FALSE(KernelSpec::parse("fwd.sm_90a.bf16.d128"));
  EXPECT_FALSE(KernelSpec::parse("fwd.sm_90a.bf16.d0128.v128.causal.lse.a16.mma_m128n64w8"));
  EXPECT_FALSE(KernelSpec::parse("fwd.sm_90a.bf16.d128.v128.diagonal.lse.a16.mma_m128n64w8"));
}

TEST(Signature, KeyIsStableAndSensitive) {
  const KernelSpec spec = make_spec(base_sig());
  const std::string key = kernel_key(spec, "nvrtc 13.0");
  EXPECT_EQ(key.size(), 32u);
  EXPECT_EQ(key, kernel_key(make_spec(base_sig()), "nvrtc 13.0"));
  EXPECT_NE(key, kernel_key(spec, "nvrtc 12.9"));  // compiler identity is in the key

  // Every code-relevant field changes the key.
  std::set<std::string> keys = {key};
  auto vary = [&](auto mutate) {
    Signature s = base_sig();
    mutate(s);
    EXPECT_TRUE(keys.insert(kernel_key(make_spec(s), "nvrtc 13.0")).second);
  };
  vary([](Signature& s) { s.bias = BiasKind::none; });
  vary([](Signature& s) { s.bias = BiasKind::causal_bottom_right; });
  vary([](Signature& s) { s.bias = BiasKind::tensor; });
  vary([](Signature& s) { s.dtype = s.out_dtype = DType::f16; });
  vary([](Signature& s) { s.out_dtype = DType::f32; });
  vary([](Signature& s) { s.head_dim = 64; });
  vary([](Signature& s) { s.head_dim_v = 64; });
  vary([](Signature& s) { s.arch_sm = 80, s.arch_specific = 0; });
  vary([](Signature& s) { s.lse = 0; });
  vary([](Signature& s) { s.align = 2; });
}

TEST(Signature, HashAndEqualityFollowEveryByte) {
  Signature a = base_sig(), b = base_sig();
  EXPECT_TRUE(a == b);
  EXPECT_EQ(a.hash(), b.hash());
  b.lse = 0;
  EXPECT_FALSE(a == b);
  EXPECT_NE(a.hash(), b.hash());
}

TEST(Signature, GeneratedSourceSetsOnlyConstexprs) {
  Signature sm80 = base_sig();
  sm80.arch_sm = 80, sm80.arch_specific = 0;
  EXPECT_NE(generate_source(make_spec(sm80)).find("#include \"fwd_mma.cuh\""), std::string::npos);
  const KernelSpec spec = make_spec(base_sig());
  const std::string src = generate_source(spec);
  EXPECT_NE(src.find("#include \"fwd_tma.cuh\""), std::string::npos);
  EXPECT_NE(src.find("__launch_bounds__(384, 1)"), std::string::npos);  // setmaxnreg needs one block per SM
  EXPECT_NE(src.find("jitattn::FwdTmaParams p"), std::string::npos);
  KernelSpec cp_async = spec;
  cp_async.family = Family::wgmma, cp_async.tile = {128, 128, 8};
  EXPECT_NE(generate_source(cp_async).find("#include \"fwd_wgmma.cuh\""), std::string::npos);
  EXPECT_NE(src.find("kHeadDim = 128"), std::string::npos);
  EXPECT_NE(src.find("jitattn::BandMask<false, false, true>"), std::string::npos);  // causal: no left bound, right bound 0
  EXPECT_NE(src.find("kVarlen = false"), std::string::npos);
  EXPECT_NE(src.find(spec.name()), std::string::npos);
}

TEST(Signature, ArchParses) {
  EXPECT_EQ(Arch::parse("sm_90a")->name(), "sm_90a");
  EXPECT_EQ(Arch::parse("sm_80")->name(), "sm_80");
  EXPECT_FALSE(Arch::parse("sm_75"));
  EXPECT_FALSE(Arch::parse("compute_80"));
  EXPECT_FALSE(Arch::parse("sm_9x"));
}

TEST(Signature, TileParses) {
  EXPECT_EQ(TileConfig::parse("m128n64w8")->name(), "m128n64w8");
  EXPECT_EQ(TileConfig::parse("m128n64w8")->stages, 0);
  EXPECT_FALSE(TileConfig::parse("m128n64"));
  EXPECT_FALSE(TileConfig::parse("m128n64w8x"));
  // A pipeline depth (decode): 2..16 stages, canonical digits only.
  EXPECT_EQ(TileConfig::parse("m16n64w4s6")->name(), "m16n64w4s6");
  EXPECT_EQ(TileConfig::parse("m16n64w4s6")->stages, 6);
  for (const char* bad : {"m16n64w4s", "m16n64w4s1", "m16n64w4s17", "m16n64w4s06", "m16n64w4s6x", "m016n64w4"})
    EXPECT_FALSE(TileConfig::parse(bad)) << bad;
}

// The decode kernel's pipeline: its depth from the tile, tensor maps only where they can serve
// (sm_90+, aligned rows, pages of a multiple of 8 rows, head dims of 64 or more), and shared memory to match.
TEST(Signature, DecodeSourceSaysHowItsStagesFill) {
  Signature s = base_sig();
  s.op = Op::decode;
  s.bias = BiasKind::none;
  KernelSpec spec = make_spec(s);
  EXPECT_EQ(spec.family, Family::tma);
  EXPECT_EQ(spec.name(), "decode.sm_90a.bf16.d128.v128.none.lse.a16.tma_m16n128w8");
  ASSERT_TRUE(KernelSpec::parse(spec.name()));
  EXPECT_EQ(KernelSpec::parse(spec.name())->family, Family::tma);
  EXPECT_EQ(validate_spec(spec), "");
  std::string src = generate_source(spec);
  EXPECT_NE(src.find("kStages = 3;"), std::string::npos);
  EXPECT_NE(src.find("kTma = true;"), std::string::npos);
  // 1024 bytes of alignment slack, three stages of two 64-column panels of K and of V, then Q.
  EXPECT_EQ(spec.smem_bytes(), 1024 + 3 * 128 * 128 * 4 + 2 * 16 * 136);
  spec.tile = *TileConfig::parse("m16n64w4s6");
  EXPECT_NE(generate_source(spec).find("kStages = 6;"), std::string::npos);
  EXPECT_EQ(spec.smem_bytes(), 1024 + 6 * 64 * 128 * 4 + 2 * 16 * 136);
  auto tma = [&](Signature x) { return generate_source(make_spec(x)).find("kTma = true;") != std::string::npos; };
  EXPECT_TRUE(tma(s));
  Signature t = s;
  t.arch_sm = 80, t.arch_specific = 0;
  EXPECT_FALSE(tma(t));
  t = s, t.align = 2;
  EXPECT_FALSE(tma(t));
  t = s, t.bias = BiasKind::pbd_causal_br;  // paged keys: boxes inside pages
  EXPECT_TRUE(tma(t));
  t.odd_pages = 1;  // pages no box of whole swizzle periods fits: cp.async, still 16-byte loads
  EXPECT_FALSE(tma(t));
  EXPECT_EQ(make_spec(t).family, Family::mma);
  EXPECT_EQ(make_spec(t).name(), "decode.sm_90a.bf16.d128.v128.pbd_causal_br.lse_oddpages.a16.mma_m16n128w8");
  ASSERT_TRUE(KernelSpec::parse(make_spec(t).name()));
  EXPECT_TRUE(KernelSpec::parse(make_spec(t).name())->sig == t);
  EXPECT_EQ(validate_spec(make_spec(t)), "");
  KernelSpec odd_tma = make_spec(t);
  odd_tma.family = Family::tma;
  EXPECT_NE(validate_spec(odd_tma).find("pages of a multiple of 8 rows"), std::string::npos) << validate_spec(odd_tma);
  t = s, t.odd_pages = 1;  // the flag means nothing to an unpaged kind
  EXPECT_NE(validate_spec(make_spec(t)).find("oddpages: only a decode kernel of a paged bias kind"), std::string::npos);
  t = s, t.head_dim = t.head_dim_v = 32;
  EXPECT_FALSE(tma(t));
  t = s, t.head_dim_v = 64;
  EXPECT_TRUE(tma(t));
  // cp.async stages: Q and three K/V stages of rows padded by 8 elements.
  t = s, t.align = 2;
  EXPECT_EQ(make_spec(t).family, Family::mma);
  EXPECT_EQ(make_spec(t).smem_bytes(), 2 * (16 * 136 + 3 * 128 * (136 + 136)));
  // A tma name for what the family cannot serve is refused with the reason.
  KernelSpec narrow = make_spec(s);
  narrow.sig.head_dim = narrow.sig.head_dim_v = 32;
  EXPECT_NE(validate_spec(narrow).find("the tma family needs"), std::string::npos) << validate_spec(narrow);
  KernelSpec merge = make_spec(base_sig());
  merge.sig.op = Op::merge, merge.family = Family::tma;
  EXPECT_NE(validate_spec(merge).find("the tma family is the sm_90a forward and backward and the decode kernel"), std::string::npos)
      << validate_spec(merge);
  KernelSpec staged = make_spec(base_sig());  // a stage count means nothing to the forward
  staged.tile.stages = 4;
  EXPECT_NE(validate_spec(staged).find("only the decode kernels take a stage count"), std::string::npos) << validate_spec(staged);
}

TEST(Signature, SpecValidationNamesTheProblem) {
  Signature s = base_sig();
  s.head_dim = 100;
  EXPECT_NE(validate_spec(make_spec(s)).find("head_dim=100"), std::string::npos);
  s = base_sig();
  s.arch_sm = 75, s.arch_specific = 0;
  EXPECT_NE(validate_spec(make_spec(s)).find("sm_75"), std::string::npos);
  EXPECT_EQ(validate_spec(make_spec(base_sig())), "");
}

// AMD targets: parsed by name, a backend apart from CUDA in names and keys, served by the
// portable family (and the mfma family only where matrix cores are), compiled with hiprtc's options.
TEST(Signature, AmdTargetsParseNameAndKeyApart) {
  const auto gfx90a = Arch::parse("gfx90a"), gfx1030 = Arch::parse("gfx1030");
  ASSERT_TRUE(gfx90a && gfx1030);
  EXPECT_EQ(gfx90a->backend, Backend::hip);
  EXPECT_EQ(gfx90a->name(), "gfx90a");
  EXPECT_EQ(gfx1030->name(), "gfx1030");
  EXPECT_EQ(gfx90a->gfx()->wave, 64);
  EXPECT_EQ(gfx1030->gfx()->wave, 32);
  EXPECT_FALSE(gfx90a == *gfx1030);
  EXPECT_EQ(Arch::parse("sm_80")->gfx(), nullptr);
  for (const char* bad : {"gfx9000", "gfx", "gfx90", "GFX90A", "gfx90a:xnack-", "gfx1100x"}) EXPECT_FALSE(Arch::parse(bad)) << bad;
  EXPECT_EQ(Arch::gfx("gfx90a:sramecc+:xnack-"), gfx90a);  // a device's gcnArchName
  EXPECT_NE(Arch::rule().find("gfx90a"), std::string::npos);

  Signature s = base_sig();
  s.set_arch(*gfx90a);
  const KernelSpec spec = make_spec(s);
  EXPECT_EQ(spec.family, Family::simt);  // JITATTN_AMD_MFMA is off
  EXPECT_EQ(spec.name(), "fwd.gfx90a.bf16.d128.v128.causal.lse.a16.simt_m16n32w4");
  const auto parsed = KernelSpec::parse(spec.name());
  ASSERT_TRUE(parsed);
  EXPECT_TRUE(parsed->sig == spec.sig);
  EXPECT_EQ(validate_spec(spec), "");
  const std::vector<std::string> opts = compile_options(spec);
  EXPECT_NE(std::find(opts.begin(), opts.end(), "--offload-arch=gfx90a"), opts.end());

  // The same code for NVIDIA under JITATTN_FAMILY=portable is another kernel with another key.
  Signature cuda = base_sig();
  cuda.arch_sm = 80, cuda.arch_specific = 0;
  KernelSpec on_cuda = make_spec(cuda);
  on_cuda.family = Family::simt;
  on_cuda.tile = spec.tile;
  EXPECT_EQ(on_cuda.name(), "fwd.sm_80.bf16.d128.v128.causal.lse.a16.simt_m16n32w4");
  EXPECT_EQ(cuda.backend, 0);  // CUDA signatures keep the byte they had before the HIP backend
  std::set<std::string> keys = {kernel_key(spec, "hiprtc 5.2.21153"), kernel_key(spec, "hiprtc 6.2.41133"),
                                kernel_key(on_cuda, "hiprtc 5.2.21153")};
  Signature s1030 = s;
  s1030.set_arch(*gfx1030);
  keys.insert(kernel_key(make_spec(s1030), "hiprtc 5.2.21153"));
  EXPECT_EQ(keys.size(), 4u);  // the compiler's version and the target are in the key

  // What AMD cannot run is refused with the reason.
  s.op = Op::decode;
  EXPECT_NE(validate_spec(make_spec(s)).find("decode kernels are CUDA-only"), std::string::npos);
  s.op = Op::fwd;
  KernelSpec mma = make_spec(s);
  mma.family = Family::mma;
  EXPECT_NE(validate_spec(mma).find("CUDA-only"), std::string::npos);
  KernelSpec mfma = make_spec(s);
  mfma.family = Family::mfma;
  mfma.tile = {64, 32, 4};
  EXPECT_EQ(validate_spec(mfma), "");
  mfma.tile = {64, 32, 2};
  EXPECT_NE(validate_spec(mfma).find("one wave64 per 16 query rows"), std::string::npos);
  mfma.tile = {64, 32, 4};
  mfma.sig.set_arch(*gfx1030);  // RDNA: no matrix cores
  EXPECT_NE(validate_spec(mfma).find("matrix cores"), std::string::npos);
  mfma.sig.set_arch(*Arch::parse("sm_90a"));
  EXPECT_NE(validate_spec(mfma).find("AMD"), std::string::npos);
  // Every AMD tile fits a workgroup's 64 KiB of LDS, at every head dim.
  for (Op op : {Op::fwd, Op::bwd, Op::bwd_dq})
    for (int d = 8; d <= 256; d += 8) {
      Signature t = s;
      t.op = op;
      t.head_dim = t.head_dim_v = uint16_t(d);
      EXPECT_EQ(validate_spec(make_spec(t)), "") << make_spec(t).name();
    }
}

TEST(Signature, HipDeviceTargetIsFoundInItsProperties) {
  std::vector<unsigned char> props(1024, 0);
  const char name[] = "AMD Instinct MI250X", arch[] = "gfx90a:sramecc+:xnack-";
  std::copy(name, name + sizeof name, props.begin());
  std::copy(arch, arch + sizeof arch, props.begin() + 396);
  EXPECT_EQ(find_gcn_arch(props.data(), props.size()), "gfx90a:sramecc+:xnack-");
  EXPECT_EQ(Arch::gfx(find_gcn_arch(props.data(), props.size()))->name(), "gfx90a");
  std::fill(props.begin() + 396, props.end(), 0);
  EXPECT_EQ(find_gcn_arch(props.data(), props.size()), "");
}

}  // namespace
}  // namespace jitattn::jit
