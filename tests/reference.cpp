#include "reference.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

namespace jitattn::test {

namespace {

// P [Mkv] of row (b, h, i) and its lse; returns false (P = 0, lse = -inf) for a fully masked row.
// With `mod`, each finite score x becomes mod->f(x, ...) and `raw` (if given) keeps x.
bool softmax_row(const RefShape& s, const std::vector<double>& q, const std::vector<double>& k,
                 const std::vector<double>& bias, double scale, int64_t b, int64_t h, int64_t i,
                 std::vector<double>& P, double& lse, const ScoreMod* mod = nullptr, std::vector<double>* raw = nullptr) {
  if (raw) raw->assign(size_t(s.Mkv), 0.0);
  const double ninf = -std::numeric_limits<double>::infinity();
  P.assign(size_t(s.Mkv), 0.0);
  lse = ninf;
  double mx = ninf;
  for (int64_t j = 0; j < s.Mkv; ++j) {
    double dot = 0;
    for (int64_t d = 0; d < s.K; ++d)
      dot += q[size_t(((b * s.Mq + i) * s.H + h) * s.K + d)] * k[size_t(((b * s.Mkv + j) * s.H + h) * s.K + d)];
    double x = dot * scale;
    if (!bias.empty()) x += bias[size_t(((b * s.H + h) * s.Mq + i) * s.Mkv + j)];
    if (raw) (*raw)[size_t(j)] = x;
    if (mod && x != ninf) x = mod->f(x, b, h, i, j);
    P[size_t(j)] = x;
    mx = std::max(mx, x);
  }
  if (mx == ninf) {
    std::fill(P.begin(), P.end(), 0.0);
    return false;
  }
  double sum = 0;
  for (int64_t j = 0; j < s.Mkv; ++j) sum += std::exp(P[size_t(j)] - mx);
  lse = mx + std::log(sum);
  for (int64_t j = 0; j < s.Mkv; ++j) P[size_t(j)] = std::exp(P[size_t(j)] - mx) / sum;
  return true;
}

// Z = keep / (1 − p) for element (b, h, i, j), 1 without dropout.
double dropout_factor(const RefShape& s, const std::vector<uint8_t>* keep, double p, int64_t b, int64_t h,
                      int64_t i, int64_t j) {
  if (!keep) return 1.0;
  return (*keep)[size_t(((b * s.H + h) * s.Mq + i) * s.Mkv + j)] ? 1.0 / (1.0 - p) : 0.0;
}

// The forward with an optional dropout mask (see reference.h): both public forwards.
RefResult forward(const RefShape& s, const std::vector<double>& q, const std::vector<double>& k,
                  const std::vector<double>& v, const std::vector<double>& bias, double scale,
                  const std::vector<uint8_t>* keep, double p, const ScoreMod* mod) {
  RefResult r;
  r.out.assign(size_t(s.B * s.Mq * s.H * s.Kv), 0.0);
  r.lse.assign(size_t(s.B * s.H * s.Mq), 0.0);
  std::vector<double> P;
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t h = 0; h < s.H; ++h)
      for (int64_t i = 0; i < s.Mq; ++i) {
        // A fully masked row keeps out = 0 and gets lse = -inf.
        if (!softmax_row(s, q, k, bias, scale, b, h, i, P, r.lse[size_t((b * s.H + h) * s.Mq + i)], mod)) continue;
        for (int64_t j = 0; j < s.Mkv; ++j) {
          const double w = P[size_t(j)] * dropout_factor(s, keep, p, b, h, i, j);
          if (w == 0) continue;
          for (int64_t d = 0; d < s.Kv; ++d)
            r.out[size_t(((b * s.Mq + i) * s.H + h) * s.Kv + d)] += w * v[size_t(((b * s.Mkv + j) * s.H + h) * s.Kv + d)];
        }
      }
  return r;
}

}  // namespace

RefResult reference_attention(const RefShape& s, const std::vector<double>& q, const std::vector<double>& k,
                              const std::vector<double>& v, const std::vector<double>& bias, double scale,
                              const ScoreMod* mod) {
  return forward(s, q, k, v, bias, scale, nullptr, 0.0, mod);
}

RefResult reference_attention_dropout(const RefShape& s, const std::vector<double>& q, const std::vector<double>& k,
                                      const std::vector<double>& v, const std::vector<double>& bias, double scale,
                                      const std::vector<uint8_t>& keep, double p, const ScoreMod* mod) {
  return forward(s, q, k, v, bias, scale, &keep, p, mod);
}

RefGrads reference_backward(const RefShape& s, const std::vector<double>& q, const std::vector<double>& k,
                            const std::vector<double>& v, const std::vector<double>& bias, double scale,
                            const std::vector<double>& grad_out, const std::vector<uint8_t>* keep, double p,
                            const ScoreMod* mod) {
  RefGrads g;
  g.dq.assign(size_t(s.B * s.Mq * s.H * s.K), 0.0);
  g.dk.assign(size_t(s.B * s.Mkv * s.H * s.K), 0.0);
  g.dv.assign(size_t(s.B * s.Mkv * s.H * s.Kv), 0.0);
  g.dbias.assign(size_t(s.B * s.H * s.Mq * s.Mkv), 0.0);
  g.dq_mag.assign(g.dq.size(), 0.0);
  g.dk_mag.assign(g.dk.size(), 0.0);
  g.dbias_mag.assign(g.dbias.size(), 0.0);
  std::vector<double> P, raw, Z(size_t(s.Mkv)), dP(size_t(s.Mkv)), O(size_t(s.Kv));
  double lse;
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t h = 0; h < s.H; ++h)
      for (int64_t i = 0; i < s.Mq; ++i) {
        if (!softmax_row(s, q, k, bias, scale, b, h, i, P, lse, mod, &raw)) continue;  // fully masked: no gradient
        const auto qi = [&](int64_t d) { return size_t(((b * s.Mq + i) * s.H + h) * s.K + d); };
        const auto ki = [&](int64_t j, int64_t d) { return size_t(((b * s.Mkv + j) * s.H + h) * s.K + d); };
        const auto vi = [&](int64_t j, int64_t d) { return size_t(((b * s.Mkv + j) * s.H + h) * s.Kv + d); };
        const auto oi = [&](int64_t d) { return size_t(((b * s.Mq + i) * s.H + h) * s.Kv + d); };
        for (int64_t j = 0; j < s.Mkv; ++j) Z[size_t(j)] = dropout_factor(s, keep, p, b, h, i, j);
        // O = (P ∘ Z) V; dV += (P ∘ Z)ᵀ dO; dP = (dO Vᵀ) ∘ Z.
        std::fill(O.begin(), O.end(), 0.0);
        for (int64_t j = 0; j < s.Mkv; ++j) {
          const double w = P[size_t(j)] * Z[size_t(j)];
          double dpd = 0;
          for (int64_t d = 0; d < s.Kv; ++d) {
            O[size_t(d)] += w * v[vi(j, d)];
            g.dv[vi(j, d)] += w * grad_out[oi(d)];
            dpd += grad_out[oi(d)] * v[vi(j, d)];
          }
          dP[size_t(j)] = dpd * Z[size_t(j)];
        }
        double D = 0;  // rowsum(dO ∘ O)
        for (int64_t d = 0; d < s.Kv; ++d) D += grad_out[oi(d)] * O[size_t(d)];
        for (int64_t j = 0; j < s.Mkv; ++j) {
          // Through a score_mod: d/dx = d/df · f'(x).
          const double chain = mod && P[size_t(j)] != 0 ? mod->df(raw[size_t(j)], b, h, i, j) : 1.0;
          const double dS = P[size_t(j)] * (dP[size_t(j)] - D) * chain;
          const double mag = P[size_t(j)] * (std::fabs(dP[size_t(j)]) + std::fabs(D)) * std::fabs(chain);
          g.dbias[size_t(((b * s.H + h) * s.Mq + i) * s.Mkv + j)] = dS;
          g.dbias_mag[size_t(((b * s.H + h) * s.Mq + i) * s.Mkv + j)] = mag;
          for (int64_t d = 0; d < s.K; ++d) {
            g.dq[qi(d)] += dS * k[ki(j, d)] * scale;
            g.dk[ki(j, d)] += dS * q[qi(d)] * scale;
            g.dq_mag[qi(d)] += mag * std::fabs(k[ki(j, d)]) * scale;
            g.dk_mag[ki(j, d)] += mag * std::fabs(q[qi(d)]) * scale;
          }
        }
      }
  return g;
}

uint16_t to_bits(double x, DType dtype) {
  const float f = float(x);
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if (dtype == DType::bf16) {
    if (std::isnan(f)) return 0x7fc0;
    return uint16_t((u + 0x7fff + ((u >> 16) & 1)) >> 16);  // round to nearest even
  }
  // f16: via the exact double value, round to nearest even.
  const uint16_t sign = (u >> 16) & 0x8000;
  const double a = std::fabs(x);
  if (std::isnan(x)) return 0x7e00;
  if (a >= 65520.0) return sign | 0x7c00;
  if (a < std::ldexp(1.0, -14)) {  // subnormal: units of 2^-24
    return sign | uint16_t(std::nearbyint(a * std::ldexp(1.0, 24)));
  }
  int e;
  const double m = std::frexp(a, &e);  // a = m·2^e, m in [0.5, 1)
  int mant = int(std::nearbyint((m * 2 - 1) * 1024));
  int exp = e - 1 + 15;
  if (mant == 1024) {
    mant = 0;
    ++exp;
  }
  if (exp >= 31) return sign | 0x7c00;
  return sign | uint16_t(exp << 10) | uint16_t(mant);
}

double from_bits(uint16_t h, DType dtype) {
  if (dtype == DType::bf16) {
    const uint32_t u = uint32_t(h) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
  const int sign = h >> 15, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  double v;
  if (exp == 0) v = std::ldexp(double(mant), -24);
  else if (exp == 31) v = mant ? std::numeric_limits<double>::quiet_NaN() : std::numeric_limits<double>::infinity();
  else v = std::ldexp(double(mant | 0x400), exp - 25);
  return sign ? -v : v;
}

void random_values(std::mt19937_64& rng, size_t n, DType dtype, std::vector<double>& values,
                   std::vector<unsigned char>& bytes, double stddev) {
  std::normal_distribution<double> dist(0.0, stddev);
  values.resize(n);
  bytes.resize(n * element_size(dtype));
  for (size_t i = 0; i < n; ++i) {
    const double x = dist(rng);
    if (dtype == DType::f32) {
      const float f = float(x);
      values[i] = f;
      std::memcpy(bytes.data() + 4 * i, &f, 4);
    } else {
      const uint16_t bits = to_bits(x, dtype);
      values[i] = from_bits(bits, dtype);
      std::memcpy(bytes.data() + 2 * i, &bits, 2);
    }
  }
}

std::vector<unsigned char> encode(const std::vector<double>& values, DType dtype) {
  std::vector<unsigned char> bytes(values.size() * element_size(dtype));
  for (size_t i = 0; i < values.size(); ++i) {
    if (dtype == DType::f32) {
      const float f = float(values[i]);
      std::memcpy(&bytes[i * 4], &f, 4);
    } else {
      const uint16_t b = to_bits(values[i], dtype);
      std::memcpy(&bytes[i * 2], &b, 2);
    }
  }
  return bytes;
}

std::vector<double> decode(const std::vector<unsigned char>& bytes, DType dtype) {
  const size_t es = element_size(dtype), n = bytes.size() / es;
  std::vector<double> out(n);
  for (size_t i = 0; i < n; ++i) {
    if (dtype == DType::f32) {
      float f;
      std::memcpy(&f, bytes.data() + 4 * i, 4);
      out[i] = f;
    } else {
      uint16_t h;
      std::memcpy(&h, bytes.data() + 2 * i, 2);
      out[i] = from_bits(h, dtype);
    }
  }
  return out;
}

double relative_error(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size()) return std::numeric_limits<double>::infinity();
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i]) || std::isnan(b[i])) return std::numeric_limits<double>::infinity();
    if (std::isinf(a[i]) || std::isinf(b[i])) {
      if (a[i] != b[i]) return std::numeric_limits<double>::infinity();
      continue;
    }
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  if (den == 0) return num == 0 ? 0 : std::numeric_limits<double>::infinity();
  return std::sqrt(num / den);
}

double gradient_error(const std::vector<double>& got, const std::vector<double>& ref, const std::vector<double>& mag) {
  double r = 0, m = 0;
  for (size_t i = 0; i < ref.size(); ++i) r += ref[i] * ref[i];
  for (double x : mag) m += x * x;
  // Zero up to the reference's own fp64 rounding (which leaves ~1e-16 of the cancelled terms,
  // e.g. under dropout, where dP and rowsum(dO ∘ O) are summed in different orders).
  if (r > 1e-20 * m) return relative_error(got, ref);
  double g = 0;
  for (double x : got) {
    if (!std::isfinite(x)) return std::numeric_limits<double>::infinity();
    g += x * x;
  }
  if (g == 0) return 0;
  return m == 0 ? std::numeric_limits<double>::infinity() : std::sqrt(g / m);
}

std::vector<double> repeat_heads(const std::vector<double>& x, int64_t B, int64_t M, int64_t Hkv, int64_t Hq, int64_t D) {
  std::vector<double> y(size_t(B * M * Hq * D));
  for (int64_t bm = 0; bm < B * M; ++bm)
    for (int64_t h = 0; h < Hq; ++h)
      for (int64_t d = 0; d < D; ++d) y[size_t((bm * Hq + h) * D + d)] = x[size_t((bm * Hkv + h / (Hq / Hkv)) * D + d)];
  return y;
}
std::vector<double> sum_heads(const std::vector<double>& x, int64_t B, int64_t M, int64_t Hkv, int64_t Hq, int64_t D) {
  std::vector<double> y(size_t(B * M * Hkv * D), 0.0);
  for (int64_t bm = 0; bm < B * M; ++bm)
    for (int64_t h = 0; h < Hq; ++h)
      for (int64_t d = 0; d < D; ++d) y[size_t((bm * Hkv + h / (Hq / Hkv)) * D + d)] += x[size_t((bm * Hq + h) * D + d)];
  return y;
}

}  // namespace jitattn::test
