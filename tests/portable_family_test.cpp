// JITATTN_FAMILY=portable on NVIDIA: every attention kernel of every dtype is the portable family
// (the source hiprtc compiles for AMD), and few-query forwards stay off the CUDA-only decode
// kernels. Runs as the ctest entry portable_family_selected (tests/CMakeLists.txt), which sets the
// variable; in a process without it these skip.
#include <gtest/gtest.h>

#include "jit/env.h"
#include "jit/ops/decode.h"
#include "jit/signature.h"

namespace jitattn::jit {
namespace {

TEST(PortableFamily, EveryAttentionKernelIsPortableOnNvidia) {
  if (!Env::get().portable) GTEST_SKIP() << "JITATTN_FAMILY=portable is not set (ctest portable_family_selected sets it)";
  for (const char* arch : {"sm_80", "sm_90a"})
    for (DType dt : {DType::f16, DType::bf16, DType::f32})
      for (Op op : {Op::fwd, Op::bwd, Op::bwd_kv, Op::bwd_dq, Op::bwd_pre, Op::bwd_post, Op::merge})
        for (int d : {64, 128, 256}) {
          Signature s;
          s.set_arch(*Arch::parse(arch));
          s.op = op;
          s.dtype = s.out_dtype = dt;
          s.head_dim = s.head_dim_v = uint16_t(d);
          s.bias = uses_bias(op) ? BiasKind::causal : BiasKind::none;
          s.align = uint8_t(dt == DType::f32 ? 4 : 16);
          const KernelSpec spec = make_spec(s);
          EXPECT_EQ(spec.family, Family::simt) << spec.name();
          EXPECT_EQ(validate_spec(spec), "") << spec.name();
        }
  ops::ForwardPlan p;  // one query per sequence: the decode kernels' case
  p.q.b = 4, p.q.m = 1, p.q.h = 8, p.q.d = 128;
  p.k = p.v = p.o = p.q;
  p.k.m = p.v.m = 4096;
  p.dtype = p.out_dtype = DType::bf16;
  EXPECT_FALSE(ops::decode_applies(p));
}

}  // namespace
}  // namespace jitattn::jit
