// Hopper warpgroup MMA (wgmma.mma_async, sm_90a only) and the shared-memory layout it reads.
//
// A warpgroup is 4 consecutive warps (128 threads). wgmma.m64nNk16 multiplies a 64x16 A by a
// 16xN B into a 64xN fp32 accumulator spread over the warpgroup: warp w holds rows 16w..16w+15
// in exactly the layout of mma.sync.m16n8k16's C fragment, repeated over N/8 column tiles, so
// d[nt][e] is row 16w + lane/4 + 8·(e/2), column 8·nt + 2·(lane%4) + e%2. An A operand held in
// registers has the m16n8k16 A-fragment layout per warp, so a softmax result converts to it in
// place, as in fwd_mma.cuh.
//
// Operands in shared memory are named by 64-bit descriptors (PTX ISA, "Matrix Descriptor
// Format"): start address, leading and stride byte offsets (all >> 4) and the swizzle mode.
// Every tile here uses the 128-byte swizzle: a matrix with 16-bit elements is stored as panels of
// 64 columns; in a panel, row r is 128 contiguous bytes at r·128, and its 16-byte chunk c sits at
// chunk position c ^ (r % 8). Panels start on 1024-byte boundaries. Then
//   K-major operand (the reduction dimension is the contiguous one: Q and K in S = Q·Kᵀ):
//     stride byte offset 1024 (from one 8-row group to the next); the leading offset is unused;
//     the k-th 16-column step starts 32·k bytes into the panel;
//   MN-major operand (V in O = P·V, rows = keys = the reduction dimension, read transposed):
//     stride byte offset 1024 (8 keys), leading byte offset = the panel size (the next 64
//     columns of N); the k-th 16-key step starts 2048·k bytes in.
#pragma once
#include "bulk.cuh"
#include "common.cuh"

namespace jitattn {

__device__ __forceinline__ unsigned long long wgmma_desc(unsigned smem, unsigned leading_bytes, unsigned stride_bytes) {
  return (unsigned long long)((smem & 0x3FFFF) >> 4) | ((unsigned long long)(leading_bytes >> 4) << 16) |
         ((unsigned long long)(stride_bytes >> 4) << 32) | (1ull << 62);  // 1 << 62: 128-byte swizzle
}

// Byte offset of 16-byte chunk `chunk` of row `row` in a swizzled tile of `rows` rows.
__device__ __forceinline__ unsigned sw128_offset(int rows, int row, int chunk) {
  return unsigned((chunk / 8) * rows * 128 + row * 128 + (((chunk % 8) ^ (row % 8)) << 4));
}

// Rows [row0, row0 + kRows) × kCols columns (a multiple of 64) into the swizzled layout of
// wgmma.cuh at shared address `base`, by kThreads threads of which this is number `tid`; rows
// ≥ `rows` are zero (0·NaN would poison the sums).
template <int kRows, int kCols, int kThreads, class RowsAt>
__device__ __forceinline__ void load_tile_sw128(unsigned base, const RowsAt& rows_at, int row0, int rows, int tid) {
  constexpr int kChunksPerRow = kCols / 8;
  constexpr int kChunks = kRows * kChunksPerRow;
  constexpr int kSteps = ceil_div(kChunks, kThreads);
  // A thread keeps one 16-byte column and steps down the rows; when the step is a multiple of 8
  // rows its swizzle is fixed, and for a strided matrix its source moves by a constant.
  constexpr int kRowStep = kThreads / kChunksPerRow;
  constexpr bool kFixedColumn =
      kThreads % kChunksPerRow == 0 && kRowStep % 8 == 0 && kRows % kRowStep == 0;
  auto copy = [&](int k) {
    if constexpr (kFixedColumn && !RowsAt::kPaged) {
      const int r = tid / kChunksPerRow + k * kRowStep, chunk = tid % kChunksPerRow;
      const bool valid = row0 + r < rows;
      const auto* src = valid ? rows_at.base + (int64_t(row0 + r) * rows_at.ld + chunk * 8) : rows_at.base;
      cp_async_16(base + sw128_offset(kRows, tid / kChunksPerRow, chunk) + k * kRowStep * 128, src, valid);
    } else {
      const int c = tid + k * kThreads;
      if (kChunks % kThreads != 0 && c >= kChunks) return;
      const int r = c / kChunksPerRow, chunk = c % kChunksPerRow;
      const bool valid = row0 + r < rows;
      const auto* src = valid ? rows_at(row0 + r) + chunk * 8 : rows_at.base;  // not read when invalid
      cp_async_16(base + sw128_offset(kRows, r, chunk), src, valid);
    }
  };
#pragma unroll
  for (int k = 0; k < kSteps; ++k) copy(k);
}

// fence_proxy_async() (bulk.cuh) orders this thread's earlier generic-proxy shared-memory writes
// (cp.async included) before later async-proxy reads (wgmma operands); a barrier must follow
// before other threads' wgmma.
// Before the first wgmma of a batch: prior register writes to accumulators/A are complete.
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int kPending>
__device__ __forceinline__ void wgmma_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;\n" :: "n"(kPending) : "memory"); }

// x, which the compiler may no longer treat as known: a tile's base address passed through it
// at each use keeps the descriptors built from it (64-bit each, one per wgmma) from being hoisted
// out of the loop, where they would hold registers the accumulators need.
__device__ __forceinline__ unsigned opaque(unsigned x) {
  asm volatile("" : "+r"(x));
  return x;
}

// Pins an accumulator after wgmma_wait: the compiler may not move its reads above the wait.
template <int kNT>
__device__ __forceinline__ void wgmma_hold(float (&d)[kNT][4]) {
#pragma unroll
  for (int i = 0; i < kNT; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) asm volatile("" : "+f"(d[i][e])::"memory");
}

// The same for an A operand in registers: wgmma reads it asynchronously, so its registers must
// stay untouched (and not be reused) until the wait.
template <int kN>
__device__ __forceinline__ void wgmma_hold(unsigned (&a)[kN][4]) {
#pragma unroll
  for (int i = 0; i < kN; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) asm volatile("" : "+r"(a[i][e])::"memory");
}

// d (64xN) = A·B (+ d when accumulate != 0); A and B K-major in shared memory.
template <int N, int DT>
__device__ __forceinline__ void wgmma_ss(float (&d)[N / 8][4], unsigned long long a, unsigned long long b, int accumulate);
// d (64xN) = A·B (+ d when accumulate != 0); A and B MN-major in shared memory (both read
// transposed: dQ = dS·K from dSᵀ and K as stored, bwd_wgmma.cuh).
template <int N, int DT>
__device__ __forceinline__ void wgmma_ss_tt(float (&d)[N / 8][4], unsigned long long a, unsigned long long b, int accumulate);
// d (64xN) += A·B, A K-major and B MN-major in shared memory (dK += dSᵀ·Q from dSᵀ as stored,
// bwd_wgmma.cuh).
template <int N, int DT>
__device__ __forceinline__ void wgmma_ss_tb(float (&d)[N / 8][4], unsigned long long a, unsigned long long b);
// d (64xN) += A·B, A in registers (m16n8k16 A fragments), B MN-major in shared memory.
template <int N, int DT>
__device__ __forceinline__ void wgmma_rs_tb(float (&d)[N / 8][4], const unsigned (&a)[4], unsigned long long b);

#define JITATTN_WG_D1(i) "+f"(d[i][0]), "+f"(d[i][1]), "+f"(d[i][2]), "+f"(d[i][3])
#define JITATTN_WG_D8(i)                                                                                        \
  JITATTN_WG_D1(i), JITATTN_WG_D1(i + 1), JITATTN_WG_D1(i + 2), JITATTN_WG_D1(i + 3), JITATTN_WG_D1(i + 4), \
      JITATTN_WG_D1(i + 5), JITATTN_WG_D1(i + 6), JITATTN_WG_D1(i + 7)
#define JITATTN_WG_OUT32 JITATTN_WG_D1(0), JITATTN_WG_D1(1), JITATTN_WG_D1(2), JITATTN_WG_D1(3)
#define JITATTN_WG_OUT64 JITATTN_WG_D8(0)
#define JITATTN_WG_OUT128 JITATTN_WG_D8(0), JITATTN_WG_D8(8)
#define JITATTN_WG_OUT192 JITATTN_WG_D8(0), JITATTN_WG_D8(8), JITATTN_WG_D8(16)
#define JITATTN_WG_OUT256 JITATTN_WG_D8(0), JITATTN_WG_D8(8), JITATTN_WG_D8(16), JITATTN_WG_D8(24)
#define JITATTN_WG_R32 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}"
#define JITATTN_WG_R64                                                                                          \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, " \
  "%23, %24, %25, %26, %27, %28, %29, %30, %31}"
#define JITATTN_WG_R128                                                                                         \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, " \
  "%23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, "  \
  "%44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}"

#define JITATTN_WG_R192                                                                                         \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, " \
  "%22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, " \
  "%44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, " \
  "%66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, " \
  "%88, %89, %90, %91, %92, %93, %94, %95}"
#define JITATTN_WG_R256                                                                                         \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, " \
  "%22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, " \
  "%44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, " \
  "%66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, " \
  "%88, %89, %90, %91, %92, %93, %94, %95, %96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, " \
  "%110, %111, %112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}"

// N: 32 (dQ pieces of bwd_wgmma.cuh), 64, 128, 192 or 256; DT/TY: the input type; the rest: operand numbers after the N/2 accumulators.
#define JITATTN_WGMMA(N, DT, TY, SA, SB, SACC, RA0, RA1, RA2, RA3, RB, RONE)                                  \
  template <>                                                                                                   \
  __device__ __forceinline__ void wgmma_ss<N, DT>(float (&d)[N / 8][4], unsigned long long a, unsigned long long b, \
                                                  int accumulate) {                                             \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %" SACC ", 0;\n"                                            \
                 "wgmma.mma_async.sync.aligned.m64n" #N "k16.f32." TY "." TY " " JITATTN_WG_R##N ", %" SA      \
                 ", %" SB ", p, 1, 1, 0, 0;\n}\n"                                                              \
                 : JITATTN_WG_OUT##N                                                                            \
                 : "l"(a), "l"(b), "r"(accumulate));                                                            \
  }                                                                                                             \
  template <>                                                                                                   \
  __device__ __forceinline__ void wgmma_ss_tt<N, DT>(float (&d)[N / 8][4], unsigned long long a,                \
                                                     unsigned long long b, int accumulate) {                    \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %" SACC ", 0;\n"                                            \
                 "wgmma.mma_async.sync.aligned.m64n" #N "k16.f32." TY "." TY " " JITATTN_WG_R##N ", %" SA      \
                 ", %" SB ", p, 1, 1, 1, 1;\n}\n"                                                              \
                 : JITATTN_WG_OUT##N                                                                            \
                 : "l"(a), "l"(b), "r"(accumulate));                                                            \
  }                                                                                                             \
  template <>                                                                                                   \
  __device__ __forceinline__ void wgmma_ss_tb<N, DT>(float (&d)[N / 8][4], unsigned long long a,                \
                                                     unsigned long long b) {                                    \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %" SACC ", 0;\n"                                            \
                 "wgmma.mma_async.sync.aligned.m64n" #N "k16.f32." TY "." TY " " JITATTN_WG_R##N ", %" SA      \
                 ", %" SB ", p, 1, 1, 0, 1;\n}\n"                                                              \
                 : JITATTN_WG_OUT##N                                                                            \
                 : "l"(a), "l"(b), "r"(1));                                                                     \
  }                                                                                                             \
  template <>                                                                                                   \
  __device__ __forceinline__ void wgmma_rs_tb<N, DT>(float (&d)[N / 8][4], const unsigned (&a)[4],            \
                                                     unsigned long long b) {                                    \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %" RONE ", 0;\n"                                            \
                 "wgmma.mma_async.sync.aligned.m64n" #N "k16.f32." TY "." TY " " JITATTN_WG_R##N ", {%" RA0   \
                 ", %" RA1 ", %" RA2 ", %" RA3 "}, %" RB ", p, 1, 1, 1;\n}\n"                                  \
                 : JITATTN_WG_OUT##N                                                                            \
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1));                                \
  }
JITATTN_WGMMA(32, kF16, "f16", "16", "17", "18", "16", "17", "18", "19", "20", "21")
JITATTN_WGMMA(32, kBF16, "bf16", "16", "17", "18", "16", "17", "18", "19", "20", "21")
JITATTN_WGMMA(64, kF16, "f16", "32", "33", "34", "32", "33", "34", "35", "36", "37")
JITATTN_WGMMA(64, kBF16, "bf16", "32", "33", "34", "32", "33", "34", "35", "36", "37")
JITATTN_WGMMA(128, kF16, "f16", "64", "65", "66", "64", "65", "66", "67", "68", "69")
JITATTN_WGMMA(128, kBF16, "bf16", "64", "65", "66", "64", "65", "66", "67", "68", "69")
JITATTN_WGMMA(192, kF16, "f16", "96", "97", "98", "96", "97", "98", "99", "100", "101")
JITATTN_WGMMA(192, kBF16, "bf16", "96", "97", "98", "96", "97", "98", "99", "100", "101")
JITATTN_WGMMA(256, kF16, "f16", "128", "129", "130", "128", "129", "130", "131", "132", "133")
JITATTN_WGMMA(256, kBF16, "bf16", "128", "129", "130", "128", "129", "130", "131", "132", "133")
#undef JITATTN_WGMMA

}  // namespace jitattn
