// Kernel arguments of SwiGLU's gate (swiglu.cuh), shared byte for byte by the host
// (jit/ops/swiglu.cpp) and the generated kernels. Strides in elements; the last stride is 1.
#pragma once
#if defined(__CUDACC_RTC__) || defined(__HIPCC_RTC__)  // hiprtc: its own int64_t, not <cstdint>'s
typedef long long int64_t;
#else
#include <cstdint>
#endif

namespace jitattn {

struct SwigluParams {
  const void* x12;  // [rows, 2H] through x_stride: x1 in columns [0, H), x2 in [H, 2H)
  const void* dh;   // [rows, H] (backward)
  void* h;          // [rows, H] (forward)
  void* dx12;       // [rows, 2H] (backward)
  int64_t rows, cols;  // cols = H
  int64_t x_stride, dh_stride, h_stride, dx_stride;
};

}  // namespace jitattn
