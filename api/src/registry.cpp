// The attention-part registry (jitattn/registry.h): name -> factory + config fields, the built-in
// parts, config checking (JSON or C++ maps, FairSeq's numeric strings) and the parts' calls.
#include "jitattn/registry.h"

#include <nlohmann/json.hpp>

#include "jit/json_checked.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <limits>
#include <mutex>

namespace jitattn {

const char* to_string(FieldType t) {
  switch (t) {
    case FieldType::boolean: return "bool";
    case FieldType::integer: return "integer";
    case FieldType::number: return "number";
    case FieldType::string: return "string";
    case FieldType::scalars: return "object of numbers";
  }
  return "?";
}

CallShape CallShape::of(const TensorView& q, const TensorView& k) {
  CallShape s;
  if (q.ndim >= 3) {
    s.B = q.shape[0], s.Mq = q.shape[1];
    s.H = q.ndim == 3 ? 1 : q.ndim == 4 ? q.shape[2] : q.shape[2] * q.shape[3];
  }
  if (k.ndim >= 3) s.Mkv = k.shape[1];
  return s;
}

// ---- parts -------------------------------------------------------------------------------------
AttentionOptions AttentionPart::forward_options(uint64_t seed, uint64_t offset) const {
  AttentionOptions o = options();
  o.variant = variant();
  o.seed = seed, o.offset = offset;
  return o;
}

BackwardOptions AttentionPart::backward_options(uint64_t seed, uint64_t offset) const {
  const AttentionOptions f = options();
  BackwardOptions o;
  o.scale = f.scale;
  o.p = f.p;
  o.seed = seed, o.offset = offset;
  o.variant = variant();
  return o;
}

void AttentionPart::forward(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                            void* stream, uint64_t seed, uint64_t offset) const {
  memory_efficient_attention_forward(q, k, v, bias(CallShape::of(q, k)), out, forward_options(seed, offset), stream);
}

void AttentionPart::forward_requires_grad(const TensorView& q, const TensorView& k, const TensorView& v,
                                          const TensorView& out, const TensorView& lse, void* stream, uint64_t seed,
                                          uint64_t offset) const {
  memory_efficient_attention_forward_requires_grad(q, k, v, bias(CallShape::of(q, k)), out, lse,
                                                   forward_options(seed, offset), stream);
}

void AttentionPart::backward(const TensorView& grad, const TensorView& out, const TensorView& lse, const TensorView& q,
                             const TensorView& k, const TensorView& v, const TensorView& dq, const TensorView& dk,
                             const TensorView& dv, void* stream, uint64_t seed, uint64_t offset) const {
  memory_efficient_attention_backward(grad, out, lse, q, k, v, bias(CallShape::of(q, k)), dq, dk, dv, TensorView{},
                                      backward_options(seed, offset), stream);
}

std::vector<std::string> AttentionPart::not_supported_reasons(const TensorView& q, const TensorView& k,
                                                              const TensorView& v, const TensorView& out,
                                                              const TensorView& lse) const {
  try {
    return jitattn::not_supported_reasons(q, k, v, bias(CallShape::of(q, k)), out, lse, forward_options());
  } catch (const std::exception& e) {
    return {e.what()};
  }
}

namespace {

// A name or value as messages quote it: JSON, clipped, bytes that are not UTF-8 replaced (a config
// may carry any bytes; nlohmann's dump() would throw its own type_error for them).
std::string quoted(const std::string& s) { return jit::shown_json(nlohmann::json(s), 200); }

std::string show(const ConfigValue& v) {
  struct {
    std::string operator()(bool b) const { return b ? "true" : "false"; }
    std::string operator()(int64_t i) const { return std::to_string(i); }
    std::string operator()(double d) const {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.17g", d);
      return buf;
    }
    std::string operator()(const std::string& s) const { return quoted(s); }
    std::string operator()(const std::map<std::string, ConfigScalar>& m) const {
      std::string out = "{";
      for (const auto& [k, x] : m) {
        out += (out.size() > 1 ? ", " : "") + quoted(k) + ": ";
        out += std::holds_alternative<int64_t>(x) ? (*this)(std::get<int64_t>(x)) : (*this)(std::get<double>(x));
      }
      return out + "}";
    }
  } visitor;
  return std::visit(visitor, v);
}

// Whole-string parses (locale-independent): "128", "-3"; "0.1", "1e-3".
std::optional<int64_t> parse_int(const std::string& s) {
  int64_t x = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), x);
  if (ec != std::errc() || end != s.data() + s.size() || s.empty()) return std::nullopt;
  return x;
}
std::optional<double> parse_number(const std::string& s) {
  double x = 0;
  const char* b = s.data();
  if (!s.empty() && s[0] == '+') ++b;  // from_chars takes no '+'
  const auto [end, ec] = std::from_chars(b, s.data() + s.size(), x);
  if (ec != std::errc() || end != s.data() + s.size() || b == s.data() + s.size() || !std::isfinite(x)) return std::nullopt;
  return x;
}
std::optional<ConfigScalar> parse_scalar(const std::string& s) {
  if (auto i = parse_int(s)) return ConfigScalar(*i);
  if (auto d = parse_number(s)) return ConfigScalar(*d);
  return std::nullopt;
}

std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// `given` as a value of type `want`, or a reason.
std::optional<ConfigValue> coerce(const ConfigField& f, const ConfigValue& given, std::string& why) {
  const std::string bad = "field " + quoted(f.name) + " = " + show(given) + " must be ";
  switch (f.type) {
    case FieldType::boolean:
      if (std::holds_alternative<bool>(given)) return given;
      if (const auto* s = std::get_if<std::string>(&given)) {
        if (lower(*s) == "true") return ConfigValue(true);
        if (lower(*s) == "false") return ConfigValue(false);
      }
      why = bad + "a bool (true/false, or the string \"true\"/\"false\")";
      return std::nullopt;
    case FieldType::integer:
      if (std::holds_alternative<int64_t>(given)) return given;
      if (const auto* d = std::get_if<double>(&given)) {
        if (std::isfinite(*d) && *d == std::floor(*d) && std::fabs(*d) < 9.0e18) return ConfigValue(int64_t(*d));
      } else if (const auto* s = std::get_if<std::string>(&given)) {
        if (auto i = parse_int(*s)) return ConfigValue(*i);
        if (auto x = parse_number(*s); x && *x == std::floor(*x) && std::fabs(*x) < 9.0e18) return ConfigValue(int64_t(*x));
      }
      why = bad + "an integer (a JSON integer or a string such as \"128\")";
      return std::nullopt;
    case FieldType::number:
      if (const auto* i = std::get_if<int64_t>(&given)) return ConfigValue(double(*i));
      if (const auto* d = std::get_if<double>(&given)) {
        if (std::isfinite(*d)) return given;
      } else if (const auto* s = std::get_if<std::string>(&given)) {
        if (auto x = parse_number(*s)) return ConfigValue(*x);
      }
      why = bad + "a finite number (a JSON number or a string such as \"0.1\")";
      return std::nullopt;
    case FieldType::string:
      if (std::holds_alternative<std::string>(given)) return given;
      why = bad + "a string";
      return std::nullopt;
    case FieldType::scalars:
      if (std::holds_alternative<std::map<std::string, ConfigScalar>>(given)) return given;
      why = bad + "an object of name -> number";
      return std::nullopt;
  }
  why = bad + to_string(f.type);
  return std::nullopt;
}

std::string field_list(const std::string& part, const std::vector<ConfigField>& fields) {
  std::string out = quoted(part) + " takes ";
  if (fields.empty()) return out + "no fields";
  out += "the fields ";
  for (size_t i = 0; i < fields.size(); ++i) {
    const ConfigField& f = fields[i];
    out += (i ? ", " : "") + f.name + " (" + to_string(f.type);
    if (f.required) out += ", required";
    else if (f.default_value) out += ", default " + show(*f.default_value);
    else out += ", optional";
    if (!f.help.empty()) out += "; " + f.help;
    out += ")";
  }
  return out;
}

struct Entry {
  AttentionFactory factory;
  std::vector<ConfigField> fields;
};

struct Registry {
  std::mutex mutex;
  std::map<std::string, Entry> parts;
};

void register_builtins(Registry& r);

Registry& registry() {
  static Registry* r = [] {
    auto* made = new Registry;  // never destroyed: parts may be built during static destruction
    register_builtins(*made);
    return made;
  }();
  return *r;
}

std::string names_list(Registry& r) {
  std::string out;
  for (const auto& [name, e] : r.parts) out += (out.empty() ? "" : ", ") + name;
  return out;
}

Entry find(const std::string& name) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  const auto it = r.parts.find(name);
  if (it == r.parts.end())
    throw Error(ErrorKind::invalid_argument,
                std::vector<std::string>{"unknown attention " + quoted(name), "registered attentions: " + names_list(r)});
  return it->second;
}

// Checks `given` against the fields, converts values, fills defaults; builds the part.
std::shared_ptr<AttentionPart> build(const std::string& name, const Entry& e, const Config& given,
                                     std::vector<std::string> reasons) {
  Config checked;
  for (const auto& [key, value] : given) {
    const auto f = std::find_if(e.fields.begin(), e.fields.end(), [&](const ConfigField& x) { return x.name == key; });
    if (f == e.fields.end()) {
      reasons.push_back("unknown field " + quoted(key) + " for attention " + quoted(name));
      continue;
    }
    std::string why;
    if (auto v = coerce(*f, value, why)) checked[key] = std::move(*v);
    else reasons.push_back(why);
  }
  for (const ConfigField& f : e.fields) {
    if (checked.count(f.name) || given.count(f.name)) continue;
    if (f.required) reasons.push_back("field " + quoted(f.name) + " is required by attention " + quoted(name));
    else if (f.default_value) checked[f.name] = *f.default_value;
  }
  if (!reasons.empty()) {
    reasons.push_back(field_list(name, e.fields));
    throw Error(ErrorKind::invalid_argument, std::move(reasons));
  }
  std::shared_ptr<AttentionPart> part;
  try {
    part = e.factory(checked);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& x) {
    throw Error(ErrorKind::invalid_argument, "attention " + quoted(name) + ": " + x.what());
  }
  if (!part) throw Error(ErrorKind::internal, "the factory of attention " + quoted(name) + " returned no part");
  return part;
}

// ---- built-in parts ----------------------------------------------------------------------------
template <class T>
T get(const Config& c, const std::string& key) {
  return std::get<T>(c.at(key));
}

// dropout, scale and num_heads, shared by every built-in part (FairSeq's MultiheadAttention adds
// dropout and num_heads to every config it builds, as the Python parts take them).
void add_common(std::vector<ConfigField>& f) {
  f.push_back({"dropout", FieldType::number, ConfigValue(0.0), false, "dropout probability p in [0, 1)"});
  f.push_back({"scale", FieldType::number, std::nullopt, false, "softmax scale (default K^-0.5)"});
  f.push_back({"num_heads", FieldType::integer, std::nullopt, false,
               "query heads; the tensors give H, so it is only checked (alibi: the call's H must equal it)"});
}

AttentionOptions common_options(const std::string& part, const Config& c) {
  AttentionOptions o;
  o.p = get<double>(c, "dropout");
  if (!(o.p >= 0.0 && o.p < 1.0))
    throw Error(ErrorKind::invalid_argument, "attention " + quoted(part) + ": field \"dropout\" = " + show(o.p) +
                                                 " must be in [0, 1)");
  if (c.count("scale")) o.scale = get<double>(c, "scale");
  if (c.count("num_heads") && get<int64_t>(c, "num_heads") < 1)
    throw Error(ErrorKind::invalid_argument, "attention " + quoted(part) + ": field \"num_heads\" = " +
                                                 std::to_string(get<int64_t>(c, "num_heads")) + " must be >= 1");
  return o;
}

int32_t window(const std::string& part, const Config& c, const std::string& key, int64_t lo) {
  const int64_t w = get<int64_t>(c, key);
  if (w < lo || w > std::numeric_limits<int32_t>::max())
    throw Error(ErrorKind::invalid_argument, "attention " + quoted(part) + ": field " + quoted(key) + " = " +
                                                 std::to_string(w) + " must be in [" + std::to_string(lo) + ", 2^31-1]");
  return int32_t(w);
}

// A bias that does not depend on the call's shapes.
class FixedPart : public AttentionPart {
 public:
  FixedPart(std::string name, AttnBias bias, AttentionOptions options)
      : AttentionPart(std::move(name)), bias_(std::move(bias)), options_(options) {}
  AttnBias bias(const CallShape&) const override { return bias_; }
  AttentionOptions options() const override { return options_; }

 private:
  AttnBias bias_;
  AttentionOptions options_;
};

// ALiBi with geometric slopes for the call's H (kept per H: uploaded once each).
class AlibiPart : public AttentionPart {
 public:
  AlibiPart(std::string name, bool causal, AttentionOptions options, int64_t num_heads)
      : AttentionPart(std::move(name)), causal_(causal), options_(options), num_heads_(num_heads) {}
  AttnBias bias(const CallShape& s) const override {
    if (s.H < 1 || s.H > std::numeric_limits<int32_t>::max())
      throw Error(ErrorKind::invalid_argument, "attention " + quoted(name()) + ": H=" + std::to_string(s.H) +
                                                   " query heads (from query.shape) is not in [1, 2^31-1]");
    if (num_heads_ && s.H != num_heads_)
      throw Error(ErrorKind::invalid_argument, "attention " + quoted(name()) + ": the call has H=" + std::to_string(s.H) +
                                                   " query heads (from query.shape) but the config's num_heads is " +
                                                   std::to_string(num_heads_));
    AlibiSlopes slopes;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = slopes_.find(s.H);
      if (it == slopes_.end()) it = slopes_.emplace(s.H, AlibiSlopes::geometric(int32_t(s.H))).first;
      slopes = it->second;
    }
    if (causal_) return LowerTriangularMask{}.add_alibi(slopes);
    return AlibiBias{slopes};
  }
  AttentionOptions options() const override { return options_; }

 private:
  bool causal_;
  AttentionOptions options_;
  int64_t num_heads_;  // 0: not given
  mutable std::mutex mutex_;
  mutable std::map<int64_t, AlibiSlopes> slopes_;
};

class VariantPart : public FixedPart {
 public:
  VariantPart(std::string name, AttnBias bias, AttentionOptions options, Variant variant)
      : FixedPart(std::move(name), std::move(bias), options), variant_(std::move(variant)) {}
  const Variant* variant() const override { return &variant_; }

 private:
  Variant variant_;
};

void register_builtins(Registry& r) {
  {
    std::vector<ConfigField> f = {
        {"causal", FieldType::boolean, ConfigValue(false), false, "LowerTriangularMask (top-left causal) instead of no bias"},
        {"seq_len", FieldType::integer, std::nullopt, false, "accepted as xFormers' config has it; unused"},
        {"to_seq_len", FieldType::integer, std::nullopt, false, "idem"}};
    add_common(f);
    r.parts["scaled_dot_product"] = {[](const Config& c) -> std::shared_ptr<AttentionPart> {
                                       AttnBias bias;
                                       if (get<bool>(c, "causal")) bias = LowerTriangularMask{};
                                       return std::make_shared<FixedPart>("scaled_dot_product", bias,
                                                                          common_options("scaled_dot_product", c));
                                     },
                                     f};
  }
  {
    std::vector<ConfigField> f = {
        {"window_size", FieldType::integer, ConfigValue(int64_t(5)), false,
         "xFormers' local window: keys with |i - j| <= window_size / 2 (causal: i - window_size / 2 <= j <= i)"},
        {"causal", FieldType::boolean, ConfigValue(false), false, "only keys j <= i"},
        {"window_left", FieldType::integer, std::nullopt, false,
         "non-causal only, with window_right: keys with -window_left <= j - i <= window_right (instead of window_size)"},
        {"window_right", FieldType::integer, std::nullopt, false, "see window_left"}};
    add_common(f);
    r.parts["local"] = {[](const Config& c) -> std::shared_ptr<AttentionPart> {
                          const AttentionOptions o = common_options("local", c);
                          const bool causal = get<bool>(c, "causal");
                          const bool lr = c.count("window_left") || c.count("window_right");
                          if (lr) {
                            if (causal || !c.count("window_left") || !c.count("window_right"))
                              throw Error(ErrorKind::invalid_argument,
                                          "attention \"local\": fields \"window_left\" and \"window_right\" go together, "
                                          "and not with \"causal\": true");
                            return std::make_shared<FixedPart>(
                                "local", LocalAttentionFromBottomRightMask{window("local", c, "window_left", 0),
                                                                           window("local", c, "window_right", 0)},
                                o);
                          }
                          const int32_t w = window("local", c, "window_size", 1);
                          if (causal)  // xFormers: local_1d_pattern & causal_1d_pattern: w / 2 + 1 keys, itself included
                            return std::make_shared<FixedPart>("local",
                                                               LowerTriangularFromBottomRightLocalAttentionMask{w / 2 + 1}, o);
                          return std::make_shared<FixedPart>("local", LocalAttentionFromBottomRightMask{w / 2, w / 2}, o);
                        },
                        f};
  }
  {
    std::vector<ConfigField> f = {{"causal", FieldType::boolean, ConfigValue(false), false,
                                   "LowerTriangularMaskWithAlibi (else the symmetric AlibiBias)"}};
    add_common(f);
    r.parts["alibi"] = {[](const Config& c) -> std::shared_ptr<AttentionPart> {
                          return std::make_shared<AlibiPart>("alibi", get<bool>(c, "causal"), common_options("alibi", c),
                                             c.count("num_heads") ? get<int64_t>(c, "num_heads") : 0);
                        },
                        f};
  }
  {
    std::vector<ConfigField> f = {
        {"mask_mod", FieldType::string, std::nullopt, false, "CUDA C++ body: bool (b, h, q_idx, kv_idx)"},
        {"score_mod", FieldType::string, std::nullopt, false, "CUDA C++ body: float (score, b, h, q_idx, kv_idx)"},
        {"score_grad", FieldType::string, std::nullopt, false, "d score_mod / d score, for the backward"},
        {"additive", FieldType::boolean, ConfigValue(false), false, "score_mod adds to score (its gradient is 1)"},
        {"causal", FieldType::boolean, ConfigValue(false), false, "under a LowerTriangularMask"},
        {"captures", FieldType::scalars, std::nullopt, false,
         "scalars the snippets read by name: integers as int, other numbers as float"}};
    add_common(f);
    r.parts["variant"] = {[](const Config& c) -> std::shared_ptr<AttentionPart> {
                            Variant v;
                            if (c.count("mask_mod")) v.mask_mod(get<std::string>(c, "mask_mod"));
                            if (c.count("score_mod") || c.count("score_grad"))
                              v.score_mod(c.count("score_mod") ? get<std::string>(c, "score_mod") : std::string(),
                                          c.count("score_grad") ? get<std::string>(c, "score_grad") : std::string());
                            v.additive_score(get<bool>(c, "additive"));
                            if (c.count("captures"))
                              for (const auto& [name, x] : get<std::map<std::string, ConfigScalar>>(c, "captures")) {
                                if (const auto* i = std::get_if<int64_t>(&x)) {
                                  if (*i < std::numeric_limits<int32_t>::min() || *i > std::numeric_limits<int32_t>::max())
                                    throw Error(ErrorKind::invalid_argument,
                                                "attention \"variant\": field \"captures\": " + quoted(name) + " = " +
                                                    std::to_string(*i) + " does not fit an int32 (write it as " +
                                                    std::to_string(*i) + ".0 for a float)");
                                  v.capture(name, int32_t(*i));
                                } else {
                                  v.capture(name, float(std::get<double>(x)));
                                }
                              }
                            std::vector<std::string> why = v.reasons();
                            if (!why.empty()) {
                              for (auto& w : why) w = "attention \"variant\": " + w;
                              throw Error(ErrorKind::invalid_argument, std::move(why));
                            }
                            v.code_id();  // registers the code now, not in the first call
                            AttnBias bias;
                            if (get<bool>(c, "causal")) bias = LowerTriangularMask{};
                            return std::make_shared<VariantPart>("variant", bias, common_options("variant", c), std::move(v));
                          },
                          f};
  }
}

// A JSON member as a ConfigValue (objects: of numbers or numeric strings), or a reason.
std::optional<ConfigValue> from_json(const std::string& key, const nlohmann::json& j, std::string& why) {
  using nlohmann::json;
  switch (j.type()) {
    case json::value_t::boolean: return ConfigValue(j.get<bool>());
    case json::value_t::number_integer: return ConfigValue(j.get<int64_t>());
    case json::value_t::number_unsigned:
      if (j.get<uint64_t>() <= uint64_t(std::numeric_limits<int64_t>::max())) return ConfigValue(j.get<int64_t>());
      return ConfigValue(j.get<double>());
    case json::value_t::number_float: return ConfigValue(j.get<double>());
    case json::value_t::string: return ConfigValue(j.get<std::string>());
    case json::value_t::object: {
      std::map<std::string, ConfigScalar> m;
      for (const auto& [name, x] : j.items()) {
        std::optional<ConfigScalar> s;
        if (x.is_number_integer() && !(x.is_number_unsigned() && x.get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max())))
          s = x.get<int64_t>();
        else if (x.is_number()) s = x.get<double>();
        else if (x.is_string()) s = parse_scalar(x.get<std::string>());
        if (!s) {
          why = "field " + quoted(key) + ": member " + quoted(name) + " = " + jit::shown_json(x) +
                " must be a number (or a numeric string)";
          return std::nullopt;
        }
        m[name] = *s;
      }
      return ConfigValue(std::move(m));
    }
    default:
      why = "field " + quoted(key) + " = " + jit::shown_json(j) + " must be a bool, number, string or object of numbers";
      return std::nullopt;
  }
}

}  // namespace

// ---- the registry's API --------------------------------------------------------------------------
void register_attention(const std::string& name, AttentionFactory factory, std::vector<ConfigField> fields) {
  std::vector<std::string> why;
  if (name.empty()) why.push_back("register_attention: the name is empty");
  if (!factory) why.push_back("register_attention(" + quoted(name) + "): the factory is empty");
  for (size_t i = 0; i < fields.size(); ++i) {
    const ConfigField& f = fields[i];
    if (f.name.empty() || f.name == "name")
      why.push_back("register_attention(" + quoted(name) + "): field " + quoted(f.name) +
                    " is not a field name (\"name\" picks the part)");
    for (size_t j = 0; j < i; ++j)
      if (fields[j].name == f.name) why.push_back("register_attention(" + quoted(name) + "): field " + quoted(f.name) + " is declared twice");
    std::string bad;
    if (f.default_value && !coerce(f, *f.default_value, bad))
      why.push_back("register_attention(" + quoted(name) + "): default of " + bad);
  }
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  if (r.parts.count(name)) why.push_back("register_attention: " + quoted(name) + " is already registered");
  if (!why.empty()) throw Error(ErrorKind::invalid_argument, std::move(why));
  for (ConfigField& f : fields) {
    std::string unused;
    if (f.default_value) f.default_value = coerce(f, *f.default_value, unused);
  }
  r.parts[name] = Entry{std::move(factory), std::move(fields)};
}

std::vector<std::string> registered_attentions() {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  std::vector<std::string> names;
  for (const auto& [name, e] : r.parts) names.push_back(name);
  return names;  // std::map: sorted
}

std::vector<ConfigField> attention_config_fields(const std::string& name) { return find(name).fields; }

std::shared_ptr<AttentionPart> make_attention(const std::string& name, const Config& config) {
  return build(name, find(name), config, {});
}

std::shared_ptr<AttentionPart> attention_from_config(const std::string& text) {
  // Nesting past a few levels is refused as the parser reads it (nothing deep is built, dumped
  // or destroyed: 10^5 nested brackets overflowed the stack), and a key given twice is an error,
  // not the last one silently winning.
  jit::CheckedJson parsed;
  try {
    parsed = jit::parse_checked_json(text, 8, "an attention config needs 2");
  } catch (const nlohmann::json::exception& e) {
    throw Error(ErrorKind::invalid_argument, "attention config is not JSON: " + jit::clip_text(e.what(), 200));
  } catch (const Error& e) {
    throw Error(ErrorKind::invalid_argument, std::string("attention config is ") + e.what());
  }
  if (!parsed.problem.empty()) throw Error(ErrorKind::invalid_argument, "attention config: " + parsed.problem);
  const nlohmann::json& j = parsed.value;
  if (!j.is_object())
    throw Error(ErrorKind::invalid_argument, "attention config must be a JSON object, got " + jit::shown_json(j));
  const auto name_it = j.find("name");
  if (name_it == j.end() || !name_it->is_string()) {
    Registry& r = registry();
    std::lock_guard<std::mutex> lock(r.mutex);
    throw Error(ErrorKind::invalid_argument,
                std::vector<std::string>{"attention config needs a string \"name\"" +
                                             (name_it == j.end() ? std::string() : ", got " + jit::shown_json(*name_it)),
                                         "registered attentions: " + names_list(r)});
  }
  const std::string name = name_it->get<std::string>();
  const Entry e = find(name);
  Config config;
  std::vector<std::string> reasons;
  for (const auto& [key, value] : j.items()) {
    if (key == "name") continue;
    const bool declared = std::any_of(e.fields.begin(), e.fields.end(), [&](const ConfigField& f) { return f.name == key; });
    if (!declared) {  // build() reports it as unknown
      config[key] = ConfigValue(false);
      continue;
    }
    std::string why;
    if (auto v = from_json(key, value, why)) config[key] = std::move(*v);
    else reasons.push_back(why);
  }
  return build(name, e, config, std::move(reasons));
}

}  // namespace jitattn
