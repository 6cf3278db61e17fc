// Device-side basics for the generated kernels: 16-bit types as raw bits, conversions,
// and thin wrappers over the PTX the kernels use (mma.sync, ldmatrix, cp.async, ex2).
// No toolkit header is included: NVRTC needs nothing but this folder. What differs under hiprtc
// goes through portability.cuh; the tensor-core and cp.async wrappers are CUDA-only.
#pragma once
#include "params.h"
#include "portability.cuh"

namespace jitattn {

enum DTypeId { kF16 = 0, kBF16 = 1, kF32 = 2 };

struct half_bits { unsigned short x; };
struct bf16_bits { unsigned short x; };

template <int DT> struct DType;
template <> struct DType<kF16>  { using T = half_bits; static constexpr int kBytes = 2; };
template <> struct DType<kBF16> { using T = bf16_bits; static constexpr int kBytes = 2; };
template <> struct DType<kF32>  { using T = float;     static constexpr int kBytes = 4; };

// ---- scalar conversions --------------------------------------------------------------------
__device__ __forceinline__ float to_float(half_bits h) { return port::half_to_float(h.x); }
__device__ __forceinline__ float to_float(bf16_bits b) { return port::bf16_to_float(b.x); }
__device__ __forceinline__ float to_float(float f) { return f; }

template <int DT> __device__ __forceinline__ typename DType<DT>::T from_float(float f);
template <> __device__ __forceinline__ half_bits from_float<kF16>(float f) { return half_bits{port::float_to_half(f)}; }
template <> __device__ __forceinline__ bf16_bits from_float<kBF16>(float f) { return bf16_bits{port::float_to_bf16(f)}; }
template <> __device__ __forceinline__ float from_float<kF32>(float f) { return f; }

// Two floats to one register of two 16-bit values; `lo` lands in the low half.
template <int DT> __device__ __forceinline__ unsigned pack2(float lo, float hi);
#if JITATTN_HIP
template <> __device__ __forceinline__ unsigned pack2<kF16>(float lo, float hi) {
  return unsigned(port::float_to_half(lo)) | unsigned(port::float_to_half(hi)) << 16;
}
template <> __device__ __forceinline__ unsigned pack2<kBF16>(float lo, float hi) {
  return unsigned(port::float_to_bf16(lo)) | unsigned(port::float_to_bf16(hi)) << 16;
}
#else
template <> __device__ __forceinline__ unsigned pack2<kF16>(float lo, float hi) {
  unsigned r;
  asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}
template <> __device__ __forceinline__ unsigned pack2<kBF16>(float lo, float hi) {
  unsigned r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}
#endif

__device__ __forceinline__ float fast_exp2(float x) { return port::exp2_approx(x); }  // ex2(-inf) = +0

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000); }

#if JITATTN_CUDA
// ---- shared memory and asynchronous copies -------------------------------------------------
__device__ __forceinline__ unsigned smem_addr(const void* p) {
  unsigned r;
  asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(r) : "l"(p));
  return r;
}

// 16-byte global→shared copy to shared address `dst`; with `valid` false the destination is
// zero-filled and `src` is not read (it must still be a valid address, so callers pass the
// tensor's base).
__device__ __forceinline__ void cp_async_16(unsigned dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" :: "r"(dst), "l"(src), "r"(valid ? 16 : 0));
}
// 4-byte variant (lse/delta rows): with `valid` false the destination is zero-filled.
__device__ __forceinline__ void cp_async_4(unsigned dst, const void* src, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" :: "r"(dst), "l"(src), "r"(valid ? 4 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
// Waits until at most kPending of the most recent commit groups are still in flight.
template <int kPending>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" :: "n"(kPending)); }

// ---- tensor-core fragments -----------------------------------------------------------------
// Shared addresses are 32-bit integers so that tile offsets fold into the instruction.
__device__ __forceinline__ void ldmatrix_x4(unsigned (&r)[4], unsigned addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(unsigned (&r)[4], unsigned addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}

// Two 8x8 matrices (lanes 0-15 give the row addresses), transposed: one B fragment.
__device__ __forceinline__ void ldmatrix_x2_trans(unsigned (&r)[2], unsigned addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(addr));
}

// d += a (16x16, row) * b (16x8, col) with fp32 accumulation.
template <int DT>
__device__ __forceinline__ void mma_16816(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1);
template <>
__device__ __forceinline__ void mma_16816<kF16>(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void mma_16816<kBF16>(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
#endif  // JITATTN_CUDA

__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, port::shfl_xor32(x, 1));
  return fmaxf(x, port::shfl_xor32(x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
  x += port::shfl_xor32(x, 1);
  return x + port::shfl_xor32(x, 2);
}

template <bool B> struct Bool { static constexpr bool value = B; };

// *addr += x in global memory, without a return value.
__device__ __forceinline__ void atomic_add_f32(float* addr, float x) { port::atomic_add_f32(addr, x); }
// Key row k_start of key/value head hk of batch row `batch` in a dK/dV accumulator
// (BwdParams::dk_accum), or null when the backward stores dK/dV directly.
__device__ __forceinline__ float* dkv_accum_rows(const BwdParams& bp, float* accum, int batch, int hk, int k_start,
                                                 int head_dim) {
  if (!accum) return nullptr;
  return accum + ((int64_t(batch) * bp.kv_heads + hk) * bp.f.mkv_rows + k_start) * head_dim;
}
// addr[0] += x, addr[1] += y (addr 8-byte aligned): one vector reduction on sm_90 and newer.
__device__ __forceinline__ void atomic_add_f32x2(float* addr, float x, float y) {
#if JITATTN_CUDA && __CUDA_ARCH__ >= 900
  asm volatile("red.global.add.v2.f32 [%0], {%1, %2};\n" :: "l"(addr), "f"(x), "f"(y) : "memory");
#else
  atomic_add_f32(addr, x);
  atomic_add_f32(addr + 1, y);
#endif
}

// ---- dropout: Philox4x32-10 (Salmon et al., SC'11), the layout of params.h ---------------------
__device__ __forceinline__ unsigned mulhi_u32(unsigned a, unsigned b) { return port::mulhi_u32(a, b); }
__device__ __forceinline__ void philox4x32_10(unsigned (&c)[4], unsigned k0, unsigned k1) {
#pragma unroll
  for (int r = 0; r < 10; ++r) {
    const unsigned hi0 = mulhi_u32(0xD2511F53u, c[0]), lo0 = 0xD2511F53u * c[0];
    const unsigned hi1 = mulhi_u32(0xCD9E8D57u, c[2]), lo1 = 0xCD9E8D57u * c[2];
    c[0] = hi1 ^ c[1] ^ k0;
    c[1] = lo1;
    c[2] = hi0 ^ c[3] ^ k1;
    c[3] = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
}

// Whether element e of the dropout index space is kept.
__device__ __forceinline__ bool dropout_keep1(const FwdParams& p, unsigned long long e) {
  const unsigned long long grp = e >> 2;
  unsigned c[4] = {unsigned(grp), unsigned(grp >> 32), unsigned(p.dropout_offset), unsigned(p.dropout_offset >> 32)};
  philox4x32_10(c, unsigned(p.dropout_seed), unsigned(p.dropout_seed >> 32));
  const int w = int(e & 3);
  return (w == 0 ? c[0] : w == 1 ? c[1] : w == 2 ? c[2] : c[3]) >= p.dropout_threshold;
}

// Whether elements e and e+1 of the dropout index space are kept (one Philox call when both
// fall in the same group of four, two otherwise).
__device__ __forceinline__ void dropout_keep2(const FwdParams& p, unsigned long long e, bool& keep0, bool& keep1) {
  auto draw = [&](unsigned long long x, unsigned (&c)[4]) {
    const unsigned long long grp = x >> 2;
    c[0] = unsigned(grp);
    c[1] = unsigned(grp >> 32);
    c[2] = unsigned(p.dropout_offset);
    c[3] = unsigned(p.dropout_offset >> 32);
    philox4x32_10(c, unsigned(p.dropout_seed), unsigned(p.dropout_seed >> 32));
  };
  unsigned c[4];
  draw(e, c);
  const int w = int(e & 3);
  keep0 = c[w] >= p.dropout_threshold;
  if (w < 3) {
    keep1 = c[w + 1] >= p.dropout_threshold;
  } else {
    draw(e + 1, c);
    keep1 = c[0] >= p.dropout_threshold;
  }
}

constexpr int round_up(int x, int m) { return (x + m - 1) / m * m; }
constexpr int ceil_div(int x, int m) { return (x + m - 1) / m; }
__device__ __forceinline__ int imin(int a, int b) { return a < b ? a : b; }
__device__ __forceinline__ int imax(int a, int b) { return a > b ? a : b; }

// The (query block, head, batch) of this block in a 1-D grid of ceil(Mq / block_m) * H * B
// blocks. (head, batch) pairs are taken in chunks of p.pairs_per_chunk, about one wave of blocks,
// so that the blocks running together share their keys and values in L2; within a chunk the
// last query blocks come first: under a causal mask they have the most keys, and starting the
// longest work first keeps the tail short.
// block_coords_of decodes any such index (a persistent block's work items, fwd_tma.cuh).
__device__ __forceinline__ void block_coords_of(const FwdParams& p, int block_m, int id, int& m_block, int& h, int& b) {
  const int pairs = p.heads * p.batch;
  const int m_blocks = (p.mq + block_m - 1) / block_m;
  const int chunk = id / (p.pairs_per_chunk * m_blocks), r = id % (p.pairs_per_chunk * m_blocks);
  const int g = imin(p.pairs_per_chunk, pairs - chunk * p.pairs_per_chunk);  // pairs in this chunk
  m_block = m_blocks - 1 - r / g;
  const int pair = chunk * p.pairs_per_chunk + r % g;
  h = pair % p.heads;
  b = pair / p.heads;
}
__device__ __forceinline__ void block_coords(const FwdParams& p, int block_m, int& m_block, int& h, int& b) {
  block_coords_of(p, block_m, int(blockIdx.x), m_block, h, b);
}

}  // namespace jitattn
