// The bias kinds the kernels are specialized for: one row each. Everything the host knows about a
// kind — its enumerator and canonical name, its key layout, its traits, the policy struct of
// kernel_src/bias_policies.cuh that the generated source instantiates, and the xFormers biases
// that map to it (api/src/plan.cpp describe()) — is generated from this table: BiasKind and
// kAllBiasKinds (jit/signature.h), to_string/parse_bias_kind and the predicates
// (jit/signature.cpp), the policy choice (jit/codegen.cpp). Adding a kind is a row here and, if no
// existing policy serves it, a struct in bias_policies.cuh.
//
// Rows are appended, never reordered or removed: a row's position is its enumerator's value, and
// that is part of every cache key.
//
// Columns: X(id, name, layout, left, uneven, backward, tensor, policy, xformers)
//   id, name  the enumerator and the name in kernel names and manifests ("causal_br")
//   layout    dense: [B, M, H, K] tensors; varlen: sequences concatenated along M (block-diagonal,
//             B = 1), with key lengths for padded and gappy keys; paged: varlen queries, keys and
//             values read through a page table
//   left      the mask bounds each query's keys on the left too (local attention)
//   uneven    query blocks see different numbers of keys (scheduled longest first)
//   backward  the backward supports it (paged kinds are for inference)
//   tensor    a dense additive bias tensor is read (its gradient can be written)
//   policy    the policy type; "{dtype}" stands for the kernel's input DTypeId
//   xformers  the xFormers biases served by this kind (documentation)
#pragma once

#define JITATTN_POLICY_CAUSAL "jitattn::BandMask<false, false, true>"
#define JITATTN_POLICY_CAUSAL_BR "jitattn::BandMask<true, false, true>"
#define JITATTN_POLICY_BAND_BR "jitattn::BandMask<true, true, true>"

#define JITATTN_BIAS_KINDS(X)                                                                                  \
  X(none, "none", dense, false, false, true, false, "jitattn::NoBias", "no bias")                                 \
  X(causal, "causal", dense, false, true, true, false, JITATTN_POLICY_CAUSAL, "LowerTriangularMask")              \
  X(causal_bottom_right, "causal_br", dense, false, true, true, false, JITATTN_POLICY_CAUSAL_BR,                  \
    "LowerTriangularFromBottomRightMask")                                                                          \
  X(tensor, "tensor", dense, false, false, true, true, "jitattn::TensorBiasPolicy<{dtype}, jitattn::NoBias>",      \
    "TensorBias (a tensor)")                                                                                       \
  X(causal_tensor, "causal_tensor", dense, false, true, true, true,                                               \
    "jitattn::TensorBiasPolicy<{dtype}, " JITATTN_POLICY_CAUSAL ">", "LowerTriangularMaskWithTensorBias")          \
  X(causal_local_br, "causal_local_br", dense, true, false, true, false, JITATTN_POLICY_BAND_BR,                  \
    "LowerTriangularFromBottomRightLocalAttentionMask")                                                            \
  X(local_br, "local_br", dense, true, false, true, false, JITATTN_POLICY_BAND_BR, "LocalAttentionFromBottomRightMask") \
  X(bd, "bd", varlen, false, true, true, false, "jitattn::NoBias",                                                 \
    "BlockDiagonalMask, BlockDiagonalPaddedKeysMask, BlockDiagonalGappyKeysMask")                                  \
  X(bd_causal, "bd_causal", varlen, false, true, true, false, JITATTN_POLICY_CAUSAL, "BlockDiagonalCausalMask")   \
  X(bd_causal_br, "bd_causal_br", varlen, false, true, true, false, JITATTN_POLICY_CAUSAL_BR,                     \
    "BlockDiagonalCausalFromBottomRightMask, BlockDiagonalCausalWithOffsetPaddedKeysMask, "                       \
    "BlockDiagonalCausalWithOffsetGappyKeysMask")                                                                  \
  X(bd_causal_local, "bd_causal_local", varlen, true, true, true, false, "jitattn::BandMask<false, true, true>",   \
    "BlockDiagonalCausalLocalAttentionMask")                                                                       \
  X(bd_causal_local_br, "bd_causal_local_br", varlen, true, true, true, false, JITATTN_POLICY_BAND_BR,            \
    "BlockDiagonalCausalLocalAttentionFromBottomRightMask, BlockDiagonalCausalLocalAttentionPaddedKeysMask")       \
  X(bd_local_br, "bd_local_br", varlen, true, true, true, false, JITATTN_POLICY_BAND_BR,                          \
    "BlockDiagonalLocalAttentionPaddedKeysMask")                                                                   \
  X(alibi, "alibi", dense, false, false, true, false, "jitattn::AlibiPolicy<jitattn::NoBias>", "AlibiBias")       \
  X(causal_alibi, "causal_alibi", dense, false, true, true, false, "jitattn::AlibiPolicy<" JITATTN_POLICY_CAUSAL ">", \
    "LowerTriangularMaskWithAlibi")                                                                                \
  X(bd_alibi, "bd_alibi", varlen, false, true, true, false, "jitattn::AlibiPolicy<jitattn::NoBias>",               \
    "BlockDiagonalMaskWithAlibi")                                                                                  \
  X(bd_causal_alibi, "bd_causal_alibi", varlen, false, true, true, false,                                         \
    "jitattn::AlibiPolicy<" JITATTN_POLICY_CAUSAL ">", "BlockDiagonalCausalMaskWithAlibi")                         \
  X(pbd, "pbd", paged, false, true, false, false, "jitattn::NoBias",                                               \
    "PagedBlockDiagonalPaddedKeysMask, PagedBlockDiagonalGappyKeysMask")                                           \
  X(pbd_causal_br, "pbd_causal_br", paged, false, true, false, false, JITATTN_POLICY_CAUSAL_BR,                   \
    "PagedBlockDiagonalCausalWithOffsetPaddedKeysMask, PagedBlockDiagonalCausalWithOffsetGappyKeysMask")           \
  X(pbd_causal_local_br, "pbd_causal_local_br", paged, true, true, false, false, JITATTN_POLICY_BAND_BR,          \
    "PagedBlockDiagonalCausalLocalPaddedKeysMask")                                                                 \
  X(block_sparse, "block_sparse", dense, false, true, true, false, "jitattn::BlockSparsePolicy<jitattn::NoBias>",  \
    "BlockSparseMask")                                                                                             \
  X(causal_block_sparse, "causal_block_sparse", dense, false, true, true, false,                                  \
    "jitattn::BlockSparsePolicy<" JITATTN_POLICY_CAUSAL ">", "BlockSparseMask(causal=True)")
