#include "tools/manifest.h"

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <set>
#include <sstream>

#include "jit/json_checked.h"
#include "jit/recorder.h"
#include "jitattn/error.h"
#include "jitattn/variant.h"

namespace jitattn::tools {

using jit::Arch;
using jit::BiasKind;
using jit::KernelSpec;
using nlohmann::json;

namespace {

// Anything else in an entry is most likely a typo ("head_dims"), which would otherwise
// silently prewarm the wrong kernels.
const std::set<std::string> kFields = {"op",  "dtype", "out_dtype", "head_dim", "head_dim_v", "bias",
                                       "lse", "align", "arch",      "dropout",  "dbias",      "variant",
                                       "odd_pages"};

std::string clip(const std::string& text, size_t n = 80) { return jit::clip_text(text, n); }
std::string shown(const json& v) { return jit::shown_json(v); }

[[noreturn]] void bad(const std::string& field, const std::string& want, const json& got) {
  throw Error("\"" + field + "\" must be " + want + ", got " + shown(got));
}

std::string as_string(const std::string& field, const json& v) {
  if (!v.is_string()) bad(field, "a string", v);
  return v.get<std::string>();
}

int as_int(const std::string& field, const json& v, int lo, int hi) {
  if (!v.is_number_integer() || v.get<int64_t>() < lo || v.get<int64_t>() > hi)
    bad(field, "an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]", v);
  return v.get<int>();
}

DType as_dtype(const std::string& field, const json& v) {
  if (auto d = jit::parse_dtype(as_string(field, v))) return *d;
  bad(field, "one of \"f16\", \"bf16\", \"f32\"", v);
}

// "\"none\", \"causal\", ..." from the library's own names, so the message follows new kinds.
std::string bias_kind_names() {
  std::string names;
  for (int k = 0; k < 256; ++k) {
    const std::string name = jit::to_string(BiasKind(k));
    if (name == "?") break;  // the enumerators are dense from 0
    names += (names.empty() ? "\"" : ", \"") + name + "\"";
  }
  return names;
}

BiasKind as_bias(const json& v) {
  if (auto b = jit::parse_bias_kind(as_string("bias", v))) return *b;
  bad("bias", "one of " + bias_kind_names(), v);
}

Arch as_arch(const json& v) {
  if (auto a = Arch::parse(as_string("arch", v))) return *a;
  bad("arch", Arch::rule(), v);
}

// The values of a field that may be a list: one value, or each element of a non-empty array.
template <class F>
auto listed(const json& entry, const std::string& field, F convert) {
  std::vector<decltype(convert(json()))> out;
  const json& v = entry.at(field);
  if (!v.is_array()) {
    out.push_back(convert(v));
    return out;
  }
  if (v.empty()) throw Error("\"" + field + "\" is an empty array");
  for (const json& x : v) out.push_back(convert(x));
  return out;
}

// The choices an entry lists; the kernels are their product.
struct Choices {
  std::vector<jit::Op> ops{jit::Op::fwd};
  std::vector<DType> dtypes;
  std::optional<DType> out_dtype;  // default: each dtype itself
  std::vector<int> head_dims;
  std::optional<int> head_dim_v;   // default: each head_dim itself
  std::vector<BiasKind> biases{BiasKind::none};
  std::vector<bool> lses{false};
  std::vector<bool> dropouts{false};
  std::vector<bool> dbiases{false};
  int align = 16;
  bool odd_pages = false;  // decode over pages that are not a multiple of 8 rows
  std::vector<Arch> archs;
  uint64_t variant = 0;  // a user variant's code id (registered by read_variant), on the ops that apply a bias
};

// "variant": {"mask_mod": ..., "score_mod": ..., "score_grad": ..., "additive": bool,
//             "captures": [{"name": ..., "kind": "tensor"|"float"|"int", "type": "f32"|..., "rank": n}]}
// -> the code's id, registered in this process (docs/manifest.md), so prewarm compiles the kernels
// an application that builds the same jitattn::Variant looks up.
uint64_t read_variant(const json& v) {
  if (!v.is_object()) bad("variant", "an object", v);
  static const std::set<std::string> fields = {"mask_mod", "score_mod", "score_grad", "additive", "captures"};
  for (const auto& [key, value] : v.items())
    if (!fields.count(key)) throw Error("unknown field \"variant." + clip(key) + "\"");
  Variant var;
  if (v.contains("mask_mod")) var.mask_mod(as_string("variant.mask_mod", v["mask_mod"]));
  const std::string grad = v.contains("score_grad") ? as_string("variant.score_grad", v["score_grad"]) : "";
  if (v.contains("score_mod") || !grad.empty())
    var.score_mod(v.contains("score_mod") ? as_string("variant.score_mod", v["score_mod"]) : "", grad);
  if (v.contains("additive")) {
    if (!v["additive"].is_boolean()) bad("variant.additive", "true or false", v["additive"]);
    var.additive_score(v["additive"].get<bool>());
  }
  if (v.contains("captures")) {
    const json& caps = v["captures"];
    if (!caps.is_array()) bad("variant.captures", "an array", caps);
    static const std::set<std::string> cap_fields = {"name", "kind", "type", "rank"};
    std::set<std::string> names;  // Variant::capture replaces a name given twice: here that is a typo
    for (size_t i = 0; i < caps.size(); ++i) {
      const std::string at = "variant.captures[" + std::to_string(i) + "]";
      const json& c = caps[i];
      if (!c.is_object()) bad(at, "an object", c);
      for (const auto& [key, value] : c.items())
        if (!cap_fields.count(key)) throw Error("unknown field \"" + at + "." + clip(key) + "\"");
      if (!c.contains("name") || !c.contains("kind")) throw Error(at + " needs \"name\" and \"kind\"");
      const std::string name = as_string(at + ".name", c["name"]), kind = as_string(at + ".kind", c["kind"]);
      if (!names.insert(name).second) throw Error(at + ".name \"" + clip(name) + "\" names an earlier capture too");
      if (kind == "float") {
        var.capture(name, 0.f);
      } else if (kind == "int") {
        var.capture(name, int32_t(0));
      } else if (kind == "tensor") {
        if (!c.contains("type") || !c.contains("rank")) throw Error(at + ": a tensor capture needs \"type\" and \"rank\"");
        const std::string type = as_string(at + ".type", c["type"]);
        CaptureTensor t;
        t.data = reinterpret_cast<const void*>(uintptr_t(1));  // never read: only the code is compiled
        t.rank = as_int(at + ".rank", c["rank"], 1, Variant::kMaxRank);
        bool known = false;
        for (CaptureType ct : {CaptureType::f32, CaptureType::f16, CaptureType::bf16, CaptureType::i32, CaptureType::i64,
                               CaptureType::u8})
          if (type == to_string(ct)) t.type = ct, known = true;
        if (!known) bad(at + ".type", "one of \"f32\", \"f16\", \"bf16\", \"i32\", \"i64\", \"u8\"", c["type"]);
        var.capture(name, t);
      } else {
        bad(at + ".kind", "one of \"tensor\", \"float\", \"int\"", c["kind"]);
      }
    }
  }
  const std::vector<std::string> reasons = var.reasons();
  if (!reasons.empty()) throw Error(reasons);
  return var.code_id();
}

Choices read_choices(const json& e, const std::vector<Arch>& default_archs) {
  for (const auto& [key, value] : e.items())
    if (!kFields.count(key)) throw Error("unknown field \"" + clip(key) + "\"");
  if (!e.contains("dtype")) throw Error("missing \"dtype\"");
  if (!e.contains("head_dim")) throw Error("missing \"head_dim\"");
  Choices c;
  if (e.contains("op")) c.ops = listed(e, "op", [](const json& v) {
      auto op = jit::parse_op(as_string("op", v));
      if (!op) bad("op", "one of fwd, bwd_pre, bwd, bwd_kv, bwd_dq, bwd_post, merge, decode", v);
      return *op;
    });
  auto flag = [&](const char* name, std::vector<bool>& out) {
    if (e.contains(name)) out = listed(e, name, [name](const json& v) {
        if (!v.is_boolean()) bad(name, "true or false", v);
        return v.get<bool>();
      });
  };
  flag("dropout", c.dropouts);
  flag("dbias", c.dbiases);
  c.dtypes = listed(e, "dtype", [](const json& v) { return as_dtype("dtype", v); });
  if (e.contains("out_dtype")) c.out_dtype = as_dtype("out_dtype", e["out_dtype"]);
  c.head_dims = listed(e, "head_dim", [](const json& v) { return as_int("head_dim", v, 1, 65535); });
  if (e.contains("head_dim_v")) c.head_dim_v = as_int("head_dim_v", e["head_dim_v"], 1, 65535);
  if (e.contains("bias")) c.biases = listed(e, "bias", as_bias);
  if (e.contains("lse")) c.lses = listed(e, "lse", [](const json& v) {
      if (!v.is_boolean()) bad("lse", "true or false", v);
      return v.get<bool>();
    });
  if (e.contains("align")) c.align = as_int("align", e["align"], 1, 255);
  if (e.contains("odd_pages")) {
    if (!e["odd_pages"].is_boolean()) bad("odd_pages", "true or false", e["odd_pages"]);
    c.odd_pages = e["odd_pages"].get<bool>();
  }
  if (e.contains("arch")) c.archs = listed(e, "arch", as_arch);
  else if (default_archs.empty()) throw Error("no \"arch\", no --arch list to take it from, and no GPU on this machine to take it from");
  else c.archs = default_archs;
  if (e.contains("variant")) c.variant = read_variant(e["variant"]);
  return c;
}

// How many kernels an entry stands for, saturating rather than overflowing, and its factors
// ("arch 4 x dtype 3 x head_dim 32") for the message that refuses it.
uint64_t product_size(const Choices& c, std::string* factors) {
  const std::pair<const char*, size_t> lists[] = {
      {"arch", c.archs.size()}, {"dtype", c.dtypes.size()},   {"head_dim", c.head_dims.size()},
      {"bias", c.biases.size()}, {"lse", c.lses.size()},      {"op", c.ops.size()},
      {"dropout", c.dropouts.size()}, {"dbias", c.dbiases.size()}};
  uint64_t n = 1;
  for (const auto& [field, size] : lists) {
    n = size != 0 && n > std::numeric_limits<uint64_t>::max() / size ? std::numeric_limits<uint64_t>::max() : n * size;
    if (size > 1) *factors += (factors->empty() ? "" : " x ") + std::string(field) + " " + std::to_string(size);
  }
  return n;
}

// What the API never asks for (api/src/plan.cpp, api/src/backward.cpp): such a kernel would be
// compiled and never used, so a manifest that lists one has a mistake in it.
std::string api_problem(const jit::Signature& s) {
  using jit::Op;
  const bool backward = s.op != Op::fwd && s.op != Op::merge && s.op != Op::decode && s.op != Op::swiglu_fwd &&
                        s.op != Op::swiglu_bwd && s.op != Op::block_map;
  const bool swiglu = s.op == Op::swiglu_fwd || s.op == Op::swiglu_bwd;
  if (s.op == Op::block_map && (!s.variant || s.bias != jit::BiasKind::none || s.lse || s.dropout || s.dbias ||
                                s.dtype != DType::f32 || s.head_dim != 8 || s.head_dim_v != 8))
    return "op \"block_map\" is a user variant's mask_mod (a \"variant\" object), with dtype f32, head_dim 8, bias \"none\", "
           "no lse, dropout or dbias";
  if (swiglu && (s.bias != jit::BiasKind::none || s.lse || s.head_dim != 8 || s.head_dim_v != 8))
    return std::string("op \"") + jit::to_string(s.op) + "\" takes bias \"none\", no lse and head_dim 8 (elements per thread)";
  if (s.dbias && s.op != Op::bwd && s.op != Op::bwd_kv)
    return std::string("dbias is for op \"bwd\" and \"bwd_kv\" (the backward's dK/dV kernel), not \"") +
           jit::to_string(s.op) + "\"";
  if (s.dbias && !jit::has_tensor_bias(s.bias))
    return std::string("dbias needs bias \"tensor\" or \"causal_tensor\" (the gradient of a dense bias), not \"") +
           jit::to_string(s.bias) + "\"";
  if (s.dropout && (s.op == Op::bwd_pre || s.op == Op::bwd_post || s.op == Op::merge || s.op == Op::decode || swiglu))
    return std::string("dropout is for op \"fwd\", \"bwd\", \"bwd_kv\" and \"bwd_dq\", not \"") + jit::to_string(s.op) + "\"";
  if (s.dropout && jit::is_paged(s.bias))
    return std::string("dropout is not supported with bias \"") + jit::to_string(s.bias) + "\" (paged keys are for inference)";
  if (backward && !jit::has_backward(s.bias))
    return std::string("the backward does not support bias \"") + jit::to_string(s.bias) + "\" (paged keys are for inference)";
  return "";
}

// validate_spec, then api_problem: "" when a manifest may list `spec`.
std::string spec_problem(const KernelSpec& spec) {
  const std::string problem = jit::validate_spec(spec);
  return problem.empty() ? api_problem(spec.sig) : problem;
}

KernelSpec checked_spec(const jit::Signature& sig) {
  const KernelSpec spec = jit::make_spec(sig);
  const std::string problem = spec_problem(spec);
  if (!problem.empty()) throw Error(spec.name() + ": " + problem);
  return spec;
}

std::string too_many(const std::string& what, size_t max_kernels) {
  return what + ", more than the limit of " + std::to_string(max_kernels) +
         "; list fewer values, or raise the limit with --max-kernels N";
}

std::vector<KernelSpec> expand(const Choices& c, size_t max_kernels) {
  std::string factors;
  const uint64_t n = product_size(c, &factors);
  if (n > max_kernels) {
    const std::string count = n == std::numeric_limits<uint64_t>::max() ? "2^64 or more" : std::to_string(n);
    throw Error(too_many("the entry stands for " + count + " kernels (" + factors + ")", max_kernels));
  }
  std::vector<KernelSpec> specs;
  for (const Arch& arch : c.archs)
    for (DType dtype : c.dtypes)
      for (int hd : c.head_dims)
        for (BiasKind bias : c.biases)
          for (bool lse : c.lses)
            for (jit::Op op : c.ops)
              for (bool dropout : c.dropouts)
                for (bool dbias : c.dbiases) {
                  jit::Signature s;
                  s.op = op;
                  s.bias = bias;
                  s.dtype = dtype;
                  s.out_dtype = c.out_dtype.value_or(dtype);
                  s.head_dim = uint16_t(hd);
                  s.head_dim_v = uint16_t(c.head_dim_v.value_or(hd));
                  s.set_arch(arch);
                  s.lse = lse;
                  s.dropout = dropout;
                  s.dbias = dbias;
                  s.odd_pages = c.odd_pages;
                  s.align = uint8_t(dtype == DType::f32 ? 4 : c.align);  // the f32 kernels load element by element
                  // bwd_pre/bwd_post run without it; the block-map builder is nothing else
                  if (jit::uses_bias(op) || op == jit::Op::block_map) s.variant = c.variant;
                  specs.push_back(checked_spec(s));
                }
  return specs;
}

std::vector<KernelSpec> parse_entry(const json& e, const std::vector<Arch>& default_archs, size_t max_kernels) {
  if (!e.is_object()) throw Error("an entry must be an object, got " + shown(e));
  if (!e.contains("name")) return expand(read_choices(e, default_archs), max_kernels);
  if (e.size() != 1) throw Error("an entry with \"name\" takes no other fields (the name says everything)");
  const std::string name = as_string("name", e["name"]);
  auto spec = KernelSpec::parse(name);
  if (!spec) throw Error("\"" + clip(name) + "\" is not a canonical kernel name (see `jitattn ls` for examples)");
  if (spec->sig.variant)
    throw Error(name + ": a user variant's kernel (+u<id>) is compiled from its code, which a name does not carry; "
                "list it as fields with a \"variant\" object");
  const std::string problem = spec_problem(*spec);
  if (!problem.empty()) throw Error(name + ": " + problem);
  return {*spec};
}

const json& entries_of(const json& manifest) {
  if (manifest.is_array()) return manifest;
  if (manifest.is_object() && manifest.contains("kernels") && manifest["kernels"].is_array())
    return manifest["kernels"];
  throw Error("a manifest is a JSON array of entries or an object {\"kernels\": [...]}");
}

// An entry and where it came from, for error messages ("kernels[2]", "m.jsonl:3").
struct Located {
  json entry;
  std::string where;
};

// Each of e's reasons, prefixed with where it happened.
std::vector<std::string> reasons_at(const std::string& where, const Error& e) {
  std::vector<std::string> reasons;
  for (const auto& r : e.reasons()) reasons.push_back(where + ": " + r);
  return reasons;
}

std::vector<KernelSpec> parse_located(const std::vector<Located>& entries, const std::vector<Arch>& default_archs,
                                      size_t max_kernels) {
  std::vector<std::string> reasons;  // every bad entry at once, not one per run
  std::vector<KernelSpec> specs;
  std::set<std::string> seen;
  for (const Located& l : entries) {
    try {
      for (KernelSpec& spec : parse_entry(l.entry, default_archs, max_kernels))
        if (seen.insert(spec.name()).second) specs.push_back(std::move(spec));
    } catch (const Error& e) {
      const auto at = reasons_at(l.where, e);
      reasons.insert(reasons.end(), at.begin(), at.end());
    }
    if (specs.size() > max_kernels) {  // stop expanding: the rest can only add more
      reasons.push_back(l.where + ": " + too_many("the entries up to here stand for " + std::to_string(specs.size()) + " kernels", max_kernels));
      break;
    }
  }
  if (!reasons.empty()) throw Error(reasons);
  return specs;
}

using Parsed = jit::CheckedJson;
Parsed parse_json(const std::string& text) { return jit::parse_checked_json(text, kMaxJsonDepth, "a manifest needs 4"); }

// The error a JSON syntax error becomes; nlohmann's message quotes the token it last read, which
// may be the rest of the file.
std::string syntax_error(const json::exception& e) { return clip(e.what(), 200); }

// One entry per line; a line that is not JSON is reported with the others, not alone.
std::vector<Located> json_lines(const std::string& text, const std::string& source, std::vector<std::string>& reasons) {
  std::vector<Located> entries;
  std::istringstream in(text);
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    const size_t first = line.find_first_not_of(" \t\r");
    if (first == std::string::npos || line[first] == '#') continue;
    const std::string where = source + ":" + std::to_string(n);
    try {
      Parsed p = parse_json(line);
      if (!p.problem.empty()) reasons.push_back(where + ": " + p.problem);
      else entries.push_back({std::move(p.value), where});
    } catch (const json::exception& e) {
      reasons.push_back(where + ": not valid JSON (" + syntax_error(e) + ")");
    } catch (const Error& e) {
      const auto at = reasons_at(where, e);
      reasons.insert(reasons.end(), at.begin(), at.end());
    }
  }
  return entries;
}

}  // namespace

std::vector<KernelSpec> parse_manifest(const json& manifest, const std::vector<Arch>& default_archs,
                                       size_t max_kernels) {
  const json& entries = entries_of(manifest);
  std::vector<Located> located;
  for (size_t i = 0; i < entries.size(); ++i) located.push_back({entries[i], "kernels[" + std::to_string(i) + "]"});
  return parse_located(located, default_archs, max_kernels);
}

std::vector<KernelSpec> parse_manifest_text(const std::string& text, const std::vector<Arch>& default_archs,
                                            const std::string& source, size_t max_kernels) {
  // A whole JSON document wins: an array, or an object with "kernels". A file that starts with
  // '[' can only be a document, so its syntax error is reported as such. A single object without
  // "kernels" is one entry (a one-line JSON Lines file is exactly that); anything else is read as
  // JSON Lines.
  const size_t first = text.find_first_not_of(" \t\r\n");
  if (first == std::string::npos) throw Error(source + " is empty");
  Parsed parsed;  // its value stays null when the text is not one document
  try {
    parsed = parse_json(text);
  } catch (const json::exception& e) {
    if (text[first] == '[') throw Error(source + " is not valid JSON: " + syntax_error(e));
  } catch (const Error& e) {
    throw Error(reasons_at(source, e));
  }
  const json& doc = parsed.value;
  if ((doc.is_array() || doc.is_object()) && !parsed.problem.empty()) throw Error(source + ": " + parsed.problem);
  if (doc.is_array() || (doc.is_object() && doc.contains("kernels"))) {
    try {
      return parse_manifest(doc, default_archs, max_kernels);
    } catch (const Error& e) {  // name the file, as the JSON Lines reasons do
      throw Error(reasons_at(source, e));
    }
  }
  if (doc.is_object()) return parse_located({{doc, source}}, default_archs, max_kernels);  // one entry, maybe over several lines
  std::vector<std::string> reasons;
  const std::vector<Located> entries = json_lines(text, source, reasons);
  if (!reasons.empty()) {
    reasons.push_back(source + " is neither one JSON document (an array, or {\"kernels\": [...]}) nor JSON Lines "
                      "(one entry object per line)");
    throw Error(reasons);
  }
  return parse_located(entries, default_archs, max_kernels);
}

std::vector<KernelSpec> read_manifest(const std::string& path, const std::vector<Arch>& default_archs,
                                      size_t max_kernels) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) throw Error("cannot read manifest " + path + ": it is a directory");
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error("cannot read manifest " + path);
  // Read with a bound, not to the end: /dev/zero, or a pipe that never closes, has none.
  std::string text;
  char buf[1 << 16];
  while (f.read(buf, sizeof buf) || f.gcount() > 0) {
    text.append(buf, size_t(f.gcount()));
    if (text.size() > jit::kMaxManifestBytes)
      throw Error("manifest " + path + " is larger than " + std::to_string(jit::kMaxManifestBytes >> 20) +
                  " MiB, the most jitattn reads (is it a manifest?)");
  }
  if (f.bad()) throw Error("cannot read manifest " + path);
  return parse_manifest_text(text, default_archs, path, max_kernels);
}

std::vector<Arch> parse_arch_list(const std::string& list) {
  std::vector<Arch> archs;
  std::stringstream ss(list);
  std::string item;
  while (std::getline(ss, item, ',')) {
    item.erase(0, item.find_first_not_of(" \t"));
    item.erase(item.find_last_not_of(" \t") + 1);
    if (item.empty()) continue;
    auto arch = Arch::parse(item);
    if (!arch) throw Error("--arch: \"" + item + "\" is not a known target: " + Arch::rule());
    if (std::find(archs.begin(), archs.end(), *arch) == archs.end()) archs.push_back(*arch);
  }
  return archs;
}

}  // namespace jitattn::tools
