// kernel_src/portability.cuh's HIP branch, compiled here for the host: its arithmetic (16-bit
// conversions, the bf16 rounding it writes out, exp2, mulhi) must agree with independent host
// references, since no AMD GPU runs it (docs/amd.md). The device builtins it calls are given
// host meanings below; the shuffle and the atomic need a GPU and are not checked here.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "reference.h"

#define __HIP__ 1
#define __device__
#define __forceinline__ inline
#define __AMDGCN_WAVEFRONT_SIZE 64
namespace {
inline float __int_as_float(int x) {
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}
inline int __float_as_int(float f) {
  int x;
  std::memcpy(&x, &f, 4);
  return x;
}
inline float __shfl_xor(float x, int, int) { return x; }
inline float __shfl(float x, int, int) { return x; }
inline unsigned long long __ballot(int) { return 0; }
inline int __lane_id() { return 0; }
inline float atomicAdd(float* a, float x) {
  const float old = *a;
  *a += x;
  return old;
}
}  // namespace
#include "kernel_src/portability.cuh"
#undef __HIP__
#undef __device__
#undef __forceinline__

namespace jitattn::test {
namespace {

static_assert(JITATTN_HIP && !JITATTN_CUDA, "the HIP branch is the one under test");
static_assert(port::kWaveSize == 64 && !port::kHasAsyncCopy);

float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// bf16 round to nearest, ties to even, from the two neighbours in exact double arithmetic.
uint16_t bf16_reference(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint32_t lo = u & 0xffff0000u, hi = lo + 0x10000u;
  const double x = f, a = bits_float(lo);
  // Past the largest finite bf16 the upper neighbour is infinity, reached as if it were 2^128.
  const double b = std::isinf(bits_float(hi)) ? std::copysign(std::ldexp(1.0, 128), x) : double(bits_float(hi));
  const double da = std::fabs(x - a), db = std::fabs(x - b);
  if (u == lo || da < db || (da == db && ((lo >> 16) & 1) == 0)) return uint16_t(lo >> 16);
  return uint16_t(hi >> 16);
}

TEST(PortabilityHip, Bf16RoundsToNearestEvenAndKeepsNaN) {
  uint64_t checked = 0;
  // Every float whose low 16 bits are near the rounding boundaries, over every exponent and sign.
  for (uint32_t top = 0; top < 0x10000u; ++top)
    for (uint32_t low : {0x0000u, 0x0001u, 0x7fffu, 0x8000u, 0x8001u, 0xffffu, 0x1234u, 0xc000u}) {
      const uint32_t u = top << 16 | low;
      const float f = bits_float(u);
      const uint16_t got = port::float_to_bf16(f);
      if (std::isnan(f)) {
        ASSERT_TRUE(std::isnan(port::bf16_to_float(got))) << std::hex << u;
        ASSERT_EQ(got & 0x8000u, (u >> 16) & 0x8000u) << std::hex << u;  // the sign stays
        continue;
      }
      ASSERT_EQ(got, bf16_reference(f)) << std::hex << u;
      ++checked;
    }
  EXPECT_GT(checked, 500000u);
  EXPECT_EQ(port::float_to_bf16(std::numeric_limits<float>::infinity()), 0x7f80);
  EXPECT_EQ(port::float_to_bf16(bits_float(0x7f7fffffu)), 0x7f80);  // float's largest: past bf16's largest + half an ulp
  EXPECT_EQ(port::float_to_bf16(bits_float(0x7f7f7fffu)), 0x7f7f);  // just under that: bf16's largest
  EXPECT_EQ(port::bf16_to_float(0x3f80), 1.0f);
}

TEST(PortabilityHip, HalfConversionsMatchTheHostReference) {
  for (uint32_t h = 0; h < 0x10000u; ++h) {
    const double ref = from_bits(uint16_t(h), DType::f16);
    const float got = port::half_to_float(uint16_t(h));
    if (std::isnan(ref)) {
      ASSERT_TRUE(std::isnan(got)) << h;
      continue;
    }
    ASSERT_EQ(double(got), ref) << h;
    ASSERT_EQ(port::float_to_half(got), h) << h;  // every half round-trips
  }
  for (float f : {1e-8f, 3e-5f, 0.1f, 1.0f / 3, 65519.0f, 65520.0f, 1e5f, -2.5e-6f, 1.00048828125f, 1.00146484375f})
    EXPECT_EQ(port::float_to_half(f), to_bits(f, DType::f16)) << f;  // rounding, ties to even, overflow
}

TEST(PortabilityHip, Exp2AndMulhi) {
  EXPECT_EQ(port::exp2_approx(-std::numeric_limits<float>::infinity()), 0.0f);
  EXPECT_FLOAT_EQ(port::exp2_approx(3.0f), 8.0f);
  EXPECT_NEAR(port::exp2_approx(-0.5f), std::sqrt(0.5), 1e-6);
  for (uint64_t a : {0ull, 1ull, 0xD2511F53ull, 0xffffffffull, 0x80000000ull})
    for (uint64_t b : {0ull, 3ull, 0xCD9E8D57ull, 0xffffffffull})
      EXPECT_EQ(port::mulhi_u32(unsigned(a), unsigned(b)), unsigned(a * b >> 32)) << a << " " << b;
}

}  // namespace
}  // namespace jitattn::test
