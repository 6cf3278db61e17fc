// Philox4x32-10 (Salmon, Moraes, Dror & Shaw, "Parallel Random Numbers: As Easy as 1, 2, 3",
// SC'11; the Random123 library) and the dropout keep-mask that the kernels must reproduce
// bit for bit. Host-only, written from the paper, independent of kernel_src.
#pragma once
#include <array>
#include <cstdint>
#include <vector>

namespace jitattn::test {

// One Philox4x32 block with 10 rounds. Round r (r = 0..9) uses key_r = key + r·(W0, W1) (mod 2^32),
// W0 = 0x9E3779B9, W1 = 0xBB67AE85. One round on counter (c0, c1, c2, c3) with key (k0, k1):
//   (hi0, lo0) = 0xD2511F53 · c0,   (hi1, lo1) = 0xCD9E8D57 · c2   (full 64-bit products)
//   → (hi1 ^ c1 ^ k0,  lo1,  hi0 ^ c3 ^ k1,  lo0)
std::array<uint32_t, 4> philox4x32_10(std::array<uint32_t, 4> counter, std::array<uint32_t, 2> key);

// The dropout keep decision for probability p in [0, 1): keep iff u >= dropout_threshold(p), with u
// the element's uint32 draw. The threshold is ceil(p · 2^32) computed exactly (in double), so
// "u >= threshold" is exactly "u · 2^-32 >= p"; a device receives the integer threshold from the
// host and never compares in floating point. p >= 1 gives 2^32 (nothing kept).
uint64_t dropout_threshold(double p);

// keep mask [B, H, Mq, Mkv] (row-major, 1 = kept) for dropout probability p.
// Element (b, h, i, j) has linear index e = ((b·H + h)·Mq + i)·Mkv + j (a uint64). Its draw is
//   philox4x32_10(counter, key)[e % 4],
//   key     = { uint32(seed), uint32(seed >> 32) },
//   counter = { uint32(e / 4), uint32((e / 4) >> 32), uint32(offset), uint32(offset >> 32) },
// i.e. one Philox call yields the draws of the 4 consecutive elements 4g .. 4g+3 (output word w
// belongs to element 4g + w), and the offset selects an independent stream for the same seed.
// keep[e] = draw >= dropout_threshold(p). The kept values are scaled by 1 / (1 − p) elsewhere.
std::vector<uint8_t> dropout_keep_mask(uint64_t seed, uint64_t offset, int64_t B, int64_t H, int64_t Mq, int64_t Mkv,
                                       double p);

}  // namespace jitattn::test
