// The C API's jitattn_bias → jitattn::AttnBias, through the C++ constructors (from_seqlens,
// make_paged, add_alibi, ...) so that every check they make applies; then the caller's device
// arrays, if any, replace the uploads.
#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "c_api_internal.h"

namespace jitattn::capi {

namespace {

constexpr size_t kBiasFieldEnds[] = {
    JITATTN_FIELD_END(jitattn_bias, struct_size),         JITATTN_FIELD_END(jitattn_bias, kind),
    JITATTN_FIELD_END(jitattn_bias, num_seqs),            JITATTN_FIELD_END(jitattn_bias, q_seqlen),
    JITATTN_FIELD_END(jitattn_bias, kv_seqlen),           JITATTN_FIELD_END(jitattn_bias, kv_seqstarts),
    JITATTN_FIELD_END(jitattn_bias, kv_padding),          JITATTN_FIELD_END(jitattn_bias, window_size),
    JITATTN_FIELD_END(jitattn_bias, window_left),         JITATTN_FIELD_END(jitattn_bias, window_right),
    JITATTN_FIELD_END(jitattn_bias, tensor),              JITATTN_FIELD_END(jitattn_bias, block_tables),
    JITATTN_FIELD_END(jitattn_bias, max_pages),           JITATTN_FIELD_END(jitattn_bias, page_size),
    JITATTN_FIELD_END(jitattn_bias, alibi_slopes),        JITATTN_FIELD_END(jitattn_bias, alibi_num_slopes),
    JITATTN_FIELD_END(jitattn_bias, reserved0),           JITATTN_FIELD_END(jitattn_bias, q_seqstart_device),
    JITATTN_FIELD_END(jitattn_bias, kv_seqstart_device),  JITATTN_FIELD_END(jitattn_bias, kv_seqlen_device),
    JITATTN_FIELD_END(jitattn_bias, block_tables_device), JITATTN_FIELD_END(jitattn_bias, alibi_slopes_device),
    JITATTN_FIELD_END(jitattn_bias, block_size),          JITATTN_FIELD_END(jitattn_bias, block_sparse_causal),
};

// A host array of n entries (n >= 0; NULL only when n == 0).
template <class T>
std::vector<T> host_array(const T* p, int64_t n, const char* name) {
  if (n < 0) invalid(std::string("bias.") + name + ": the count " + std::to_string(n) + " is negative");
  if (!p && n > 0) invalid(std::string("bias.") + name + " is NULL");
  return p ? std::vector<T>(p, p + n) : std::vector<T>{};
}

// kind_name(kind) for messages: "BlockDiagonalCausalMask".
std::string kind_text(int32_t kind) {
  const char* n = jitattn_bias_kind_name(kind);
  return n ? n : "kind " + std::to_string(kind);
}

std::vector<int32_t> q_seqlen(const jitattn_bias& d) { return host_array(d.q_seqlen, d.num_seqs, "q_seqlen"); }
// kv_seqlen; with `optional`, NULL gives {} (from_seqlens then uses q_seqlen).
std::vector<int32_t> kv_seqlen(const jitattn_bias& d, bool optional) {
  if (!d.kv_seqlen && !optional) invalid("bias.kv_seqlen is NULL: " + kind_text(d.kind) + " needs num_seqs entries");
  return host_array(d.kv_seqlen, d.kv_seqlen ? d.num_seqs : 0, "kv_seqlen");
}
std::vector<int32_t> kv_seqstarts(const jitattn_bias& d) {
  if (!d.kv_seqstarts) invalid("bias.kv_seqstarts is NULL: " + kind_text(d.kind) + " needs num_seqs + 1 entries");
  return host_array(d.kv_seqstarts, int64_t(d.num_seqs) + 1, "kv_seqstarts");
}

BlockTables block_tables(const jitattn_bias& d) {
  if (d.max_pages < 0) invalid("bias.max_pages=" + std::to_string(d.max_pages) + " must be >= 0");
  return BlockTables{DeviceInts(host_array(d.block_tables, int64_t(d.num_seqs) * d.max_pages, "block_tables")),
                     d.max_pages};
}
// The non-paged padding a paged kind starts from: make_paged replaces it by the block-table row.
// The padding of the padded mask a paged one is made from (make_paged then sets it to the row,
// max_pages * page_size, and checks each sequence against the row): at least the longest
// kv_seqlen, so that a sequence past the row is reported by make_paged's rule (the row), not as
// exceeding a kv_padding the caller never gave.
int32_t paged_padding(const jitattn_bias& d) {
  const int64_t row = int64_t(d.max_pages) * d.page_size;
  if (row < 1 || row > INT32_MAX)
    invalid("bias.max_pages * bias.page_size = " + std::to_string(d.max_pages) + " * " + std::to_string(d.page_size) +
            " must be in [1, 2^31-1] (a row of the block table holds that many keys)");
  int32_t padding = int32_t(row);
  for (int32_t n : kv_seqlen(d, true)) padding = std::max(padding, n);
  return padding;
}

AlibiSlopes slopes(const jitattn_bias& d) {
  if (d.alibi_num_slopes < 1)
    invalid("bias.alibi_num_slopes=" + std::to_string(d.alibi_num_slopes) +
            " must be >= 1: one slope per query head (geometric slopes when bias.alibi_slopes is NULL)");
  if (!d.alibi_slopes) return AlibiSlopes::geometric(d.alibi_num_slopes);
  return AlibiSlopes{DeviceFloats(host_array(d.alibi_slopes, d.alibi_num_slopes, "alibi_slopes"))};
}

TensorView bias_tensor(const jitattn_bias& d) {
  if (!d.tensor) invalid("bias.tensor is NULL: " + kind_text(d.kind) + " needs a dense bias tensor");
  return to_tensor(d.tensor, "bias.tensor");
}

BlockDiagonalMask block_diagonal(const jitattn_bias& d) { return BlockDiagonalMask::from_seqlens(q_seqlen(d), kv_seqlen(d, true)); }
BlockDiagonalPaddedKeysMask padded(const jitattn_bias& d, int32_t padding) {
  return BlockDiagonalPaddedKeysMask::from_seqlens(q_seqlen(d), padding, kv_seqlen(d, false));
}
BlockDiagonalGappyKeysMask gappy(const jitattn_bias& d) {
  return BlockDiagonalGappyKeysMask::from_seqlens(q_seqlen(d), kv_seqstarts(d), kv_seqlen(d, false));
}
void require_windows(const jitattn_bias& d) {
  if (d.window_left < 0 || d.window_right < 0)
    invalid("bias.window_left=" + std::to_string(d.window_left) + " and bias.window_right=" + std::to_string(d.window_right) +
            " must be >= 0");
}

// The host description as the C++ bias, by the constructor xFormers users call.
AttnBias construct(const jitattn_bias& d) {
  switch (d.kind) {
    case JITATTN_BIAS_NONE: return {};
    case JITATTN_BIAS_TENSOR: return TensorBias{bias_tensor(d)};
    case JITATTN_BIAS_LOWER_TRIANGULAR: return LowerTriangularMask{};
    case JITATTN_BIAS_LOWER_TRIANGULAR_WITH_TENSOR_BIAS: return LowerTriangularMask{}.add_bias(bias_tensor(d));
    case JITATTN_BIAS_LOWER_TRIANGULAR_FROM_BOTTOM_RIGHT: return LowerTriangularFromBottomRightMask{};
    case JITATTN_BIAS_LOWER_TRIANGULAR_FROM_BOTTOM_RIGHT_LOCAL_ATTENTION:
      return LowerTriangularFromBottomRightMask{}.make_local_attention(d.window_size);
    case JITATTN_BIAS_LOCAL_ATTENTION_FROM_BOTTOM_RIGHT:
      require_windows(d);
      return LocalAttentionFromBottomRightMask{d.window_left, d.window_right};
    case JITATTN_BIAS_BLOCK_DIAGONAL: return block_diagonal(d);
    case JITATTN_BIAS_BLOCK_DIAGONAL_CAUSAL: return block_diagonal(d).make_causal();
    case JITATTN_BIAS_BLOCK_DIAGONAL_CAUSAL_FROM_BOTTOM_RIGHT: return block_diagonal(d).make_causal_from_bottomright();
    case JITATTN_BIAS_BLOCK_DIAGONAL_CAUSAL_LOCAL_ATTENTION: return block_diagonal(d).make_local_attention(d.window_size);
    case JITATTN_BIAS_BLOCK_DIAGONAL_CAUSAL_LOCAL_ATTENTION_FROM_BOTTOM_RIGHT:
      return block_diagonal(d).make_local_attention_from_bottomright(d.window_size);
    case JITATTN_BIAS_BLOCK_DIAGONAL_PADDED_KEYS: return padded(d, d.kv_padding);
    case JITATTN_BIAS_BLOCK_DIAGONAL_CAUSAL_WITH_OFFSET_PADDED_KEYS:
      return BlockDiagonalCausalWithOffsetPaddedKeysMask::from_seqlens(q_seqlen(d), d.kv_padding, kv_seqlen(d, false));
    case JITATTN_BIAS_BLOCK_DIAGONAL_LOCAL_ATTENTION_PADDED_KEYS: {
      require_windows(d);
      const auto m = padded(d, d.kv_padding);
      return BlockDiagonalLocalAttentionPaddedKeysMask{m.q_seqinfo, m.k_seqinfo, d.window_left, d.window_right};
    }
    case JITATTN_BIAS_BLOCK_DIAGONAL_CAUSAL_LOCAL_ATTENTION_PADDED_KEYS: {
      const auto m = padded(d, d.kv_padding);
      return BlockDiagonalCausalLocalAttentionPaddedKeysMask{m.q_seqinfo, m.k_seqinfo, d.window_size};
    }
    case JITATTN_BIAS_BLOCK_DIAGONAL_GAPPY_KEYS: return gappy(d);
    case JITATTN_BIAS_BLOCK_DIAGONAL_CAUSAL_WITH_OFFSET_GAPPY_KEYS:
      return BlockDiagonalCausalWithOffsetGappyKeysMask::from_seqlens(q_seqlen(d), kv_seqstarts(d), kv_seqlen(d, false));
    case JITATTN_BIAS_PAGED_BLOCK_DIAGONAL_PADDED_KEYS:
      return padded(d, paged_padding(d)).make_paged(block_tables(d), d.page_size);
    case JITATTN_BIAS_PAGED_BLOCK_DIAGONAL_CAUSAL_WITH_OFFSET_PADDED_KEYS:
      return BlockDiagonalCausalWithOffsetPaddedKeysMask::from_seqlens(q_seqlen(d), paged_padding(d), kv_seqlen(d, false))
          .make_paged(block_tables(d), d.page_size);
    case JITATTN_BIAS_PAGED_BLOCK_DIAGONAL_CAUSAL_LOCAL_PADDED_KEYS: {
      const auto m = padded(d, paged_padding(d));
      return BlockDiagonalCausalLocalAttentionPaddedKeysMask{m.q_seqinfo, m.k_seqinfo, d.window_size}.make_paged(
          block_tables(d), d.page_size);
    }
    case JITATTN_BIAS_PAGED_BLOCK_DIAGONAL_GAPPY_KEYS: return gappy(d).make_paged(block_tables(d), d.page_size);
    case JITATTN_BIAS_PAGED_BLOCK_DIAGONAL_CAUSAL_WITH_OFFSET_GAPPY_KEYS:
      return BlockDiagonalCausalWithOffsetGappyKeysMask::from_seqlens(q_seqlen(d), kv_seqstarts(d), kv_seqlen(d, false))
          .make_paged(block_tables(d), d.page_size);
    case JITATTN_BIAS_ALIBI: return AlibiBias{slopes(d)};
    case JITATTN_BIAS_LOWER_TRIANGULAR_WITH_ALIBI: return LowerTriangularMask{}.add_alibi(slopes(d));
    case JITATTN_BIAS_BLOCK_DIAGONAL_WITH_ALIBI: return block_diagonal(d).add_alibi(slopes(d));
    case JITATTN_BIAS_BLOCK_DIAGONAL_CAUSAL_WITH_ALIBI:
      return BlockDiagonalCausalMask::from_seqlens(q_seqlen(d), kv_seqlen(d, true)).add_alibi(slopes(d));
    case JITATTN_BIAS_BLOCK_SPARSE: {
      if (!d.tensor) invalid("bias.tensor is NULL: BlockSparseMask needs its layout (u8) there");
      return BlockSparseMask{to_tensor(d.tensor, "bias.tensor (layout)"), d.block_size, d.block_sparse_causal != 0};
    }
    default:
      invalid("bias.kind=" + std::to_string(d.kind) + " is not a JITATTN_BIAS_* value (0 to " +
              std::to_string(JITATTN_BIAS_KIND_COUNT - 1) + ")");
  }
}

// ---- the caller's device arrays -----------------------------------------------------------------
template <class T, class = void> struct HasQSeqinfo : std::false_type {};
template <class T> struct HasQSeqinfo<T, std::void_t<decltype(std::declval<T&>().q_seqinfo)>> : std::true_type {};
template <class T, class = void> struct HasKSeqinfo : std::false_type {};
template <class T> struct HasKSeqinfo<T, std::void_t<decltype(std::declval<T&>().k_seqinfo)>> : std::true_type {};
template <class T, class = void> struct HasKSeqlen : std::false_type {};
template <class T> struct HasKSeqlen<T, std::void_t<decltype(std::declval<T&>().k_seqinfo.seqlen)>> : std::true_type {};
template <class T, class = void> struct HasBlockTables : std::false_type {};
template <class T> struct HasBlockTables<T, std::void_t<decltype(std::declval<T&>().block_tables)>> : std::true_type {};
template <class T, class = void> struct HasSlopes : std::false_type {};
template <class T> struct HasSlopes<T, std::void_t<decltype(std::declval<T&>().slopes)>> : std::true_type {};

template <class T>
void use_device(DeviceArray<T>& a, const T* ptr) {
  if (ptr) a = DeviceArray<T>(a.host(), ptr);
}
[[noreturn]] void no_such_array(const jitattn_bias& d, const char* field) {
  invalid(std::string("bias.") + field + " is given but " + kind_text(d.kind) + " has no such array");
}

void attach_device_arrays(const jitattn_bias& d, AttnBias& bias) {
  std::visit(
      [&](auto& x) {
        using B = std::decay_t<decltype(x)>;
        if constexpr (HasQSeqinfo<B>::value) use_device(x.q_seqinfo.seqstart, d.q_seqstart_device);
        else if (d.q_seqstart_device) no_such_array(d, "q_seqstart_device");
        if constexpr (HasBlockTables<B>::value) {
          use_device(x.block_tables.table, d.block_tables_device);
          // make_paged recomputed the key seqstarts: the caller cannot know them.
          if (d.kv_seqstart_device) no_such_array(d, "kv_seqstart_device (paged kinds compute it)");
        } else {
          if (d.block_tables_device) no_such_array(d, "block_tables_device");
          if constexpr (HasKSeqinfo<B>::value) use_device(x.k_seqinfo.seqstart, d.kv_seqstart_device);
          else if (d.kv_seqstart_device) no_such_array(d, "kv_seqstart_device");
        }
        if constexpr (HasKSeqlen<B>::value) use_device(x.k_seqinfo.seqlen, d.kv_seqlen_device);
        else if (d.kv_seqlen_device) no_such_array(d, "kv_seqlen_device");
        if constexpr (HasSlopes<B>::value) use_device(x.slopes.slopes, d.alibi_slopes_device);
        else if (d.alibi_slopes_device) no_such_array(d, "alibi_slopes_device");
      },
      bias);
}

}  // namespace

AttnBias to_bias(const jitattn_bias* desc) {
  if (!desc) return {};
  const jitattn_bias d = read_struct(*desc, "jitattn_bias", kBiasFieldEnds);
  if (d.reserved0 != 0) invalid("bias.reserved0=" + std::to_string(d.reserved0) + " must be 0");
  try {
    AttnBias bias = construct(d);
    if (bias.index() != size_t(d.kind))  // JITATTN_BIAS_* is numbered as AttnBias's alternatives
      throw CallError{JITATTN_ERROR_INTERNAL, {"bias.kind=" + std::to_string(d.kind) + " built a " + bias_name(bias)}};
    attach_device_arrays(d, bias);
    return bias;
  } catch (const Error& e) {  // a constructor's rules: the caller's arguments
    throw CallError{JITATTN_ERROR_INVALID_ARGUMENT, e.reasons()};
  }
}

}  // namespace jitattn::capi
