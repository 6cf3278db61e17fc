// Hopper's tensor-memory-access copies (cp.async.bulk.tensor, sm_90+) and the shared-memory
// barriers (mbarrier) that count their bytes.
//
// One instruction moves a box of a tensor (described by a tensor map the host encoded) into
// shared memory, optionally swizzled: the copy engine writes it without a register or a thread per
// 16 bytes and, when done, subtracts its size from the transaction count of an mbarrier. A
// consumer waits for a barrier's phase: it completes when its expected arrivals have arrived and
// the bytes announced with them (expect_tx) have all landed. Phases alternate, so a consumer of
// the k-th use of a barrier waits for parity k % 2.
//
// The copies run in the async proxy: shared memory a thread wrote or read with ordinary
// instructions is handed to a later bulk copy (or wgmma) only after fence_proxy_async() and a
// barrier between the threads.
#pragma once
#include "common.cuh"

namespace jitattn {

#if JITATTN_CUDA && __CUDA_ARCH__ >= 900
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

// Thread 0 initializes; a __syncthreads() must follow before any thread or copy uses the barrier.
__device__ __forceinline__ void mbar_init(unsigned bar, unsigned arrivals) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(arrivals) : "memory");
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  fence_proxy_async();
}

// One arrival that also announces `bytes` more to land in this phase.
__device__ __forceinline__ void mbar_arrive_expect_tx(unsigned bar, unsigned bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}

// One arrival, announcing no bytes (a consumer handing a stage back, or a phase whose data
// threads wrote themselves: fence_proxy_async() first).
__device__ __forceinline__ void mbar_arrive(unsigned bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}

// Returns once the barrier's phase of this parity has completed.
__device__ __forceinline__ void mbar_wait(unsigned bar, unsigned parity) {
  asm volatile(
      "{\n"
      ".reg .pred done;\n"
      "wait_%=:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra wait_%=;\n"
      "}\n" ::"r"(bar), "r"(parity) : "memory");
}

// A box of a tensor map (a CUtensorMap the host encoded, 64-byte aligned, e.g. in the kernel's
// __grid_constant__ parameters) at coordinates {c0..c3} (innermost first) into shared `dst`,
// counted on barrier `bar`. Coordinates past the tensor's ends read as zeros (and count).
__device__ __forceinline__ void tma_load_4d(unsigned dst, const void* map, int c0, int c1, int c2, int c3, unsigned bar) {
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4, %5}], [%6];\n" ::"r"(dst),
      "l"(map), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(bar)
      : "memory");
}

// The box of a 2-D tensor map at {c0, c1} (innermost first) += the box at shared `src` (laid out as
// the map's swizzle says), added by the copy engine in this thread's current bulk group. Rows
// past the tensor's end are left out.
__device__ __forceinline__ void tma_reduce_add_2d(const void* map, unsigned src, int c0, int c1) {
  asm volatile("cp.reduce.async.bulk.tensor.2d.global.shared::cta.add.tile.bulk_group [%0, {%1, %2}], [%3];\n" ::"l"(map),
               "r"(c0), "r"(c1), "r"(src)
               : "memory");
}
__device__ __forceinline__ void bulk_commit() { asm volatile("cp.async.bulk.commit_group;\n" ::: "memory"); }
// Returns once this thread's bulk groups but the last kPending have read their shared memory
// (kRead) or are complete.
template <int kPending, bool kRead>
__device__ __forceinline__ void bulk_wait() {
  if constexpr (kRead) asm volatile("cp.async.bulk.wait_group.read %0;\n" ::"n"(kPending) : "memory");
  else asm volatile("cp.async.bulk.wait_group %0;\n" ::"n"(kPending) : "memory");
}
// Waits at named barrier `id` (1..15; 0 is __syncthreads') until n threads of the block (n a
// multiple of 32, counted by warps) have arrived there; threads that never reach it do not count.
__device__ __forceinline__ void named_barrier_sync(unsigned id, unsigned n) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(n) : "memory");
}
// The warpgroup's registers per thread become kRegs (a multiple of 8 in 24..256): a producer
// warpgroup gives registers back, the warpgroups that multiply take them (the block's total must
// stay within the register file; the kernel needs __launch_bounds__(threads, 1)). Every thread of
// the warpgroup executes it.
template <int kRegs>
__device__ __forceinline__ void setmaxnreg_dec() { asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kRegs)); }
template <int kRegs>
__device__ __forceinline__ void setmaxnreg_inc() { asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kRegs)); }
// Arrives at named barrier `id` for a count of n without waiting (the other side syncs).
__device__ __forceinline__ void named_barrier_arrive(unsigned id, unsigned n) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(n) : "memory");
}
#else  // no bulk copies before sm_90 (nor on AMD): kernels test their Cfg and never call these
__device__ __forceinline__ void fence_proxy_async() {}
__device__ __forceinline__ void mbar_init(unsigned, unsigned) {}
__device__ __forceinline__ void mbar_arrive_expect_tx(unsigned, unsigned) {}
__device__ __forceinline__ void mbar_arrive(unsigned) {}
__device__ __forceinline__ void mbar_wait(unsigned, unsigned) {}
template <int kRegs>
__device__ __forceinline__ void setmaxnreg_dec() {}
template <int kRegs>
__device__ __forceinline__ void setmaxnreg_inc() {}
__device__ __forceinline__ void tma_load_4d(unsigned, const void*, int, int, int, int, unsigned) {}
__device__ __forceinline__ void tma_reduce_add_2d(const void*, unsigned, int, int) {}
__device__ __forceinline__ void bulk_commit() {}
template <int kPending, bool kRead>
__device__ __forceinline__ void bulk_wait() {}
__device__ __forceinline__ void named_barrier_sync(unsigned, unsigned) {}
__device__ __forceinline__ void named_barrier_arrive(unsigned, unsigned) {}
#endif

}  // namespace jitattn
