// User variants on the CPU: what a variant's code is (ids, names, keys), its validation, that
// its kernels compile through NVRTC for every family over several bias kinds, and that a snippet
// that does not compile is reported at the user's own line. GPU results: variant_gpu_test.cpp.
#include <gtest/gtest.h>

#include <utility>

#include <string>
#include <thread>
#include <vector>

#include "jit/codegen.h"
#include "jit/jit_runtime.h"
#include "jit/nvrtc_compiler.h"
#include "jit/signature.h"
#include "jit/variant.h"
#include "jitattn/attention.h"
#include "jitattn/error.h"
#include "jitattn/variant.h"

namespace jitattn {
namespace {

CaptureTensor vec(CaptureType t, int64_t n) {
  CaptureTensor c;
  c.data = reinterpret_cast<const void*>(uintptr_t(0x1000));  // never read on the CPU
  c.type = t;
  c.rank = 1;
  c.shape[0] = n;
  c.stride[0] = 1;
  return c;
}

Variant document_and_softcap() {
  Variant v;
  v.mask_mod("doc(q_idx) == doc(kv_idx)")
      .score_mod("return cap * tanhf(score / cap);", "const float t = tanhf(score / cap);\nreturn 1.f - t * t;")
      .capture("doc", vec(CaptureType::i32, 64))
      .capture("cap", 20.f);
  return v;
}

// NVRTC, which the compiling tests need: without it they fail (nullptr), they do not skip.
jit::NvrtcCompiler* nvrtc_or_fail() {
  try {
    return &jit::NvrtcCompiler::get();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "NVRTC is required for this test: " << e.what();
    return nullptr;
  }
}

TEST(Variant, CodeIdFollowsTheCodeNotTheValues) {
  Variant a = document_and_softcap(), b = document_and_softcap();
  EXPECT_NE(a.code_id(), 0u);
  EXPECT_EQ(a.code_id(), b.code_id());
  b.capture("cap", 30.f).capture("doc", vec(CaptureType::i32, 128));  // new values: same kernels
  EXPECT_EQ(a.code_id(), b.code_id());
  b.capture("doc", vec(CaptureType::i64, 128));  // a new element type is new code
  EXPECT_NE(a.code_id(), b.code_id());
  Variant c = document_and_softcap();
  c.mask_mod("doc(q_idx) != doc(kv_idx)");
  EXPECT_NE(a.code_id(), c.code_id());
  EXPECT_EQ(Variant().code_id(), 0u);
}

TEST(Variant, NamesCarryTheIdAndParseBack) {
  jit::Signature s;
  s.op = jit::Op::fwd, s.arch_sm = 90, s.arch_specific = 1, s.dtype = s.out_dtype = DType::bf16;
  s.head_dim = s.head_dim_v = 128, s.bias = jit::BiasKind::bd_causal, s.lse = 1;
  s.variant = document_and_softcap().code_id();
  const jit::KernelSpec spec = jit::make_spec(s);
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(s.variant));
  EXPECT_NE(spec.name().find(std::string(".bd_causal+u") + hex + "."), std::string::npos) << spec.name();
  const auto parsed = jit::KernelSpec::parse(spec.name());
  ASSERT_TRUE(parsed) << spec.name();
  EXPECT_TRUE(parsed->sig == s);
  std::string bad = spec.name();
  bad.replace(bad.find("+u") + 2, 1, "G");
  EXPECT_FALSE(jit::KernelSpec::parse(bad));
}

TEST(Variant, KeyHashesTheWholeText) {
  jit::Signature s;
  s.op = jit::Op::fwd, s.arch_sm = 90, s.arch_specific = 1, s.dtype = s.out_dtype = DType::bf16;
  s.head_dim = s.head_dim_v = 64;
  const std::string plain = jit::kernel_key(jit::make_spec(s), "nvrtc-test");
  s.variant = document_and_softcap().code_id();
  const std::string with = jit::kernel_key(jit::make_spec(s), "nvrtc-test");
  Variant other = document_and_softcap();
  other.score_mod("return score;").additive_score();
  s.variant = other.code_id();
  const std::string with_other = jit::kernel_key(jit::make_spec(s), "nvrtc-test");
  EXPECT_NE(plain, with);
  EXPECT_NE(with, with_other);
  // The key's material includes the code itself, not only its 64-bit id.
  const std::string text = jit::variant_code(s.variant)->canonical();
  EXPECT_NE(text.find("return score;"), std::string::npos);
  EXPECT_NE(text.find("capture doc tensor int 1"), std::string::npos);
}

TEST(Variant, ReasonsNameTheCaptureAndTheRule) {
  Variant v;
  EXPECT_FALSE(v.reasons().empty());  // no snippet
  v.mask_mod("true").capture("q_idx", 1).capture("2x", 1.f);
  CaptureTensor t = vec(CaptureType::f32, 4);
  t.rank = 5;
  v.capture("table", t);
  CaptureTensor null_t = vec(CaptureType::f32, 4);
  null_t.data = nullptr;
  v.capture("nothing", null_t);
  const auto r = v.reasons();
  auto has = [&](const std::string& s) {
    for (const auto& x : r)
      if (x.find(s) != std::string::npos) return true;
    return false;
  };
  EXPECT_TRUE(has("'q_idx': the name is taken"));
  EXPECT_TRUE(has("'2x': a capture name must be a C identifier"));
  EXPECT_TRUE(has("'table': rank=5 is not in 1..4"));
  EXPECT_TRUE(has("'nothing': data is null"));
  Variant many;
  many.mask_mod("true");
  for (int i = 0; i < 9; ++i) many.capture("s" + std::to_string(i), float(i));
  EXPECT_FALSE(many.reasons().empty());
  Variant grad_only;
  grad_only.mask_mod("true").additive_score();
  EXPECT_FALSE(grad_only.reasons().empty());
}

TEST(Variant, CallsRefuseABadVariantAndABackwardWithoutTheGradient) {
  // Validation runs before anything touches a GPU: the reasons come back on any machine.
  std::vector<char> mem(1 << 16);  // distinct addresses, never read (device 0 is only a number here)
  int next = 0;
  auto t = [&](int64_t m) { return TensorView::make(mem.data() + 4096 * next++, DType::bf16, {1, m, 2, 64}); };
  const TensorView q = t(16), k = t(16), v = t(16), out = t(16), dq = t(16), dk = t(16), dv = t(16), grad = t(16);
  void* p = mem.data() + 4096 * next++;
  Variant bad;
  bad.mask_mod("true").capture("score", 1);
  AttentionOptions o;
  o.variant = &bad;
  bool found = false;
  const auto fr = not_supported_reasons(q, k, v, AttnBias{}, out, TensorView{}, o);
  for (const auto& r : fr) found |= r.find("variant capture 'score'") != std::string::npos;
  EXPECT_TRUE(found) << ::testing::PrintToString(fr);
  Variant no_grad;
  no_grad.score_mod("score * 2.f");
  BackwardOptions bo;
  bo.variant = &no_grad;
  const TensorView lse = TensorView::make(p, DType::f32, {1, 2, 16});
  found = false;
  const auto br = backward_not_supported_reasons(grad, out, lse, q, k, v, AttnBias{}, dq, dk, dv, {}, bo);
  for (const auto& r : br) found |= r.find("score_grad") != std::string::npos;
  EXPECT_TRUE(found) << ::testing::PrintToString(br);
}

// Every kernel family a variant reaches compiles: the forward (wgmma and mma at bf16, simt at
// f32), the backward and its deterministic dQ kernel, and decode, over kinds with and without
// their own element pass (none, causal, block-diagonal, ALiBi, tensor, paged).
TEST(Variant, KernelsCompileForEveryFamily) {
  jit::NvrtcCompiler* compiler = nvrtc_or_fail();
  if (!compiler) return;
  Variant all = document_and_softcap();
  CaptureTensor table;
  table.data = reinterpret_cast<const void*>(uintptr_t(0x2000));
  table.type = CaptureType::bf16, table.rank = 2, table.shape[0] = 4, table.shape[1] = 64, table.stride[0] = 64, table.stride[1] = 1;
  all.capture("rel", table).capture("sink", 4);
  all.mask_mod("kv_idx < sink || doc(q_idx) == doc(kv_idx)");
  all.score_mod("const float s = score + rel(h, kv_idx - q_idx + 32);\nreturn cap * tanhf(s / cap);",
                "const float t = tanhf((score + rel(h, kv_idx - q_idx + 32)) / cap);\nreturn 1.f - t * t;");
  Variant additive;
  additive.score_mod("score - slope * fabsf(float(kv_idx - q_idx))").additive_score().capture("slope", 0.5f);
  Variant window;  // a mask_mod alone over a row mask: the forward's base-only tiles (kBaseTiles)
  window.capture("w", 256).mask_mod("q_idx - kv_idx < w");
  struct Case {
    jit::Op op;
    DType dt;
    jit::BiasKind bias;
    const Variant* v;
  };
  const Case cases[] = {
      {jit::Op::fwd, DType::bf16, jit::BiasKind::none, &all},           {jit::Op::fwd, DType::bf16, jit::BiasKind::bd_causal, &all},
      {jit::Op::fwd, DType::f16, jit::BiasKind::causal_tensor, &all},   {jit::Op::fwd, DType::f32, jit::BiasKind::alibi, &all},
      {jit::Op::fwd, DType::bf16, jit::BiasKind::pbd_causal_br, &additive}, {jit::Op::bwd, DType::bf16, jit::BiasKind::causal, &all},
      {jit::Op::bwd, DType::f32, jit::BiasKind::bd, &additive},         {jit::Op::bwd_dq, DType::f16, jit::BiasKind::none, &all},
      {jit::Op::bwd_kv, DType::bf16, jit::BiasKind::local_br, &all},    {jit::Op::decode, DType::bf16, jit::BiasKind::pbd_causal_br, &all},
      {jit::Op::decode, DType::f16, jit::BiasKind::none, &additive},   {jit::Op::fwd, DType::bf16, jit::BiasKind::causal, &window},
      {jit::Op::fwd, DType::f16, jit::BiasKind::bd_causal, &window},   {jit::Op::bwd, DType::bf16, jit::BiasKind::causal, &window},
  };
  for (const Case& c : cases) {
    jit::Signature s;
    s.op = c.op, s.arch_sm = 90, s.arch_specific = 1, s.dtype = s.out_dtype = c.dt;
    s.head_dim = s.head_dim_v = 128, s.bias = c.bias, s.lse = 1, s.align = c.dt == DType::f32 ? 4 : 16;
    s.variant = c.v->code_id();
    const jit::KernelSpec spec = jit::make_spec(s);
    SCOPED_TRACE(spec.name());
    ASSERT_EQ(jit::validate_spec(spec), "");
    const std::string src = jit::generate_source(spec);
    EXPECT_NE(src.find("jitattn::UserPolicy<"), std::string::npos);
    try {
      const jit::CompiledKernel k = compiler->compile(spec, src);
      EXPECT_GT(k.cubin.size(), 1000u);
    } catch (const std::exception& e) {
      ADD_FAILURE() << e.what();
    }
  }
}

TEST(Variant, ACompileErrorIsReportedAtTheUsersLine) {
  jit::NvrtcCompiler* compiler = nvrtc_or_fail();
  if (!compiler) return;
  Variant v;
  v.mask_mod("return true;").score_mod("const float x = score;\nreturn x * undefined_thing;", "return 1.f;");
  jit::Signature s;
  s.op = jit::Op::fwd, s.arch_sm = 80, s.dtype = s.out_dtype = DType::f16, s.head_dim = s.head_dim_v = 64;
  s.variant = v.code_id();
  const jit::KernelSpec spec = jit::make_spec(s);
  std::string log;
  try {
    compiler->compile(spec, jit::generate_source(spec));
    FAIL() << "a snippet naming an undefined identifier compiled";
  } catch (const Error& e) {
    log = e.what();
  }
  const std::string user = jit::user_errors(log);
  EXPECT_NE(user.find("score_mod(2)"), std::string::npos) << log;
  EXPECT_NE(user.find("undefined_thing"), std::string::npos) << user;
  EXPECT_EQ(user.find("jitattn_variant"), std::string::npos) << user;  // nothing from the generated struct
}

// The user's lines stand for the log only when an error is among them: a warning in the snippet
// beside an error in kernel_src/ (a static_assert its capture types trip) showed only the warning.
TEST(Variant, UserLinesStandForTheLogOnlyWithAnError) {
  const std::string warning_only =
      "mask_mod(1): warning #177-D: variable \"unused\" was declared but never referenced\n"
      "  int unused = 1;\n"
      "bias_policies.cuh(410): error: static assertion failed with \"rank\"\n"
      "1 error detected in the compilation of \"fwd.cu\".\n";
  EXPECT_EQ(jit::user_errors(warning_only), "");
  const std::string with_error = warning_only + "score_mod(3): error: identifier \"nope\" is undefined\n  return nope;\n";
  const std::string user = jit::user_errors(with_error);
  EXPECT_NE(user.find("score_mod(3): error"), std::string::npos) << user;
  EXPECT_NE(user.find("mask_mod(1): warning"), std::string::npos) << user;
  EXPECT_EQ(user.find("bias_policies.cuh"), std::string::npos) << user;
}

// Expressions with a trailing // comment, a "return" inside a comment or a string or a lambda
// called in place, and statements (a return only inside braces too) all compile, and an error in an expression still points at the user's line.
TEST(Variant, SnippetFormsCompile) {
  jit::NvrtcCompiler* compiler = nvrtc_or_fail();
  if (!compiler) return;
  const char* masks[] = {"q_idx >= kv_idx // causal", "/* return early? */ q_idx >= kv_idx",
                         "bool ok = q_idx >= kv_idx;  // keep\nreturn ok;",
                         "if (q_idx < 1'000) return true;\nreturn q_idx - kv_idx < 0x1'00;",  // digit separators
                         "kv_idx <= q_idx && u8'a' == 97",
                         "[&] { const int d = q_idx - kv_idx; return d >= 0; }()",  // a lambda called in place
                         "if (q_idx >= kv_idx) { return true; } else { return false; }", "{ return q_idx >= kv_idx; }"};
  for (const char* m : masks) {
    Variant v;
    v.mask_mod(m);
    jit::Signature s;
    s.op = jit::Op::fwd, s.arch_sm = 80, s.dtype = s.out_dtype = DType::f16, s.head_dim = s.head_dim_v = 64;
    s.variant = v.code_id();
    const jit::KernelSpec spec = jit::make_spec(s);
    try {
      compiler->compile(spec, jit::generate_source(spec));
    } catch (const std::exception& e) {
      ADD_FAILURE() << m << ": " << e.what();
    }
  }
  Variant bad;
  bad.mask_mod("q_idx >=\n  nope // trailing");
  jit::Signature s;
  s.op = jit::Op::fwd, s.arch_sm = 80, s.dtype = s.out_dtype = DType::f16, s.head_dim = s.head_dim_v = 64;
  s.variant = bad.code_id();
  const jit::KernelSpec spec = jit::make_spec(s);
  try {
    compiler->compile(spec, jit::generate_source(spec));
    ADD_FAILURE() << "compiled";
  } catch (const Error& e) {
    EXPECT_NE(jit::user_errors(e.what()).find("mask_mod(2)"), std::string::npos) << e.what();
  }
}

// Statements that can end without returning compile to undefined results (NVRTC only warns, and a
// successful compile's log is dropped): an error at the user's snippet instead, forward and backward.
TEST(Variant, ASnippetThatCanEndWithoutReturningIsAnError) {
  jit::NvrtcCompiler* compiler = nvrtc_or_fail();
  if (!compiler) return;
  Variant fwd, bwd;
  fwd.mask_mod("if (q_idx >= kv_idx) return true;");
  bwd.score_mod("return 2.f * score;", "if (score > 0.f) return 2.f;");
  for (auto [v, op] : {std::pair<const Variant*, jit::Op>{&fwd, jit::Op::fwd}, {&bwd, jit::Op::bwd}}) {
    jit::Signature s;
    s.op = op, s.arch_sm = 80, s.dtype = s.out_dtype = DType::f16, s.head_dim = s.head_dim_v = 64;
    s.lse = op == jit::Op::bwd;
    s.variant = v->code_id();
    const jit::KernelSpec spec = jit::make_spec(s);
    try {
      compiler->compile(spec, jit::generate_source(spec));
      ADD_FAILURE() << jit::to_string(op) << ": a snippet that can end without returning compiled";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("missing return"), std::string::npos) << e.what();
    }
  }
}

TEST(Variant, KeywordsAndBuiltinsAreNotCaptureNames) {
  // ... nor the generated struct's members or the kernels' macros (kTensors, JITATTN_HIP broke the
  // generated code with a log that never named the capture).
  for (const char* name : {"int", "return", "this", "threadIdx", "float", "kTensors", "JITATTN_HIP", "JITATTN_CUDA", "assert"}) {
    Variant v;
    v.mask_mod("true").capture(name, 1);
    EXPECT_FALSE(v.reasons().empty()) << name;
  }
}

// A snippet that would break the function around it (an unmatched bracket, a literal or comment
// left open, a directive) is refused with its rule and line, before any compile shows generated
// code; brackets inside comments and literals, nested lambdas and #pragma are fine.
TEST(Variant, SnippetsThatBreakTheFunctionAroundThemAreRefused) {
  const std::pair<const char*, const char*> bad[] = {
      {"q_idx >= kv_idx; }\nint stolen() { return 0;", "line 1: '}' closes nothing"},
      {"(q_idx >= kv_idx", "line 1: '(' is not closed"},
      {"return q_idx >= kv_idx;\n  ]", "line 2: ']' closes nothing"},
      {"{ return (q_idx > 0 }; )", "line 1: '}' closes the '(' of line 1"},
      {"q_idx >= kv_idx /* open", "a /* comment is not closed"},
      {"kv_idx <= q_idx && '(' == 40 && \"x", "a string literal is not closed"},
      {"q_idx >= kv_idx\n#endif", "line 2: a preprocessor directive other than #pragma"},
      {"q_idx >= kv_idx && R\"(open", "a raw string literal is not closed"},
  };
  for (const auto& [code, why] : bad) {
    Variant v;
    v.mask_mod(code);
    const auto r = v.reasons();
    ASSERT_EQ(r.size(), 1u) << code;
    EXPECT_NE(r[0].find(std::string("variant mask_mod: ") + why), std::string::npos) << code << " -> " << r[0];
    Variant s;
    s.score_mod("return score;", code);
    ASSERT_EQ(s.reasons().size(), 1u) << code;
    EXPECT_NE(s.reasons()[0].find("variant score_grad: "), std::string::npos) << s.reasons()[0];
  }
  for (const char* good : {"/* ) */ q_idx >= kv_idx // (", "kv_idx <= q_idx && ')' == 41 && \"}\"[0] == '}'",
                           "[&] { int n = 0;\n#pragma unroll\n  for (int i = 0; i < 4; ++i) { n += (q_idx >> i) & 1; }\n  return n >= 0; }()",
                           "/* a comment\nover ( lines */ return q_idx >= kv_idx;",
                           "kv_idx <= q_idx && R\"x(a \" ) {\n b)x\"[0] == 'a'"}) {  // a raw string over two lines
    Variant v;
    v.mask_mod(good);
    EXPECT_TRUE(v.reasons().empty()) << good << " -> " << v.reasons()[0];
  }
}

// Threads making the first call of one Variant at once all get its one registered id.
TEST(Variant, ConcurrentFirstUseAgrees) {
  for (int round = 0; round < 20; ++round) {
    Variant v;
    v.mask_mod("q_idx + " + std::to_string(round) + " >= kv_idx");
    std::vector<uint64_t> ids(8);
    std::vector<std::thread> ts;
    for (int t = 0; t < 8; ++t) ts.emplace_back([&, t] { ids[size_t(t)] = v.code_id(); });
    for (auto& t : ts) t.join();
    for (uint64_t id : ids) EXPECT_EQ(id, ids[0]);
  }
}

}  // namespace
}  // namespace jitattn
