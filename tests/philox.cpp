#include "philox.h"

#include <cmath>

namespace jitattn::test {

namespace {
constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
}  // namespace

std::array<uint32_t, 4> philox4x32_10(std::array<uint32_t, 4> c, std::array<uint32_t, 2> k) {
  for (int r = 0; r < 10; ++r) {
    if (r > 0) {
      k[0] += kW0;
      k[1] += kW1;
    }
    const uint64_t p0 = uint64_t(kM0) * c[0], p1 = uint64_t(kM1) * c[2];
    const uint32_t hi0 = uint32_t(p0 >> 32), lo0 = uint32_t(p0), hi1 = uint32_t(p1 >> 32), lo1 = uint32_t(p1);
    c = {hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0};
  }
  return c;
}

uint64_t dropout_threshold(double p) {
  if (!(p > 0)) return 0;
  if (p >= 1) return uint64_t(1) << 32;
  return uint64_t(std::ceil(std::ldexp(p, 32)));  // p·2^32 is exact in double; ceil ≤ 2^32
}

std::vector<uint8_t> dropout_keep_mask(uint64_t seed, uint64_t offset, int64_t B, int64_t H, int64_t Mq, int64_t Mkv,
                                       double p) {
  const uint64_t n = uint64_t(B * H * Mq * Mkv), t = dropout_threshold(p);
  const std::array<uint32_t, 2> key = {uint32_t(seed), uint32_t(seed >> 32)};
  std::vector<uint8_t> keep(n);
  for (uint64_t g = 0; 4 * g < n; ++g) {
    const auto r = philox4x32_10({uint32_t(g), uint32_t(g >> 32), uint32_t(offset), uint32_t(offset >> 32)}, key);
    for (uint64_t w = 0; w < 4 && 4 * g + w < n; ++w) keep[4 * g + w] = uint64_t(r[w]) >= t ? 1 : 0;
  }
  return keep;
}

}  // namespace jitattn::test
