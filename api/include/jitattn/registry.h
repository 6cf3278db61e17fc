// A registry of attention parts: names tied to a factory and a config table, as xFormers'
// register_attention(name, Config), so a part can be chosen by name and built from a config —
// a C++ map or FairSeq-style JSON ('{"name": "local", "window_size": "128"}').
//
// A part is a way of calling jitattn's kernels: for the shapes of a call it yields the built-in
// bias (AttnBias), the options (scale, dropout p) and optionally a user Variant (mask_mod /
// score_mod snippets with scalar captures from the config). Its forward / backward pass the
// caller's tensors to memory_efficient_attention_* with those. Built-in parts (docs/registry.md),
// each also taking dropout (0), scale (K^-0.5) and num_heads (as the Python parts do):
//   scaled_dot_product  causal (bool, false), seq_len, to_seq_len (unused)
//   local               window_size (int, 5), causal (bool, false), window_left/window_right
//   alibi               causal (bool, false); ALiBi geometric slopes for the call's H
//   variant             mask_mod, score_mod, score_grad (strings), additive (bool), causal (bool),
//                       captures (object of name -> number: scalar captures)
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "jitattn/attention.h"

namespace jitattn {

// ---- configs -----------------------------------------------------------------------------------
// An integer or a floating-point number (a scalar capture keeps which one it was given as).
using ConfigScalar = std::variant<int64_t, double>;
// bool, integer, number, string, or an object of named scalars (the variant part's captures).
using ConfigValue = std::variant<bool, int64_t, double, std::string, std::map<std::string, ConfigScalar>>;
// Field name -> value ("name" is not a field: it picks the part).
using Config = std::map<std::string, ConfigValue>;

enum class FieldType : uint8_t { boolean, integer, number, string, scalars };
const char* to_string(FieldType t);  // "bool", "integer", "number", "string", "object of numbers"

struct ConfigField {
  std::string name;
  FieldType type = FieldType::number;
  // The value when the config does not give the field; none: the field is then absent from the
  // Config the factory gets (or, if `required`, the config is refused).
  std::optional<ConfigValue> default_value;
  bool required = false;
  std::string help;  // one line, shown in errors listing the fields
};

// What a part is told about a call: B, H (query heads; G·H for 5-D inputs; 1 for 3-D), Mq, Mkv.
struct CallShape {
  int64_t B = 0, H = 0, Mq = 0, Mkv = 0;
  // From the query and key tensors of the call (attention.h's layouts).
  static CallShape of(const TensorView& q, const TensorView& k);
};

// ---- parts -------------------------------------------------------------------------------------
class AttentionPart {
 public:
  explicit AttentionPart(std::string name) : name_(std::move(name)) {}
  virtual ~AttentionPart() = default;
  AttentionPart(const AttentionPart&) = delete;
  AttentionPart& operator=(const AttentionPart&) = delete;

  // The registered name it was built under.
  const std::string& name() const { return name_; }
  // The built-in bias for a call of these shapes. Parts whose bias depends on the shapes (ALiBi
  // needs H) build it here; what they upload (slopes) is kept per shape, so repeated calls reuse it.
  virtual AttnBias bias(const CallShape& shape) const = 0;
  // Scale and dropout p (seed and offset are the call's); `variant` is left null here.
  virtual AttentionOptions options() const { return {}; }
  // The part's user variant (it owns it), or null.
  virtual const Variant* variant() const { return nullptr; }

  // options() with variant() and the call's dropout seed/offset; BackwardOptions to match.
  AttentionOptions forward_options(uint64_t seed = 0, uint64_t offset = 0) const;
  BackwardOptions backward_options(uint64_t seed = 0, uint64_t offset = 0) const;

  // memory_efficient_attention_forward / _forward_requires_grad / _backward (attention.h) with
  // bias(CallShape::of(q, k)) and the options above. Tensors, stream and errors are as there.
  void forward(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
               void* stream = nullptr, uint64_t seed = 0, uint64_t offset = 0) const;
  void forward_requires_grad(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                             const TensorView& lse, void* stream = nullptr, uint64_t seed = 0,
                             uint64_t offset = 0) const;
  void backward(const TensorView& grad, const TensorView& out, const TensorView& lse, const TensorView& q,
                const TensorView& k, const TensorView& v, const TensorView& dq, const TensorView& dk,
                const TensorView& dv, void* stream = nullptr, uint64_t seed = 0, uint64_t offset = 0) const;
  // not_supported_reasons for the forward with this part's bias and options. Never throws.
  std::vector<std::string> not_supported_reasons(const TensorView& q, const TensorView& k, const TensorView& v,
                                                 const TensorView& out, const TensorView& lse = {}) const;

 private:
  std::string name_;
};

// Builds a part from a config that has already been checked against the part's fields: every
// field it holds is declared, of the declared type (numeric strings converted), defaults filled
// in. A factory may refuse values (a range) by throwing jitattn::Error naming the field.
using AttentionFactory = std::function<std::shared_ptr<AttentionPart>(const Config&)>;

// Registers `name` (not empty, not yet registered: else Error, invalid_argument). Thread-safe.
void register_attention(const std::string& name, AttentionFactory factory, std::vector<ConfigField> fields);
// Every registered name, sorted (the built-in ones and the caller's).
std::vector<std::string> registered_attentions();
// The fields of a registered part (Error listing the registered names if there is none).
std::vector<ConfigField> attention_config_fields(const std::string& name);

// Builds the part `name` from `config` (checked and converted as JSON's fields are). Throws
// jitattn::Error (invalid_argument): an unknown name (the reasons list the registered names), an
// unknown, mistyped or missing field (the reasons name it and list the part's fields).
std::shared_ptr<AttentionPart> make_attention(const std::string& name, const Config& config = {});

// The same from a JSON object: "name" picks the part, the other members are its fields. As
// FairSeq passes them, numbers may be strings ("128", "0.1") and bools "true"/"false".
// '{"name": "scaled_dot_product"}', '{"name": "local", "window_size": "128"}',
// '{"name": "scaled_dot_product", "causal": true, "dropout": 0.1}'. Malformed JSON, a missing or
// non-string "name", or a non-object are refused with Error (invalid_argument) too.
std::shared_ptr<AttentionPart> attention_from_config(const std::string& json);

}  // namespace jitattn
