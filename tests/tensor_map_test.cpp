// The tensor maps of the TMA kernels, decode and the tma forward (jit/ops/tensor_map.cpp
// tensor_map_geometry): which views TMA addresses, in which dimension order, and which take the
// element-aligned kernel instead.
#include <gtest/gtest.h>

#include "jit/ops/backward.h"
#include "jit/ops/decode.h"
#include "jit/ops/forward.h"
#include "jit/ops/tensor_map.h"

namespace jitattn::jit::ops {
namespace {

Bmhk view(int64_t b, int64_t m, int64_t h, int64_t d, int64_t sb, int64_t sm, int64_t sh) { return Bmhk{b, m, h, d, sb, sm, sh}; }

TEST(TensorMap, BmhkKeysSortByStride) {
  // [B, N, Hkv, K] contiguous: the head moves fastest, then the row, then the batch.
  const auto g = tensor_map_geometry(view(8, 4096, 8, 128, 4096 * 8 * 128, 8 * 128, 128), 8, 2, 128);
  ASSERT_TRUE(g);
  EXPECT_EQ(g->dim[0], 128u);
  EXPECT_EQ(g->dim_of[1], 1);  // head
  EXPECT_EQ(g->dim_of[0], 2);  // row
  EXPECT_EQ(g->dim_of[2], 3);  // batch
  EXPECT_EQ(g->dim[1], 8u);
  EXPECT_EQ(g->dim[2], 4096u);
  EXPECT_EQ(g->dim[3], 8u);
  EXPECT_EQ(g->stride[0], 256u);
  EXPECT_EQ(g->stride[1], 2048u);
  EXPECT_EQ(g->stride[2], 4096u * 2048u);
  EXPECT_EQ(g->box[0], 64u);
  EXPECT_EQ(g->box[2], 128u);  // the row dimension's box: one tile
  EXPECT_EQ(g->box[1], 1u);
  EXPECT_EQ(g->box[3], 1u);
}

TEST(TensorMap, HeadMajorKeysPutRowsFirst) {
  // [B, Hkv, N, K] viewed as BMHK: rows of 256 bytes, heads N rows apart.
  const auto g = tensor_map_geometry(view(2, 1000, 4, 128, 4 * 1000 * 128, 128, 1000 * 128), 4, 2, 64);
  ASSERT_TRUE(g);
  EXPECT_EQ(g->dim_of[0], 1);
  EXPECT_EQ(g->dim_of[1], 2);
  EXPECT_EQ(g->dim_of[2], 3);
  EXPECT_EQ(g->box[1], 64u);
}

TEST(TensorMap, BroadcastIndicesAreLeftOut) {
  // Keys expanded over the batch (stride 0) and one key/value head: only rows move.
  const auto g = tensor_map_geometry(view(5, 300, 1, 64, 0, 64, 64), 1, 2, 128);
  ASSERT_TRUE(g);
  EXPECT_EQ(g->dim_of[0], 1);
  EXPECT_EQ(g->dim_of[1], 0);
  EXPECT_EQ(g->dim_of[2], 0);
  EXPECT_EQ(g->dim[2], 1u);
  EXPECT_EQ(g->dim[3], 1u);
  EXPECT_EQ(g->stride[1] % 16, 0u);
}

TEST(TensorMap, ShortTensorsGetShortBoxes) {
  const auto g = tensor_map_geometry(view(1, 5, 2, 128, 5 * 2 * 128, 2 * 128, 128), 2, 2, 128);
  ASSERT_TRUE(g);
  EXPECT_EQ(g->box[g->dim_of[0]], 5u);
  // No keys at all: an empty geometry (nothing is encoded, no tile is read).
  EXPECT_TRUE(tensor_map_geometry(view(1, 0, 2, 128, 0, 256, 128), 2, 2, 128));
}

TEST(TensorMap, RefusesWhatTmaCannotAddress) {
  // A row stride that is not a multiple of 16 bytes (8 elements of 2 bytes).
  EXPECT_FALSE(tensor_map_geometry(view(1, 64, 1, 64, 0, 68, 68), 1, 2, 128));
  // Rows of stride 0: every key the same row.
  EXPECT_FALSE(tensor_map_geometry(view(1, 64, 2, 64, 0, 0, 64), 2, 2, 128));
  // Overlapping dimensions: heads 64 bytes apart while a row holds 128 bytes.
  EXPECT_FALSE(tensor_map_geometry(view(1, 64, 2, 64, 0, 256, 32), 2, 2, 128));
  // A stride of 2^40 bytes or more.
  EXPECT_FALSE(tensor_map_geometry(view(2, 64, 1, 64, int64_t(1) << 39, 64, 64), 1, 2, 128));
}

// decode_signature: views the maps address take the tma family; views they cannot take the
// kernel for element-aligned rows (never refused, never wrong), and other GPUs the mma family.
TEST(TensorMap, SignatureFallsBackWhereNoMapAddressesTheKeys) {
  ForwardPlan p;
  p.dtype = p.out_dtype = DType::bf16;
  p.q = view(2, 1, 32, 128, 32 * 128, 32 * 128, 128);
  p.k = p.v = view(2, 4096, 8, 128, 4096 * 8 * 128, 8 * 128, 128);
  p.align = 16;
  const Arch h100{90, true};
  const Signature tma = decode_signature(p, h100);
  EXPECT_EQ(tma.align, 16);
  EXPECT_EQ(make_spec(tma).family, Family::tma);
  EXPECT_EQ(make_spec(decode_signature(p, Arch{80, false})).family, Family::mma);
  ForwardPlan rows0 = p;  // every key the same row: a stride-0 view along M
  rows0.k.sm = 0;
  const Signature fallback = decode_signature(rows0, h100);
  EXPECT_EQ(fallback.align, 2);
  EXPECT_EQ(make_spec(fallback).family, Family::mma);
  EXPECT_EQ(validate_spec(make_spec(fallback)), "");
  ForwardPlan padded = p;  // values with padded rows (136 elements, 272 bytes apart) still map
  padded.v = view(2, 4096, 8, 128, 4096 * 8 * 136, 8 * 136, 136);
  EXPECT_EQ(decode_signature(padded, h100).align, 16);
}

// forward_kernel_signature: a long forward on sm_90a takes the tma family (m128, two warpgroups
// and a producer) where Q, K and V map; a view no map addresses takes the 4-byte aligned
// mma.sync kernel; paged keys and left windows keep fwd_wgmma.cuh; older GPUs keep mma.sync.
TEST(TensorMap, ForwardSignatureTakesTheTmaFamilyWhereTheViewsMap) {
  ForwardPlan p;
  p.dtype = p.out_dtype = DType::bf16;
  p.q = view(2, 4096, 16, 128, 4096 * 16 * 128, 16 * 128, 128);
  p.k = p.v = view(2, 4096, 4, 128, 4096 * 4 * 128, 4 * 128, 128);
  p.align = 16;
  const Arch h100{90, true};
  const KernelSpec tma = make_spec(forward_kernel_signature(p, h100));
  EXPECT_EQ(tma.family, Family::tma);
  EXPECT_EQ(tma.tile.name(), "m128n128w12");
  EXPECT_EQ(tma.threads(), 384);
  EXPECT_EQ(validate_spec(tma), "");
  EXPECT_EQ(make_spec(forward_kernel_signature(p, Arch{80, false})).family, Family::mma);
  ForwardPlan rows0 = p;  // every query the same row
  rows0.q.sm = 0;
  const Signature fallback = forward_kernel_signature(rows0, h100);
  EXPECT_EQ(fallback.align, 4);
  EXPECT_EQ(make_spec(fallback).family, Family::mma);
  EXPECT_EQ(validate_spec(make_spec(fallback)), "");
  ForwardPlan heads0 = p;  // one key/value head broadcast to all (stride 0): maps
  heads0.k.sh = heads0.v.sh = 0;
  EXPECT_EQ(make_spec(forward_kernel_signature(heads0, h100)).family, Family::tma);
  for (BiasKind kind : {BiasKind::pbd_causal_br, BiasKind::local_br}) {
    ForwardPlan other = p;
    other.bias.kind = kind;
    EXPECT_EQ(make_spec(forward_kernel_signature(other, h100)).family, Family::wgmma) << to_string(kind);
  }
  Signature dims = forward_kernel_signature(p, h100);
  dims.head_dim = dims.head_dim_v = 64;
  EXPECT_EQ(make_spec(dims).tile.name(), "m192n128w16");
  dims.head_dim = dims.head_dim_v = 256;
  EXPECT_EQ(make_spec(dims).tile.name(), "m128n64w12");
  KernelSpec wrong = tma;  // a tile without the producer warpgroup
  wrong.tile = TileConfig{128, 128, 8};
  EXPECT_NE(validate_spec(wrong).find("producer"), std::string::npos);
}

}  // namespace
}  // namespace jitattn::jit::ops

namespace jitattn::jit::ops {
namespace {

// backward_kernel_align: on sm_90a at head dims 64 and 128 the dK/dV kernel is the tma family, which reads
// Q and dO through tensor maps; where either view cannot be mapped (rows of stride 0, as the
// all-ones gradient of out.sum() is) the call takes the 4-byte aligned mma.sync kernels instead.
// sm_80 needs no map and keeps the plan's alignment.
TEST(TensorMap, BackwardFallsBackWhereNoMapAddressesQOrTheOutputGradient) {
  ForwardPlan p;
  p.dtype = p.out_dtype = DType::bf16;
  p.q = p.k = p.v = view(2, 1000, 8, 64, 1000 * 8 * 64, 8 * 64, 64);
  p.align = 16;
  const Bmhk grad = p.q;
  const Arch h100{90, true};
  auto family = [&](const ForwardPlan& plan, const Bmhk& g, bool deterministic) {
    Signature s = forward_signature(plan, h100);
    s.align = uint8_t(backward_kernel_align(plan, g, 16, deterministic, h100));
    s.op = deterministic ? Op::bwd_kv : Op::bwd;
    return make_spec(s).family;
  };
  EXPECT_EQ(backward_kernel_align(p, grad, 16, false, h100), 16);
  EXPECT_EQ(family(p, grad, false), Family::tma);
  EXPECT_EQ(family(p, grad, true), Family::tma);
  Bmhk ones = grad;  // every query's gradient the same row
  ones.sm = ones.sh = ones.sb = 0;
  EXPECT_EQ(backward_kernel_align(p, ones, 16, false, h100), 4);
  EXPECT_EQ(family(p, ones, false), Family::mma);
  ForwardPlan rows0 = p;
  rows0.q.sm = 0;
  EXPECT_EQ(backward_kernel_align(rows0, grad, 16, true, h100), 4);
  Bmhk heads0 = grad;  // one head broadcast to all (stride 0): maps
  heads0.sh = 0;
  EXPECT_EQ(backward_kernel_align(p, heads0, 16, false, h100), 16);
  ForwardPlan d128 = p;  // the tma family too
  d128.q = d128.k = d128.v = view(2, 1000, 8, 128, 1000 * 8 * 128, 8 * 128, 128);
  EXPECT_EQ(family(d128, grad, false), Family::tma);
  EXPECT_EQ(backward_kernel_align(d128, ones, 16, false, h100), 4);
  EXPECT_EQ(family(d128, ones, false), Family::mma);
  EXPECT_EQ(backward_kernel_align(p, ones, 16, false, Arch{80, false}), 16);
  EXPECT_EQ(backward_kernel_align(p, ones, 2, false, h100), 2);  // already element-aligned: mma
}

}  // namespace
}  // namespace jitattn::jit::ops
