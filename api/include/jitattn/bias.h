// Attention biases, one for one with xformers.ops.fmha.attn_bias: same names, same semantics,
// same constructors. Each bias *kind* is a separate kernel specialization; its numbers
// (sequence lengths, windows, tensor strides) are kernel arguments.
//
// Block-diagonal biases describe a batch of sequences concatenated along M (inputs have B = 1).
// They keep host-side sequence lengths for planning; the device-side arrays the kernels read are
// either passed by the caller (so a decode step can run inside a CUDA graph) or uploaded by the
// library on first use and kept with the bias.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "jitattn/tensor.h"

namespace jitattn {

// An array the kernels read from device memory (int32 seqstarts/seqlens/block tables, float
// ALiBi slopes), with its host copy. Copies share one upload, freed with the last copy.
// With the caller's device pointer, the kernels read that memory, and the caller may change its
// contents between calls (e.g. the lengths of a decode step replayed as a CUDA graph); the host
// copy is then only used for host-side checks and planning (shapes, the longest query block),
// so it must stay a valid description of what the device holds.
template <class T>
class DeviceArray {
 public:
  DeviceArray();  // empty
  explicit DeviceArray(std::vector<T> host);               // uploaded on first use
  DeviceArray(std::vector<T> host, const T* device_ptr);   // the caller's device copy
  const std::vector<T>& host() const { return host_; }
  // The caller's pointer if one was given; else the copy in the current context (or `device`'s
  // primary context), uploaded the first time (thread-safe). Throws without a GPU. nullptr for
  // an empty array.
  const T* device(int device) const;
  bool empty() const { return host_.empty(); }

 private:
  struct Upload;
  std::vector<T> host_;
  const T* caller_ptr_ = nullptr;
  std::shared_ptr<Upload> upload_;  // made by every constructor (device_ints.cpp)
};
using DeviceInts = DeviceArray<int32_t>;
using DeviceFloats = DeviceArray<float>;

// ---- sequence layouts ------------------------------------------------------------------------
// Sequence b spans [seqstart[b], seqstart[b+1]) of the concatenated M dimension.
// (xFormers' _SeqLenInfo. Seqlens must be >= 0; an empty list gives max_seqlen 0, not -1.)
struct SeqLenInfo {
  DeviceInts seqstart;  // B + 1 entries, seqstart[0] = 0
  int32_t max_seqlen = 0;
  static SeqLenInfo from_seqlens(const std::vector<int32_t>& seqlens);
  int64_t batch() const { return int64_t(seqstart.host().size()) - 1; }
  std::vector<int32_t> seqlens() const;
};

// Keys of sequence b start at b * padding and have seqlen[b] <= padding valid rows; the key
// tensor has B * padding rows. (xFormers' _PaddedSeqLenInfo: padding >= 1, at least one seqlen.)
struct PaddedSeqLenInfo {
  DeviceInts seqstart;  // B + 1 entries: b * padding
  DeviceInts seqlen;    // B entries
  int32_t padding = 0;
  int32_t max_seqlen = 0;
  static PaddedSeqLenInfo from_seqlens_padded(const std::vector<int32_t>& seqlens, int32_t padding);
};

// Keys of sequence b start at seqstart[b] (any order, gaps allowed) and have seqlen[b] rows.
// (xFormers' non-paged _GappySeqInfo: len(seqstarts) == len(seqlens) + 1, at least one seqlen.)
struct GappySeqInfo {
  DeviceInts seqstart;  // B + 1 entries; the last is the key tensor's length (key.shape[1])
  DeviceInts seqlen;    // B entries
  int32_t max_seqlen = 0;
  static GappySeqInfo from_seqlens_gappy(const std::vector<int32_t>& seqstarts, const std::vector<int32_t>& seqlens);
};

// ---- ALiBi (attention with linear biases) -------------------------------------------------------
// Adds -slopes[h] * |j - i| to the logit of query i and key j (positions counted from the start
// of the sequence, or of the block for block-diagonal masks), computed in the kernel: no tensor
// is materialized. One slope per query head (for 5-D inputs, G·H slopes in g-major order); the
// usual slopes for H heads are 2^(-8(h+1)/H). Under a causal mask this is the ALiBi of Press et
// al. (2022); without one, the symmetric form.
struct AlibiSlopes {
  DeviceFloats slopes;
  // 2^(-8(h+1)/H) for h in [0, H), as in the ALiBi paper (for H a power of two).
  static AlibiSlopes geometric(int32_t heads);
};
struct AlibiBias {
  AlibiSlopes slopes;
};
struct LowerTriangularMaskWithAlibi;

// ---- dense (batched) masks -------------------------------------------------------------------
struct LowerTriangularMaskWithTensorBias;
struct LowerTriangularFromBottomRightLocalAttentionMask;

// A dense additive bias broadcastable to [B, H, Mq, Mkv]: a 4-D tensor whose B and H
// dimensions may have size 1 or stride 0; the last stride must be 1. For 5-D (BMGHK) inputs it
// may also be 5-D [B, G, H, Mq, Mkv], read as G·H heads of one stride: G or H may have size 1,
// and when both are > 1, stride[1] must be H·stride[2] (both 0 broadcasts over both; a bias
// broadcast over only one of them has no such stride: pass it expanded and copied, as the
// Python layer does).
struct TensorBias {
  TensorView tensor;
};

// Query i may attend key j iff j <= i (top-left aligned causal mask).
struct LowerTriangularMask {
  LowerTriangularMaskWithTensorBias add_bias(const TensorView& bias) const;
  LowerTriangularMaskWithAlibi add_alibi(const AlibiSlopes& slopes) const;
};
struct LowerTriangularMaskWithTensorBias {
  TensorView tensor;  // as TensorBias, added where the causal mask lets through
};

// Query i may attend key j iff j <= i + (Mkv - Mq) (the last query sees every key). With
// Mq > Mkv the first Mq - Mkv rows see no key (xFormers allows it).
struct LowerTriangularFromBottomRightMask {
  LowerTriangularFromBottomRightLocalAttentionMask make_local_attention(int32_t window_size) const;
};
// ... and also j > i + (Mkv - Mq) - window_size: each query sees its last window_size keys.
// window_size >= 1.
struct LowerTriangularFromBottomRightLocalAttentionMask {
  int32_t window_size = 0;
};
// Query i may attend key j iff -window_left <= j - i - (Mkv - Mq) <= window_right.
// window_left, window_right >= 0.
struct LocalAttentionFromBottomRightMask {
  int32_t window_left = 0, window_right = 0;
};

// Block-sparse attention (FairSeq's xformers_blocksparse_layout and _blocksize): query i of head
// h may attend key j iff layout[h, i / block_size, j / block_size] != 0 — and, with causal, also
// j <= i (LowerTriangularMask). layout: u8 [H or 1, ceil(Mq / block_size), ceil(Mkv / block_size)]
// (a bool tensor's bytes) on the call's device (host memory for materialize()), last stride 1;
// block_size a power of two in [16, 256]. Tiles of zero blocks are never loaded. H counts the
// query heads (G·H for 5-D inputs).
struct BlockSparseMask {
  TensorView layout;
  int32_t block_size = 0;
  bool causal = false;
};

// ---- block-diagonal masks (B = 1, sequences concatenated along M) ---------------------------
// Paged keys (declared below with the other block-diagonal masks).
// Key/value tensors are [1, num_pages * page_size, Hkv, K]: a pool of pages. Sequence b's
// logical key position x (0 <= x < max_pages * page_size) lives in physical row
//   block_tables[b, x / page_size] * page_size + x % page_size.
// block_tables is row-major int32 [B, max_pages]; its entries must lie in [0, num_pages).
struct BlockTables {
  DeviceInts table;       // B * max_pages entries
  int32_t max_pages = 0;  // row length of the table
};

struct PagedBlockDiagonalPaddedKeysMask;
struct PagedBlockDiagonalCausalWithOffsetPaddedKeysMask;
struct PagedBlockDiagonalCausalLocalPaddedKeysMask;
struct PagedBlockDiagonalGappyKeysMask;
struct PagedBlockDiagonalCausalWithOffsetGappyKeysMask;
struct BlockDiagonalMaskWithAlibi;
struct BlockDiagonalCausalMaskWithAlibi;

struct BlockDiagonalCausalMask;
struct BlockDiagonalCausalFromBottomRightMask;
struct BlockDiagonalCausalLocalAttentionMask;
struct BlockDiagonalCausalLocalAttentionFromBottomRightMask;

// Query block b sees all of key block b.
struct BlockDiagonalMask {
  SeqLenInfo q_seqinfo, k_seqinfo;
  // kv_seqlen empty: the same as q_seqlen.
  static BlockDiagonalMask from_seqlens(const std::vector<int32_t>& q_seqlen, const std::vector<int32_t>& kv_seqlen = {});
  // The mask for tensors [1, M_b, ...] concatenated along M (the caller concatenates).
  static BlockDiagonalMask from_tensor_list(const std::vector<TensorView>& tensors);
  // Views of each block of a [1, M, ...] tensor, as xFormers' split().
  std::vector<TensorView> split(const TensorView& tensor) const;
  BlockDiagonalCausalMask make_causal() const;
  BlockDiagonalCausalFromBottomRightMask make_causal_from_bottomright() const;
  BlockDiagonalCausalLocalAttentionMask make_local_attention(int32_t window_size) const;
  BlockDiagonalCausalLocalAttentionFromBottomRightMask make_local_attention_from_bottomright(int32_t window_size) const;
  BlockDiagonalMaskWithAlibi add_alibi(const AlibiSlopes& slopes) const;
};
// Within block b: top-left causal.
struct BlockDiagonalCausalMask {
  SeqLenInfo q_seqinfo, k_seqinfo;
  static BlockDiagonalCausalMask from_seqlens(const std::vector<int32_t>& q_seqlen, const std::vector<int32_t>& kv_seqlen = {});
  BlockDiagonalCausalMaskWithAlibi add_alibi(const AlibiSlopes& slopes) const;
};
// Within block b: bottom-right causal. xFormers requires kv_seqlen[b] >= q_seqlen[b].
struct BlockDiagonalCausalFromBottomRightMask {
  SeqLenInfo q_seqinfo, k_seqinfo;
};
// Within block b: top-left causal, each query seeing at most window_size keys (itself included).
// window_size >= 1, and xFormers requires q_seqlen[b] - window_size < kv_seqlen[b].
struct BlockDiagonalCausalLocalAttentionMask {
  SeqLenInfo q_seqinfo, k_seqinfo;
  int32_t window_size = 0;
};
// Within block b: bottom-right causal with a window of window_size keys. window_size >= 1 and,
// as BlockDiagonalCausalFromBottomRightMask, kv_seqlen[b] >= q_seqlen[b].
struct BlockDiagonalCausalLocalAttentionFromBottomRightMask {
  SeqLenInfo q_seqinfo, k_seqinfo;
  int32_t window_size = 0;
};

// Keys padded: block b's keys are rows [b·padding, b·padding + seqlen[b]).
struct BlockDiagonalPaddedKeysMask {
  SeqLenInfo q_seqinfo;
  PaddedSeqLenInfo k_seqinfo;
  static BlockDiagonalPaddedKeysMask from_seqlens(const std::vector<int32_t>& q_seqlen, int32_t kv_padding,
                                                  const std::vector<int32_t>& kv_seqlen);
  PagedBlockDiagonalPaddedKeysMask make_paged(const BlockTables& block_tables, int32_t page_size) const;
};
// ... bottom-right causal within each block (decoding: the new queries are the last keys).
// kv_seqlen[b] < q_seqlen[b] is allowed: the block's first queries then see no key.
struct BlockDiagonalCausalWithOffsetPaddedKeysMask {
  SeqLenInfo q_seqinfo;
  PaddedSeqLenInfo k_seqinfo;
  static BlockDiagonalCausalWithOffsetPaddedKeysMask from_seqlens(const std::vector<int32_t>& q_seqlen, int32_t kv_padding,
                                                                  const std::vector<int32_t>& kv_seqlen);
  PagedBlockDiagonalCausalWithOffsetPaddedKeysMask make_paged(const BlockTables& block_tables, int32_t page_size) const;
};
// ... -window_left <= j - i - (kv_len - q_len) <= window_right within each block (windows >= 0).
struct BlockDiagonalLocalAttentionPaddedKeysMask {
  SeqLenInfo q_seqinfo;
  PaddedSeqLenInfo k_seqinfo;
  int32_t window_left = 0, window_right = 0;
};
// ... bottom-right causal with a window of window_size keys within each block (window_size >= 1:
// xFormers does not check it, but 0 would mask everything).
struct BlockDiagonalCausalLocalAttentionPaddedKeysMask {
  SeqLenInfo q_seqinfo;
  PaddedSeqLenInfo k_seqinfo;
  int32_t window_size = 0;
  PagedBlockDiagonalCausalLocalPaddedKeysMask make_paged(const BlockTables& block_tables, int32_t page_size) const;
};
// Keys gappy: block b's keys are rows [seqstart[b], seqstart[b] + seqlen[b]); kv_seqstarts has
// B + 1 entries, the last being the number of key rows. Ranges may overlap (as in xFormers): a
// key row in several blocks is seen by each, and its dK/dV is the sum over all of them.
struct BlockDiagonalGappyKeysMask {
  SeqLenInfo q_seqinfo;
  GappySeqInfo k_seqinfo;
  static BlockDiagonalGappyKeysMask from_seqlens(const std::vector<int32_t>& q_seqlen,
                                                 const std::vector<int32_t>& kv_seqstarts,
                                                 const std::vector<int32_t>& kv_seqlen);
  PagedBlockDiagonalGappyKeysMask make_paged(const BlockTables& block_tables, int32_t page_size) const;
};
// ... bottom-right causal within each block.
struct BlockDiagonalCausalWithOffsetGappyKeysMask {
  SeqLenInfo q_seqinfo;
  GappySeqInfo k_seqinfo;
  static BlockDiagonalCausalWithOffsetGappyKeysMask from_seqlens(const std::vector<int32_t>& q_seqlen,
                                                                 const std::vector<int32_t>& kv_seqstarts,
                                                                 const std::vector<int32_t>& kv_seqlen);
  PagedBlockDiagonalCausalWithOffsetGappyKeysMask make_paged(const BlockTables& block_tables, int32_t page_size) const;
};

// LowerTriangularMask plus ALiBi.
struct LowerTriangularMaskWithAlibi {
  AlibiSlopes slopes;
};
// BlockDiagonalMask / BlockDiagonalCausalMask plus ALiBi within each block.
struct BlockDiagonalMaskWithAlibi {
  SeqLenInfo q_seqinfo, k_seqinfo;
  AlibiSlopes slopes;
};
struct BlockDiagonalCausalMaskWithAlibi {
  SeqLenInfo q_seqinfo, k_seqinfo;
  AlibiSlopes slopes;
};

// ---- paged keys ------------------------------------------------------------------------------
// As the padded/gappy masks they come from (make_paged), with keys read through block_tables
// (see BlockTables). Padded: sequence b's keys are logical positions [0, seqlen[b]), and
// k_seqinfo.padding = max_pages * page_size. Gappy: logical positions
// [seqstart[b], seqstart[b] + seqlen[b]) of row b. page_size >= 1; every sequence's keys must
// fit in its row (<= max_pages * page_size). The key tensor length must be a multiple of
// page_size. materialize() gives the physical [.., Mq, Mkv] mask as xFormers does (Mkv = key
// rows of the pool; pages no block table names are -inf). Rows of the block table may name the
// same page (shared prefixes): each sequence reads it as its own keys. The backward does not take
// paged keys; one that did would owe such a page the sum over every sequence that reads it.
struct PagedBlockDiagonalPaddedKeysMask {
  SeqLenInfo q_seqinfo;
  PaddedSeqLenInfo k_seqinfo;
  BlockTables block_tables;
  int32_t page_size = 0;
};
struct PagedBlockDiagonalCausalWithOffsetPaddedKeysMask {
  SeqLenInfo q_seqinfo;
  PaddedSeqLenInfo k_seqinfo;
  BlockTables block_tables;
  int32_t page_size = 0;
};
struct PagedBlockDiagonalCausalLocalPaddedKeysMask {
  SeqLenInfo q_seqinfo;
  PaddedSeqLenInfo k_seqinfo;
  BlockTables block_tables;
  int32_t page_size = 0;
  int32_t window_size = 0;
};
struct PagedBlockDiagonalGappyKeysMask {
  SeqLenInfo q_seqinfo;
  GappySeqInfo k_seqinfo;  // seqstart[b] is the offset within row b's logical keys
  BlockTables block_tables;
  int32_t page_size = 0;
};
struct PagedBlockDiagonalCausalWithOffsetGappyKeysMask {
  SeqLenInfo q_seqinfo;
  GappySeqInfo k_seqinfo;
  BlockTables block_tables;
  int32_t page_size = 0;
};

using AttnBias =
    std::variant<std::monostate, TensorBias, LowerTriangularMask, LowerTriangularMaskWithTensorBias,
                 LowerTriangularFromBottomRightMask, LowerTriangularFromBottomRightLocalAttentionMask,
                 LocalAttentionFromBottomRightMask, BlockDiagonalMask, BlockDiagonalCausalMask,
                 BlockDiagonalCausalFromBottomRightMask, BlockDiagonalCausalLocalAttentionMask,
                 BlockDiagonalCausalLocalAttentionFromBottomRightMask, BlockDiagonalPaddedKeysMask,
                 BlockDiagonalCausalWithOffsetPaddedKeysMask, BlockDiagonalLocalAttentionPaddedKeysMask,
                 BlockDiagonalCausalLocalAttentionPaddedKeysMask, BlockDiagonalGappyKeysMask,
                 BlockDiagonalCausalWithOffsetGappyKeysMask, PagedBlockDiagonalPaddedKeysMask,
                 PagedBlockDiagonalCausalWithOffsetPaddedKeysMask, PagedBlockDiagonalCausalLocalPaddedKeysMask,
                 PagedBlockDiagonalGappyKeysMask, PagedBlockDiagonalCausalWithOffsetGappyKeysMask, AlibiBias,
                 LowerTriangularMaskWithAlibi, BlockDiagonalMaskWithAlibi, BlockDiagonalCausalMaskWithAlibi,
                 BlockSparseMask>;

// The bias as a dense [B, H, Mq, Mkv] row-major fp64 array on the host (0, -inf or values),
// as xFormers' materialize(). Tensor biases must point to host memory (device == kHost) and be
// f16/bf16/f32. Block-diagonal biases materialize with B = 1 over the concatenated Mq and Mkv;
// keys outside every block, or past a padded/gappy block's seqlen, are -inf. Throws
// jitattn::Error with bias_reasons() when the bias does not fit the shape.
std::vector<double> materialize(const AttnBias& bias, int64_t B, int64_t H, int64_t Mq, int64_t Mkv);

// The xFormers class name, e.g. "BlockDiagonalCausalMask".
const char* bias_name(const AttnBias& bias);

// Every rule the bias breaks for a call with these shapes (xFormers' checks), each naming the
// argument; empty when it fits. Shapes as in attention.h (B, Mq, Mkv of the query/key tensors).
// Block-diagonal biases need B == 1, sum(q_seqlen) == Mq and Mkv == the key layout's length
// (sum(kv_seqlen), len(kv_seqlen) * kv_padding, or kv_seqstarts[-1]), as xFormers' materialize.
std::vector<std::string> bias_reasons(const AttnBias& bias, int64_t B, int64_t H, int64_t Mq, int64_t Mkv);

}  // namespace jitattn
