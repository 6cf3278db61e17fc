// What differs between the two compilers of kernel_src/ (docs/design.md decision 23): NVRTC for
// NVIDIA and hiprtc for AMD. The portable family (fwd_simt.cuh, bwd_simt.cuh, bwd_rows.cuh,
// merge.cuh, the policies of bias_policies.cuh) reaches the hardware only through this file and
// the plain C++ both compilers share (threadIdx, __syncthreads, fmaf, exp2f, float4, __shared__).
//
// Threads are counted in groups of 32 ("warps", Cfg::kWarps) on both backends; the kernels that
// exchange values between lanes do it inside a group of 32 (shfl_xor32), which is a whole warp on
// NVIDIA, half a wave64 on CDNA and a whole wave32 on RDNA. kWaveSize is the hardware's width, for
// kernels that are written for it (fwd_mfma.cuh: one wave64 per 16 query rows).
//
// No toolkit header on either side: hiprtc provides the HIP device builtins and the fixed-width
// integer types itself.
#pragma once

#if defined(__HIPCC_RTC__) || defined(__HIP__)
#define JITATTN_HIP 1
#define JITATTN_CUDA 0
#else
#define JITATTN_HIP 0
#define JITATTN_CUDA 1
#endif

#if JITATTN_HIP
#define JITATTN_GRID_CONSTANT  // HIP passes kernel arguments in a constant segment already
#else
#define JITATTN_GRID_CONSTANT __grid_constant__
#endif

namespace jitattn {
namespace port {

#if JITATTN_HIP
constexpr int kWaveSize = __AMDGCN_WAVEFRONT_SIZE;  // 64 on CDNA (gfx9), 32 on RDNA (gfx10+, wave32)
#else
constexpr int kWaveSize = 32;
#endif
constexpr int kGroup = 32;  // the lanes shfl_xor32 exchanges between
// Asynchronous global→shared copies (cp.async, sm_80+). AMD's targets here have none: the
// kernels that use them (the mma and wgmma families, decode) are CUDA-only.
constexpr bool kHasAsyncCopy = JITATTN_CUDA;

// ---- 16-bit floats as raw bits ----------------------------------------------------------------
__device__ __forceinline__ float half_to_float(unsigned short h) {
#if JITATTN_HIP
  return float(__builtin_bit_cast(_Float16, h));
#else
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
  return f;
#endif
}
__device__ __forceinline__ unsigned short float_to_half(float f) {  // round to nearest even
#if JITATTN_HIP
  return __builtin_bit_cast(unsigned short, _Float16(f));
#else
  unsigned short h;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
  return h;
#endif
}
__device__ __forceinline__ float bf16_to_float(unsigned short b) { return __int_as_float(int(b) << 16); }
__device__ __forceinline__ unsigned short float_to_bf16(float f) {  // round to nearest even
#if JITATTN_HIP
  const unsigned u = unsigned(__float_as_int(f));
  if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);  // NaN stays a (quiet) NaN
  return (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
#else
  unsigned short b;
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(b) : "f"(f));
  return b;
#endif
}

// ---- arithmetic --------------------------------------------------------------------------------
__device__ __forceinline__ float exp2_approx(float x) {  // exp2_approx(-inf) = +0
#if JITATTN_HIP
  return __builtin_exp2f(x);
#else
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
#endif
}
__device__ __forceinline__ unsigned mulhi_u32(unsigned a, unsigned b) {
#if JITATTN_HIP
  return unsigned((unsigned long long)a * b >> 32);
#else
  unsigned r;
  asm("mul.hi.u32 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
  return r;
#endif
}

// ---- lanes and memory ----------------------------------------------------------------------------
// x of the lane whose index in its group of 32 is this lane's xor `mask` (every lane of the group
// takes part). T: int, unsigned or float.
template <class T>
__device__ __forceinline__ T shfl_xor32(T x, int mask) {
#if JITATTN_HIP
  return __shfl_xor(x, mask, kGroup);
#else
  return __shfl_xor_sync(0xffffffffu, x, mask);
#endif
}
// x of lane `src` of this lane's group of 32 (every lane of the group takes part).
template <class T>
__device__ __forceinline__ T shfl32(T x, int src) {
#if JITATTN_HIP
  return __shfl(x, src, kGroup);
#else
  return __shfl_sync(0xffffffffu, x, src);
#endif
}
// Bit l set iff `pred` holds on lane l of this lane's group of 32 (every lane takes part). On a
// wave64 the group is the half of the wave's 64-bit ballot this lane is in.
__device__ __forceinline__ unsigned ballot32(bool pred) {
#if JITATTN_HIP
  return unsigned(__ballot(pred) >> (__lane_id() & ~(kGroup - 1)));
#else
  return __ballot_sync(0xffffffffu, pred);
#endif
}
// *addr += x in global memory, the old value unused.
__device__ __forceinline__ void atomic_add_f32(float* addr, float x) {
#if JITATTN_HIP
  atomicAdd(addr, x);
#else
  asm volatile("red.global.add.f32 [%0], %1;\n" :: "l"(addr), "f"(x) : "memory");
#endif
}

}  // namespace port
}  // namespace jitattn
