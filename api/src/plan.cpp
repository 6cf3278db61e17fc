#include "plan.h"

#include "layout.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <tuple>

namespace jitattn::detail {

namespace {

// The left window of a causal local mask of window_size keys (itself included). bias_reasons()
// refuses window_size < 1; this only keeps the subtraction defined until it has.
int32_t left_of(int32_t window_size) { return window_size >= 1 ? window_size - 1 : 0; }

template <class... F> struct Overloaded : F... { using F::operator()...; };
template <class... F> Overloaded(F...) -> Overloaded<F...>;

}  // namespace

BiasPlan describe(const AttnBias& bias) {
  using K = jit::BiasKind;
  auto band = [](K kind, int32_t left, int32_t right) { BiasPlan b; b.kind = kind, b.window_left = left, b.window_right = right; return b; };
  auto bd = [](K kind, const SeqLenInfo& q, const DeviceInts& k_start, int32_t k_max, const DeviceInts* k_len,
               int32_t left, int32_t right) {
    BiasPlan b;
    b.kind = kind, b.window_left = left, b.window_right = right;
    b.q_seqinfo = &q, b.k_seqstart = &k_start, b.k_seqlen = k_len, b.k_max_seqlen = k_max;
    return b;
  };
  auto paged = [](K kind, const auto& m, const DeviceInts* k_start, int32_t left, int32_t right) {
    BiasPlan b;
    b.kind = kind, b.window_left = left, b.window_right = right;
    b.q_seqinfo = &m.q_seqinfo, b.k_seqstart = k_start, b.k_seqlen = &m.k_seqinfo.seqlen;
    b.k_max_seqlen = m.k_seqinfo.max_seqlen;
    b.block_tables = &m.block_tables, b.page_size = m.page_size;
    return b;
  };
  return std::visit(Overloaded{
      [](const std::monostate&) { return BiasPlan{}; },
      [](const TensorBias& t) { BiasPlan b; b.kind = K::tensor, b.tensor = &t.tensor; return b; },
      [&](const LowerTriangularMask&) { return band(K::causal, 0, 0); },
      [](const LowerTriangularMaskWithTensorBias& t) { BiasPlan b; b.kind = K::causal_tensor, b.tensor = &t.tensor; return b; },
      [&](const LowerTriangularFromBottomRightMask&) { return band(K::causal_bottom_right, 0, 0); },
      [&](const LowerTriangularFromBottomRightLocalAttentionMask& m) { return band(K::causal_local_br, left_of(m.window_size), 0); },
      [&](const LocalAttentionFromBottomRightMask& m) { return band(K::local_br, m.window_left, m.window_right); },
      [&](const BlockDiagonalMask& m) { return bd(K::bd, m.q_seqinfo, m.k_seqinfo.seqstart, m.k_seqinfo.max_seqlen, nullptr, 0, 0); },
      [&](const BlockDiagonalCausalMask& m) { return bd(K::bd_causal, m.q_seqinfo, m.k_seqinfo.seqstart, m.k_seqinfo.max_seqlen, nullptr, 0, 0); },
      [&](const BlockDiagonalCausalFromBottomRightMask& m) { return bd(K::bd_causal_br, m.q_seqinfo, m.k_seqinfo.seqstart, m.k_seqinfo.max_seqlen, nullptr, 0, 0); },
      [&](const BlockDiagonalCausalLocalAttentionMask& m) {
        return bd(K::bd_causal_local, m.q_seqinfo, m.k_seqinfo.seqstart, m.k_seqinfo.max_seqlen, nullptr, left_of(m.window_size), 0);
      },
      [&](const BlockDiagonalCausalLocalAttentionFromBottomRightMask& m) {
        return bd(K::bd_causal_local_br, m.q_seqinfo, m.k_seqinfo.seqstart, m.k_seqinfo.max_seqlen, nullptr, left_of(m.window_size), 0);
      },
      [&](const BlockDiagonalPaddedKeysMask& m) { return bd(K::bd, m.q_seqinfo, m.k_seqinfo.seqstart, m.k_seqinfo.max_seqlen, &m.k_seqinfo.seqlen, 0, 0); },
      [&](const BlockDiagonalCausalWithOffsetPaddedKeysMask& m) {
        return bd(K::bd_causal_br, m.q_seqinfo, m.k_seqinfo.seqstart, m.k_seqinfo.max_seqlen, &m.k_seqinfo.seqlen, 0, 0);
      },
      [&](const BlockDiagonalLocalAttentionPaddedKeysMask& m) {
        return bd(K::bd_local_br, m.q_seqinfo, m.k_seqinfo.seqstart, m.k_seqinfo.max_seqlen, &m.k_seqinfo.seqlen, m.window_left, m.window_right);
      },
      [&](const BlockDiagonalCausalLocalAttentionPaddedKeysMask& m) {
        return bd(K::bd_causal_local_br, m.q_seqinfo, m.k_seqinfo.seqstart, m.k_seqinfo.max_seqlen, &m.k_seqinfo.seqlen, left_of(m.window_size), 0);
      },
      [&](const BlockDiagonalGappyKeysMask& m) { return bd(K::bd, m.q_seqinfo, m.k_seqinfo.seqstart, m.k_seqinfo.max_seqlen, &m.k_seqinfo.seqlen, 0, 0); },
      [&](const BlockDiagonalCausalWithOffsetGappyKeysMask& m) {
        return bd(K::bd_causal_br, m.q_seqinfo, m.k_seqinfo.seqstart, m.k_seqinfo.max_seqlen, &m.k_seqinfo.seqlen, 0, 0);
      },
      // Paged: padded keys start at logical position 0 of their row (no k_seqstart); gappy keys
      // at k_seqinfo.seqstart[b].
      [&](const PagedBlockDiagonalPaddedKeysMask& m) { return paged(K::pbd, m, nullptr, 0, 0); },
      [&](const PagedBlockDiagonalCausalWithOffsetPaddedKeysMask& m) { return paged(K::pbd_causal_br, m, nullptr, 0, 0); },
      [&](const PagedBlockDiagonalCausalLocalPaddedKeysMask& m) {
        return paged(K::pbd_causal_local_br, m, nullptr, left_of(m.window_size), 0);
      },
      [&](const PagedBlockDiagonalGappyKeysMask& m) { return paged(K::pbd, m, &m.k_seqinfo.seqstart, 0, 0); },
      [&](const PagedBlockDiagonalCausalWithOffsetGappyKeysMask& m) {
        return paged(K::pbd_causal_br, m, &m.k_seqinfo.seqstart, 0, 0);
      },
      [&](const AlibiBias& m) { BiasPlan b; b.kind = K::alibi, b.alibi_slopes = &m.slopes.slopes; return b; },
      [&](const LowerTriangularMaskWithAlibi& m) { BiasPlan b; b.kind = K::causal_alibi, b.alibi_slopes = &m.slopes.slopes; return b; },
      [&](const BlockDiagonalMaskWithAlibi& m) {
        BiasPlan b = bd(K::bd_alibi, m.q_seqinfo, m.k_seqinfo.seqstart, m.k_seqinfo.max_seqlen, nullptr, 0, 0);
        b.alibi_slopes = &m.slopes.slopes;
        return b;
      },
      [](const BlockSparseMask& m) {
        BiasPlan b;
        b.kind = m.causal ? K::causal_block_sparse : K::block_sparse, b.layout = &m.layout, b.block_size = m.block_size;
        return b;
      },
      [&](const BlockDiagonalCausalMaskWithAlibi& m) {
        BiasPlan b = bd(K::bd_causal_alibi, m.q_seqinfo, m.k_seqinfo.seqstart, m.k_seqinfo.max_seqlen, nullptr, 0, 0);
        b.alibi_slopes = &m.slopes.slopes;
        return b;
      },
  }, bias);
}


namespace {

void check_tensor(Plan& p, const TensorView& t, const char* name) {
  if (t.ndim < 3 || t.ndim > 5) {
    p.reasons.push_back(std::string(name) + " must be 3-D [B, M, K], 4-D [B, M, H, K] or 5-D [B, M, G, H, K], got " +
                        std::to_string(t.ndim) + "-D");
    return;
  }
  const size_t before = p.reasons.size();
  check_layout(t, name, p.reasons);
  if (p.reasons.size() != before) return;
  if (t.stride[t.ndim - 1] != 1 && t.shape[t.ndim - 1] > 1)
    p.reasons.push_back(std::string(name) + ".stride[-1]=" + std::to_string(t.stride[t.ndim - 1]) + " must be 1");
  if (t.device < 0) p.reasons.push_back(std::string(name) + " must be in CUDA device memory (device >= 0)");
  if (!t.data && t.numel() > 0) p.reasons.push_back(std::string(name) + ".data is null");
}

}  // namespace

bool as_bmhk(const TensorView& t, bool may_share, Bmhk& x, std::string* why) {
  const int64_t* n = t.shape;
  const int64_t* st = t.stride;
  if (t.ndim == 4) x = {n[0], n[1], n[2], n[3], st[0], st[1], st[2]};
  else if (t.ndim == 3) x = {n[0], n[1], 1, n[2], st[0], st[1], 0};
  // H = 1: the heads are the G groups, st[2] apart (st[3] of a size-1 dim may be anything, e.g.
  // 0 for a slice of keys expanded over H).
  else if (n[3] == 1) x = {n[0], n[1], n[2], n[4], st[0], st[1], st[2]};
  else if (st[2] == n[3] * st[3]) x = {n[0], n[1], n[2] * n[3], n[4], st[0], st[1], st[3]};
  else if (n[2] == 1) x = {n[0], n[1], n[3], n[4], st[0], st[1], st[3]};  // G = 1 (stride 0 over H: see share_heads)
  else if (may_share && st[3] == 0) x = {n[0], n[1], n[2], n[4], st[0], st[1], st[2]};
  else {
    if (why)
      *why = "stride[2]=" + std::to_string(st[2]) + " must equal shape[3]·stride[3]=" + std::to_string(n[3] * st[3]) +
             (may_share ? " (or stride[3] must be 0: expanded over H)" : "") + " to read [B, M, G, H, K] as G·H heads";
    return false;
  }
  return true;
}

bool shares_heads(const Bmhk& x) { return x.h > 1 && x.sh == 0; }

void share_heads(Bmhk& x) {
  if (shares_heads(x)) x.h = 1;
}

bool aligned16(const TensorView& t, const Bmhk& x) {
  const int64_t es = int64_t(element_size(t.dtype));
  // check_layout() bounded every stride so that these products fit.
  return reinterpret_cast<uintptr_t>(t.data) % 16 == 0 && (x.sb * es) % 16 == 0 && (x.sm * es) % 16 == 0 &&
         (x.sh * es) % 16 == 0;
}

void plan_variant(const Variant& v, jit::ops::VariantPlan& u, std::vector<std::string>& R) {
  for (std::string& r : v.reasons()) R.push_back(std::move(r));
  if (!R.empty()) return;
  int tensors = 0, floats = 0, ints = 0;
  for (const Variant::Capture& c : v.captures()) {
    switch (c.kind) {
      case Variant::Capture::Kind::tensor: {
        const CaptureTensor& t = c.tensor;
        u.ptr[tensors] = t.data;
        for (int d = 0; d < t.rank; ++d) u.stride[tensors][d] = t.stride[d], u.size[tensors][d] = int32_t(t.shape[d]);
        ++tensors;
        break;
      }
      case Variant::Capture::Kind::f32: u.f[floats++] = c.f; break;
      case Variant::Capture::Kind::i32: u.i[ints++] = c.i; break;
    }
  }
  u.id = v.code_id();
}

int log2_of(int64_t x) {
  int l = 0;
  while ((int64_t(1) << l) < x) ++l;
  return l;
}
bool power_of_two_cell(int64_t c) { return c >= 16 && c <= 256 && (c & (c - 1)) == 0; }

void check_spans(const TensorView& t, const TensorView& cells, int64_t mq, const std::string& name,
                 std::vector<std::string>& R) {
  auto S = [](int64_t x) { return std::to_string(x); };
  if (t.ndim != 4 || cells.ndim != 4) {
    R.push_back(name + ".ndim=" + S(t.ndim) + " must be 4: [B, H, mq, 2] (block_map_spans_shape)");
    return;
  }
  if (t.dtype != DType::i32) R.push_back(name + ".dtype=" + to_string(t.dtype) + " must be i32");
  if (t.device != cells.device) R.push_back(name + " must be on the cells' device");
  check_layout(t, name, R);
  if (t.shape[0] != cells.shape[0] || t.shape[1] != cells.shape[1] || t.shape[2] != mq || t.shape[3] != 2)
    R.push_back(name + ".shape=" + t.shape_string() + " must be [" + S(cells.shape[0]) + ", " + S(cells.shape[1]) + ", " +
                S(mq) + ", 2] (the cells' B and H, the map's mq; block_map_spans_shape)");
  else if (t.stride[3] != 1 || (mq > 1 && t.stride[2] != 2))
    R.push_back(name + ".stride=[..., " + S(t.stride[2]) + ", " + S(t.stride[3]) + "] must end in [2, 1] (each row's lo, hi side by side)");
}

namespace {

// BlockSparseMask's layout as the kernels read it (bias_reasons checked its shape).
void plan_layout(const TensorView& l, int32_t block_size, int device, Plan& p, std::vector<std::string>& R) {
  if (l.device != device) R.push_back("layout (BlockSparseMask) must be on the query's device");
  check_layout(l, "layout (BlockSparseMask)", R);  // no negative strides; every offset fits
  if (!R.empty()) return;
  p.layout.cells = static_cast<const uint8_t*>(l.data);
  p.layout.stride_h = l.shape[0] == 1 ? 0 : l.stride[0];
  p.layout.stride_r = l.stride[1];
  p.layout.rows = int32_t(l.shape[1]), p.layout.cols = int32_t(l.shape[2]);
  p.layout.log2_cell = log2_of(block_size);
}

// A variant's block map: built from this variant, over at least this call's sequences.
void plan_block_map(const BlockMap& m, const Variant* v, int device, Plan& p, std::vector<std::string>& R) {
  auto S = [](int64_t x) { return std::to_string(x); };
  if (!v || v->mask_code().empty()) {
    R.push_back("options.block_map needs options.variant with a mask_mod (the map describes that mask_mod)");
    return;
  }
  if (R.empty() && m.variant != v->code_id()) {
    char want[17], got[17];
    std::snprintf(want, sizeof want, "%016llx", static_cast<unsigned long long>(v->code_id()));
    std::snprintf(got, sizeof got, "%016llx", static_cast<unsigned long long>(m.variant));
    R.push_back(std::string("options.block_map was built from variant ") + got + ", not options.variant (" + want +
                "): rebuild it with build_block_map");
  }
  const TensorView& c = m.cells;
  const int64_t cs = m.cell_size;
  if (!power_of_two_cell(cs)) R.push_back("block_map.cell_size=" + S(cs) + " must be a power of two in [16, 256]");
  if (c.dtype != DType::u8) R.push_back(std::string("block_map.cells.dtype=") + to_string(c.dtype) + " must be u8");
  if (c.device != device) R.push_back("block_map.cells must be on the query's device");
  if (c.ndim != 4) R.push_back("block_map.cells.ndim=" + S(c.ndim) + " must be 4: [B or 1, H or 1, rows, cols]");
  if (!R.empty()) return;
  const int64_t rows = (m.mq + cs - 1) / cs, cols = (m.mkv + cs - 1) / cs;
  // The call's sequences: batch rows, or the blocks of a block-diagonal bias, and their longest.
  const int64_t seqs = p.bias.q_seqinfo ? p.bias.q_seqinfo->batch() : p.q.b;
  const int64_t mq = p.bias.q_seqinfo ? p.bias.q_seqinfo->max_seqlen : p.q.m;
  const int64_t mkv = p.bias.q_seqinfo ? p.bias.k_max_seqlen : p.k.m;
  if (c.shape[0] != 1 && c.shape[0] != seqs)
    R.push_back("block_map.cells.shape[0]=" + S(c.shape[0]) + " must be 1 or the call's sequences (" + S(seqs) + ")");
  if (c.shape[1] != 1 && c.shape[1] != p.q.h)
    R.push_back("block_map.cells.shape[1]=" + S(c.shape[1]) + " must be 1 or the query heads (" + S(p.q.h) + ")");
  if (c.shape[2] != rows || c.shape[3] != cols)
    R.push_back("block_map.cells.shape=" + c.shape_string() + " must end in [ceil(mq / cell_size), ceil(mkv / cell_size)] = [" +
                S(rows) + ", " + S(cols) + "]");
  if (c.shape[3] > 1 && c.stride[3] != 1) R.push_back("block_map.cells.stride[3]=" + S(c.stride[3]) + " must be 1");
  check_layout(c, "block_map.cells", R);  // no negative strides; every offset fits
  if (!c.data) R.push_back("block_map.cells.data is null");
  if (mq > m.mq || mkv > m.mkv)
    R.push_back("block_map covers " + S(m.mq) + " queries and " + S(m.mkv) + " keys per sequence; this call has up to " +
                S(mq) + " and " + S(mkv) + ": build the map over the longest sequences");
  if (!R.empty()) return;
  p.map.cells = static_cast<const uint8_t*>(c.data);
  p.map.stride_b = c.shape[0] == 1 ? 0 : c.stride[0];
  p.map.stride_h = c.shape[1] == 1 ? 0 : c.stride[1];
  p.map.stride_r = c.stride[2];
  p.map.rows = int32_t(rows), p.map.cols = int32_t(cols), p.map.log2_cell = log2_of(cs);
  if (m.spans.defined()) {
    check_spans(m.spans, c, m.mq, "block_map.spans", R);
    if (!R.empty()) return;
    p.map.spans = static_cast<const int32_t*>(m.spans.data);
    p.map.span_stride_b = c.shape[0] == 1 ? 0 : m.spans.stride[0];
    p.map.span_stride_h = c.shape[1] == 1 ? 0 : m.spans.stride[1];
  }
}
}  // namespace

Plan plan(const TensorView& q, const TensorView& k, const TensorView& v, const AttnBias& bias,
          const TensorView& out, const TensorView& lse, const AttentionOptions& opt, bool share) {
  Plan p;
  auto& R = p.reasons;
  check_tensor(p, q, "query");
  check_tensor(p, k, "key");
  check_tensor(p, v, "value");
  check_tensor(p, out, "out");
  if (!R.empty()) return p;
  if (k.ndim != q.ndim || v.ndim != q.ndim)
    R.push_back("query, key and value must have the same number of dimensions (got " + std::to_string(q.ndim) + ", " +
                std::to_string(k.ndim) + ", " + std::to_string(v.ndim) + ")");
  for (auto [t, x, name, may_share] : {std::tuple<const TensorView*, Bmhk*, const char*, bool>{&q, &p.q, "query", false},
                                       {&k, &p.k, "key", true}, {&v, &p.v, "value", true}, {&out, &p.o, "out", false}}) {
    std::string why;
    if (!as_bmhk(*t, may_share, *x, &why)) R.push_back(std::string(name) + "." + why);
  }
  if (!R.empty()) return p;
  // Key and value expanded over all their heads (stride 0) are one head serving every query head.
  if (share && shares_heads(p.k) && shares_heads(p.v)) share_heads(p.k), share_heads(p.v);
  if (q.ndim == 5 && (k.shape[2] != q.shape[2] || v.shape[2] != q.shape[2]))
    R.push_back("the group dims differ: query.shape[2]=" + std::to_string(q.shape[2]) + ", key.shape[2]=" +
                std::to_string(k.shape[2]) + ", value.shape[2]=" + std::to_string(v.shape[2]));
  if (q.dtype != k.dtype || q.dtype != v.dtype)
    R.push_back(std::string("query.dtype=") + to_string(q.dtype) + ", key.dtype=" + to_string(k.dtype) +
                ", value.dtype=" + to_string(v.dtype) + " must be equal");
  if (!attention_dtype(q.dtype)) R.push_back(std::string("query.dtype=") + to_string(q.dtype) + " must be f16, bf16 or f32");
  if (opt.output_dtype && !attention_dtype(*opt.output_dtype))
    R.push_back(std::string("options.output_dtype=") + to_string(*opt.output_dtype) + " must be f16, bf16 or f32");
  const DType want_out = opt.output_dtype.value_or(q.dtype);
  if (out.dtype != want_out)
    R.push_back(std::string("out.dtype=") + to_string(out.dtype) + " must be " + to_string(want_out) +
                (opt.output_dtype ? " (options.output_dtype)" : " (the query's dtype; set options.output_dtype to change it)"));
  if (p.k.b != p.q.b || p.v.b != p.q.b)
    R.push_back("batch sizes differ: query " + std::to_string(p.q.b) + ", key " + std::to_string(p.k.b) + ", value " +
                std::to_string(p.v.b));
  // GQA/MQA: key/value may have fewer heads, each shared by query.shape[2] / key.shape[2] heads.
  if (p.k.h != p.v.h || p.k.h == 0 || p.q.h % p.k.h != 0)
    R.push_back("head counts: query " + std::to_string(p.q.h) + ", key " + std::to_string(p.k.h) + ", value " +
                std::to_string(p.v.h) + "; key and value must have the same number of heads, dividing the query's");
  if (p.k.m != p.v.m)
    R.push_back("key.shape[1]=" + std::to_string(p.k.m) + " and value.shape[1]=" + std::to_string(p.v.m) + " must be equal");
  if (p.k.d != p.q.d)
    R.push_back("query.shape[-1]=" + std::to_string(p.q.d) + " and key.shape[-1]=" + std::to_string(p.k.d) + " must be equal");
  for (auto [name, d] : {std::pair<const char*, int64_t>{"query", p.q.d}, {"value", p.v.d}}) {
    if (d % 8 != 0) R.push_back(std::string(name) + ".shape[-1]=" + std::to_string(d) + " is not a multiple of 8");
    else if (d < 8 || d > 256) R.push_back(std::string(name) + ".shape[-1]=" + std::to_string(d) + " is not in [8, 256]");
  }
  if (p.o.b != p.q.b || p.o.m != p.q.m || p.o.h != p.q.h || p.o.d != p.v.d)
    R.push_back("out.shape=" + out.shape_string() + " must be [B, Mq, H, Kv] = [" + std::to_string(p.q.b) + ", " +
                std::to_string(p.q.m) + ", " + std::to_string(p.q.h) + ", " + std::to_string(p.v.d) + "]");
  if (k.device != q.device || v.device != q.device || out.device != q.device)
    R.push_back("query, key, value and out must be on one device");
  if (p.q.m > INT32_MAX || p.k.m > INT32_MAX) R.push_back("sequence lengths must be below 2^31");
  // The kernels take B and H as int32 and index rows of [B, H, M] by int32 (b·H + h).
  if (p.q.b > INT32_MAX) R.push_back("query batch size B=" + std::to_string(p.q.b) + " must be below 2^31");
  if (p.q.h > INT32_MAX) R.push_back("query head count H=" + std::to_string(p.q.h) + " must be below 2^31");
  else if (p.q.b <= INT32_MAX && p.q.b * p.q.h > INT32_MAX)
    R.push_back("query B·H=" + std::to_string(p.q.b * p.q.h) + " must be below 2^31");

  if (lse.defined()) {
    if (lse.dtype != DType::f32) R.push_back(std::string("lse.dtype=") + to_string(lse.dtype) + " must be f32");
    // [B, H, Mq]; for 5-D inputs also [B, G, H, Mq] with stride[1] = H·stride[2] (read as G·H heads,
    // head g·H + h at one head stride: stride[2], or stride[1] when H = 1; see lse_stride_h below).
    const bool grouped = lse.ndim == 4 && q.ndim == 5 && lse.shape[1] == q.shape[2] && lse.shape[2] == q.shape[3] &&
                         (lse.shape[1] == 1 || lse.shape[2] == 1 || lse.stride[1] == lse.shape[2] * lse.stride[2]);
    const int64_t mq_dim = grouped ? 3 : 2;
    if (!grouped && (lse.ndim != 3 || lse.shape[1] != p.q.h))
      R.push_back("lse.shape=" + lse.shape_string() + " must be [B, H, Mq] = [" + std::to_string(p.q.b) + ", " +
                  std::to_string(p.q.h) + ", " + std::to_string(p.q.m) + "]" +
                  (q.ndim == 5 ? " or [B, G, H, Mq] with stride[1] = H·stride[2]" : ""));
    else if (lse.shape[0] != p.q.b || lse.shape[mq_dim] != p.q.m)
      R.push_back("lse.shape=" + lse.shape_string() + " must have B=" + std::to_string(p.q.b) + " and Mq=" +
                  std::to_string(p.q.m));
    else if (lse.stride[mq_dim] != 1 && lse.shape[mq_dim] > 1) R.push_back("lse.stride[-1] must be 1");
    if (lse.device != q.device) R.push_back("lse must be on the query's device");
  }

  p.bias = describe(bias);
  for (auto& r : bias_reasons(bias, p.q.b, p.q.h, p.q.m, p.k.m)) R.push_back(std::move(r));
  {
    // A band's window past the longest sequence hides nothing more (|j - i - shift| < max(Mq, Mkv)
    // within any block), so it is cut there; then the kernels' int32 offsets (shift ± window, plus
    // a row or key index: kernel_src/bias_policies.cuh BandMask) cannot overflow while the longest
    // sequence plus the window stays below 2^31 - 1. (A paged sequence's logical keys may outnumber
    // the pool's rows: k_max_seqlen counts them.)
    const int64_t reach = std::max<int64_t>({1, p.q.m, p.k.m, int64_t(p.bias.k_max_seqlen)});
    p.bias.window_left = int32_t(std::min<int64_t>(p.bias.window_left, reach));
    p.bias.window_right = int32_t(std::min<int64_t>(p.bias.window_right, reach));
    const int64_t w = std::max(p.bias.window_left, p.bias.window_right);
    if (w > 0 && reach + w >= INT32_MAX)
      R.push_back(std::string("the longest sequence (") + std::to_string(reach) + ") plus the window (" + std::to_string(w) +
                  ") must be below 2^31 - 1 with " + bias_name(bias));
  }
  if (p.bias.tensor) {  // what bias_reasons cannot know: dtype, device, memory
    const TensorView& t = *p.bias.tensor;
    if (t.dtype != q.dtype)
      R.push_back(std::string("attn_bias.dtype=") + to_string(t.dtype) + " must equal query.dtype=" + to_string(q.dtype));
    if (t.device != q.device) R.push_back("attn_bias must be on the query's device");
    check_layout(t, "attn_bias", R);
    if (R.empty() && !t.data && t.numel() > 0) R.push_back("attn_bias.data is null");
  }
  if (lse.defined()) check_layout(lse, "lse", R);
  if (R.empty()) {  // layouts are valid: their extents can be computed
    const Named outputs[] = {{Strided::of(out), "out"}, {Strided::of(lse), "lse"}};
    const Named inputs[] = {{Strided::of(q), "query"}, {Strided::of(k), "key"}, {Strided::of(v), "value"},
                            {p.bias.tensor ? Strided::of(*p.bias.tensor) : Strided{}, "attn_bias"}};
    check_no_overlap(outputs, lse.defined() ? 2 : 1, inputs, p.bias.tensor ? 4 : 3, R);
  }
  if (jit::is_block_diagonal(p.bias.kind) && (p.k.b != 1 || p.v.b != 1))
    R.push_back(std::string("key.shape[0] and value.shape[0] must be 1 with ") + bias_name(bias));

  p.scale = opt.scale.value_or(p.q.d > 0 ? 1.0 / std::sqrt(double(p.q.d)) : 1.0);
  // The kernels take scale·log2(e) as a float.
  if (!std::isfinite(p.scale) || !std::isfinite(float(p.scale * 1.4426950408889634)))
    R.push_back("scale=" + std::to_string(p.scale) + " is not finite as a float (the kernels take scale·log2(e) in fp32)");
  if (!(opt.p >= 0.0 && opt.p < 1.0) || std::ceil(opt.p * 4294967296.0) >= 4294967296.0)
    R.push_back("p=" + std::to_string(opt.p) + " (dropout) must be in [0, 1)");
  else if (opt.p > 0 && jit::is_paged(p.bias.kind))
    R.push_back(std::string("dropout (p > 0) is not supported with ") + bias_name(bias) + " (paged keys are for inference)");

  if (q.dtype == DType::f32) {
    p.align = 4;  // the fp32 kernels load element by element
  } else {
    const bool a16 = aligned16(q, p.q) && aligned16(k, p.k) && aligned16(v, p.v) && aligned16(out, p.o);
    p.align = a16 ? 16 : 2;
  }
  p.dtype = q.dtype, p.out_dtype = out.dtype, p.device = q.device;
  p.q_data = q.data, p.k_data = k.data, p.v_data = v.data, p.out_data = out.data;
  if (lse.defined()) {
    p.lse = static_cast<float*>(lse.data);
    // [B, G, H, Mq] with H = 1: the G·H heads are the groups, one stride[1] apart.
    p.lse_stride_b = lse.stride[0];
    p.lse_stride_h = lse.ndim == 4 ? (lse.shape[2] == 1 ? lse.stride[1] : lse.stride[2]) : lse.stride[1];
  }
  p.p = opt.p, p.seed = opt.seed, p.offset = opt.offset;
  if (opt.variant) plan_variant(*opt.variant, p.variant, R);
  if (opt.block_map) plan_block_map(*opt.block_map, opt.variant, q.device, p, R);
  if (p.bias.layout && R.empty()) plan_layout(*p.bias.layout, p.bias.block_size, q.device, p, R);
  return p;
}

}  // namespace jitattn::detail
