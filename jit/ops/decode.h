// The decode op: forwards with few queries per sequence (a decode step, speculative drafts) run
// kernel_src/decode.cuh, which reads each key/value row once for all the query heads sharing it
// and splits the keys across blocks (docs/design.md decision 16). forward() hands it the plans
// decode_applies() accepts.
#pragma once
#include <cuda.h>

#include <cstdint>
#include <optional>

#include "jit/ops/plans.h"

namespace jitattn::jit::ops {

// Most queries per sequence the decode kernels take (the longest block-diagonal query block, or
// Mq of a dense call): 16 packed rows per block make more a prefill.
constexpr int64_t kDecodeMaxQueries = 16;
// Whether forward() runs this plan with the decode kernels: f16/bf16, no dropout, at most
// kDecodeMaxQueries queries per sequence, and JITATTN_DECODE not off.
bool decode_applies(const ForwardPlan& p);

// The decode Signature of this plan on a device of `arch`.
Signature decode_signature(const ForwardPlan& p, const Arch& arch);

// How many splits the keys of each (sequence, key/value head, row chunk) are cut into, for
// `chunks` of them whose longest sees `keys` keys, on `slots` concurrent blocks (SMs × blocks per
// SM): the fewest that fill the slots about as well as any count does (JITATTN_DECODE_SPLITS
// forces it). Each split keeps at least two tiles of `block_n` keys; at most kDecodeMaxSplits
// (kernel_src/params.h).
int decode_splits(int64_t chunks, int64_t keys, int64_t slots, int block_n);

// Fetches (or compiles) the kernel and queues it, with its scratch (split-KV), on `stream`.
void decode(const ForwardPlan& p, CUstream stream);

}  // namespace jitattn::jit::ops
