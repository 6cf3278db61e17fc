// SwiGLU gate entry points: validate (every reason, as the attention calls), then run the op
// (jit/ops/swiglu.cpp).
#include "jitattn/swiglu.h"

#include "jit/ops/swiglu.h"
#include "jitattn/error.h"
#include "layout.h"

namespace jitattn {

namespace {

void check_2d(const TensorView& t, const char* name, std::vector<std::string>& R) {
  if (!t.defined() && t.ndim == 0) {
    R.push_back(std::string(name) + " is undefined");
    return;
  }
  if (t.ndim != 2) {
    R.push_back(std::string(name) + " must be 2-D [N, columns], got " + t.shape_string());
    return;
  }
  detail::check_layout(t, name, R);
  if (t.shape[1] > 1 && t.stride[1] != 1) R.push_back(std::string(name) + ".stride[-1]=" + std::to_string(t.stride[1]) + " must be 1");
  if (t.device < 0) R.push_back(std::string(name) + " must be in CUDA device memory (device >= 0)");
  if (!t.data && t.numel() > 0) R.push_back(std::string(name) + ".data is null");
}

jit::ops::SwigluPlan plan(const TensorView& x12, const TensorView& a, const TensorView& dx12, bool backward,
                          std::vector<std::string>& R) {
  jit::ops::SwigluPlan p;
  const char* a_name = backward ? "dh" : "h";
  check_2d(x12, "x12", R);
  check_2d(a, a_name, R);
  if (backward) check_2d(dx12, "dx12", R);
  if (!R.empty()) return p;
  if (x12.shape[1] % 2 != 0) R.push_back("x12.shape[1]=" + std::to_string(x12.shape[1]) + " must be even (x1 and x2 side by side)");
  const int64_t H = x12.shape[1] / 2;
  if (a.shape[0] != x12.shape[0] || a.shape[1] != H)
    R.push_back(std::string(a_name) + ".shape=" + a.shape_string() + " must be [x12.shape[0], x12.shape[1] / 2] = [" +
                std::to_string(x12.shape[0]) + ", " + std::to_string(H) + "]");
  if (backward && (dx12.shape[0] != x12.shape[0] || dx12.shape[1] != x12.shape[1]))
    R.push_back("dx12.shape=" + dx12.shape_string() + " must equal x12.shape=" + x12.shape_string());
  if (x12.dtype != DType::f16 && x12.dtype != DType::bf16 && x12.dtype != DType::f32)
    R.push_back(std::string("x12.dtype=") + to_string(x12.dtype) + " is not f16, bf16 or f32");
  if (a.dtype != x12.dtype) R.push_back(std::string(a_name) + ".dtype must equal x12.dtype (" + to_string(x12.dtype) + ")");
  if (backward && dx12.dtype != x12.dtype) R.push_back(std::string("dx12.dtype must equal x12.dtype (") + to_string(x12.dtype) + ")");
  if (a.device != x12.device || (backward && dx12.device != x12.device))
    R.push_back("x12, " + std::string(a_name) + (backward ? " and dx12" : "") + " must be on one device");
  if (!R.empty()) return p;
  if (backward) {
    const detail::Named outs[] = {{detail::Strided::of(dx12), "dx12"}};
    const detail::Named ins[] = {{detail::Strided::of(x12), "x12"}, {detail::Strided::of(a), "dh"}};
    detail::check_no_overlap(outs, 1, ins, 2, R);
  } else {
    const detail::Named outs[] = {{detail::Strided::of(a), "h"}};
    const detail::Named ins[] = {{detail::Strided::of(x12), "x12"}};
    detail::check_no_overlap(outs, 1, ins, 1, R);
  }
  p.backward = backward;
  p.dtype = x12.dtype;
  p.device = x12.device;
  p.rows = x12.shape[0], p.cols = H;
  p.x12 = x12.data, p.x_stride = x12.stride[0];
  if (backward) p.dh = a.data, p.dh_stride = a.stride[0], p.dx12 = dx12.data, p.dx_stride = dx12.stride[0];
  else p.h = a.data, p.h_stride = a.stride[0];
  return p;
}

}  // namespace

std::vector<std::string> swiglu_gate_not_supported_reasons(const TensorView& x12, const TensorView& h_or_dh,
                                                           const TensorView& dx12) {
  std::vector<std::string> R;
  try {
    plan(x12, h_or_dh, dx12, dx12.ndim != 0 || dx12.defined(), R);
  } catch (const std::exception& e) {
    R.push_back(e.what());
  }
  return R;
}

void swiglu_gate_forward(const TensorView& x12, const TensorView& h, void* stream) {
  std::vector<std::string> R;
  const jit::ops::SwigluPlan p = plan(x12, h, TensorView{}, false, R);
  if (!R.empty()) throw Error(R);
  jit::ops::swiglu(p, static_cast<CUstream>(stream));
}

void swiglu_gate_backward(const TensorView& x12, const TensorView& dh, const TensorView& dx12, void* stream) {
  std::vector<std::string> R;
  const jit::ops::SwigluPlan p = plan(x12, dh, dx12, true, R);
  if (!R.empty()) throw Error(R);
  jit::ops::swiglu(p, static_cast<CUstream>(stream));
}

}  // namespace jitattn
