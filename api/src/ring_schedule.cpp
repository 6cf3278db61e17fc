// The ring's schedule, on the host: which global positions a rank holds (the layout), and which
// partial-attention calls a rank makes against the key/value block of another rank — the global
// mask's band restricted to a (query chunk, key chunk) pair, as a bias of the calls' own
// coordinates (merge.h). No device work; tests/ring_test.cpp checks it against a brute-force mask.
#include <algorithm>
#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "jitattn/error.h"
#include "jitattn/ring.h"

namespace jitattn {

namespace {

// A run of a rank's local rows: rows [row, row + len) hold global positions global + stride·t.
struct Chunk {
  int64_t row = 0, global = 0, len = 0;
};

int64_t chunk_len(RingLayout layout, int64_t local_len) {
  return layout == RingLayout::zigzag ? local_len / 2 : local_len;
}

std::vector<Chunk> chunks_of(RingLayout layout, int world, int rank, int64_t local_len) {
  switch (layout) {
    case RingLayout::contiguous: return {{0, rank * local_len, local_len}};
    case RingLayout::zigzag: {
      const int64_t c = local_len / 2;
      return {{0, rank * c, c}, {c, (2 * int64_t(world) - 1 - rank) * c, c}};
    }
    case RingLayout::striped: return {{0, rank, local_len}};
  }
  return {};
}

int64_t floor_div(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }
int64_t ceil_div_signed(int64_t a, int64_t b) { return -floor_div(-a, b); }

// A band lo <= j' − i' <= hi on a c × c block (local rows i', columns j') as one call: the rows
// and columns it needs and the bias that draws the band there. False when nothing is visible.
bool band_call(int64_t lo, int64_t hi, int64_t c, RingCall& call) {
  if (c <= 0) return false;
  lo = std::max(lo, -(c - 1)), hi = std::min(hi, c - 1);
  if (lo > hi) return false;
  call.q_begin = 0, call.q_end = c, call.k_begin = 0, call.k_end = c;
  auto local = [](int64_t left, int64_t right) {
    return AttnBias{LocalAttentionFromBottomRightMask{int32_t(left), int32_t(right)}};
  };
  if (lo == -(c - 1) && hi == c - 1) {
    call.bias = std::monostate{};
  } else if (lo <= 0 && hi >= 0) {  // the diagonal is in the band: the square, band around d = 0
    call.bias = hi == 0 && lo == -(c - 1) ? AttnBias{LowerTriangularMask{}} : local(-lo, hi);
  } else if (hi < 0) {
    // Below the diagonal: the last −hi columns are never seen; on the c × (c + hi) block the
    // bottom-right diagonal is j' − i' = hi, so the band is [lo − hi, 0] around it. The first −hi
    // rows see nothing (lse −inf).
    call.k_end = c + hi;
    call.bias = lo == -(c - 1) ? AttnBias{LowerTriangularFromBottomRightMask{}} : local(hi - lo, 0);
  } else {
    // Above the diagonal (lo > 0): rows [0, c − lo) against columns [lo, c), a square whose band
    // is [0, hi − lo]; the last lo rows see nothing and are not in the call.
    call.q_end = c - lo, call.k_begin = lo;
    call.bias = local(0, hi - lo);
  }
  return true;
}

// Documents on a pair of chunks of equal length c at global positions qg and kg (contiguous or
// zigzag): the documents both chunks hold, as a block-diagonal mask over the pair (a document one
// of them lacks pairs with an empty block); causal within documents on the diagonal pair, none
// past it. False when no document spans both.
bool documents_call(const RingMask& m, int64_t qg, int64_t kg, int64_t c, RingCall& call) {
  const bool causal = m.hi == 0;
  if (causal && kg > qg) return false;
  const int64_t first = std::min(m.document(qg), m.document(kg));
  const int64_t last = std::max(m.document(qg + c - 1), m.document(kg + c - 1));
  std::vector<int32_t> ql, kl;
  int64_t shared = 0;
  for (int64_t d = first; d <= last; ++d) {
    const int64_t a = m.doc_start[size_t(d)], b = m.doc_start[size_t(d) + 1];
    const int64_t nq = std::max<int64_t>(0, std::min(b, qg + c) - std::max(a, qg));
    const int64_t nk = std::max<int64_t>(0, std::min(b, kg + c) - std::max(a, kg));
    if (nq == 0 && nk == 0) continue;
    ql.push_back(int32_t(nq)), kl.push_back(int32_t(nk));
    shared += nq > 0 && nk > 0;
  }
  if (shared == 0) return false;
  call.q_begin = 0, call.q_end = c, call.k_begin = 0, call.k_end = c;
  const bool diagonal = kg == qg;
  if (ql.size() == 1)  // one document holds both chunks
    call.bias = causal && diagonal ? AttnBias{LowerTriangularMask{}} : AttnBias{std::monostate{}};
  else if (causal && diagonal)
    call.bias = BlockDiagonalCausalMask::from_seqlens(ql, kl);
  else
    call.bias = BlockDiagonalMask::from_seqlens(ql, kl);
  return true;
}

}  // namespace

const char* to_string(RingLayout layout) {
  switch (layout) {
    case RingLayout::contiguous: return "contiguous";
    case RingLayout::zigzag: return "zigzag";
    case RingLayout::striped: return "striped";
  }
  return "?";
}

int64_t ring_global_position(RingLayout layout, int world, int rank, int64_t local_len, int64_t row) {
  if (layout == RingLayout::striped) return rank + int64_t(world) * row;
  for (const Chunk& ch : chunks_of(layout, world, rank, local_len))
    if (row >= ch.row && row < ch.row + ch.len) return ch.global + (row - ch.row);
  throw Error(ErrorKind::invalid_argument, "row=" + std::to_string(row) + " is outside rank " + std::to_string(rank) +
                                               "'s " + std::to_string(local_len) + " rows");
}

bool ring_mask(const AttnBias& bias, RingMask& band, std::string* why) {
  band = RingMask{};
  if (std::holds_alternative<std::monostate>(bias)) return true;
  if (std::holds_alternative<LowerTriangularMask>(bias) || std::holds_alternative<LowerTriangularFromBottomRightMask>(bias)) {
    band.hi = 0;
    return true;
  }
  if (auto* m = std::get_if<LowerTriangularFromBottomRightLocalAttentionMask>(&bias)) {
    if (m->window_size < 1) {
      if (why) *why = "attn_bias: window_size=" + std::to_string(m->window_size) + " must be >= 1";
      return false;
    }
    band.lo = 1 - int64_t(m->window_size), band.hi = 0;
    return true;
  }
  if (auto* m = std::get_if<LocalAttentionFromBottomRightMask>(&bias)) {
    if (m->window_left < 0 || m->window_right < 0) {
      if (why) *why = "attn_bias: window_left and window_right must be >= 0";
      return false;
    }
    band.lo = -int64_t(m->window_left), band.hi = m->window_right;
    return true;
  }
  auto documents = [&](const SeqLenInfo& q, const SeqLenInfo& k) {
    if (q.seqstart.host() != k.seqstart.host()) {
      if (why) *why = std::string("attn_bias=") + bias_name(bias) + ": q_seqlen must equal kv_seqlen (documents of the one sequence)";
      return false;
    }
    band.doc_start.assign(q.seqstart.host().begin(), q.seqstart.host().end());
    return true;
  };
  if (auto* m = std::get_if<BlockDiagonalMask>(&bias)) return documents(m->q_seqinfo, m->k_seqinfo);
  if (auto* m = std::get_if<BlockDiagonalCausalMask>(&bias)) {
    band.hi = 0;
    return documents(m->q_seqinfo, m->k_seqinfo);
  }
  if (why)
    *why = std::string("attn_bias=") + bias_name(bias) +
           ": ring attention takes no mask, LowerTriangularMask, LowerTriangularFromBottomRightMask, "
           "LowerTriangularFromBottomRightLocalAttentionMask, LocalAttentionFromBottomRightMask (a band over the "
           "whole sequence, sliced per key block), BlockDiagonalMask or BlockDiagonalCausalMask (documents)";
  return false;
}

int64_t RingMask::document(int64_t i) const {
  return int64_t(std::upper_bound(doc_start.begin(), doc_start.end(), i) - doc_start.begin()) - 1;
}

bool RingMask::visible(int64_t i, int64_t j) const {
  if (j - i < lo || j - i > hi) return false;
  return doc_start.empty() || document(i) == document(j);
}

std::vector<RingCall> ring_step_calls(RingLayout layout, const RingMask& band, int world, int rank, int src,
                                      int64_t local_len) {
  std::vector<RingCall> calls;
  const std::vector<Chunk> qs = chunks_of(layout, world, rank, local_len);
  const std::vector<Chunk> ks = chunks_of(layout, world, src, local_len);
  const int64_t c = chunk_len(layout, local_len);
  for (const Chunk& qc : qs)
    for (const Chunk& kc : ks) {
      RingCall call;
      if (!band.doc_start.empty()) {
        if (documents_call(band, qc.global, kc.global, c, call)) {
          call.q_begin += qc.row, call.q_end += qc.row, call.k_begin += kc.row, call.k_end += kc.row;
          calls.push_back(std::move(call));
        }
        continue;
      }
      int64_t lo, hi;  // the band in the pair's local offsets j' − i'
      if (layout == RingLayout::striped) {
        // i = rank + R·i', j = src + R·j': lo <= R·(j' − i') + src − rank <= hi.
        lo = ceil_div_signed(band.lo - (src - rank), world), hi = floor_div(band.hi - (src - rank), world);
      } else {
        lo = band.lo - (kc.global - qc.global), hi = band.hi - (kc.global - qc.global);
      }
      if (!band_call(lo, hi, c, call)) continue;
      call.q_begin += qc.row, call.q_end += qc.row, call.k_begin += kc.row, call.k_end += kc.row;
      calls.push_back(std::move(call));
    }
  return calls;
}

}  // namespace jitattn
