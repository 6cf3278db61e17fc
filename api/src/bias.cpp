// The xFormers bias family on the host: constructors and the checks xFormers makes in them,
// make_* / add_* conversions, split/from_tensor_list, the rules a call's shapes must meet
// (bias_reasons), and the dense fp64 mask (materialize) the GPU tests compare against.
// Semantics follow xformers/ops/fmha/attn_bias.py; every message names its argument.
//
// Paged masks: make_paged replaces the padded layout's padding by the block-table row,
// max_pages * page_size (xFormers' make_paged does the same), and recomputes seqstart as
// b * padding. A gappy layout is read as living in rows of that same length (xFormers'
// notional_padding = max_pages * page_size): seqstart[b] becomes seqstart[b] - b * row, the
// offset within row b, and the last seqstart entry becomes the row length (xFormers puts -1
// there; neither is read). With the identity block table the paged mask then materializes as
// the non-paged one over B * row keys.
#include "jitattn/bias.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iterator>
#include <limits>
#include <sstream>
#include <type_traits>

#include "jitattn/error.h"
#include "plan.h"

namespace jitattn {

namespace {

using Reasons = std::vector<std::string>;
constexpr double kNegInf = -std::numeric_limits<double>::infinity();

std::string S(int64_t v) { return std::to_string(v); }
std::string at(const std::string& name, size_t i) { return name + "[" + std::to_string(i) + "]"; }
void throw_if(Reasons r) {
  if (!r.empty()) throw Error(ErrorKind::invalid_argument, std::move(r));
}

// xFormers class names, in AttnBias order.
constexpr const char* kNames[] = {
    "None",
    "TensorBias",
    "LowerTriangularMask",
    "LowerTriangularMaskWithTensorBias",
    "LowerTriangularFromBottomRightMask",
    "LowerTriangularFromBottomRightLocalAttentionMask",
    "LocalAttentionFromBottomRightMask",
    "BlockDiagonalMask",
    "BlockDiagonalCausalMask",
    "BlockDiagonalCausalFromBottomRightMask",
    "BlockDiagonalCausalLocalAttentionMask",
    "BlockDiagonalCausalLocalAttentionFromBottomRightMask",
    "BlockDiagonalPaddedKeysMask",
    "BlockDiagonalCausalWithOffsetPaddedKeysMask",
    "BlockDiagonalLocalAttentionPaddedKeysMask",
    "BlockDiagonalCausalLocalAttentionPaddedKeysMask",
    "BlockDiagonalGappyKeysMask",
    "BlockDiagonalCausalWithOffsetGappyKeysMask",
    "PagedBlockDiagonalPaddedKeysMask",
    "PagedBlockDiagonalCausalWithOffsetPaddedKeysMask",
    "PagedBlockDiagonalCausalLocalPaddedKeysMask",
    "PagedBlockDiagonalGappyKeysMask",
    "PagedBlockDiagonalCausalWithOffsetGappyKeysMask",
    "AlibiBias",  // ours: xFormers has no ALiBi biases
    "LowerTriangularMaskWithAlibi",
    "BlockDiagonalMaskWithAlibi",
    "BlockDiagonalCausalMaskWithAlibi",
    "BlockSparseMask",
};
static_assert(std::size(kNames) == std::variant_size_v<AttnBias>, "one name per AttnBias alternative");

template <class T, size_t I = 0>
constexpr size_t index_of() {
  if constexpr (std::is_same_v<T, std::variant_alternative_t<I, AttnBias>>) return I;
  else return index_of<T, I + 1>();
}
template <class T>
std::string name_of() { return kNames[index_of<T>()]; }

// ---- what kind of bias a type is -------------------------------------------------------------
template <class T, class... U>
constexpr bool kIsOneOf = (std::is_same_v<T, U> || ...);

template <class T>
constexpr bool kSeqKeys = kIsOneOf<T, BlockDiagonalMask, BlockDiagonalCausalMask, BlockDiagonalCausalFromBottomRightMask,
                                   BlockDiagonalCausalLocalAttentionMask, BlockDiagonalCausalLocalAttentionFromBottomRightMask,
                                   BlockDiagonalMaskWithAlibi, BlockDiagonalCausalMaskWithAlibi>;
template <class T>
constexpr bool kPaddedKeys = kIsOneOf<T, BlockDiagonalPaddedKeysMask, BlockDiagonalCausalWithOffsetPaddedKeysMask,
                                      BlockDiagonalLocalAttentionPaddedKeysMask, BlockDiagonalCausalLocalAttentionPaddedKeysMask>;
template <class T>
constexpr bool kGappyKeys = kIsOneOf<T, BlockDiagonalGappyKeysMask, BlockDiagonalCausalWithOffsetGappyKeysMask>;
template <class T>
constexpr bool kPagedPaddedKeys = kIsOneOf<T, PagedBlockDiagonalPaddedKeysMask, PagedBlockDiagonalCausalWithOffsetPaddedKeysMask,
                                           PagedBlockDiagonalCausalLocalPaddedKeysMask>;
template <class T>
constexpr bool kPagedGappyKeys = kIsOneOf<T, PagedBlockDiagonalGappyKeysMask, PagedBlockDiagonalCausalWithOffsetGappyKeysMask>;
template <class T>
constexpr bool kPaged = kPagedPaddedKeys<T> || kPagedGappyKeys<T>;
template <class T>
constexpr bool kBlockDiagonal = kSeqKeys<T> || kPaddedKeys<T> || kGappyKeys<T> || kPaged<T>;
template <class T>
constexpr bool kHoldsTensor = kIsOneOf<T, TensorBias, LowerTriangularMaskWithTensorBias>;
template <class T>
constexpr bool kHasAlibi =
    kIsOneOf<T, AlibiBias, LowerTriangularMaskWithAlibi, BlockDiagonalMaskWithAlibi, BlockDiagonalCausalMaskWithAlibi>;
template <class T>
constexpr bool kHasWindowSize = kIsOneOf<T, LowerTriangularFromBottomRightLocalAttentionMask, BlockDiagonalCausalLocalAttentionMask,
                                         BlockDiagonalCausalLocalAttentionFromBottomRightMask,
                                         BlockDiagonalCausalLocalAttentionPaddedKeysMask,
                                         PagedBlockDiagonalCausalLocalPaddedKeysMask>;
template <class T>
constexpr bool kHasWindowLeftRight = kIsOneOf<T, LocalAttentionFromBottomRightMask, BlockDiagonalLocalAttentionPaddedKeysMask>;
// BlockDiagonalCausalFromBottomRightMask.__post_init__ (inherited by its local variant).
template <class T>
constexpr bool kNeedsKeysPerQuery =
    kIsOneOf<T, BlockDiagonalCausalFromBottomRightMask, BlockDiagonalCausalLocalAttentionFromBottomRightMask>;

// ---- the mask inside a block -----------------------------------------------------------------
// Within one block (or the whole matrix of a dense bias) of mq queries and mkv keys, key j is
// visible to query i iff lo <= j - i - shift <= hi, shift = bottom_right ? mkv - mq : 0; a side
// without its bound is open. This is xFormers' triu/tril pair in _materialize_causal_mask and
// LocalAttentionFromBottomRightMask.materialize.
struct Band {
  bool bottom_right = false;
  bool has_lo = false, has_hi = false;
  int64_t lo = 0, hi = 0;
  bool visible(int64_t i, int64_t j, int64_t mq, int64_t mkv) const {
    const int64_t d = j - i - (bottom_right ? mkv - mq : 0);
    return (!has_lo || d >= lo) && (!has_hi || d <= hi);
  }
};
Band causal(bool bottom_right) { return {bottom_right, false, true, 0, 0}; }
Band causal_window(bool bottom_right, int64_t window_size) { return {bottom_right, true, true, 1 - window_size, 0}; }
Band local(int64_t window_left, int64_t window_right) { return {true, true, true, -window_left, window_right}; }

template <class T>
Band band_of(const T& x) {
  if constexpr (kIsOneOf<T, LowerTriangularMask, LowerTriangularMaskWithTensorBias, BlockDiagonalCausalMask,
                         LowerTriangularMaskWithAlibi, BlockDiagonalCausalMaskWithAlibi>)
    return causal(false);
  else if constexpr (kIsOneOf<T, LowerTriangularFromBottomRightMask, BlockDiagonalCausalFromBottomRightMask,
                              BlockDiagonalCausalWithOffsetPaddedKeysMask, BlockDiagonalCausalWithOffsetGappyKeysMask,
                              PagedBlockDiagonalCausalWithOffsetPaddedKeysMask,
                              PagedBlockDiagonalCausalWithOffsetGappyKeysMask>)
    return causal(true);
  else if constexpr (std::is_same_v<T, BlockDiagonalCausalLocalAttentionMask>)
    return causal_window(false, x.window_size);
  else if constexpr (kHasWindowSize<T>)
    return causal_window(true, x.window_size);
  else if constexpr (kHasWindowLeftRight<T>)
    return local(x.window_left, x.window_right);
  else if constexpr (std::is_same_v<T, BlockSparseMask>)
    return x.causal ? causal(false) : Band{};
  else
    return Band{};  // None, TensorBias, AlibiBias, [Paged]BlockDiagonal{,PaddedKeys,GappyKeys}Mask,
                    // BlockDiagonalMaskWithAlibi: every key of the block
}

// ---- blocks of a block-diagonal bias ---------------------------------------------------------
struct Block {
  int64_t q_start, q_len, k_start, k_len;
};

// Keys a block-table row holds: max_pages * page_size.
template <class T>
int64_t row_len(const T& x) {
  return int64_t(x.block_tables.max_pages) * x.page_size;
}

// Needs a valid structure (check_structure). Paged masks give logical key positions: row b of
// the block tables starts at b * row_len.
template <class T>
std::vector<Block> blocks_of(const T& x) {
  const auto& qs = x.q_seqinfo.seqstart.host();
  const auto& ks = x.k_seqinfo.seqstart.host();
  std::vector<Block> blocks;
  for (size_t b = 0; b + 1 < qs.size(); ++b) {
    int64_t k_len, k_start = ks[b];
    if constexpr (kSeqKeys<T>) k_len = ks[b + 1] - ks[b];
    else k_len = x.k_seqinfo.seqlen.host()[b];
    if constexpr (kPagedGappyKeys<T>) k_start += int64_t(b) * row_len(x);
    blocks.push_back({qs[b], qs[b + 1] - qs[b], k_start, k_len});
  }
  return blocks;
}

// What key.shape[1] must be, as xFormers' materialize: the last seqstart of each layout.
// (Paged masks: any multiple of page_size.)
template <class T>
const char* key_rows_name() {
  if constexpr (kSeqKeys<T>) return "sum(kv_seqlen)";
  else if constexpr (kPaddedKeys<T>) return "len(kv_seqlen)*kv_padding";
  else return "kv_seqstarts[-1]";
}

std::string fmt(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

// ---- structural checks (what xFormers' constructors assert) ----------------------------------
void check_seqinfo(const SeqLenInfo& s, const std::string& who, Reasons& R) {
  const auto& st = s.seqstart.host();
  if (st.empty()) {
    R.push_back(who + ".seqstart is empty: it needs one entry per sequence plus one");
    return;
  }
  if (st[0] != 0) R.push_back(who + ".seqstart[0]=" + S(st[0]) + " must be 0");
  int64_t longest = 0;
  for (size_t b = 0; b + 1 < st.size(); ++b) {
    if (st[b + 1] < st[b])
      R.push_back(at(who + ".seqstart", b + 1) + "=" + S(st[b + 1]) + " is less than " + at(who + ".seqstart", b) + "=" +
                  S(st[b]));
    longest = std::max<int64_t>(longest, st[b + 1] - st[b]);
  }
  if (s.max_seqlen < longest)
    R.push_back(who + ".max_seqlen=" + S(s.max_seqlen) + " is less than its longest sequence (" + S(longest) + ")");
}

// paged_row >= 0 for paged masks: the padding is then the block-table row, max_pages * page_size
// (what make_paged sets), and each sequence must fit in it.
void check_padded(const PaddedSeqLenInfo& k, Reasons& R, int64_t paged_row = -1) {
  const auto& st = k.seqstart.host();
  const auto& len = k.seqlen.host();
  const bool paged = paged_row >= 0;
  const std::string pad = paged ? "max_pages*page_size" : "kv_padding";
  if (paged) {
    if (k.padding != paged_row)
      R.push_back("k_seqinfo.padding=" + S(k.padding) + " must equal block_tables.max_pages*page_size=" + S(paged_row) +
                  " (make_paged sets it)");
  } else if (k.padding < 1) {
    R.push_back("kv_padding=" + S(k.padding) + " must be >= 1");
  }
  if (len.empty()) R.push_back("kv_seqlen is empty: at least one sequence is needed");
  if (st.size() != len.size() + 1) {
    R.push_back("k_seqinfo.seqstart has " + S(int64_t(st.size())) + " entries, not len(kv_seqlen)+1=" +
                S(int64_t(len.size()) + 1));
    return;
  }
  int64_t longest = 0;
  for (size_t b = 0; b < st.size(); ++b)
    if (st[b] != int64_t(b) * k.padding)
      R.push_back(at("k_seqinfo.seqstart", b) + "=" + S(st[b]) + " must be " + S(int64_t(b)) + "*" + pad + "=" +
                  S(int64_t(b) * k.padding));
  const int64_t limit = paged ? paged_row : k.padding;
  for (size_t b = 0; b < len.size(); ++b) {
    if (len[b] < 0) R.push_back(at("kv_seqlen", b) + "=" + S(len[b]) + " must be >= 0");
    else if (len[b] > limit)
      R.push_back(at("kv_seqlen", b) + "=" + S(len[b]) + " exceeds " + pad + "=" + S(limit) +
                  (paged ? " (the keys a block-table row holds)" : ""));
    longest = std::max<int64_t>(longest, len[b]);
  }
  if (k.max_seqlen < longest)
    R.push_back("k_seqinfo.max_seqlen=" + S(k.max_seqlen) + " is less than the longest kv_seqlen (" + S(longest) + ")");
}

// paged_row >= 0 for paged masks: seqstart[b] is then an offset within block-table row b, whose
// max_pages * page_size keys must hold the sequence; the last seqstart is not read.
void check_gappy(const GappySeqInfo& k, Reasons& R, int64_t paged_row = -1) {
  const auto& st = k.seqstart.host();
  const auto& len = k.seqlen.host();
  const bool paged = paged_row >= 0;
  if (len.empty()) R.push_back("kv_seqlen is empty: at least one sequence is needed");
  if (st.size() != len.size() + 1) {
    R.push_back("len(kv_seqstarts)=" + S(int64_t(st.size())) + " must be len(kv_seqlen)+1=" + S(int64_t(len.size()) + 1));
    return;
  }
  const int64_t rows = paged ? paged_row : st.back();
  const std::string rows_name =
      paged ? "max_pages*page_size=" + S(rows) + " (the keys a block-table row holds)"
            : "kv_seqstarts[-1]=" + S(rows) + " (the number of key rows)";
  int64_t longest = 0;
  for (size_t b = 0; b < len.size(); ++b) {
    if (st[b] < 0) R.push_back(at("kv_seqstarts", b) + "=" + S(st[b]) + " must be >= 0");
    if (len[b] < 0) R.push_back(at("kv_seqlen", b) + "=" + S(len[b]) + " must be >= 0");
    else if (int64_t(st[b]) + len[b] > rows)
      R.push_back(at("kv_seqstarts", b) + "+" + at("kv_seqlen", b) + "=" + S(int64_t(st[b]) + len[b]) + " exceeds " +
                  rows_name);
    longest = std::max<int64_t>(longest, len[b]);
  }
  if (k.max_seqlen < longest)
    R.push_back("k_seqinfo.max_seqlen=" + S(k.max_seqlen) + " is less than the longest kv_seqlen (" + S(longest) + ")");
}

// The block tables alone (their fit to the key tensor is check_shapes').
template <class T>
void check_block_tables(const T& x, Reasons& R) {
  const BlockTables& bt = x.block_tables;
  const auto& table = bt.table.host();
  if (x.page_size < 1) R.push_back("page_size=" + S(x.page_size) + " must be >= 1 with " + name_of<T>());
  if (bt.max_pages < 1) R.push_back("block_tables.max_pages=" + S(bt.max_pages) + " must be >= 1 with " + name_of<T>());
  if (row_len(x) > std::numeric_limits<int32_t>::max())
    R.push_back("block_tables.max_pages*page_size=" + S(row_len(x)) + " exceeds 2^31-1");
  const int64_t sequences = int64_t(x.k_seqinfo.seqlen.host().size());
  if (int64_t(table.size()) != sequences * bt.max_pages)
    R.push_back("block_tables.table has " + S(int64_t(table.size())) + " entries, not len(kv_seqlen)*block_tables.max_pages=" +
                S(sequences * bt.max_pages) + " (row-major [len(kv_seqlen), max_pages])");
  // The first bad entry, and how many more: a table may be long.
  size_t bad = 0, first = 0;
  for (size_t e = 0; e < table.size(); ++e)
    if (table[e] < 0 && bad++ == 0) first = e;
  if (bad)
    R.push_back(at("block_tables.table", first) + "=" + S(table[first]) + " must be >= 0" +
                (bad > 1 ? " (and " + S(int64_t(bad) - 1) + " more entries)" : ""));
}

template <class T>
void check_structure(const T& x, Reasons& R) {
  if constexpr (std::is_same_v<T, BlockSparseMask>) {
    const int32_t bs = x.block_size;
    if (!detail::power_of_two_cell(bs))
      R.push_back("block_size=" + S(bs) + " must be a power of two in [16, 256] with BlockSparseMask");
    if (x.layout.ndim != 3)
      R.push_back("layout.ndim=" + S(x.layout.ndim) + " must be 3: [H or 1, ceil(Mq / block_size), ceil(Mkv / block_size)]");
    if (x.layout.dtype != DType::u8) R.push_back(std::string("layout.dtype=") + to_string(x.layout.dtype) + " must be u8 (bool bytes)");
  }
  if constexpr (kHasAlibi<T>) {
    const auto& slopes = x.slopes.slopes.host();
    for (size_t h = 0; h < slopes.size(); ++h)
      if (!std::isfinite(slopes[h]))
        R.push_back(at("slopes", h) + "=" + fmt(slopes[h]) + " must be finite with " + name_of<T>());
  }
  if constexpr (kHasWindowSize<T>)
    if (x.window_size < 1) R.push_back("window_size=" + S(x.window_size) + " must be >= 1 with " + name_of<T>());
  if constexpr (kHasWindowLeftRight<T>) {
    if (x.window_left < 0) R.push_back("window_left=" + S(x.window_left) + " must be >= 0 with " + name_of<T>());
    if (x.window_right < 0) R.push_back("window_right=" + S(x.window_right) + " must be >= 0 with " + name_of<T>());
  }
  if constexpr (kBlockDiagonal<T>) {
    const size_t before = R.size();
    check_seqinfo(x.q_seqinfo, "q_seqinfo", R);
    if constexpr (kSeqKeys<T>) check_seqinfo(x.k_seqinfo, "k_seqinfo", R);
    else if constexpr (kPaddedKeys<T>) check_padded(x.k_seqinfo, R);
    else if constexpr (kGappyKeys<T>) check_gappy(x.k_seqinfo, R);
    else if constexpr (kPagedPaddedKeys<T>) check_padded(x.k_seqinfo, R, std::max<int64_t>(row_len(x), 0));
    else check_gappy(x.k_seqinfo, R, std::max<int64_t>(row_len(x), 0));  // (a bad row is check_block_tables')
    if constexpr (kPaged<T>) check_block_tables(x, R);
    if (R.size() != before) return;
    const int64_t nq = int64_t(x.q_seqinfo.seqstart.host().size()) - 1;
    const int64_t nk = int64_t(x.k_seqinfo.seqstart.host().size()) - 1;
    if (nq != nk) {
      R.push_back("len(q_seqlen)=" + S(nq) + " must equal len(kv_seqlen)=" + S(nk) + " with " + name_of<T>());
      return;
    }
    const std::vector<Block> blocks = blocks_of(x);
    for (size_t b = 0; b < blocks.size(); ++b) {
      const Block& k = blocks[b];
      if constexpr (kNeedsKeysPerQuery<T>)
        if (k.k_len < k.q_len)
          R.push_back(at("kv_seqlen", b) + "=" + S(k.k_len) + " is less than " + at("q_seqlen", b) + "=" + S(k.q_len) +
                      ": " + name_of<T>() + " needs num_keys >= num_queries in every block");
      if constexpr (std::is_same_v<T, BlockDiagonalCausalLocalAttentionMask>)
        if (x.window_size >= 1 && k.q_len - x.window_size >= k.k_len)
          R.push_back(at("q_seqlen", b) + "=" + S(k.q_len) + " minus window_size=" + S(x.window_size) + " is not below " +
                      at("kv_seqlen", b) + "=" + S(k.k_len) + ": the block's last queries would attend no key (" +
                      name_of<T>() + ")");
    }
  }
}

template <class T>
T checked(T x) {
  Reasons R;
  check_structure(x, R);
  throw_if(std::move(R));
  return x;
}

// ---- shape checks (what a call with [B, Mq, H, K] queries and Mkv keys needs) ----------------
// A 5-D [B, G, H, Mq, Mkv] bias as the 4-D [B, G·H, Mq, Mkv] one it is read as: one head stride
// for the G·H heads. With G or H of size 1 it is the other's stride; with both > 1, stride[1]
// must be shape[2]·stride[2], or both strides 0 (broadcast). A reason otherwise (when R is given).
TensorView heads_flattened(const TensorView& t, Reasons* R = nullptr) {
  if (t.ndim != 5) return t;
  TensorView v = t;
  v.ndim = 4;
  v.shape[1] = t.shape[1] * t.shape[2];
  if (t.shape[1] == 1) v.stride[1] = t.stride[2];
  else if (t.shape[2] == 1) v.stride[1] = t.stride[1];
  else {
    if (t.stride[1] != t.shape[2] * t.stride[2] && R)
      R->push_back("attn_bias.stride[1]=" + S(t.stride[1]) + " must equal shape[2]·stride[2]=" + S(t.shape[2] * t.stride[2]) +
                   " (or both be 0): a 5-D bias [B, G, H, Mq, Mkv] is read as G·H heads of one stride");
    v.stride[1] = t.stride[2];
  }
  for (int d = 2; d < 4; ++d) {
    v.shape[d] = t.shape[d + 1];
    v.stride[d] = t.stride[d + 1];
  }
  v.shape[4] = v.stride[4] = 0;
  return v;
}

// H is the call's number of query heads (G·H for 5-D inputs).
void check_tensor(const TensorView& t, int64_t B, int64_t H, int64_t Mq, int64_t Mkv, Reasons& R) {
  if (t.ndim != 4 && t.ndim != 5) {
    R.push_back("attn_bias.ndim=" + S(t.ndim) + " must be 4: [B, H, Mq, Mkv] (or 5: [B, G, H, Mq, Mkv])");
    return;
  }
  const bool five = t.ndim == 5;
  const TensorView f = heads_flattened(t, &R);
  struct Want {
    int64_t size;
    const char* what;
    bool may_be_1;
    const char* name;  // of the bias dimension, 4-D / 5-D
    const char* name5;
  };
  const Want want[4] = {{B, "B=query.shape[0]", true, "attn_bias.shape[0]", "attn_bias.shape[0]"},
                        {H, "H (query heads)", true, "attn_bias.shape[1]", "attn_bias.shape[1]·shape[2]"},
                        {Mq, "query.shape[1]", false, "attn_bias.shape[2]", "attn_bias.shape[3]"},
                        {Mkv, "key.shape[1]", false, "attn_bias.shape[3]", "attn_bias.shape[4]"}};
  for (int d = 0; d < 4; ++d)
    if (f.shape[d] != want[d].size && !(want[d].may_be_1 && f.shape[d] == 1))
      R.push_back(std::string(five ? want[d].name5 : want[d].name) + "=" + S(f.shape[d]) + " must equal " + want[d].what +
                  "=" + S(want[d].size) + (want[d].may_be_1 ? " or 1" : ""));
  if (f.shape[3] > 1 && f.stride[3] != 1)
    R.push_back(std::string(five ? "attn_bias.stride[4]=" : "attn_bias.stride[3]=") + S(f.stride[3]) + " must be 1");
  if (!t.data && t.numel() > 0) R.push_back("attn_bias.data is null");
}

template <class T>
void check_shapes(const T& x, int64_t B, int64_t H, int64_t Mq, int64_t Mkv, Reasons& R) {
  [[maybe_unused]] auto with = [] { return " with " + name_of<T>(); };  // built only for a reason: runs on every call
  if constexpr (std::is_same_v<T, BlockSparseMask>) {
    const TensorView& l = x.layout;
    const int32_t bs = x.block_size;
    if (l.ndim == 3 && detail::power_of_two_cell(bs)) {
      const int64_t rows = (Mq + bs - 1) / bs, cols = (Mkv + bs - 1) / bs;
      if (l.shape[0] != H && l.shape[0] != 1)
        R.push_back("layout.shape[0]=" + S(l.shape[0]) + " must equal H (query heads)=" + S(H) + " or 1" + with());
      if (l.shape[1] != rows)
        R.push_back("layout.shape[1]=" + S(l.shape[1]) + " must equal ceil(Mq / block_size)=" + S(rows) + with());
      if (l.shape[2] != cols)
        R.push_back("layout.shape[2]=" + S(l.shape[2]) + " must equal ceil(Mkv / block_size)=" + S(cols) + with());
      if (l.shape[2] > 1 && l.stride[2] != 1) R.push_back("layout.stride[2]=" + S(l.stride[2]) + " must be 1" + with());
      if (!l.data && l.shape[0] * l.shape[1] * l.shape[2] > 0) R.push_back("layout.data is null" + with());
    }
  }
  if constexpr (kHoldsTensor<T>) check_tensor(x.tensor, B, H, Mq, Mkv, R);
  if constexpr (kHasAlibi<T>) {
    const int64_t n = int64_t(x.slopes.slopes.host().size());
    if (n != H) R.push_back("len(slopes)=" + S(n) + " must equal H (query heads)=" + S(H) + with() + ": one slope per head");
  }
  if constexpr (kBlockDiagonal<T>) {
    if (B != 1) R.push_back("query.shape[0]=" + S(B) + " must be 1" + with() + " (sequences are concatenated along dim 1)");
    const auto& qs = x.q_seqinfo.seqstart.host();
    const auto& ks = x.k_seqinfo.seqstart.host();
    if (!qs.empty() && Mq != qs.back())
      R.push_back("query.shape[1]=" + S(Mq) + " must equal sum(q_seqlen)=" + S(qs.back()) + with());
    if constexpr (kPaged<T>) {
      // The key tensor is a pool of pages the block tables point into.
      if (x.page_size >= 1) {
        if (Mkv % x.page_size != 0)
          R.push_back("key.shape[1]=" + S(Mkv) + " must be a multiple of page_size=" + S(x.page_size) + with());
        const int64_t pages = Mkv / x.page_size;
        const auto& table = x.block_tables.table.host();
        size_t bad = 0, first = 0;
        for (size_t e = 0; e < table.size(); ++e)
          if (table[e] >= pages && bad++ == 0) first = e;  // negatives are check_block_tables'
        if (bad)
          R.push_back(at("block_tables.table", first) + "=" + S(table[first]) +
                      " is not a page of the key tensor: key.shape[1]/page_size=" + S(pages) + " pages" + with() +
                      (bad > 1 ? " (and " + S(int64_t(bad) - 1) + " more entries)" : ""));
      }
    } else if (!ks.empty() && Mkv != ks.back()) {
      R.push_back("key.shape[1]=" + S(Mkv) + " must equal " + key_rows_name<T>() + "=" + S(ks.back()) + with());
    }
  }
}

// ---- materialize helpers ---------------------------------------------------------------------
double read_host(const TensorView& t, int64_t offset) {
  const char* base = static_cast<const char*>(t.data);
  switch (t.dtype) {
    case DType::f32: {
      float f;
      std::memcpy(&f, base + offset * 4, 4);
      return f;
    }
    case DType::bf16: {
      uint16_t h;
      std::memcpy(&h, base + offset * 2, 2);
      const uint32_t bits = uint32_t(h) << 16;
      float f;
      std::memcpy(&f, &bits, 4);
      return f;
    }
    case DType::u8:
    case DType::i32: break;
    case DType::f16: {
      uint16_t h;
      std::memcpy(&h, base + offset * 2, 2);
      const int sign = h >> 15, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
      double v;
      if (exp == 0) v = std::ldexp(double(mant), -24);
      else if (exp == 31) v = mant ? std::numeric_limits<double>::quiet_NaN() : std::numeric_limits<double>::infinity();
      else v = std::ldexp(double(mant | 0x400), exp - 25);
      return sign ? -v : v;
    }
  }
  throw Error(ErrorKind::invalid_argument, "materialize: attn_bias.dtype must be f16, bf16 or f32");
}

// out[b, h, i, j] += t[b, h, i, j], t broadcast over size-1 B and H (a 5-D t read as G·H heads).
void add_tensor(const TensorView& bias, int64_t B, int64_t H, int64_t Mq, int64_t Mkv, std::vector<double>& out) {
  const TensorView t = heads_flattened(bias);
  if (t.device != TensorView::kHost)
    throw Error(ErrorKind::invalid_argument, "materialize: attn_bias must be in host memory (device=" + S(t.device) + ", not TensorView::kHost)");
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < Mq; ++i)
        for (int64_t j = 0; j < Mkv; ++j) {
          const int64_t off = (t.shape[0] == 1 ? 0 : b * t.stride[0]) + (t.shape[1] == 1 ? 0 : h * t.stride[1]) +
                              i * t.stride[2] + j * t.stride[3];
          out[size_t(((b * H + h) * Mq + i) * Mkv + j)] += read_host(t, off);
        }
}

// BlockSparseMask: elements of zero layout blocks masked (the layout in host memory).
void mask_layout(const BlockSparseMask& x, int64_t B, int64_t H, int64_t Mq, int64_t Mkv, std::vector<double>& out) {
  const TensorView& l = x.layout;
  if (l.device != TensorView::kHost)
    throw Error(ErrorKind::invalid_argument, "materialize: layout must be in host memory (device=" + S(l.device) + ", not TensorView::kHost)");
  const auto* bytes = static_cast<const uint8_t*>(l.data);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < Mq; ++i)
        for (int64_t j = 0; j < Mkv; ++j) {
          const int64_t off = (l.shape[0] == 1 ? 0 : h * l.stride[0]) + i / x.block_size * l.stride[1] + j / x.block_size * l.stride[2];
          if (!bytes[off]) out[size_t(((b * H + h) * Mq + i) * Mkv + j)] = kNegInf;
        }
}

// The mask of one (b, h) as a [Mq, width] plane of 0 and -inf; block-diagonal masks place their
// blocks at blocks_of's key positions (logical ones for paged masks, width B * row_len). With
// `dist`, also |j - i| where visible, i and j counted within the block (ALiBi).
template <class T>
std::vector<double> mask_plane(const T& x, int64_t Mq, int64_t width, std::vector<double>* dist) {
  const Band band = band_of(x);
  std::vector<double> plane(size_t(Mq * width), kNegInf);
  if (dist) dist->assign(plane.size(), 0);
  auto see = [&](int64_t row, int64_t col, int64_t i, int64_t j) {
    plane[size_t(row * width + col)] = 0;
    if (dist) (*dist)[size_t(row * width + col)] = double(j > i ? j - i : i - j);
  };
  if constexpr (kBlockDiagonal<T>) {
    for (const Block& k : blocks_of(x))
      for (int64_t i = 0; i < k.q_len; ++i)
        for (int64_t j = 0; j < k.k_len; ++j)
          if (band.visible(i, j, k.q_len, k.k_len)) see(k.q_start + i, k.k_start + j, i, j);
  } else {
    for (int64_t i = 0; i < Mq; ++i)
      for (int64_t j = 0; j < width; ++j)
        if (band.visible(i, j, Mq, width)) see(i, j, i, j);
  }
  return plane;
}

// xFormers' Paged*.materialize: each logical page of row b (columns b * row_len + p * page_size
// of `logical`) is copied to its physical page block_tables[b, p] of the [Mq, Mkv] result, for
// the queries of block b; every other key is -inf. Needs the checks of bias_reasons.
template <class T>
std::vector<double> scatter_pages(const T& x, const std::vector<double>& logical, int64_t Mq, int64_t Mkv) {
  const int64_t ps = x.page_size, max_pages = x.block_tables.max_pages, row = row_len(x);
  const int64_t width = int64_t(x.k_seqinfo.seqlen.host().size()) * row;  // of `logical`
  const auto& table = x.block_tables.table.host();
  std::vector<double> plane(size_t(Mq * Mkv), kNegInf);
  const std::vector<Block> blocks = blocks_of(x);
  for (size_t b = 0; b < blocks.size(); ++b)
    for (int64_t p = 0; p < max_pages; ++p) {
      const int64_t from = int64_t(b) * row + p * ps, to = int64_t(table[size_t(int64_t(b) * max_pages + p)]) * ps;
      for (int64_t i = blocks[b].q_start; i < blocks[b].q_start + blocks[b].q_len; ++i)
        std::copy_n(logical.begin() + i * width + from, ps, plane.begin() + i * Mkv + to);
    }
  return plane;
}

// out[b, h, i, j] -= slopes[h] * dist[i, j].
void add_alibi(const std::vector<float>& slopes, const std::vector<double>& dist, int64_t B, int64_t H,
               std::vector<double>& out) {
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      double* o = out.data() + (b * H + h) * int64_t(dist.size());
      for (size_t e = 0; e < dist.size(); ++e) o[e] -= double(slopes[size_t(h)]) * dist[e];
    }
}

SeqLenInfo seqinfo_from(const std::vector<int32_t>& seqlens, const std::string& name) {
  Reasons R;
  std::vector<int32_t> start{0};
  int64_t total = 0;
  int32_t longest = 0;
  for (size_t i = 0; i < seqlens.size(); ++i) {
    if (seqlens[i] < 0) R.push_back(at(name, i) + "=" + S(seqlens[i]) + " must be >= 0");
    total += std::max(seqlens[i], 0);
    longest = std::max(longest, seqlens[i]);
    start.push_back(int32_t(std::min<int64_t>(total, std::numeric_limits<int32_t>::max())));
  }
  if (total > std::numeric_limits<int32_t>::max()) R.push_back("sum(" + name + ")=" + S(total) + " exceeds 2^31-1");
  throw_if(std::move(R));
  SeqLenInfo s;
  s.seqstart = DeviceInts(std::move(start));
  s.max_seqlen = longest;
  return s;
}

void require_same_count(size_t q, size_t kv) {
  if (q != kv) throw Error(ErrorKind::invalid_argument, "len(q_seqlen)=" + S(int64_t(q)) + " must equal len(kv_seqlen)=" + S(int64_t(kv)));
}

}  // namespace

// ---- sequence layouts ------------------------------------------------------------------------
SeqLenInfo SeqLenInfo::from_seqlens(const std::vector<int32_t>& seqlens) { return seqinfo_from(seqlens, "seqlens"); }

std::vector<int32_t> SeqLenInfo::seqlens() const {
  const auto& st = seqstart.host();
  std::vector<int32_t> out;
  for (size_t b = 0; b + 1 < st.size(); ++b) out.push_back(st[b + 1] - st[b]);
  return out;
}

PaddedSeqLenInfo PaddedSeqLenInfo::from_seqlens_padded(const std::vector<int32_t>& seqlens, int32_t padding) {
  const int64_t rows = int64_t(seqlens.size()) * padding;
  if (padding >= 1 && rows > std::numeric_limits<int32_t>::max())
    throw Error(ErrorKind::invalid_argument, "len(kv_seqlen)*kv_padding=" + S(rows) + " exceeds 2^31-1");
  PaddedSeqLenInfo p;
  std::vector<int32_t> start;
  for (size_t b = 0; b <= seqlens.size(); ++b) start.push_back(int32_t(int64_t(b) * padding));
  p.seqstart = DeviceInts(std::move(start));
  p.seqlen = DeviceInts(seqlens);
  p.padding = padding;
  p.max_seqlen = seqlens.empty() ? 0 : *std::max_element(seqlens.begin(), seqlens.end());
  Reasons R;
  check_padded(p, R);
  throw_if(std::move(R));
  return p;
}

GappySeqInfo GappySeqInfo::from_seqlens_gappy(const std::vector<int32_t>& seqstarts, const std::vector<int32_t>& seqlens) {
  GappySeqInfo g;
  g.seqstart = DeviceInts(seqstarts);
  g.seqlen = DeviceInts(seqlens);
  g.max_seqlen = seqlens.empty() ? 0 : *std::max_element(seqlens.begin(), seqlens.end());
  Reasons R;
  check_gappy(g, R);
  throw_if(std::move(R));
  return g;
}

// ---- ALiBi -------------------------------------------------------------------------------------
AlibiSlopes AlibiSlopes::geometric(int32_t heads) {
  if (heads < 1) throw Error(ErrorKind::invalid_argument, "heads=" + S(heads) + " must be >= 1 for AlibiSlopes::geometric");
  std::vector<float> slopes;
  for (int32_t h = 0; h < heads; ++h) slopes.push_back(float(std::exp2(-8.0 * (h + 1) / heads)));
  return AlibiSlopes{DeviceFloats(std::move(slopes))};
}

// ---- dense masks -----------------------------------------------------------------------------
LowerTriangularMaskWithTensorBias LowerTriangularMask::add_bias(const TensorView& bias) const { return {bias}; }

LowerTriangularMaskWithAlibi LowerTriangularMask::add_alibi(const AlibiSlopes& slopes) const {
  return checked(LowerTriangularMaskWithAlibi{slopes});
}

LowerTriangularFromBottomRightLocalAttentionMask LowerTriangularFromBottomRightMask::make_local_attention(
    int32_t window_size) const {
  return checked(LowerTriangularFromBottomRightLocalAttentionMask{window_size});
}

// ---- block-diagonal masks --------------------------------------------------------------------
BlockDiagonalMask BlockDiagonalMask::from_seqlens(const std::vector<int32_t>& q_seqlen,
                                                  const std::vector<int32_t>& kv_seqlen) {
  if (!kv_seqlen.empty()) require_same_count(q_seqlen.size(), kv_seqlen.size());
  BlockDiagonalMask m;
  m.q_seqinfo = seqinfo_from(q_seqlen, "q_seqlen");
  // As xFormers, equal lengths share one seqinfo (and so one upload).
  m.k_seqinfo = kv_seqlen.empty() || kv_seqlen == q_seqlen ? m.q_seqinfo : seqinfo_from(kv_seqlen, "kv_seqlen");
  return m;
}

BlockDiagonalMask BlockDiagonalMask::from_tensor_list(const std::vector<TensorView>& tensors) {
  Reasons R;
  if (tensors.empty()) R.push_back("tensors is empty: at least one tensor is needed");
  std::vector<int32_t> seqlens;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorView& t = tensors[i];
    const std::string name = at("tensors", i);
    if (t.ndim < 2 || t.ndim > kMaxDims) {
      R.push_back(name + ".ndim=" + S(t.ndim) + " must be in [2, " + S(kMaxDims) + "]: [1, M, ...]");
      continue;
    }
    if (t.shape[0] != 1) R.push_back(name + ".shape[0]=" + S(t.shape[0]) + " must be 1");
    if (t.shape[1] > std::numeric_limits<int32_t>::max()) R.push_back(name + ".shape[1]=" + S(t.shape[1]) + " exceeds 2^31-1");
    const TensorView& t0 = tensors[0];
    bool same = t.ndim == t0.ndim;  // t0.ndim is then in range too
    for (int d = 2; same && d < t.ndim; ++d) same = t.shape[d] == t0.shape[d];
    if (!same)
      R.push_back(name + ".shape=" + t.shape_string() + " must match tensors[0].shape=" + t0.shape_string() +
                  " beyond dim 1 (they are concatenated along dim 1)");
    seqlens.push_back(int32_t(std::min<int64_t>(t.shape[1], std::numeric_limits<int32_t>::max())));
  }
  throw_if(std::move(R));
  return from_seqlens(seqlens);
}

std::vector<TensorView> BlockDiagonalMask::split(const TensorView& tensor) const {
  const auto& qs = q_seqinfo.seqstart.host();
  Reasons R;
  if (k_seqinfo.seqstart.host() != qs)
    R.push_back("split needs kv_seqlen == q_seqlen (xFormers asserts q_seqinfo is k_seqinfo)");
  if (tensor.ndim < 2 || tensor.ndim > kMaxDims) {
    R.push_back("tensor.ndim=" + S(tensor.ndim) + " must be in [2, " + S(kMaxDims) + "]: [1, M, ...]");
  } else {
    if (tensor.shape[0] != 1) R.push_back("tensor.shape[0]=" + S(tensor.shape[0]) + " must be 1");
    if (!qs.empty() && tensor.shape[1] != qs.back())
      R.push_back("tensor.shape[1]=" + S(tensor.shape[1]) + " must equal sum(q_seqlen)=" + S(qs.back()));
  }
  throw_if(std::move(R));
  std::vector<TensorView> views;
  for (size_t b = 0; b + 1 < qs.size(); ++b) {
    TensorView v = tensor;
    const int64_t bytes = int64_t(qs[b]) * tensor.stride[1] * int64_t(element_size(tensor.dtype));
    v.data = tensor.data ? static_cast<char*>(tensor.data) + bytes : nullptr;
    v.shape[1] = qs[b + 1] - qs[b];
    views.push_back(v);
  }
  return views;
}

BlockDiagonalCausalMask BlockDiagonalMask::make_causal() const { return checked(BlockDiagonalCausalMask{q_seqinfo, k_seqinfo}); }

BlockDiagonalCausalFromBottomRightMask BlockDiagonalMask::make_causal_from_bottomright() const {
  return checked(BlockDiagonalCausalFromBottomRightMask{q_seqinfo, k_seqinfo});
}

BlockDiagonalCausalLocalAttentionMask BlockDiagonalMask::make_local_attention(int32_t window_size) const {
  return checked(BlockDiagonalCausalLocalAttentionMask{q_seqinfo, k_seqinfo, window_size});
}

BlockDiagonalCausalLocalAttentionFromBottomRightMask BlockDiagonalMask::make_local_attention_from_bottomright(
    int32_t window_size) const {
  return checked(BlockDiagonalCausalLocalAttentionFromBottomRightMask{q_seqinfo, k_seqinfo, window_size});
}

BlockDiagonalMaskWithAlibi BlockDiagonalMask::add_alibi(const AlibiSlopes& slopes) const {
  return checked(BlockDiagonalMaskWithAlibi{q_seqinfo, k_seqinfo, slopes});
}

BlockDiagonalCausalMask BlockDiagonalCausalMask::from_seqlens(const std::vector<int32_t>& q_seqlen,
                                                              const std::vector<int32_t>& kv_seqlen) {
  return BlockDiagonalMask::from_seqlens(q_seqlen, kv_seqlen).make_causal();
}

BlockDiagonalCausalMaskWithAlibi BlockDiagonalCausalMask::add_alibi(const AlibiSlopes& slopes) const {
  return checked(BlockDiagonalCausalMaskWithAlibi{q_seqinfo, k_seqinfo, slopes});
}

BlockDiagonalPaddedKeysMask BlockDiagonalPaddedKeysMask::from_seqlens(const std::vector<int32_t>& q_seqlen, int32_t kv_padding,
                                                                      const std::vector<int32_t>& kv_seqlen) {
  require_same_count(q_seqlen.size(), kv_seqlen.size());
  return checked(BlockDiagonalPaddedKeysMask{seqinfo_from(q_seqlen, "q_seqlen"),
                                             PaddedSeqLenInfo::from_seqlens_padded(kv_seqlen, kv_padding)});
}

BlockDiagonalCausalWithOffsetPaddedKeysMask BlockDiagonalCausalWithOffsetPaddedKeysMask::from_seqlens(
    const std::vector<int32_t>& q_seqlen, int32_t kv_padding, const std::vector<int32_t>& kv_seqlen) {
  const auto m = BlockDiagonalPaddedKeysMask::from_seqlens(q_seqlen, kv_padding, kv_seqlen);
  return checked(BlockDiagonalCausalWithOffsetPaddedKeysMask{m.q_seqinfo, m.k_seqinfo});
}

BlockDiagonalGappyKeysMask BlockDiagonalGappyKeysMask::from_seqlens(const std::vector<int32_t>& q_seqlen,
                                                                    const std::vector<int32_t>& kv_seqstarts,
                                                                    const std::vector<int32_t>& kv_seqlen) {
  require_same_count(q_seqlen.size(), kv_seqlen.size());
  return checked(BlockDiagonalGappyKeysMask{seqinfo_from(q_seqlen, "q_seqlen"),
                                            GappySeqInfo::from_seqlens_gappy(kv_seqstarts, kv_seqlen)});
}

BlockDiagonalCausalWithOffsetGappyKeysMask BlockDiagonalCausalWithOffsetGappyKeysMask::from_seqlens(
    const std::vector<int32_t>& q_seqlen, const std::vector<int32_t>& kv_seqstarts, const std::vector<int32_t>& kv_seqlen) {
  const auto m = BlockDiagonalGappyKeysMask::from_seqlens(q_seqlen, kv_seqstarts, kv_seqlen);
  return checked(BlockDiagonalCausalWithOffsetGappyKeysMask{m.q_seqinfo, m.k_seqinfo});
}

// ---- paged keys ------------------------------------------------------------------------------
namespace {

// The padded layout with the block-table row as its padding (xFormers' make_paged: the
// non-paged padding is replaced; each kv_seqlen must fit in a row).
PaddedSeqLenInfo paged_padded(const PaddedSeqLenInfo& k, const BlockTables& bt, int32_t page_size) {
  const int64_t row = int64_t(bt.max_pages) * page_size;
  PaddedSeqLenInfo p = k;
  std::vector<int32_t> start;
  for (size_t b = 0; b <= k.seqlen.host().size(); ++b)
    start.push_back(int32_t(std::clamp<int64_t>(int64_t(b) * row, 0, std::numeric_limits<int32_t>::max())));
  p.seqstart = DeviceInts(std::move(start));
  p.padding = int32_t(std::clamp<int64_t>(row, 0, std::numeric_limits<int32_t>::max()));
  return p;
}

// The gappy layout read in rows of max_pages * page_size keys (xFormers' make_paged with
// notional_padding = max_pages * page_size): seqstart[b] - b * row is the offset in row b.
GappySeqInfo paged_gappy(const GappySeqInfo& k, const BlockTables& bt, int32_t page_size) {
  const int64_t row = int64_t(bt.max_pages) * page_size;
  const auto& st = k.seqstart.host();
  GappySeqInfo g = k;
  std::vector<int32_t> start;
  for (size_t b = 0; b + 1 < st.size(); ++b)
    start.push_back(int32_t(std::clamp<int64_t>(st[b] - int64_t(b) * row, std::numeric_limits<int32_t>::min(),
                                                std::numeric_limits<int32_t>::max())));
  start.push_back(int32_t(std::clamp<int64_t>(row, 0, std::numeric_limits<int32_t>::max())));  // not read
  g.seqstart = DeviceInts(std::move(start));
  return g;
}

}  // namespace

PagedBlockDiagonalPaddedKeysMask BlockDiagonalPaddedKeysMask::make_paged(const BlockTables& block_tables,
                                                                         int32_t page_size) const {
  return checked(PagedBlockDiagonalPaddedKeysMask{q_seqinfo, paged_padded(k_seqinfo, block_tables, page_size), block_tables,
                                                  page_size});
}

PagedBlockDiagonalCausalWithOffsetPaddedKeysMask BlockDiagonalCausalWithOffsetPaddedKeysMask::make_paged(
    const BlockTables& block_tables, int32_t page_size) const {
  return checked(PagedBlockDiagonalCausalWithOffsetPaddedKeysMask{
      q_seqinfo, paged_padded(k_seqinfo, block_tables, page_size), block_tables, page_size});
}

PagedBlockDiagonalCausalLocalPaddedKeysMask BlockDiagonalCausalLocalAttentionPaddedKeysMask::make_paged(
    const BlockTables& block_tables, int32_t page_size) const {
  return checked(PagedBlockDiagonalCausalLocalPaddedKeysMask{q_seqinfo, paged_padded(k_seqinfo, block_tables, page_size),
                                                             block_tables, page_size, window_size});
}

PagedBlockDiagonalGappyKeysMask BlockDiagonalGappyKeysMask::make_paged(const BlockTables& block_tables,
                                                                       int32_t page_size) const {
  return checked(
      PagedBlockDiagonalGappyKeysMask{q_seqinfo, paged_gappy(k_seqinfo, block_tables, page_size), block_tables, page_size});
}

PagedBlockDiagonalCausalWithOffsetGappyKeysMask BlockDiagonalCausalWithOffsetGappyKeysMask::make_paged(
    const BlockTables& block_tables, int32_t page_size) const {
  return checked(PagedBlockDiagonalCausalWithOffsetGappyKeysMask{q_seqinfo, paged_gappy(k_seqinfo, block_tables, page_size),
                                                                 block_tables, page_size});
}

// ---- one bias, any kind ----------------------------------------------------------------------
const char* bias_name(const AttnBias& bias) { return kNames[bias.index()]; }

std::vector<std::string> bias_reasons(const AttnBias& bias, int64_t B, int64_t H, int64_t Mq, int64_t Mkv) {
  Reasons R;
  std::visit(
      [&](const auto& x) {
        check_structure(x, R);
        check_shapes(x, B, H, Mq, Mkv, R);
      },
      bias);
  return R;
}

std::vector<double> materialize(const AttnBias& bias, int64_t B, int64_t H, int64_t Mq, int64_t Mkv) {
  if (B < 0 || H < 0 || Mq < 0 || Mkv < 0) throw Error(ErrorKind::invalid_argument, "materialize: B, H, Mq and Mkv must be >= 0");
  int64_t n = 0;
  if (__builtin_mul_overflow(B, H, &n) || __builtin_mul_overflow(n, Mq, &n) || __builtin_mul_overflow(n, Mkv, &n) ||
      n > (int64_t(1) << 40) / int64_t(sizeof(double)))
    throw Error(ErrorKind::invalid_argument, "materialize: B·H·Mq·Mkv = " + S(B) + "·" + S(H) + "·" + S(Mq) + "·" + S(Mkv) +
                " doubles exceed 2^40 bytes (a mask for tests and small shapes)");
  throw_if(bias_reasons(bias, B, H, Mq, Mkv));
  std::vector<double> out(size_t(B * H * Mq * Mkv));
  std::visit(
      [&](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        std::vector<double> plane, dist;  // [Mq, Mkv], the same for every (b, h)
        if constexpr (kPaged<T>) {
          // The logical plane first: Mq × (sequences · max_pages · page_size), which a block
          // table's rows can make far larger than the [Mq, Mkv] result (a [1, 1, 1, 2^20] mask
          // over rows of 2047 pages of 2^20 keys asked for 16 GiB): at most the result's size or
          // 2^27 doubles (1 GiB), whichever is more.
          const int64_t logical_keys = int64_t(x.k_seqinfo.seqlen.host().size()) * row_len(x);
          int64_t cells = 0;
          if (__builtin_mul_overflow(Mq, logical_keys, &cells) || cells > std::max(Mq * Mkv, int64_t(1) << 27))
            throw Error(ErrorKind::invalid_argument,
                        "materialize: a paged mask's logical plane Mq·(sequences·max_pages·page_size) = " + S(Mq) + "·" +
                            S(logical_keys) + " doubles exceeds both the result's Mq·Mkv = " + S(Mq * Mkv) +
                            " and 2^27 (materialize is for tests and small shapes)");
          plane = scatter_pages(x, mask_plane(x, Mq, logical_keys, nullptr), Mq, Mkv);
        } else {
          plane = mask_plane(x, Mq, Mkv, kHasAlibi<T> ? &dist : nullptr);
        }
        for (int64_t bh = 0; bh < B * H; ++bh) std::copy(plane.begin(), plane.end(), out.begin() + bh * Mq * Mkv);
        if constexpr (std::is_same_v<T, BlockSparseMask>) mask_layout(x, B, H, Mq, Mkv, out);
        if constexpr (kHasAlibi<T>) add_alibi(x.slopes.slopes.host(), dist, B, H, out);
        if constexpr (kHoldsTensor<T>) add_tensor(x.tensor, B, H, Mq, Mkv, out);
      },
      bias);
  return out;
}

}  // namespace jitattn
