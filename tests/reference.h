// The fp64 CPU reference, written from the xFormers definition (not from kernel_src):
//   out = softmax(q @ kᵀ · scale + bias) @ v,   lse = logsumexp(q @ kᵀ · scale + bias)
// A row whose bias is -inf everywhere gives out = 0 and lse = -inf, as the kernels promise.
#pragma once
#include <cstdint>
#include <functional>
#include <random>
#include <vector>

#include "jitattn/tensor.h"

namespace jitattn::test {

struct RefShape {
  int64_t B, Mq, Mkv, H, K, Kv;
};

// q [B, Mq, H, K], k [B, Mkv, H, K], v [B, Mkv, H, Kv] dense row-major; bias [B, H, Mq, Mkv] or
// empty. Returns out [B, Mq, H, Kv] and lse [B, H, Mq].
struct RefResult {
  std::vector<double> out, lse;
};
// A user score_mod (jitattn/variant.h) written again on the host: the score x = q·k·scale + bias
// (finite) of element (b, h, i, j) becomes f(x, b, h, i, j), whose derivative df the backward
// multiplies dS by. A user mask_mod is a -inf in the bias.
struct ScoreMod {
  std::function<double(double, int64_t, int64_t, int64_t, int64_t)> f, df;
};

RefResult reference_attention(const RefShape& s, const std::vector<double>& q, const std::vector<double>& k,
                              const std::vector<double>& v, const std::vector<double>& bias, double scale,
                              const ScoreMod* mod = nullptr);

// Dropout (xFormers' definition): applied to the attention probabilities after the softmax,
//   out = (P ∘ keep / (1 − p)) @ v,   P = softmax(q @ kᵀ · scale + bias),
// keep [B, H, Mq, Mkv] (1 = kept; e.g. from dropout_keep_mask in philox.h), 0 <= p < 1.
// lse is that of the undropped softmax (what the kernels store for the backward).
RefResult reference_attention_dropout(const RefShape& s, const std::vector<double>& q, const std::vector<double>& k,
                                      const std::vector<double>& v, const std::vector<double>& bias, double scale,
                                      const std::vector<uint8_t>& keep, double p, const ScoreMod* mod = nullptr);

// Gradients of L = Σ out ∘ grad_out, straight from the softmax formula (Z = keep / (1 − p), or 1
// without dropout):
//   dV = (P ∘ Z)ᵀ dO;   dP = (dO Vᵀ) ∘ Z;   dS = P ∘ (dP − rowsum(dO ∘ O));
//   dQ = dS K · scale;  dK = dSᵀ Q · scale;  dbias = dS.
// grad_out [B, Mq, H, Kv]. dq [B, Mq, H, K], dk [B, Mkv, H, K], dv [B, Mkv, H, Kv],
// dbias [B, H, Mq, Mkv] (always filled, also where bias is empty; 0 where the bias is -inf).
// Fully masked rows contribute nothing. keep == nullptr means no dropout (p ignored).
// dq_mag, dk_mag, dbias_mag: the same sums with dS replaced by P ∘ (|dP| + |rowsum(dO ∘ O)|) and
// K, Q by their absolute values — the size of the terms that cancel in dS, which is what the
// rounding error of dQ, dK and dbias scales with (see gradient_error).
struct RefGrads {
  std::vector<double> dq, dk, dv, dbias;
  std::vector<double> dq_mag, dk_mag, dbias_mag;
};
RefGrads reference_backward(const RefShape& s, const std::vector<double>& q, const std::vector<double>& k,
                            const std::vector<double>& v, const std::vector<double>& bias, double scale,
                            const std::vector<double>& grad_out, const std::vector<uint8_t>* keep = nullptr,
                            double p = 0.0, const ScoreMod* mod = nullptr);

// [B, M, Hkv, D] → [B, M, Hq, D], each key/value head repeated for its Hq / Hkv query heads.
std::vector<double> repeat_heads(const std::vector<double>& x, int64_t B, int64_t M, int64_t Hkv, int64_t Hq, int64_t D);
// ... and back, summing over the query heads of each key/value head.
std::vector<double> sum_heads(const std::vector<double>& x, int64_t B, int64_t M, int64_t Hkv, int64_t Hq, int64_t D);

// Host encoding/decoding of the three dtypes (round to nearest even), independent of the kernels.
uint16_t to_bits(double x, DType dtype);  // f16/bf16 bit pattern
double from_bits(uint16_t bits, DType dtype);
// n values ~ N(0, 1) rounded to `dtype`, as doubles, and the same values encoded to bytes.
void random_values(std::mt19937_64& rng, size_t n, DType dtype, std::vector<double>& values,
                   std::vector<unsigned char>& bytes, double stddev = 1.0);
std::vector<double> decode(const std::vector<unsigned char>& bytes, DType dtype);
// Values as bytes of `dtype` (f16/bf16 rounded to nearest even), the inverse of decode.
std::vector<unsigned char> encode(const std::vector<double>& values, DType dtype);

// ‖a − b‖ / ‖b‖ over the finite entries, +inf if a and b disagree on which entries are
// non-finite (NaN never passes).
double relative_error(const std::vector<double>& a, const std::vector<double>& b);

// relative_error(got, ref) — unless ref is 0 (‖ref‖ ≤ 1e-10·‖mag‖, fp64's rounding of the terms
// that cancel), which dQ, dK and dbias are when every query sees at most one key (P = 1 there, so
// dP − rowsum(dO ∘ O) = 0): a relative error is then undefined, and the result is ‖got‖ / ‖mag‖,
// the kernel's rounding noise against the size of the terms that cancelled (RefGrads::*_mag),
// held to the same tolerance.
double gradient_error(const std::vector<double>& got, const std::vector<double>& ref, const std::vector<double>& mag);

}  // namespace jitattn::test
