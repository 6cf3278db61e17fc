#include "jitattn/bias.h"

#include <cmath>
#include <cstring>
#include <limits>

#include "jitattn/error.h"

namespace jitattn {

namespace {
double read_host(const TensorView& t, int64_t offset) {
  const char* base = static_cast<const char*>(t.data);
  switch (t.dtype) {
    case DType::f32: {
      float f;
      std::memcpy(&f, base + offset * 4, 4);
      return f;
    }
    case DType::bf16: {
      uint16_t h;
      std::memcpy(&h, base + offset * 2, 2);
      const uint32_t bits = uint32_t(h) << 16;
      float f;
      std::memcpy(&f, &bits, 4);
      return f;
    }
    case DType::f16: {
      uint16_t h;
      std::memcpy(&h, base + offset * 2, 2);
      const int sign = h >> 15, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
      double v;
      if (exp == 0) v = std::ldexp(double(mant), -24);
      else if (exp == 31) v = mant ? std::numeric_limits<double>::quiet_NaN() : std::numeric_limits<double>::infinity();
      else v = std::ldexp(double(mant | 0x400), exp - 25);
      return sign ? -v : v;
    }
  }
  return 0;
}
}  // namespace

std::vector<double> materialize(const AttnBias& bias, int64_t B, int64_t H, int64_t Mq, int64_t Mkv) {
  const double ninf = -std::numeric_limits<double>::infinity();
  std::vector<double> out(size_t(B * H * Mq * Mkv), 0.0);
  auto at = [&](int64_t b, int64_t h, int64_t i, int64_t j) -> double& {
    return out[size_t(((b * H + h) * Mq + i) * Mkv + j)];
  };
  if (std::holds_alternative<LowerTriangularMask>(bias) || std::holds_alternative<LowerTriangularFromBottomRightMask>(bias)) {
    const int64_t offset = std::holds_alternative<LowerTriangularMask>(bias) ? 0 : Mkv - Mq;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t i = 0; i < Mq; ++i)
          for (int64_t j = 0; j < Mkv; ++j)
            if (j > i + offset) at(b, h, i, j) = ninf;
  } else if (auto* tb = std::get_if<TensorBias>(&bias)) {
    const TensorView& t = tb->tensor;
    if (t.device != TensorView::kHost) throw Error("materialize: attn_bias tensor must be in host memory");
    if (t.ndim != 4) throw Error("materialize: attn_bias tensor must be 4-D");
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t i = 0; i < Mq; ++i)
          for (int64_t j = 0; j < Mkv; ++j) {
            const int64_t off = (t.shape[0] == 1 ? 0 : b * t.stride[0]) + (t.shape[1] == 1 ? 0 : h * t.stride[1]) +
                                i * t.stride[2] + j * t.stride[3];
            at(b, h, i, j) = read_host(t, off);
          }
  }
  return out;
}

const char* bias_name(const AttnBias& bias) {
  if (std::holds_alternative<LowerTriangularMask>(bias)) return "LowerTriangularMask";
  if (std::holds_alternative<LowerTriangularFromBottomRightMask>(bias)) return "LowerTriangularFromBottomRightMask";
  if (std::holds_alternative<TensorBias>(bias)) return "TensorBias";
  return "None";
}

}  // namespace jitattn
