// User attention variants: the caller's mask and score functions, compiled into the kernels.
//
// A Variant holds CUDA C++ snippets, each the body of a device function (statements that
// return, or a single expression):
//   mask_mod:   bool  (int b, int h, int q_idx, int kv_idx)               false masks the element
//   score_mod:  float (float score, int b, int h, int q_idx, int kv_idx)  the new score
//   score_grad: float (float score, int b, int h, int q_idx, int kv_idx)  d score_mod / d score
// score = q·k·scale plus the call's built-in bias (ALiBi, a tensor...); the built-in mask applies
// first, so a variant composes with every AttnBias. b is the batch row for dense layouts and the
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

}  // namespace jitattn
