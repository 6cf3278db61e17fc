// SwiGLU's gate on the CPU: both kernels compile through NVRTC for every dtype, and bad tensors
// get reasons that name the argument and the rule. GPU results: swiglu_gpu_test.cpp.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "jit/codegen.h"
#include "jit/nvrtc_compiler.h"
#include "jit/signature.h"
#include "jitattn/swiglu.h"

namespace jitattn {
namespace {

TEST(SwigluCompile, BothKernelsForEveryDtype) {
  jit::NvrtcCompiler* compiler = nullptr;
  try {
    compiler = &jit::NvrtcCompiler::get();
  } catch (const std::exception& e) {
    FAIL() << "NVRTC is required for this test: " << e.what();
  }
  for (jit::Op op : {jit::Op::swiglu_fwd, jit::Op::swiglu_bwd})
    for (DType dt : {DType::f16, DType::bf16, DType::f32}) {
      jit::Signature s;
      s.op = op, s.dtype = s.out_dtype = dt, s.head_dim = s.head_dim_v = 8, s.arch_sm = 90, s.arch_specific = 1;
      const jit::KernelSpec spec = jit::make_spec(s);
      SCOPED_TRACE(spec.name());
      ASSERT_EQ(jit::validate_spec(spec), "");
      EXPECT_EQ(jit::KernelSpec::parse(spec.name())->name(), spec.name());
      try {
        EXPECT_GT(compiler->compile(spec, jit::generate_source(spec)).cubin.size(), 1000u);
      } catch (const std::exception& e) {
        ADD_FAILURE() << e.what();
      }
    }
}

bool mentions(const std::vector<std::string>& r, const std::string& s) {
  for (const auto& x : r)
    if (x.find(s) != std::string::npos) return true;
  return false;
}

TEST(SwigluValidation, ReasonsNameTheArgumentAndTheRule) {
  std::vector<char> mem(1 << 20);
  auto t = [&](size_t at, DType dt, std::initializer_list<int64_t> shape) { return TensorView::make(mem.data() + at, dt, shape); };
  const TensorView x = t(0, DType::bf16, {16, 64}), h = t(1 << 16, DType::bf16, {16, 32});
  EXPECT_TRUE(swiglu_gate_not_supported_reasons(x, h).empty());
  EXPECT_TRUE(mentions(swiglu_gate_not_supported_reasons(t(0, DType::bf16, {16, 63}), h), "x12.shape[1]=63 must be even"));
  EXPECT_TRUE(mentions(swiglu_gate_not_supported_reasons(x, t(1 << 16, DType::bf16, {16, 64})), "h.shape=[16, 64] must be"));
  EXPECT_TRUE(mentions(swiglu_gate_not_supported_reasons(x, t(1 << 16, DType::f16, {16, 32})), "h.dtype must equal x12.dtype"));
  EXPECT_TRUE(mentions(swiglu_gate_not_supported_reasons(x, t(16, DType::bf16, {16, 32})), "h overlaps x12"));
  EXPECT_TRUE(mentions(swiglu_gate_not_supported_reasons(t(0, DType::bf16, {2, 16, 64}), h), "x12 must be 2-D"));
  TensorView strided = x;
  strided.stride[1] = 2;
  EXPECT_TRUE(mentions(swiglu_gate_not_supported_reasons(strided, h), "x12.stride[-1]=2 must be 1"));
  const TensorView dh = t(1 << 16, DType::bf16, {16, 32}), dx = t(1 << 17, DType::bf16, {16, 64});
  EXPECT_TRUE(swiglu_gate_not_supported_reasons(x, dh, dx).empty());
  EXPECT_TRUE(mentions(swiglu_gate_not_supported_reasons(x, dh, t(1 << 17, DType::bf16, {16, 32})), "dx12.shape=[16, 32] must equal"));
  EXPECT_TRUE(mentions(swiglu_gate_not_supported_reasons(x, dh, t(8, DType::bf16, {16, 64})), "dx12 overlaps x12"));
}

}  // namespace
}  // namespace jitattn
