// User variants as code (docs/design.md decision 18): the snippets of a jitattn::Variant and the
// names, types and ranks of its captures, which together are what its kernels are compiled
// from. The values of the captures are kernel arguments (kernel_src/params.h UserArgs), never
// part of a key.
//
// A variant's code is registered once per process under the XXH3-64 of its canonical text; the
// Signature carries that id (Signature::variant), kernel names show it ("+u<16 hex>"), and the
// cache key hashes the whole text (jit_runtime.cpp kernel_key), so two variants whose ids
// collide get an error (register_variant), never each other's kernels.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace jitattn::jit {

// What a capture is in the generated code: a tensor of `type` and `rank`, or a scalar.
enum class CaptureKind : uint8_t { tensor, f32, i32 };

// Captured tensors' element types: the names manifests and jitattn::to_string(CaptureType) use,
// and the type the snippets read, in jitattn::CaptureType order.
struct CaptureTypeName {
  const char* name;    // "f32", "f16", "bf16", "i32", "i64", "u8"
  const char* device;  // "float", "jitattn::half_bits", ... (f16/bf16 read as float)
};
extern const CaptureTypeName kCaptureTypes[6];
// The manifest name of a device element type ("" if none).
const char* capture_type_name(const std::string& device_type);

struct CaptureDecl {
  std::string name;
  CaptureKind kind = CaptureKind::f32;
  std::string type;  // tensors: the element type in device code (float, __half, int, ...)
  int rank = 0;      // tensors: 1..kUserRank
};

struct VariantCode {
  std::string mask_mod, score_mod, score_grad;  // bodies; empty = absent
  bool additive = false;                        // score_mod's derivative is 1
  std::vector<CaptureDecl> captures;            // in slot order per kind

  bool has_score_grad() const { return !score_mod.empty() && (additive || !score_grad.empty()); }
  std::string canonical() const;  // the text that is hashed and keyed
};

// Registers `code` (idempotent) and returns its id (never 0). Throws if another registered text
// has the same id.
uint64_t register_variant(const VariantCode& code);
// The code registered under `id`; throws if none is.
std::shared_ptr<const VariantCode> variant_code(uint64_t id);

// Why a snippet would break the code around it rather than be the body of one function: "" when
// its (), [] and {} nest and close, no comment or literal runs to its end and no preprocessor
// directive but #pragma is in it; else the rule it breaks and the line ("line 2: '}' closes
// nothing").
std::string snippet_problem(const std::string& snippet);

// The device struct `jitattn_user::Variant` that kernel_src/bias_policies.cuh UserPolicy reads:
// one member per capture, the snippets as member functions, each behind a #line directive that
// names it ("mask_mod", "score_mod", "score_grad"), so NVRTC reports the user's own lines.
std::string variant_source(const VariantCode& code);

// From a failed compile's log, the lines about the user's snippets; empty if none, or if none of
// them is an error (the error is then elsewhere, and the caller shows the whole log).
std::string user_errors(const std::string& nvrtc_log);

}  // namespace jitattn::jit
