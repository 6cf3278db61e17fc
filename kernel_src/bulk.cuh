// Hopper's bulk copies (cp.async.bulk, sm_90+) and the shared-memory barriers (mbarrier) that
// count their bytes.
//
// A bulk copy moves a contiguous run of global memory (a multiple of 16 bytes, both ends 16-byte
// aligned) into shared memory without a register or a thread per 16 bytes: the copy engine
// writes it and, when done, subtracts its size from the transaction count of an mbarrier. A
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

// An L2 policy for data read once: evicted first, so the stream does not push out what others reuse.
__device__ __forceinline__ unsigned long long l2_evict_first() {
  unsigned long long policy;
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(policy));
  return policy;
}

// `bytes` (a multiple of 16) from global `src` to shared `dst` (both 16-byte aligned), counted
// on barrier `bar`.
__device__ __forceinline__ void bulk_copy_g2s(unsigned dst, const void* src, unsigned bytes, unsigned bar,
                                              unsigned long long policy) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1], %2, [%3], %4;\n" ::"r"(dst),
      "l"(src), "r"(bytes), "r"(bar), "l"(policy)
      : "memory");
}
#else  // no bulk copies before sm_90 (nor on AMD): kernels test their Cfg and never call these
__device__ __forceinline__ void fence_proxy_async() {}
__device__ __forceinline__ void mbar_init(unsigned, unsigned) {}
__device__ __forceinline__ void mbar_arrive_expect_tx(unsigned, unsigned) {}
__device__ __forceinline__ void mbar_wait(unsigned, unsigned) {}
__device__ __forceinline__ unsigned long long l2_evict_first() { return 0; }
__device__ __forceinline__ void bulk_copy_g2s(unsigned, const void*, unsigned, unsigned, unsigned long long) {}
#endif

}  // namespace jitattn
