// The decode path (few queries per sequence: the query heads of one KV head packed into a tile,
// the keys split across blocks and merged by LSE) against the fp64 reference, on random inputs
// drawn fresh every run with outputs poisoned (NaN) before each launch. Every decode-shaped
// bias, f16/bf16, 1/2/5/16 queries per sequence, page sizes 16/64/256 with shuffled block tables
// and spare pages of random data, key lengths 0, 1, odd and several thousand, GQA/MQA/MHA, 4-D
// and 5-D (key/value expanded over H by stride 0), with and without LSE; a paged decode step
// replayed in a CUDA graph while its lengths grow.
//
// ctest runs this binary twice: as is (the split count the host heuristic picks) and with
// JITATTN_DECODE_SPLITS=3 (every call split), so both the unsplit and the split path run.
//
// Compile budget: what picks a kernel (bias kind, dtype, head dims, lse, output dtype) comes
// from a fixed schedule — 20 kinds × 2 dtypes at K = Kv = 128 (lse on for one dtype, off for the
// other), plus 6 head-dim cases and 1 f32 output: 47 forward signatures. Everything drawn at
// random (lengths, queries per sequence, page sizes, heads, layouts) is a kernel argument.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "gpu_support.h"
#include "jit/jit_runtime.h"
#include "jitattn/attention.h"
#include "jitattn/bias.h"
#include "reference.h"
#include "test_reasons.h"

namespace jitattn::test {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// ---- the bias kinds the decode path takes ------------------------------------------------------

enum class Kind {
  none, causal_br, causal_br_local, local_br, tensor, alibi, causal_alibi,  // dense (batched)
  bd_alibi, bd_causal_alibi,                                                // block-diagonal, keys concatenated
  padded, causal_padded, local_padded, causal_local_padded,                 // padded keys
  gappy, causal_gappy,                                                      // gappy keys (ranges may overlap)
  paged_padded, paged_causal, paged_causal_local, paged_gappy, paged_causal_gappy,
};
constexpr Kind kAllKinds[] = {
    Kind::none,          Kind::causal_br,       Kind::causal_br_local,    Kind::local_br,     Kind::tensor,
    Kind::alibi,         Kind::causal_alibi,    Kind::bd_alibi,           Kind::bd_causal_alibi, Kind::padded,
    Kind::causal_padded, Kind::local_padded,    Kind::causal_local_padded, Kind::gappy,       Kind::causal_gappy,
    Kind::paged_padded,  Kind::paged_causal,    Kind::paged_causal_local, Kind::paged_gappy,  Kind::paged_causal_gappy,
};

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::none: return "NoBias";
    case Kind::causal_br: return "LowerTriangularFromBottomRightMask";
    case Kind::causal_br_local: return "LowerTriangularFromBottomRightLocalAttentionMask";
    case Kind::local_br: return "LocalAttentionFromBottomRightMask";
    case Kind::tensor: return "TensorBias";
    case Kind::alibi: return "AlibiBias";
    case Kind::causal_alibi: return "LowerTriangularMaskWithAlibi";
    case Kind::bd_alibi: return "BlockDiagonalMaskWithAlibi";
    case Kind::bd_causal_alibi: return "BlockDiagonalCausalMaskWithAlibi";
    case Kind::padded: return "BlockDiagonalPaddedKeysMask";
    case Kind::causal_padded: return "BlockDiagonalCausalWithOffsetPaddedKeysMask";
    case Kind::local_padded: return "BlockDiagonalLocalAttentionPaddedKeysMask";
    case Kind::causal_local_padded: return "BlockDiagonalCausalLocalAttentionPaddedKeysMask";
    case Kind::gappy: return "BlockDiagonalGappyKeysMask";
    case Kind::causal_gappy: return "BlockDiagonalCausalWithOffsetGappyKeysMask";
    case Kind::paged_padded: return "PagedBlockDiagonalPaddedKeysMask";
    case Kind::paged_causal: return "PagedBlockDiagonalCausalWithOffsetPaddedKeysMask";
    case Kind::paged_causal_local: return "PagedBlockDiagonalCausalLocalPaddedKeysMask";
    case Kind::paged_gappy: return "PagedBlockDiagonalGappyKeysMask";
    case Kind::paged_causal_gappy: return "PagedBlockDiagonalCausalWithOffsetGappyKeysMask";
  }
  return "?";
}

void PrintTo(Kind k, std::ostream* os) { *os << kind_name(k); }

bool is_dense(Kind k) { return k <= Kind::causal_alibi; }
bool is_paged(Kind k) { return k >= Kind::paged_padded; }
bool is_gappy(Kind k) {
  return k == Kind::gappy || k == Kind::causal_gappy || k == Kind::paged_gappy || k == Kind::paged_causal_gappy;
}
bool is_seq_keys(Kind k) { return k == Kind::bd_alibi || k == Kind::bd_causal_alibi; }
bool has_alibi(Kind k) {
  return k == Kind::alibi || k == Kind::causal_alibi || k == Kind::bd_alibi || k == Kind::bd_causal_alibi;
}
bool has_window(Kind k) {
  return k == Kind::causal_br_local || k == Kind::causal_local_padded || k == Kind::paged_causal_local;
}
bool has_window_left_right(Kind k) { return k == Kind::local_br || k == Kind::local_padded; }

// Within one block of mq queries and mkv keys (the whole matrix for a dense bias), key j is
// visible to query i iff lo <= j - i - shift <= hi, shift = mkv - mq for the bottom-right kinds
// (bias.h's definitions; checked against materialize() by DecodeReference below).
struct Band {
  bool bottom_right = false, has_lo = false, has_hi = false;
  int64_t lo = 0, hi = 0;
  bool visible(int64_t i, int64_t j, int64_t mq, int64_t mkv) const {
    const int64_t d = j - i - (bottom_right ? mkv - mq : 0);
    return (!has_lo || d >= lo) && (!has_hi || d <= hi);
  }
};

// What picks the kernel: every field compiles a new one.
struct Spec {
  Kind kind = Kind::none;
  DType dt = DType::bf16;
  int64_t K = 128, Kv = 128;
  bool lse = false;
  std::optional<DType> out_dtype;
};

// LSE for one of the two dtypes of each kind, so every kind runs both forwards at no extra kernels.
bool lse_for(Kind k, DType dt) { return (int(k) + (dt == DType::bf16)) % 2 == 0; }

// 4-D [B, M, H, K] with native GQA key/value [B, M, Hkv, K], or xFormers' 5-D [B, M, G, H, K] with
// key/value [B, M, G, 1, K] expanded over H by stride 0 (G = Hkv, H = Hq / Hkv).
// bmhk_v_head_major: keys [B, M, Hkv, K], values stored [B, Hkv, M, Kv] and viewed as BMHK by
// strides (the two tensor maps of the TMA kernel then order their dimensions differently).
enum class Layout { bmhk, bmghk, bmhk_v_head_major };

// One sequence as the reference sees it: query rows [q0, q0 + nq) of batch entry tb, and the key
// row of each of its logical keys in order (through the padding, the gappy start or the block table).
struct Seq {
  int64_t tb = 0, q0 = 0, nq = 0;
  std::vector<int64_t> krows;
};

// A drawn call: shapes, the bias's numbers, and the inputs' values (q [Bt, Mq, Hq, K],
// k [Bt, Mkv, Hkv, K], v [Bt, Mkv, Hkv, Kv], tensor bias [Bt, Hq, Mq, Mkv]; logical, row-major).
struct Problem {
  Spec spec;
  Layout layout = Layout::bmhk;
  int64_t Hq = 1, Hkv = 1, Bt = 1, Mq = 1, Mkv = 0;
  std::vector<int32_t> ql, kl, kstart;  // block-diagonal kinds; kstart: gappy (paged: offset in the row)
  int32_t padding = 0;                  // padded kinds (paged: max_pages * page_size)
  int32_t page_size = 0, max_pages = 0, num_pages = 0;
  std::vector<int32_t> table;  // [B, max_pages]
  int32_t window = 0, window_left = 0, window_right = 0;
  std::vector<float> slopes;
  int64_t masked_row = -1;  // tensor bias: this query row is -inf everywhere
  std::vector<Seq> seqs;
  std::vector<double> q, k, v, tbias;
  std::vector<unsigned char> qb, kb, vb, tbb;

  int64_t group() const { return Hq / Hkv; }
  DType out_dtype() const { return spec.out_dtype.value_or(spec.dt); }
  Band band() const {
    switch (spec.kind) {
      case Kind::causal_br: case Kind::causal_padded: case Kind::causal_gappy: case Kind::paged_causal:
      case Kind::paged_causal_gappy:
        return {true, false, true, 0, 0};
      case Kind::causal_alibi: case Kind::bd_causal_alibi:
        return {false, false, true, 0, 0};
      case Kind::causal_br_local: case Kind::causal_local_padded: case Kind::paged_causal_local:
        return {true, true, true, 1 - int64_t(window), 0};
      case Kind::local_br: case Kind::local_padded:
        return {true, true, true, -int64_t(window_left), int64_t(window_right)};
      default:
        return {};
    }
  }
  // The bias of query i and logical key j of sequence s under query head h (-inf: masked).
  double bias_at(const Seq& s, int64_t h, int64_t i, int64_t j) const {
    if (!band().visible(i, j, s.nq, int64_t(s.krows.size()))) return -kInf;
    double x = 0;
    if (has_alibi(spec.kind)) x -= double(slopes[size_t(h)]) * double(std::abs(j - i));
    if (spec.kind == Kind::tensor) x += tbias[size_t(((s.tb * Hq + h) * Mq + s.q0 + i) * Mkv + s.krows[size_t(j)])];
    return x;
  }

  std::string describe() const {
    std::ostringstream os;
    os << kind_name(spec.kind) << " " << to_string(spec.dt)
       << (spec.out_dtype ? std::string("->") + to_string(*spec.out_dtype) : "") << " K=" << spec.K << " Kv=" << spec.Kv
       << " lse=" << spec.lse
       << (layout == Layout::bmghk ? " 5-D" : layout == Layout::bmhk ? " 4-D" : " 4-D, values head-major") << " Hq=" << Hq
       << " Hkv=" << Hkv
       << " B=" << Bt << " Mq=" << Mq << " Mkv=" << Mkv;
    if (page_size) os << " page_size=" << page_size << " max_pages=" << max_pages << " num_pages=" << num_pages;
    if (padding) os << " padding=" << padding;
    if (has_window(spec.kind)) os << " window=" << window;
    if (has_window_left_right(spec.kind)) os << " window_left=" << window_left << " window_right=" << window_right;
    if (masked_row >= 0) os << " masked_row=" << masked_row;
    if (!ql.empty()) {
      os << " sequences (q, kv" << (is_gappy(spec.kind) ? "@start" : "") << ")=";
      for (size_t b = 0; b < ql.size() && b < 12; ++b) {
        os << (b ? "," : "") << ql[b] << ":" << kl[b];
        if (is_gappy(spec.kind)) os << "@" << kstart[b];
      }
      if (ql.size() > 12) os << ",... (" << ql.size() << ")";
    }
    return os.str();
  }
};

int64_t draw(int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng()); }
bool chance(double p) { return std::uniform_real_distribution<double>(0, 1)(rng()) < p; }

// The physical key row of logical key x of sequence b in a paged layout.
int64_t paged_row(const Problem& p, size_t b, int64_t x) {
  return int64_t(p.table[b * size_t(p.max_pages) + size_t(x / p.page_size)]) * p.page_size + x % p.page_size;
}

// The reference's view of the sequences, from the shapes and the bias's numbers.
void build_seqs(Problem& p) {
  p.seqs.clear();
  if (is_dense(p.spec.kind)) {
    for (int64_t b = 0; b < p.Bt; ++b) {
      Seq s;
      s.tb = b, s.q0 = 0, s.nq = p.Mq;
      for (int64_t j = 0; j < p.Mkv; ++j) s.krows.push_back(j);
      p.seqs.push_back(std::move(s));
    }
    return;
  }
  int64_t q0 = 0, k0 = 0;
  for (size_t b = 0; b < p.ql.size(); ++b) {
    Seq s;
    s.q0 = q0, s.nq = p.ql[b];
    for (int64_t j = 0; j < p.kl[b]; ++j) {
      int64_t row;
      if (is_seq_keys(p.spec.kind)) row = k0 + j;
      else if (is_paged(p.spec.kind)) row = paged_row(p, b, (is_gappy(p.spec.kind) ? p.kstart[b] : 0) + j);
      else if (is_gappy(p.spec.kind)) row = p.kstart[b] + j;
      else row = int64_t(b) * p.padding + j;
      s.krows.push_back(row);
    }
    q0 += p.ql[b], k0 += p.kl[b];
    p.seqs.push_back(std::move(s));
  }
}

// The inputs' values come from their own generator, seeded by one draw of rng(): a problem drawn
// without them (with_values = false) has the same shapes and lengths as with them.
void fill_values(Problem& p, bool with_values = true) {
  const Spec& c = p.spec;
  if (has_alibi(c.kind)) {
    p.slopes.clear();
    if ((p.Hq & (p.Hq - 1)) == 0 && chance(0.5)) {
      p.slopes = AlibiSlopes::geometric(int32_t(p.Hq)).slopes.host();
    } else {
      std::uniform_real_distribution<float> u(0.002f, 0.3f);
      for (int64_t h = 0; h < p.Hq; ++h) p.slopes.push_back(u(rng()));
    }
  }
  std::mt19937_64 gen(rng()());
  if (!with_values) return;
  random_values(gen, size_t(p.Bt * p.Mq * p.Hq * c.K), c.dt, p.q, p.qb);
  random_values(gen, size_t(p.Bt * p.Mkv * p.Hkv * c.K), c.dt, p.k, p.kb);
  random_values(gen, size_t(p.Bt * p.Mkv * p.Hkv * c.Kv), c.dt, p.v, p.vb);
  if (c.kind == Kind::tensor) {
    random_values(gen, size_t(p.Bt * p.Hq * p.Mq * p.Mkv), c.dt, p.tbias, p.tbb);
    if (p.masked_row >= 0) {
      const uint16_t bits = c.dt == DType::f16 ? 0xfc00 : 0xff80;  // -inf
      for (int64_t bh = 0; bh < p.Bt * p.Hq; ++bh)
        for (int64_t j = 0; j < p.Mkv; ++j) {
          const size_t idx = size_t((bh * p.Mq + p.masked_row) * p.Mkv + j);
          p.tbias[idx] = -kInf;
          std::memcpy(&p.tbb[idx * 2], &bits, 2);
        }
    }
  }
}

// Runtime choices of one drawn call (none of them compiles).
struct Draw {
  int q = 1;                  // queries per sequence (the longest query block)
  int32_t page_size = 16;     // paged kinds
  int64_t Hq = 8, Hkv = 2;
  Layout layout = Layout::bmhk;
  bool long_keys = false;     // one sequence (dense: every batch entry) with thousands of keys
  int nseq = 0;               // block-diagonal: number of sequences (0: drawn)
  int32_t max_len = 700;      // the longest key length that is not "long"
  int32_t long_len = 0;       // > 0: exactly this long length
};

// A key length: 0, 1, odd, or any up to max_len (>= 2).
int32_t short_len(int32_t max_len) {
  switch (draw(0, 4)) {
    case 0: return 0;
    case 1: return 1;
    case 2: return int32_t(std::min<int64_t>(max_len - 1 + max_len % 2, draw(1, 150) * 2 + 1));
    default: return int32_t(draw(2, max_len));
  }
}

Problem draw_problem(const Spec& spec, const Draw& d, bool with_values = true) {
  Problem p;
  p.spec = spec;
  p.layout = d.layout, p.Hq = d.Hq, p.Hkv = d.Hkv;
  const Kind kind = spec.kind;
  if (has_window(kind)) {
    const int64_t w[] = {1, draw(2, 16), draw(17, 400), 100000};
    p.window = int32_t(w[draw(0, 3)]);
  }
  if (has_window_left_right(kind)) {
    const int64_t wl[] = {0, draw(1, 16), draw(17, 2000)}, wr[] = {0, 0, draw(1, 20)};
    p.window_left = int32_t(wl[draw(0, 2)]), p.window_right = int32_t(wr[draw(0, 2)]);
  }
  // "Long": thousands of keys, held to ~6e7 multiply-adds of the fp64 reference and 3M key/value
  // elements (drawing the values dominates a case's time). `copies`: sequences padded to it.
  const int64_t elems_per_key = p.Hkv * (spec.K + spec.Kv);
  auto long_len = [&](int64_t copies) {
    if (d.long_len > 0) return d.long_len;
    const int64_t ref_cap = int64_t(6e7) / (copies * p.Hq * d.q * (spec.K + spec.Kv));
    const int64_t mem_cap = int64_t(3e6) / (copies * elems_per_key);
    return int32_t(std::max<int64_t>(d.max_len + 1, std::min({draw(1500, 6000), ref_cap, mem_cap})) | draw(0, 1));
  };
  // The other lengths: up to d.max_len, held to the same 3M elements over `copies` sequences.
  auto max_short = [&](int64_t copies) {
    return int32_t(std::clamp<int64_t>(int64_t(3e6) / (copies * elems_per_key), 64, d.max_len));
  };

  if (is_dense(kind)) {
    p.Bt = draw(1, 3), p.Mq = d.q;
    p.Mkv = d.long_keys ? long_len(p.Bt) : short_len(max_short(p.Bt));
    if (kind == Kind::tensor) {
      p.Mkv = std::max<int64_t>(p.Mkv, 1);
      if (chance(0.3)) p.masked_row = draw(0, p.Mq - 1);
    }
    fill_values(p, with_values);
    build_seqs(p);
    return p;
  }

  const bool padded_layout = !is_seq_keys(kind) && !is_gappy(kind) && !is_paged(kind);
  // (Padded keys pad every sequence to the longest: at most 3 sequences beside a long one.)
  const int nseq = d.nseq ? d.nseq : int(draw(1, d.long_keys && padded_layout ? 3 : 6));
  for (int b = 0; b < nseq; ++b) p.ql.push_back(chance(0.25) ? int32_t(draw(0, d.q)) : d.q);
  p.ql[size_t(draw(0, nseq - 1))] = d.q;  // the longest query block has q queries
  for (int b = 0; b < nseq; ++b) p.kl.push_back(short_len(max_short(nseq)));
  if (d.long_keys) p.kl[size_t(draw(0, nseq - 1))] = long_len(padded_layout ? nseq : 1);
  const int32_t longest = *std::max_element(p.kl.begin(), p.kl.end());
  p.Bt = 1, p.Mq = sum(p.ql);

  if (is_seq_keys(kind)) {
    p.Mkv = sum(p.kl);
  } else if (padded_layout) {
    p.padding = std::max<int32_t>(1, longest + int32_t(draw(0, 37)));
    p.Mkv = int64_t(nseq) * p.padding;
  } else if (!is_paged(kind)) {  // gappy: ranges anywhere in the key tensor, overlapping as they fall
    const int32_t total = longest + int32_t(sum(p.kl) / 2 + draw(0, 50));
    for (int b = 0; b < nseq; ++b) p.kstart.push_back(int32_t(draw(0, total - p.kl[size_t(b)])));
    p.Mkv = total;
  } else {
    // Paged: each sequence's pages are distinct pages of the pool in random order; the table's
    // other entries name any page; spare pages no sequence reads hold random data too.
    const int32_t ps = d.page_size;
    p.page_size = ps;
    int32_t row_end = 0;
    for (int b = 0; b < nseq; ++b) {
      p.kstart.push_back(is_gappy(kind) ? int32_t(draw(0, 2 * ps)) : 0);
      row_end = std::max(row_end, p.kstart.back() + p.kl[size_t(b)]);
    }
    p.max_pages = std::max<int32_t>(1, (row_end + ps - 1) / ps + int32_t(draw(0, 1)));
    std::vector<std::pair<int32_t, int32_t>> used;  // (first, last + 1) table entry of each sequence
    int32_t needed = 0;
    for (int b = 0; b < nseq; ++b) {
      const int32_t s = p.kstart[size_t(b)], n = p.kl[size_t(b)];
      used.push_back(n ? std::pair<int32_t, int32_t>{s / ps, (s + n - 1) / ps + 1} : std::pair<int32_t, int32_t>{0, 0});
      needed += used.back().second - used.back().first;
    }
    p.num_pages = needed + int32_t(draw(1, 4));
    std::vector<int32_t> pages(size_t(p.num_pages));
    for (int32_t i = 0; i < p.num_pages; ++i) pages[size_t(i)] = i;
    std::shuffle(pages.begin(), pages.end(), rng());
    p.table.assign(size_t(nseq) * size_t(p.max_pages), -1);
    size_t next = 0;
    for (int b = 0; b < nseq; ++b)
      for (int32_t e = used[size_t(b)].first; e < used[size_t(b)].second; ++e)
        p.table[size_t(b) * size_t(p.max_pages) + size_t(e)] = pages[next++];
    // Shared prefixes: a sequence's first page may be its predecessor's (both read it as their own).
    for (int b = 1; b < nseq; ++b)
      if (used[size_t(b)].first == 0 && used[size_t(b)].second > 0 && used[size_t(b - 1)].first == 0 &&
          used[size_t(b - 1)].second > 0 && chance(is_gappy(kind) ? 0.5 : 0.25))
        p.table[size_t(b) * size_t(p.max_pages)] = p.table[size_t(b - 1) * size_t(p.max_pages)];
    // The entries no key reads name any page but the row's own (materialize() would let such an
    // entry hide the row's keys on that page; a kernel reads only the entries within a length).
    for (int b = 0; b < nseq; ++b) {
      int32_t* row = &p.table[size_t(b) * size_t(p.max_pages)];
      const int32_t* own = row + used[size_t(b)].first;
      const int32_t* own_end = row + used[size_t(b)].second;
      for (int32_t e = 0; e < p.max_pages; ++e)
        while (row[e] < 0) {  // the spare pages (>= 1) are no row's own: this ends
          const int32_t page = int32_t(draw(0, p.num_pages - 1));
          if (std::find(own, own_end, page) == own_end) row[e] = page;
        }
    }
    p.padding = is_gappy(kind) ? 0 : p.max_pages * ps;
    p.Mkv = int64_t(p.num_pages) * ps;
  }
  fill_values(p, with_values);
  build_seqs(p);
  return p;
}

// The bias object for a problem; `tensor` is the tensor bias's memory (device, or a host f32 copy).
AttnBias make_bias(const Problem& p, const TensorView& tensor = {}) {
  const AlibiSlopes slopes{DeviceFloats(p.slopes)};
  const int32_t row = p.max_pages * p.page_size;
  const BlockTables bt{DeviceInts(p.table), p.max_pages};
  // The non-paged gappy starts make_paged reads: row b starts at b * row (xFormers' notional padding).
  std::vector<int32_t> starts;
  for (size_t b = 0; b < p.kstart.size(); ++b)
    starts.push_back(is_paged(p.spec.kind) ? int32_t(b) * row + p.kstart[b] : p.kstart[b]);
  starts.push_back(is_paged(p.spec.kind) ? int32_t(p.kstart.size()) * row : int32_t(p.Mkv));
  switch (p.spec.kind) {
    case Kind::none: return {};
    case Kind::causal_br: return LowerTriangularFromBottomRightMask{};
    case Kind::causal_br_local: return LowerTriangularFromBottomRightMask{}.make_local_attention(p.window);
    case Kind::local_br: return LocalAttentionFromBottomRightMask{p.window_left, p.window_right};
    case Kind::tensor: return TensorBias{tensor};
    case Kind::alibi: return AlibiBias{slopes};
    case Kind::causal_alibi: return LowerTriangularMask{}.add_alibi(slopes);
    case Kind::bd_alibi: return BlockDiagonalMask::from_seqlens(p.ql, p.kl).add_alibi(slopes);
    case Kind::bd_causal_alibi: return BlockDiagonalCausalMask::from_seqlens(p.ql, p.kl).add_alibi(slopes);
    case Kind::padded: return BlockDiagonalPaddedKeysMask::from_seqlens(p.ql, p.padding, p.kl);
    case Kind::causal_padded: return BlockDiagonalCausalWithOffsetPaddedKeysMask::from_seqlens(p.ql, p.padding, p.kl);
    case Kind::local_padded: {
      const auto m = BlockDiagonalPaddedKeysMask::from_seqlens(p.ql, p.padding, p.kl);
      return BlockDiagonalLocalAttentionPaddedKeysMask{m.q_seqinfo, m.k_seqinfo, p.window_left, p.window_right};
    }
    case Kind::causal_local_padded: {
      const auto m = BlockDiagonalPaddedKeysMask::from_seqlens(p.ql, p.padding, p.kl);
      return BlockDiagonalCausalLocalAttentionPaddedKeysMask{m.q_seqinfo, m.k_seqinfo, p.window};
    }
    case Kind::gappy: return BlockDiagonalGappyKeysMask::from_seqlens(p.ql, starts, p.kl);
    case Kind::causal_gappy: return BlockDiagonalCausalWithOffsetGappyKeysMask::from_seqlens(p.ql, starts, p.kl);
    case Kind::paged_padded:
      return BlockDiagonalPaddedKeysMask::from_seqlens(p.ql, row, p.kl).make_paged(bt, p.page_size);
    case Kind::paged_causal:
      return BlockDiagonalCausalWithOffsetPaddedKeysMask::from_seqlens(p.ql, row, p.kl).make_paged(bt, p.page_size);
    case Kind::paged_causal_local: {
      const auto m = BlockDiagonalPaddedKeysMask::from_seqlens(p.ql, row, p.kl);
      return BlockDiagonalCausalLocalAttentionPaddedKeysMask{m.q_seqinfo, m.k_seqinfo, p.window}.make_paged(bt,
                                                                                                          p.page_size);
    }
    case Kind::paged_gappy:
      return BlockDiagonalGappyKeysMask::from_seqlens(p.ql, starts, p.kl).make_paged(bt, p.page_size);
    case Kind::paged_causal_gappy:
      return BlockDiagonalCausalWithOffsetGappyKeysMask::from_seqlens(p.ql, starts, p.kl).make_paged(bt, p.page_size);
  }
  return {};
}

// ---- the fp64 reference, one sequence and one query head at a time -----------------------------
// (reference_attention over the sequence's own keys: the cost is Σ nq·nk, not Mq·Mkv.)

struct Expected {
  std::vector<double> out, lse;  // out [Bt, Mq, Hq, Kv], lse [Bt, Hq, Mq]
};

Expected reference(const Problem& p) {
  const int64_t K = p.spec.K, Kv = p.spec.Kv, Hq = p.Hq, Hkv = p.Hkv;
  const double scale = 1.0 / std::sqrt(double(K));
  Expected e;
  e.out.assign(size_t(p.Bt * p.Mq * Hq * Kv), 0.0);
  e.lse.assign(size_t(p.Bt * Hq * p.Mq), -kInf);
  for (const Seq& s : p.seqs) {
    if (s.nq == 0) continue;
    const int64_t nk = int64_t(s.krows.size());
    std::vector<double> q(size_t(s.nq * K)), k(size_t(nk * K)), v(size_t(nk * Kv)), bias(size_t(s.nq * nk));
    for (int64_t hk = 0; hk < Hkv; ++hk) {
      for (int64_t j = 0; j < nk; ++j) {
        const int64_t r = s.tb * p.Mkv + s.krows[size_t(j)];
        std::copy_n(&p.k[size_t((r * Hkv + hk) * K)], K, &k[size_t(j * K)]);
        std::copy_n(&p.v[size_t((r * Hkv + hk) * Kv)], Kv, &v[size_t(j * Kv)]);
      }
      for (int64_t h = hk * p.group(); h < (hk + 1) * p.group(); ++h) {
        for (int64_t i = 0; i < s.nq; ++i) {
          std::copy_n(&p.q[size_t(((s.tb * p.Mq + s.q0 + i) * Hq + h) * K)], K, &q[size_t(i * K)]);
          for (int64_t j = 0; j < nk; ++j) bias[size_t(i * nk + j)] = p.bias_at(s, h, i, j);
        }
        const RefResult r = reference_attention({1, s.nq, nk, 1, K, Kv}, q, k, v, bias, scale);
        for (int64_t i = 0; i < s.nq; ++i) {
          std::copy_n(&r.out[size_t(i * Kv)], Kv, &e.out[size_t(((s.tb * p.Mq + s.q0 + i) * Hq + h) * Kv)]);
          e.lse[size_t((s.tb * Hq + h) * p.Mq + s.q0 + i)] = r.lse[size_t(i)];
        }
      }
    }
  }
  return e;
}

// Sequence by sequence (a wrong short sequence must not hide behind long ones), stopping after a
// few failures with the indices; a fully masked row must be exactly 0 with LSE -inf.
void expect_matches(const Problem& p, const std::vector<double>& out, const std::vector<double>* lse,
                    const Expected& e) {
  const double tol = dtype_tolerance(p.spec.dt);  // an f32 output adds no rounding of its own
  const int64_t Hq = p.Hq, Kv = p.spec.Kv;
  int failures = 0;
  for (size_t si = 0; si < p.seqs.size() && failures < 4; ++si) {
    const Seq& s = p.seqs[si];
    std::vector<double> go, eo, gl, el;
    int64_t masked_nonzero = -1;
    for (int64_t i = 0; i < s.nq; ++i)
      for (int64_t h = 0; h < Hq; ++h) {
        const size_t o = size_t(((s.tb * p.Mq + s.q0 + i) * Hq + h) * Kv);
        const size_t l = size_t((s.tb * Hq + h) * p.Mq + s.q0 + i);
        go.insert(go.end(), out.begin() + o, out.begin() + o + Kv);
        eo.insert(eo.end(), e.out.begin() + o, e.out.begin() + o + Kv);
        if (lse) gl.push_back((*lse)[l]), el.push_back(e.lse[l]);
        if (e.lse[l] == -kInf && masked_nonzero < 0)
          for (int64_t d = 0; d < Kv; ++d)
            if (out[o + size_t(d)] != 0.0) masked_nonzero = i;
      }
    const double err = relative_error(go, eo), lerr = lse ? relative_error(gl, el) : 0.0;
    if (err <= tol && lerr <= 1e-4 && masked_nonzero < 0) continue;
    ++failures;
    ADD_FAILURE() << "sequence " << si << " (batch " << s.tb << ", query rows " << s.q0 << "+" << s.nq << ", "
                  << s.krows.size() << " keys): output relative error " << err << " (tolerance " << tol << ")"
                  << (lse ? ", lse relative error " + std::to_string(lerr) + " (tolerance 1e-4)" : "")
                  << (masked_nonzero >= 0 ? ", fully masked query " + std::to_string(masked_nonzero) + " is not 0"
                                          : "");
  }
}

// The device views of a problem's tensors at the given memory.
struct Views {
  TensorView q, k, v, out, lse;
};
Views views(const Problem& p, void* q, void* k, void* v, void* out, void* lse) {
  const DType dt = p.spec.dt, odt = p.out_dtype();
  const int64_t B = p.Bt, Mq = p.Mq, Mkv = p.Mkv, K = p.spec.K, Kv = p.spec.Kv;
  Views w;
  if (p.layout != Layout::bmghk) {
    w.q = TensorView::make(q, dt, {B, Mq, p.Hq, K});
    w.k = TensorView::make(k, dt, {B, Mkv, p.Hkv, K});
    if (p.layout == Layout::bmhk) w.v = TensorView::make(v, dt, {B, Mkv, p.Hkv, Kv});
    else w.v = TensorView::make(v, dt, {B, Mkv, p.Hkv, Kv}, {p.Hkv * Mkv * Kv, Kv, Mkv * Kv, 1});
    w.out = TensorView::make(out, odt, {B, Mq, p.Hq, Kv});
    if (lse) w.lse = TensorView::make(lse, DType::f32, {B, p.Hq, Mq});
  } else {
    const int64_t G = p.Hkv, H = p.group();
    w.q = TensorView::make(q, dt, {B, Mq, G, H, K});
    w.k = TensorView::make(k, dt, {B, Mkv, G, H, K}, {Mkv * G * K, G * K, K, 0, 1});
    w.v = TensorView::make(v, dt, {B, Mkv, G, H, Kv}, {Mkv * G * Kv, G * Kv, Kv, 0, 1});
    w.out = TensorView::make(out, odt, {B, Mq, G, H, Kv});
    if (lse) w.lse = TensorView::make(lse, DType::f32, {B, G, H, Mq});
  }
  return w;
}

DeviceBuffer upload(const std::vector<unsigned char>& bytes) {
  DeviceBuffer b(bytes.size());
  if (!bytes.empty()) b.upload(bytes.data(), bytes.size());
  return b;
}

// [B, M, H, D] bytes as [B, H, M, D].
std::vector<unsigned char> head_major(const std::vector<unsigned char>& x, int64_t B, int64_t M, int64_t H, int64_t D,
                                      size_t elem) {
  std::vector<unsigned char> y(x.size());
  for (int64_t b = 0; b < B; ++b)
    for (int64_t m = 0; m < M; ++m)
      for (int64_t h = 0; h < H; ++h)
        std::memcpy(&y[size_t(((b * H + h) * M + m) * D) * elem], &x[size_t(((b * M + m) * H + h) * D) * elem], size_t(D) * elem);
  return y;
}

void run_problem(const Problem& p) {
  SCOPED_TRACE(p.describe());
  DeviceBuffer q = upload(p.qb), k = upload(p.kb), tb = upload(p.tbb);
  DeviceBuffer v = upload(p.layout == Layout::bmhk_v_head_major
                              ? head_major(p.vb, p.Bt, p.Mkv, p.Hkv, p.spec.Kv, element_size(p.spec.dt))
                              : p.vb);
  DeviceBuffer out(size_t(p.Bt * p.Mq * p.Hq * p.spec.Kv) * element_size(p.out_dtype()));
  DeviceBuffer lse(size_t(p.Bt * p.Hq * p.Mq) * 4);
  out.fill(0xFF);
  lse.fill(0xFF);
  const Views w = views(p, q.get(), k.get(), v.get(), out.get(), p.spec.lse ? lse.get() : nullptr);
  const AttnBias bias = make_bias(p, TensorView::make(tb.get(), p.spec.dt, {p.Bt, p.Hq, p.Mq, p.Mkv}));
  AttentionOptions opt;
  opt.output_dtype = p.spec.out_dtype;
  if (p.spec.lse) memory_efficient_attention_forward_requires_grad(w.q, w.k, w.v, bias, w.out, w.lse, opt);
  else memory_efficient_attention_forward(w.q, w.k, w.v, bias, w.out, opt);
  device_synchronize();
  const Expected e = reference(p);
  const auto got_lse = decode(lse.download(), DType::f32);
  expect_matches(p, decode(out.download(), p.out_dtype()), p.spec.lse ? &got_lse : nullptr, e);
}

// Query heads over KV heads: GQA group 4 (32 over 8), MQA (group 8), MHA, and two odd groups.
struct Heads {
  int64_t Hq, Hkv;
};
constexpr Heads kHeads[] = {{32, 8}, {8, 1}, {4, 4}, {16, 2}, {6, 3}, {3, 1}};
constexpr int kQueries[] = {1, 2, 5, 16};
constexpr int32_t kPageSizes[] = {16, 64, 256};

// The r-th of a test's draws (r mod 12): every queries-per-sequence count meets every page size,
// the big GQA group (32 over 8) and a 5-D layout, with and without long keys; lengths are random.
Draw nth_draw(int r) {
  r %= 12;
  constexpr int kHeadsOf[12] = {0, 1, 2, 0, 3, 4, 0, 1, 5, 0, 3, 2};
  Draw d;
  d.q = kQueries[r % 4];
  d.page_size = kPageSizes[(r / 2) % 3];
  d.Hq = kHeads[kHeadsOf[r]].Hq, d.Hkv = kHeads[kHeadsOf[r]].Hkv;
  d.layout = r % 3 == 1 ? Layout::bmghk : Layout::bmhk;
  d.long_keys = (r + r / 4) % 2 == 1;
  return d;
}

class DecodeGpu : public ::testing::Test {
 protected:
  void SetUp() override { JITATTN_REQUIRE_GPU(); }
};

// ---- every bias kind × f16/bf16, randomized -----------------------------------------------------

class DecodeBiasGpu : public ::testing::TestWithParam<Kind> {
 protected:
  void SetUp() override { JITATTN_REQUIRE_GPU(); }
};

// The calls DecodeBiasGpu makes for one kind, in order: 6 draws per dtype.
template <class F>
void for_each_random_call(Kind kind, F&& f, bool with_values = true) {
  reseed(1000 + uint64_t(kind));
  int r = 0;
  for (DType dt : {DType::f16, DType::bf16}) {
    const Spec spec{kind, dt, 128, 128, lse_for(kind, dt), std::nullopt};
    for (int i = 0; i < 6 && !::testing::Test::HasFailure(); ++i) f(draw_problem(spec, nth_draw(r++), with_values));
  }
}

TEST_P(DecodeBiasGpu, RandomCallsMatchTheReference) {
  for_each_random_call(GetParam(), [](const Problem& p) { run_problem(p); });
}

// Numbered instances: ctest's discovery names each by the printed kind
// (splits3.EveryKind/DecodeBiasGpu.RandomCallsMatchTheReference/PagedBlockDiagonalGappyKeysMask).
INSTANTIATE_TEST_SUITE_P(EveryKind, DecodeBiasGpu, ::testing::ValuesIn(kAllKinds));

// ---- head dims, Kv != K, an f32 output ---------------------------------------------------------

TEST_F(DecodeGpu, HeadDimsAndValueHeadDim) {
  reseed(2);
  const Spec specs[] = {
      {Kind::none, DType::bf16, 64, 64, lse_for(Kind::none, DType::bf16), std::nullopt},
      {Kind::paged_causal, DType::bf16, 64, 64, lse_for(Kind::paged_causal, DType::bf16), std::nullopt},
      {Kind::none, DType::f16, 256, 256, lse_for(Kind::none, DType::f16), std::nullopt},
      {Kind::paged_causal, DType::bf16, 256, 256, lse_for(Kind::paged_causal, DType::bf16), std::nullopt},
      {Kind::none, DType::bf16, 128, 64, lse_for(Kind::none, DType::bf16), std::nullopt},
      {Kind::causal_padded, DType::f16, 128, 64, lse_for(Kind::causal_padded, DType::f16), std::nullopt},
  };
  int r = 0;
  for (const Spec& spec : specs)
    for (int i = 0; i < 4; ++i, ++r) {
      run_problem(draw_problem(spec, nth_draw(r)));
      if (HasFailure()) return;
    }
}

// Values in another memory order than the keys: each tensor map orders its own dimensions.
TEST_F(DecodeGpu, ValuesHeadMajor) {
  reseed(7);
  for (int r = 0; r < 4; ++r) {
    Draw d = nth_draw(r);
    d.layout = Layout::bmhk_v_head_major;
    d.long_keys = r % 2 == 1;
    run_problem(draw_problem({Kind::none, DType::bf16, 128, 128, lse_for(Kind::none, DType::bf16)}, d));
    if (HasFailure()) return;
  }
}

TEST_F(DecodeGpu, Float32Output) {
  reseed(3);
  const Spec spec{Kind::none, DType::bf16, 128, 128, lse_for(Kind::none, DType::bf16), DType::f32};
  for (int r = 0; r < 4; ++r) run_problem(draw_problem(spec, nth_draw(r)));
}

// ---- the split heuristic's two ends ------------------------------------------------------------

// Few (sequence, KV head) pairs with many keys: the heuristic splits the keys (> 1 split).
TEST_F(DecodeGpu, OneLongSequenceSmallBatch) {
  reseed(4);
  {
    Draw d;
    d.q = 1, d.page_size = 256, d.Hq = 32, d.Hkv = 8, d.nseq = 1, d.long_keys = true, d.long_len = 12001;
    run_problem(draw_problem({Kind::paged_causal, DType::bf16, 128, 128, lse_for(Kind::paged_causal, DType::bf16)}, d));
  }
  {
    Draw d;  // two sequences, one long: split ranges past a sequence's end must exit early
    d.q = 5, d.page_size = 16, d.Hq = 16, d.Hkv = 2, d.nseq = 2, d.long_keys = true, d.long_len = 9000;
    run_problem(draw_problem({Kind::paged_causal, DType::f16, 128, 128, lse_for(Kind::paged_causal, DType::f16)}, d));
  }
  {
    Draw d;  // dense, B = 1..3, 8191 keys
    d.q = 2, d.Hq = 16, d.Hkv = 2, d.long_keys = true, d.long_len = 8191;
    run_problem(draw_problem({Kind::none, DType::bf16, 128, 128, lse_for(Kind::none, DType::bf16)}, d));
  }
}

// Many (sequence, KV head) pairs (B·Hkv >= 400) with short keys: the heuristic does not split.
TEST_F(DecodeGpu, ManySequencesShortKeys) {
  reseed(5);
  for (Kind kind : {Kind::causal_padded, Kind::paged_causal})
    for (DType dt : {DType::bf16, DType::f16}) {
      Draw d;
      d.q = dt == DType::bf16 ? 1 : 2, d.page_size = kind == Kind::paged_causal ? 16 : 0;
      d.Hq = 16, d.Hkv = 4, d.nseq = 100, d.max_len = 100;
      run_problem(draw_problem({kind, dt, 128, 128, lse_for(kind, dt)}, d));
    }
}

// ---- a paged decode step captured once, replayed while the sequences grow ----------------------

// Page sizes beside 16/64/256: the tma kernel reads pages in boxes of gcd(page size, block_n)
// rows (8 at 8, 24 and 40; a whole tile at 128 and 512) and page sizes that are not multiples of
// 8 take the cp.async kernel (odd_pages); gappy starts and windows put the split's first key inside a
// box, and long keys split the sequence.
TEST_F(DecodeGpu, PageSizesOfEveryBoxShape) {
  reseed(11);
  int r = 0;
  for (int32_t ps : {8, 24, 40, 128, 512, 12, 1})
    for (Kind kind : {Kind::paged_causal_gappy, Kind::paged_causal_local, Kind::paged_padded}) {
      const DType dt = r % 2 ? DType::f16 : DType::bf16;
      Draw d = nth_draw(r++);
      d.page_size = ps;
      d.long_keys = r % 3 == 0;
      run_problem(draw_problem({kind, dt, 128, 128, lse_for(kind, dt)}, d));
      if (::testing::Test::HasFailure()) return;
    }
}

TEST_F(DecodeGpu, PagedStepReplaysInACudaGraphWhileLengthsGrow) {
  reseed(6);
  for (DType dt : {DType::bf16, DType::f16}) {
    const Kind kind = Kind::paged_causal;
    Problem p;
    p.spec = {kind, dt, 128, 128, lse_for(kind, dt), std::nullopt};
    p.Hq = 32, p.Hkv = 8, p.page_size = 16;
    const int32_t q = dt == DType::bf16 ? 1 : 2, steps = 4, ps = p.page_size;
    // Lengths 0 (sees nothing), 1, odd, and long enough for the heuristic to split; each step
    // appends 1..40 tokens per sequence (a multi-token step crosses pages).
    p.kl = {0, 1, 37, 3001};
    std::shuffle(p.kl.begin(), p.kl.end(), rng());
    const size_t B = p.kl.size();
    p.ql.assign(B, q);
    std::vector<std::vector<int32_t>> growth(steps);
    std::vector<int32_t> final_len = p.kl;
    for (auto& g : growth)
      for (size_t b = 0; b < B; ++b) g.push_back(int32_t(draw(1, 40))), final_len[b] += g.back();
    p.max_pages = (*std::max_element(final_len.begin(), final_len.end()) + ps - 1) / ps + 1;
    int32_t needed = 0;
    for (int32_t n : final_len) needed += (n + ps - 1) / ps;
    p.num_pages = needed + 8;
    std::vector<int32_t> pages(size_t(p.num_pages));
    for (int32_t i = 0; i < p.num_pages; ++i) pages[size_t(i)] = i;
    std::shuffle(pages.begin(), pages.end(), rng());
    p.table.assign(B * size_t(p.max_pages), 0);
    for (auto& e : p.table) e = int32_t(draw(0, p.num_pages - 1));  // entries past a length: any page
    size_t next = 0;
    std::vector<int32_t> mapped(B, 0);  // table entries given a page of their own
    auto map_pages = [&](size_t b, int32_t len) {
      for (; mapped[b] < (len + ps - 1) / ps; ++mapped[b])
        p.table[b * size_t(p.max_pages) + size_t(mapped[b])] = pages[next++];
    };
    for (size_t b = 0; b < B; ++b) map_pages(b, p.kl[b]);
    p.padding = p.max_pages * ps;
    p.Bt = 1, p.Mq = sum(p.ql), p.Mkv = int64_t(p.num_pages) * ps;
    fill_values(p);  // the whole pool, spare pages included, is random
    build_seqs(p);
    SCOPED_TRACE(p.describe());

    // The caller's device arrays: the graph reads them at every replay.
    DeviceBuffer qstart((B + 1) * 4), kstart((B + 1) * 4), seqlen(B * 4), table(p.table.size() * 4);
    const auto host_mask = BlockDiagonalCausalWithOffsetPaddedKeysMask::from_seqlens(p.ql, p.padding, p.kl)
                               .make_paged(BlockTables{DeviceInts(p.table), p.max_pages}, ps);
    qstart.upload(host_mask.q_seqinfo.seqstart.host().data(), qstart.bytes());
    kstart.upload(host_mask.k_seqinfo.seqstart.host().data(), kstart.bytes());
    seqlen.upload(p.kl.data(), seqlen.bytes());
    table.upload(p.table.data(), table.bytes());
    auto mask = host_mask;
    mask.q_seqinfo.seqstart =
        DeviceInts(host_mask.q_seqinfo.seqstart.host(), static_cast<const int32_t*>(qstart.get()));
    mask.k_seqinfo.seqstart =
        DeviceInts(host_mask.k_seqinfo.seqstart.host(), static_cast<const int32_t*>(kstart.get()));
    mask.k_seqinfo.seqlen = DeviceInts(p.kl, static_cast<const int32_t*>(seqlen.get()));
    mask.block_tables.table = DeviceInts(p.table, static_cast<const int32_t*>(table.get()));

    DeviceBuffer qd = upload(p.qb), kd = upload(p.kb), vd = upload(p.vb);
    DeviceBuffer out(size_t(p.Mq * p.Hq * p.spec.Kv) * element_size(dt)), lse(size_t(p.Hq * p.Mq) * 4);
    const Views w = views(p, qd.get(), kd.get(), vd.get(), out.get(), p.spec.lse ? lse.get() : nullptr);
    Stream stream;
    auto enqueue = [&] {
      if (p.spec.lse)
        memory_efficient_attention_forward_requires_grad(w.q, w.k, w.v, mask, w.out, w.lse, {}, stream.get());
      else
        memory_efficient_attention_forward(w.q, w.k, w.v, mask, w.out, {}, stream.get());
    };
    auto poison = [&] {
      out.fill(0xFF);
      lse.fill(0xFF);
      device_synchronize();  // the fills and uploads ran on the legacy stream; ours does not wait for it
    };
    auto check = [&](const std::string& what) {
      SCOPED_TRACE(what);
      const auto got_lse = decode(lse.download(), DType::f32);
      expect_matches(p, decode(out.download(), dt), p.spec.lse ? &got_lse : nullptr, reference(p));
    };

    // 1. The warm-up call, outside capture: compiles (or loads) what the step needs.
    poison();
    enqueue();
    stream.synchronize();
    check("eager call");

    // 2. Capture: nothing compiles, loads or runs.
    auto& stats = jit::JitRuntime::get().stats();
    const int64_t compiles = stats.compiles.load(), loads = stats.loads.load();
    poison();
    Graph graph = Graph::capture(stream.get(), enqueue);
    stream.synchronize();
    device_synchronize();
    EXPECT_EQ(stats.compiles.load(), compiles) << "compiled during capture";
    EXPECT_EQ(stats.loads.load(), loads) << "loaded a module during capture";
    {
      const auto raw = out.download();
      EXPECT_TRUE(std::all_of(raw.begin(), raw.end(), [](unsigned char c) { return c == 0xFF; }))
          << "the captured call ran instead of being recorded";
    }

    // 3. Replays: new tokens in fresh pages (the block table gains entries), new queries, the
    // lengths grown in place; the same graph runs again.
    for (int step = 0; step < steps && !HasFailure(); ++step) {
      const size_t es = element_size(dt);
      for (size_t b = 0; b < B; ++b) {
        const int32_t len = p.kl[b] + growth[size_t(step)][b];
        map_pages(b, len);
        for (int32_t x = p.kl[b]; x < len; ++x) {  // the new tokens' key/value rows
          const int64_t row = paged_row(p, b, x);
          std::vector<double> kv, vv;
          std::vector<unsigned char> kbytes, vbytes;
          random_values(rng(), size_t(p.Hkv * p.spec.K), dt, kv, kbytes);
          random_values(rng(), size_t(p.Hkv * p.spec.Kv), dt, vv, vbytes);
          std::copy(kv.begin(), kv.end(), p.k.begin() + row * p.Hkv * p.spec.K);
          std::copy(vv.begin(), vv.end(), p.v.begin() + row * p.Hkv * p.spec.Kv);
          kd.upload(kbytes.data(), kbytes.size(), size_t(row * p.Hkv * p.spec.K) * es);
          vd.upload(vbytes.data(), vbytes.size(), size_t(row * p.Hkv * p.spec.Kv) * es);
        }
        p.kl[b] = len;
      }
      random_values(rng(), p.q.size(), dt, p.q, p.qb);
      qd.upload(p.qb.data(), p.qb.size());
      seqlen.upload(p.kl.data(), seqlen.bytes());
      table.upload(p.table.data(), table.bytes());
      build_seqs(p);
      poison();
      graph.launch(stream.get());
      stream.synchronize();
      check("replay " + std::to_string(step + 1) + ", lengths " + std::to_string(p.kl[0]) + "," +
            std::to_string(p.kl[1]) + "," + std::to_string(p.kl[2]) + "," + std::to_string(p.kl[3]));
    }
    EXPECT_EQ(stats.compiles.load(), compiles);
    EXPECT_EQ(stats.loads.load(), loads);
  }
}

// ---- the test's own reference, against materialize() (CPU: runs without a GPU too) -------------
// The per-sequence reference above builds its masks from bias.h's definitions; here it must
// agree with reference_attention over materialize()'s dense [B, H, Mq, Mkv] bias — the masks and
// ALiBi, the padded/gappy/paged key rows, the GQA head map.

TEST(DecodeReference, AgreesWithMaterializedBias) {
  reseed(7);
  int r = 0;
  for (Kind kind : kAllKinds)
    for (int i = 0; i < 4; ++i, ++r) {
      Draw d = nth_draw(r);
      d.long_keys = false, d.max_len = 60;
      constexpr int kSmall[] = {1, 2, 4, 5};  // Hq <= 8: the dense reference costs Mq·Mkv·Hq
      const Heads h = kHeads[kSmall[r % 4]];
      d.Hq = h.Hq, d.Hkv = h.Hkv;
      const Problem p = draw_problem({kind, DType::bf16, 16, 8, true, std::nullopt}, d);
      SCOPED_TRACE(p.describe());
      std::vector<float> host_f(p.tbias.begin(), p.tbias.end());
      const AttnBias bias =
          make_bias(p, TensorView::make(host_f.data(), DType::f32, {p.Bt, p.Hq, p.Mq, p.Mkv}, {}, TensorView::kHost));
      const auto reasons = bias_reasons(bias, p.Bt, p.Hq, p.Mq, p.Mkv);
      ASSERT_TRUE(reasons.empty()) << reasons[0];
      const std::vector<double> dense = materialize(bias, p.Bt, p.Hq, p.Mq, p.Mkv);
      // The same bias written from the sequences, entry by entry.
      std::vector<double> mine(dense.size(), -kInf);
      for (const Seq& s : p.seqs)
        for (int64_t hh = 0; hh < p.Hq; ++hh)
          for (int64_t qi = 0; qi < s.nq; ++qi)
            for (int64_t j = 0; j < int64_t(s.krows.size()); ++j)
              mine[size_t(((s.tb * p.Hq + hh) * p.Mq + s.q0 + qi) * p.Mkv + s.krows[size_t(j)])] =
                  p.bias_at(s, hh, qi, j);
      int64_t bad = 0;
      for (size_t x = 0; x < dense.size(); ++x)
        bad += std::isinf(dense[x]) || std::isinf(mine[x])
                   ? dense[x] != mine[x]
                   : std::abs(dense[x] - mine[x]) > 1e-6 * (1 + std::abs(mine[x]));
      EXPECT_EQ(bad, 0) << "entries where materialize() differs from the sequences' bias";
      const Expected e = reference(p);
      const auto full = reference_attention({p.Bt, p.Mq, p.Mkv, p.Hq, p.spec.K, p.spec.Kv}, p.q,
                                            repeat_heads(p.k, p.Bt, p.Mkv, p.Hkv, p.Hq, p.spec.K),
                                            repeat_heads(p.v, p.Bt, p.Mkv, p.Hkv, p.Hq, p.spec.Kv), dense,
                                            1.0 / std::sqrt(double(p.spec.K)));
      EXPECT_LE(relative_error(e.out, full.out), 1e-6) << "output";
      EXPECT_LE(relative_error(e.lse, full.lse), 1e-6) << "lse";
      if (HasFailure()) return;
    }
}

// Every drawn call is one the library accepts (checked without a GPU, on fake pointers), so a
// GPU run fails only on numbers.
TEST(DecodeReference, DrawnCallsAreAccepted) {
  for (Kind kind : kAllKinds)
    for_each_random_call(kind, [](const Problem& p) {
      SCOPED_TRACE(p.describe());
      const Views w = views(p, fake(), fake(), fake(), fake(), p.spec.lse ? fake() : nullptr);
      const AttnBias bias = make_bias(p, TensorView::make(fake(), p.spec.dt, {p.Bt, p.Hq, p.Mq, p.Mkv}));
      AttentionOptions opt;
      opt.output_dtype = p.spec.out_dtype;
      const auto reasons = not_supported_reasons(w.q, w.k, w.v, bias, w.out, w.lse, opt);
      EXPECT_TRUE(reasons.empty()) << reasons[0];
    }, /*with_values=*/false);
}

}  // namespace
}  // namespace jitattn::test
