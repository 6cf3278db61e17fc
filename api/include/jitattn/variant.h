// User attention variants: the caller's mask and score functions, compiled into the kernels.
//
// A Variant holds CUDA C++ snippets, each the body of a device function (statements that
// return, or a single expression; a snippet is statements when it starts with if/for/while/do/
// switch/return/'{' or has a ';' or a return outside braces, so a lambda called in place is an
// expression):
//   mask_mod:   bool  (int b, int h, int q_idx, int kv_idx)               false masks the element
//   score_mod:  float (float score, int b, int h, int q_idx, int kv_idx)  the new score
//   score_grad: float (float score, int b, int h, int q_idx, int kv_idx)  d score_mod / d score
// score = q·k·scale plus the call's built-in bias (ALiBi, a tensor...); the built-in mask applies
// first, so a variant composes with every AttnBias. Snippets run at any (q_idx, kv_idx) inside the
// sequence, masked ones included (their results there are dropped): a capture read must be valid
// over the whole sequence. jitattn::fast_tanh(x) and jitattn::fast_div(a, b) are there for
// f16/bf16 variants whose precise math would dominate the element pass. b is the batch row for dense layouts and the
// sequence (block) for block-diagonal and paged biases; q_idx and kv_idx count from that
// sequence's first query and key; h is the query head.
//
// Captures are named device tensors (any strides, rank 1..4, read as name(i, j, ...) or
// name[i] with name.size(d)) and scalars (float, int) the snippets read by name. What a kernel is
// compiled from — the snippets' text and each capture's name, kind, element type and rank — is
// part of the cache key; capture values are arguments, so changing them (a new table, another
// pointer, a new scalar) reuses the kernel.
//
// Pass it as AttentionOptions::variant (and BackwardOptions::variant for the gradients, which
// need score_grad or additive_score() when score_mod is set). A snippet that does not compile
// raises a compile Error with NVRTC's messages at the snippet's own lines ("score_mod(2): ...").
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "jitattn/tensor.h"

namespace jitattn {

// Element types of captured tensors, and what the snippet reads: float (f32, and f16 and bf16
// converted), int, long long, unsigned char (bool masks).
enum class CaptureType : uint8_t { f32, f16, bf16, i32, i64, u8 };
const char* to_string(CaptureType t);

struct CaptureTensor {
  const void* data = nullptr;  // device memory of the call's device
  CaptureType type = CaptureType::f32;
  int rank = 1;
  int64_t shape[4] = {0, 0, 0, 0};
  int64_t stride[4] = {0, 0, 0, 0};  // in elements; 0 broadcasts
};

class Variant {
 public:
  static constexpr int kMaxTensors = 8, kMaxScalars = 8, kMaxRank = 4;

  Variant& mask_mod(std::string code);
  // `grad` is d score_mod / d score (the backward needs it, or additive_score()).
  Variant& score_mod(std::string code, std::string grad = {});
  // score_mod(score) = score + g(b, h, q_idx, kv_idx): its gradient is 1.
  Variant& additive_score(bool additive = true);
  // Adds a capture, or replaces the value of the capture of that name (a tensor's type and rank,
  // or a scalar's kind, may change too: that is new code).
  Variant& capture(const std::string& name, const CaptureTensor& tensor);
  Variant& capture(const std::string& name, float value);
  Variant& capture(const std::string& name, int32_t value);

  struct Capture {
    std::string name;
    enum class Kind : uint8_t { tensor, f32, i32 } kind = Kind::f32;
    CaptureTensor tensor;
    float f = 0;
    int32_t i = 0;
  };
  const std::string& mask_code() const { return mask_; }
  const std::string& score_code() const { return score_; }
  const std::string& score_grad_code() const { return grad_; }
  bool additive() const { return additive_; }
  const std::vector<Capture>& captures() const { return captures_; }
  // Every reason this variant cannot be compiled or called (names, counts, ranks, null data);
  // empty if none.
  std::vector<std::string> reasons() const;
  // Its code's id, 0 when it has no snippet. The code is checked, hashed and registered once
  // and kept until a snippet or a capture's kind, type, rank or name changes (a capture's value
  // changing keeps it); not thread-safe against concurrent setters.
  uint64_t code_id() const;

 private:
  struct Prepared {
    uint64_t id = 0;
    std::vector<std::string> reasons;  // of the code (values are checked each call)
  };
  Capture& slot(const std::string& name, bool& same_code, Capture::Kind kind, CaptureType type, int rank);
  std::shared_ptr<const Prepared> prepared() const;
  std::string mask_, score_, grad_;
  bool additive_ = false;
  std::vector<Capture> captures_;
  mutable std::shared_ptr<const Prepared> prepared_;  // null: the code changed since
};

// A variant's block map (FlexAttention's BlockMask): for each cell of cell_size × cell_size
// elements of (sequence b, head h), whether mask_mod leaves none, some or all of it visible.
// Built once on the GPU by build_block_map, then passed to any number of calls (forward and
// backward) of that variant as AttentionOptions::block_map: tiles of empty cells are never
// loaded, and tiles inside full cells skip mask_mod (score_mod still runs). The map describes
// mask_mod as it was when built: rebuild it when a captured tensor's contents change.
// With spans, the map also holds each query row's visible keys as one interval [lo, hi) where
// they are one (documents, windows, prefix-LM); the forward masks a partial tile whose rows all
// have one by a compare per element instead of calling mask_mod on each.
struct BlockMap {
  TensorView cells;        // u8 [B or 1, H or 1, ceil(mq / cell_size), ceil(mkv / cell_size)], device memory you own
  TensorView spans;        // i32 [same B, same H, mq, 2] (block_map_spans_shape), device memory you own; or undefined
  int32_t cell_size = 0;   // a power of two in [16, 256]
  int64_t mq = 0, mkv = 0;  // the queries and keys per sequence it covers
  uint64_t variant = 0;    // the code id (Variant::code_id) of the variant it describes
};

// The shape of the cells of a map over B (or 1) sequences and H (or 1) heads.
std::vector<int64_t> block_map_shape(int64_t B, int64_t H, int64_t mq, int64_t mkv, int32_t cell_size = 128);
// The shape of its row spans: {B, H, mq, 2}. Row i's (lo, hi) are its keys (< mkv) under mask_mod
// when those are exactly [lo, hi) ((0, 0) when it sees none), else (0, -1). The last two
// dimensions must be contiguous (strides 2, 1).
std::vector<int64_t> block_map_spans_shape(int64_t B, int64_t H, int64_t mq);

// Evaluates variant.mask_mod (it must have one) on every (b, h, q_idx, kv_idx) with b <
// cells.shape[0], h < cells.shape[1], q_idx < mq, kv_idx < mkv and writes the cells (shape
// block_map_shape; a size-1 B or H dimension says the mask does not depend on b or h). A call
// may then use the map when its sequences have at most mq queries and mkv keys (b is the batch
// row, or the block of a block-diagonal bias), its B and H equal the map's or the map's are 1.
// The snippet must be safe to evaluate over that whole range. Queued on `stream`.
BlockMap build_block_map(const Variant& variant, int64_t mq, int64_t mkv, const TensorView& cells,
                         int32_t cell_size = 128, void* stream = nullptr);
// The same, and the rows' spans (block_map_spans_shape, B and H those of cells) after the cells.
BlockMap build_block_map(const Variant& variant, int64_t mq, int64_t mkv, const TensorView& cells, const TensorView& spans,
                         int32_t cell_size = 128, void* stream = nullptr);

// The variant as an additive bias, for references and tests: out [B, H, Mq, Mkv] f32 (device
// memory, last stride 1) gets -inf where mask_mod is false, else score_mod(0, b, h, q_idx,
// kv_idx) (an additive_score() variant) or 0. A score_mod that is not additive cannot be
// written so and is refused. Queued on `stream`.
void materialize(const Variant& variant, const TensorView& out, void* stream = nullptr);

}  // namespace jitattn
