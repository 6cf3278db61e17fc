#include "jit/variant.h"

#include <cctype>
#include <cstdio>
#include <mutex>
#include <regex>
#include <sstream>
#include <unordered_map>
#include <utility>
#include <vector>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "jitattn/error.h"

namespace jitattn::jit {

namespace {
const char* kind_name(CaptureKind k) {
  switch (k) {
    case CaptureKind::tensor: return "tensor";
    case CaptureKind::f32: return "float";
    case CaptureKind::i32: return "int";
  }
  return "?";
}

struct Registry {
  std::mutex mu;
  std::unordered_map<uint64_t, std::shared_ptr<const VariantCode>> codes;
  static Registry& get() {
    static Registry r;
    return r;
  }
};

std::string hex_id(uint64_t id) {
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(id));
  return hex;
}

// Whether the ' at s[i] separates digits of a number (1'000, 0xFF'FF) rather than opening a
// character literal (which a prefix such as u8'a' or L'a' may precede): the token it ends
// starts with a digit.
bool digit_separator(const std::string& s, size_t i) {
  size_t start = i;
  while (start > 0 && (std::isalnum(static_cast<unsigned char>(s[start - 1])) || s[start - 1] == '_' || s[start - 1] == '\'' ||
                       s[start - 1] == '.'))
    --start;
  return start < i && std::isdigit(static_cast<unsigned char>(s[start])) && i + 1 < s.size() &&
         std::isxdigit(static_cast<unsigned char>(s[i + 1]));
}

// Whether the '"' at s[i] opens a raw string literal: the token it ends is R, LR, uR, UR or u8R.
bool raw_string_at(const std::string& s, size_t i) {
  if (s[i] != '"') return false;
  size_t start = i;
  while (start > 0 && (std::isalnum(static_cast<unsigned char>(s[start - 1])) || s[start - 1] == '_')) --start;
  const std::string prefix = s.substr(start, i - start);
  return (prefix == "R" || prefix == "LR" || prefix == "uR" || prefix == "UR" || prefix == "u8R");
}

// The snippet without comments and string/char literals (each replaced by a space, and the line
// breaks inside them, so lines keep their numbers). `unterminated`, if given, is set to what
// runs to the end of the snippet unclosed ("a /* comment", "a string literal"), else "".
std::string code_only(const std::string& s, std::string* unterminated = nullptr) {
  std::string out;
  if (unterminated) unterminated->clear();
  auto removed = [&](size_t from, size_t to) {
    out += ' ';
    for (size_t j = from; j < to && j < s.size(); ++j)
      if (s[j] == '\n') out += '\n';
  };
  for (size_t i = 0; i < s.size();) {
    if (s.compare(i, 2, "//") == 0) {
      while (i < s.size() && s[i] != '\n') ++i;
      out += ' ';
    } else if (s.compare(i, 2, "/*") == 0) {
      const size_t end = s.find("*/", i + 2);
      if (end == std::string::npos && unterminated) *unterminated = "a /* comment";
      const size_t next = end == std::string::npos ? s.size() : end + 2;
      removed(i, next);
      i = next;
    } else if (s[i] == '\'' && digit_separator(s, i)) {
      out += s[i++];
    } else if (raw_string_at(s, i)) {
      // A raw string literal R"delim( ... )delim", which may span lines and hold quotes.
      const size_t paren = s.find('(', i + 1);
      const size_t end = paren == std::string::npos ? std::string::npos : s.find(")" + s.substr(i + 1, paren - i - 1) + "\"", paren);
      if (end == std::string::npos && unterminated) *unterminated = "a raw string literal";
      const size_t next = end == std::string::npos ? s.size() : end + (paren - i) + 1;
      removed(i, next);
      i = next;
    } else if (s[i] == '"' || s[i] == '\'') {
      const size_t from = i;
      const char q = s[i++];
      while (i < s.size() && s[i] != q && s[i] != '\n') i += s[i] == '\\' ? 2 : 1;
      if ((i >= s.size() || s[i] != q) && unterminated) *unterminated = q == '"' ? "a string literal" : "a character literal";
      ++i;
      removed(from, i);
    } else {
      out += s[i++];
    }
  }
  return out;
}

// Whether a snippet is statements rather than one expression: it starts as only a statement can
// (if, for, while, do, switch, return, a block), or has a ';' or a "return" outside braces. An
// expression holds neither outside braces; inside them (a lambda called in place:
// "[&] { return q_idx >= kv_idx; }()") they belong to the lambda.
bool is_statements(const std::string& snippet) {
  const std::string code = code_only(snippet);
  static const std::regex statement_start("^\\s*(\\{|(if|for|while|do|switch|return)\\b)");
  if (std::regex_search(code, statement_start)) return true;
  std::string outside;  // the code at brace depth 0
  int depth = 0;
  for (const char c : code) {
    if (c == '{') ++depth;
    if (depth == 0) outside += c;
    if (c == '}' && depth > 0) --depth;
  }
  static const std::regex has_return("\\breturn\\b");
  return outside.find(';') != std::string::npos || std::regex_search(outside, has_return);
}
}  // namespace

std::string snippet_problem(const std::string& snippet) {
  std::string unterminated;
  const std::string code = code_only(snippet, &unterminated);
  if (!unterminated.empty()) return unterminated + " is not closed";
  std::vector<std::pair<char, int>> open;  // bracket, line
  int line = 1;
  for (const char c : code) {
    if (c == '\n') ++line;
    if (c == '(' || c == '[' || c == '{') open.emplace_back(c, line);
    if (c != ')' && c != ']' && c != '}') continue;
    const char want = c == ')' ? '(' : c == ']' ? '[' : '{';
    if (open.empty()) return "line " + std::to_string(line) + ": '" + c + "' closes nothing";
    if (open.back().first != want)
      return "line " + std::to_string(line) + ": '" + c + "' closes the '" + open.back().first + "' of line " +
             std::to_string(open.back().second);
    open.pop_back();
  }
  if (!open.empty()) return "line " + std::to_string(open.back().second) + ": '" + open.back().first + "' is not closed";
  // A directive could end the function (#endif, #line ...); #pragma (unroll) cannot.
  static const std::regex directive("^[ \\t]*#[ \\t]*(pragma\\b)?");
  std::istringstream in(code);
  std::string l;
  std::smatch m;
  for (int n = 1; std::getline(in, l); ++n)
    if (std::regex_search(l, m, directive) && !m[1].matched) return "line " + std::to_string(n) + ": a preprocessor directive other than #pragma";
  return "";
}

const CaptureTypeName kCaptureTypes[6] = {{"f32", "float"},       {"f16", "jitattn::half_bits"},
                                           {"bf16", "jitattn::bf16_bits"}, {"i32", "int"},
                                           {"i64", "long long"},   {"u8", "unsigned char"}};

const char* capture_type_name(const std::string& device_type) {
  for (const CaptureTypeName& t : kCaptureTypes)
    if (device_type == t.device) return t.name;
  return "";
}

std::string VariantCode::canonical() const {
  std::ostringstream os;
  os << "jitattn variant 1\nmask_mod " << mask_mod.size() << '\n' << mask_mod << "\nscore_mod " << score_mod.size() << '\n'
     << score_mod << "\nscore_grad " << score_grad.size() << '\n' << score_grad << "\nadditive " << additive << '\n';
  for (const CaptureDecl& c : captures) os << "capture " << c.name << ' ' << kind_name(c.kind) << ' ' << c.type << ' ' << c.rank << '\n';
  return os.str();
}

uint64_t register_variant(const VariantCode& code) {
  std::string text = code.canonical();
  uint64_t id = XXH3_64bits(text.data(), text.size());
  if (id == 0) id = 1;  // 0 means "no variant"
  Registry& r = Registry::get();
  std::lock_guard<std::mutex> lock(r.mu);
  auto it = r.codes.find(id);
  if (it == r.codes.end()) {
    r.codes.emplace(id, std::make_shared<const VariantCode>(code));
  } else if (it->second->canonical() != text) {
    throw Error("two user variants hash to the same id " + hex_id(id) +
                "; change either one's text (e.g. a comment) so they get different kernels");
  }
  return id;
}

std::shared_ptr<const VariantCode> variant_code(uint64_t id) {
  Registry& r = Registry::get();
  std::lock_guard<std::mutex> lock(r.mu);
  auto it = r.codes.find(id);
  if (it == r.codes.end())
    throw Error("no user variant " + hex_id(id) + " is registered in this process (a kernel name's +u" + hex_id(id) +
                " names it; its kernels compile only in a process that builds that jitattn::Variant)");
  return it->second;
}

std::string variant_source(const VariantCode& code) {
  std::ostringstream os;
  const bool mask = !code.mask_mod.empty(), score = !code.score_mod.empty(), grad = code.has_score_grad() && !code.additive;
  os << "namespace jitattn_user {\n"
     << "struct Variant {\n"
     << "  static constexpr bool kMask = " << (mask ? "true" : "false") << ", kScore = " << (score ? "true" : "false")
     << ", kScoreGrad = " << (grad ? "true" : "false") << ";\n";
  int tensors = 0, floats = 0, ints = 0;
  std::ostringstream init;
  for (const CaptureDecl& c : code.captures) {
    init << (init.tellp() > 0 ? ", " : "") << c.name << '(';
    switch (c.kind) {
      case CaptureKind::tensor:
        os << "  jitattn::TensorRef<" << c.type << ", " << c.rank << "> " << c.name << ";\n";
        init << "a, " << tensors++ << ')';
        break;
      case CaptureKind::f32:
        os << "  float " << c.name << ";\n";
        init << "a.f[" << floats++ << "])";
        break;
      case CaptureKind::i32:
        os << "  int " << c.name << ";\n";
        init << "a.i[" << ints++ << "])";
        break;
    }
  }
  // kTensors: the snippets may read captured tensors (a mask_mod then costs loads per element).
  os << "  static constexpr bool kTensors = " << (tensors > 0 ? "true" : "false") << ";\n";
  os << "  __device__ explicit Variant(const jitattn::UserArgs& a)" << (code.captures.empty() ? "" : " : ") << init.str()
     << " {}\n";
  auto fn = [&](const char* sig, const char* name, const std::string& text) {
    // An expression becomes return (...); with the parentheses on lines of their own, so the
    // snippet keeps its line numbers and a trailing // comment ends before the ")". Statements
    // that can end without returning ("if (q_idx >= kv_idx) return true;") are an error, not
    // NVRTC's warning 940, which a successful compile's log drops and which leaves the result
    // undefined.
    const bool expr = !is_statements(text);
    os << "#if JITATTN_CUDA\n#pragma nv_diagnostic push\n#pragma nv_diag_error 940\n#endif\n"
       << "  __device__ " << sig << " const {\n" << (expr ? "return (\n" : "") << "#line 1 \"" << name << "\"\n" << text
       << "\n" << (expr ? ");\n" : "") << "#line 1 \"jitattn_variant\"\n  }\n#if JITATTN_CUDA\n#pragma nv_diagnostic pop\n#endif\n";
  };
  if (mask) fn("bool mask_mod(int b, int h, int q_idx, int kv_idx)", "mask_mod", code.mask_mod);
  if (score) fn("float score_mod(float score, int b, int h, int q_idx, int kv_idx)", "score_mod", code.score_mod);
  if (grad) fn("float score_grad(float score, int b, int h, int q_idx, int kv_idx)", "score_grad", code.score_grad);
  os << "};\n}  // namespace jitattn_user\n";
  return os.str();
}

std::string user_errors(const std::string& log) {
  std::istringstream in(log);
  std::string line, out;
  bool in_user = false;
  static const std::regex user_line("^(mask_mod|score_mod|score_grad)\\([0-9]+\\):");
  static const std::regex any_file_line("^[^ ]+\\([0-9]+\\):");
  static const std::regex user_error("^(mask_mod|score_mod|score_grad)\\([0-9]+\\): (catastrophic )?error");
  bool has_error = false;
  while (std::getline(in, line)) {
    if (std::regex_search(line, user_line)) in_user = true;
    else if (std::regex_search(line, any_file_line)) in_user = false;
    if (in_user) out += line + '\n';
    if (in_user) has_error = has_error || std::regex_search(line, user_error);
  }
  // The user's lines only if an error is among them: a warning there (an unused variable) beside
  // an error elsewhere (a static_assert the snippet's capture types trip in kernel_src/) would
  // hide the error, so then none (the caller shows the whole log).
  return has_error ? out : std::string();
}

}  // namespace jitattn::jit
