// Per-stream scratch for kernels that need device memory beyond their arguments: the decode
// kernel's split rows and counters (jit/ops/decode.cpp), the tma forward's work counter
// (jit/ops/forward.cpp).
#pragma once

#include <cstddef>
#include <cstdint>

#include "jit/cuda_driver.h"
#include "jit/jit_runtime.h"

namespace jitattn::jit::ops {

// Float rows and int32 counters. The counters are zero between launches (each kernel that uses
// them leaves them so), which lets a stream keep one scratch for all its calls, whatever kernel
// they launch (a stream's launches run one after the other): it grows with the calls and is never
// freed, except stream-ordered when replaced by a larger one. A stream being captured into a CUDA
// graph gets scratch owned by the graph instead (allocated, zeroed and freed by graph nodes), so
// graphs replayed on several streams at once never share it.
struct ScratchBuffers {
  float* partial = nullptr;  // null when no float bytes were asked for
  int32_t* counters = nullptr;
};

// Buffers of at least the given sizes (counter_bytes > 0) for kernels queued on `stream` now.
// When `captured` comes back true, release_scratch must run after the launch (it frees what the
// capture allocated).
ScratchBuffers stream_scratch(const ContextInfo& ctx, CUstream stream, size_t partial_bytes, size_t counter_bytes,
                              bool& captured);
void release_scratch(const ScratchBuffers& b, CUstream stream);

}  // namespace jitattn::jit::ops
