// JSON that comes from outside (manifests, attention configs) read with limits, and JSON shown in
// error messages, for tools/manifest.cpp and api/src/registry.cpp alike. Header-only: both sides
// use nlohmann's headers directly.
#pragma once
#include <nlohmann/json.hpp>

#include <set>
#include <string>
#include <vector>

#include "jitattn/error.h"

namespace jitattn::jit {

// At most `n` bytes of `text` (cut on a UTF-8 boundary), so an error never echoes a megabyte.
inline std::string clip_text(const std::string& text, size_t n = 80) {
  if (text.size() <= n) return text;
  while (n > 0 && (static_cast<unsigned char>(text[n]) & 0xC0) == 0x80) --n;
  return text.substr(0, n) + "... (" + std::to_string(text.size()) + " bytes)";
}

// A value as an error shows it: its JSON, clipped; bytes that are not UTF-8 are replaced (dump()
// would throw nlohmann's type_error for them). Values from parse_checked_json are shallow, which
// keeps dump()'s recursion short.
inline std::string shown_json(const nlohmann::json& v, size_t n = 80) {
  return clip_text(v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), n);
}

// A JSON value and the first rule it breaks that does not stop the parser ("" if none): a key
// given twice in one object, which json::parse would silently resolve to the last.
struct CheckedJson {
  nlohmann::json value;
  std::string problem;
};

// json::parse with limits checked as the (non-recursive) parser goes: nesting deeper than
// `max_depth` throws jitattn::Error at once (`needs` says what the format needs), so nothing deep is
// ever built, dumped or destroyed. A syntax error throws nlohmann::json::exception.
inline CheckedJson parse_checked_json(const std::string& text, int max_depth, const std::string& needs) {
  using json = nlohmann::json;
  CheckedJson out;
  std::vector<std::set<std::string>> keys;  // of each object open now
  const json::parser_callback_t check = [&](int depth, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start:
      case json::parse_event_t::array_start:
        if (depth >= max_depth)
          throw Error("nested deeper than " + std::to_string(max_depth) + " levels of arrays and objects (" + needs + ")");
        if (event == json::parse_event_t::object_start) keys.emplace_back();
        break;
      case json::parse_event_t::key:
        if (!keys.back().insert(parsed.get<std::string>()).second && out.problem.empty())
          out.problem = "key \"" + clip_text(parsed.get<std::string>()) + "\" appears twice in one object";
        break;
      case json::parse_event_t::object_end: keys.pop_back(); break;
      default: break;
    }
    return true;
  };
  out.value = json::parse(text, check);
  return out;
}

}  // namespace jitattn::jit
