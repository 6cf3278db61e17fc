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

// An int32 array the kernels read from device memory, with its host copy. Copies share one
// upload, freed with the last copy.
class DeviceInts {
 public:
  DeviceInts();  // empty
  explicit DeviceInts(std::vector<int32_t> host);                    // uploaded on first use
  DeviceInts(std::vector<int32_t> host, const int32_t* device_ptr);  // the caller's device copy
  const std::vector<int32_t>& host() const { return host_; }
  // The caller's pointer if one was given; else the copy in the current context (or `device`'s
  // primary context), uploaded the first time (thread-safe). Throws without a GPU. nullptr for
  // an empty array.
  const int32_t* device(int device) const;
  bool empty() const { return host_.empty(); }

 private:
  struct Upload;
  std::vector<int32_t> host_;
  const int32_t* caller_ptr_ = nullptr;
  std::shared_ptr<Upload> upload_;  // made by every constructor (device_ints.cpp)
};

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

// ---- dense (batched) masks -------------------------------------------------------------------
struct LowerTriangularMaskWithTensorBias;
struct LowerTriangularFromBottomRightLocalAttentionMask;

// A dense additive bias broadcastable to [B, H, Mq, Mkv]: a 4-D tensor whose B and H
// dimensions may have size 1 or stride 0; the last stride must be 1.
struct TensorBias {
  TensorView tensor;
};

// Query i may attend key j iff j <= i (top-left aligned causal mask).
struct LowerTriangularMask {
  LowerTriangularMaskWithTensorBias add_bias(const TensorView& bias) const;
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

// ---- block-diagonal masks (B = 1, sequences concatenated along M) ---------------------------
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
};
// Within block b: top-left causal.
struct BlockDiagonalCausalMask {
  SeqLenInfo q_seqinfo, k_seqinfo;
  static BlockDiagonalCausalMask from_seqlens(const std::vector<int32_t>& q_seqlen, const std::vector<int32_t>& kv_seqlen = {});
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
};
// ... bottom-right causal within each block (decoding: the new queries are the last keys).
// kv_seqlen[b] < q_seqlen[b] is allowed: the block's first queries then see no key.
struct BlockDiagonalCausalWithOffsetPaddedKeysMask {
  SeqLenInfo q_seqinfo;
  PaddedSeqLenInfo k_seqinfo;
  static BlockDiagonalCausalWithOffsetPaddedKeysMask from_seqlens(const std::vector<int32_t>& q_seqlen, int32_t kv_padding,
                                                                  const std::vector<int32_t>& kv_seqlen);
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
};
// Keys gappy: block b's keys are rows [seqstart[b], seqstart[b] + seqlen[b]); kv_seqstarts has
// B + 1 entries, the last being the number of key rows.
struct BlockDiagonalGappyKeysMask {
  SeqLenInfo q_seqinfo;
  GappySeqInfo k_seqinfo;
  static BlockDiagonalGappyKeysMask from_seqlens(const std::vector<int32_t>& q_seqlen,
                                                 const std::vector<int32_t>& kv_seqstarts,
                                                 const std::vector<int32_t>& kv_seqlen);
};
// ... bottom-right causal within each block.
struct BlockDiagonalCausalWithOffsetGappyKeysMask {
  SeqLenInfo q_seqinfo;
  GappySeqInfo k_seqinfo;
  static BlockDiagonalCausalWithOffsetGappyKeysMask from_seqlens(const std::vector<int32_t>& q_seqlen,
                                                                 const std::vector<int32_t>& kv_seqstarts,
                                                                 const std::vector<int32_t>& kv_seqlen);
};

using AttnBias =
    std::variant<std::monostate, TensorBias, LowerTriangularMask, LowerTriangularMaskWithTensorBias,
                 LowerTriangularFromBottomRightMask, LowerTriangularFromBottomRightLocalAttentionMask,
                 LocalAttentionFromBottomRightMask, BlockDiagonalMask, BlockDiagonalCausalMask,
                 BlockDiagonalCausalFromBottomRightMask, BlockDiagonalCausalLocalAttentionMask,
                 BlockDiagonalCausalLocalAttentionFromBottomRightMask, BlockDiagonalPaddedKeysMask,
                 BlockDiagonalCausalWithOffsetPaddedKeysMask, BlockDiagonalLocalAttentionPaddedKeysMask,
                 BlockDiagonalCausalLocalAttentionPaddedKeysMask, BlockDiagonalGappyKeysMask,
                 BlockDiagonalCausalWithOffsetGappyKeysMask>;

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
