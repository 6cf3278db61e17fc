#include "jitattn/variant.h"

#include <cctype>
#include <atomic>
#include <iterator>
#include <regex>
#include <utility>

#include "jit/variant.h"

namespace jitattn {

const char* to_string(CaptureType t) {
  return size_t(t) < std::size(jit::kCaptureTypes) ? jit::kCaptureTypes[size_t(t)].name : "?";
}

namespace {
// What the snippets read (f16/bf16 as float: kernel_src/bias_policies.cuh capture_value).
const char* device_type(CaptureType t) {
  return size_t(t) < std::size(jit::kCaptureTypes) ? jit::kCaptureTypes[size_t(t)].device : "?";
}

// Names a snippet already has, that the generated struct uses, or that C++/CUDA keep.
bool reserved(const std::string& n) {
  static const char* const words[] = {
      "b", "h", "q_idx", "kv_idx", "score", "a", "Variant", "kMask", "kScore", "kScoreGrad", "kTensors", "mask_mod", "score_mod",
      "score_grad", "TensorRef", "alignas", "alignof", "and", "and_eq", "asm", "auto", "bitand", "bitor", "bool",
      "break", "case", "catch", "char", "char16_t", "char32_t", "class", "compl", "const", "constexpr", "const_cast",
      "continue", "decltype", "default", "delete", "do", "double", "dynamic_cast", "else", "enum", "explicit",
      "export", "extern", "false", "float", "for", "friend", "goto", "if", "inline", "int", "long", "mutable",
      "namespace", "new", "noexcept", "not", "not_eq", "nullptr", "operator", "or", "or_eq", "private", "protected",
      "public", "register", "reinterpret_cast", "return", "short", "signed", "sizeof", "static", "static_assert",
      "static_cast", "struct", "switch", "template", "this", "thread_local", "throw", "true", "try", "typedef",
      "typeid", "typename", "union", "unsigned", "using", "virtual", "void", "volatile", "wchar_t", "while", "xor",
      "xor_eq", "threadIdx", "blockIdx", "blockDim", "gridDim", "warpSize", "std", "assert", "NULL", "INFINITY",
      "NAN"};
  for (const char* w : words)
    if (n == w) return true;
  // The kernels' own names and macros (jitattn::, JITATTN_CUDA, JITATTN_HIP, ...): any case.
  std::string lower = n;
  for (char& c : lower) c = char(std::tolower(static_cast<unsigned char>(c)));
  return n.rfind("__", 0) == 0 || lower.rfind("jitattn", 0) == 0;
}
}  // namespace

Variant& Variant::mask_mod(std::string code) {
  mask_ = std::move(code);
  prepared_.reset();
  return *this;
}

Variant& Variant::score_mod(std::string code, std::string grad) {
  score_ = std::move(code);
  grad_ = std::move(grad);
  prepared_.reset();
  return *this;
}

Variant& Variant::additive_score(bool additive) {
  additive_ = additive;
  prepared_.reset();
  return *this;
}

Variant::Capture& Variant::slot(const std::string& name, bool& same_code, Capture::Kind kind, CaptureType type, int rank) {
  for (Capture& c : captures_)
    if (c.name == name) {
      same_code = c.kind == kind && (kind != Capture::Kind::tensor || (c.tensor.type == type && c.tensor.rank == rank));
      return c;
    }
  Capture c;
  c.name = name;
  captures_.push_back(c);
  same_code = false;
  return captures_.back();
}

Variant& Variant::capture(const std::string& name, const CaptureTensor& tensor) {
  bool same = false;
  Capture& c = slot(name, same, Capture::Kind::tensor, tensor.type, tensor.rank);
  c.kind = Capture::Kind::tensor;
  c.tensor = tensor;
  if (!same) prepared_.reset();
  return *this;
}

Variant& Variant::capture(const std::string& name, float value) {
  bool same = false;
  Capture& c = slot(name, same, Capture::Kind::f32, CaptureType::f32, 0);
  c.kind = Capture::Kind::f32;
  c.f = value;
  if (!same) prepared_.reset();
  return *this;
}

Variant& Variant::capture(const std::string& name, int32_t value) {
  bool same = false;
  Capture& c = slot(name, same, Capture::Kind::i32, CaptureType::i32, 0);
  c.kind = Capture::Kind::i32;
  c.i = value;
  if (!same) prepared_.reset();
  return *this;
}

std::shared_ptr<const Variant::Prepared> Variant::prepared() const {
  std::shared_ptr<const Prepared> p = std::atomic_load(&prepared_);
  if (p) return p;
  auto made = std::make_shared<Prepared>();
  std::vector<std::string>& r = made->reasons;
  if (mask_.empty() && score_.empty()) r.push_back("variant: neither mask_mod nor score_mod is set");
  if (!grad_.empty() && additive_) r.push_back("variant: score_grad is given and additive_score() is set; choose one");
  if ((!grad_.empty() || additive_) && score_.empty()) r.push_back("variant: a score gradient is given without score_mod");
  for (const auto& [name, text] : {std::pair<const char*, const std::string&>{"mask_mod", mask_}, {"score_mod", score_}, {"score_grad", grad_}})
    if (!text.empty())
      if (const std::string why = jit::snippet_problem(text); !why.empty())
        r.push_back(std::string("variant ") + name + ": " + why + " (a snippet is the body of one function)");
  static const std::regex ident("^[A-Za-z_][A-Za-z0-9_]*$");
  int tensors = 0, floats = 0, ints = 0;
  for (const Capture& c : captures_) {
    const std::string what = "variant capture '" + c.name + "'";
    if (!std::regex_match(c.name, ident)) r.push_back(what + ": a capture name must be a C identifier");
    else if (reserved(c.name))
      r.push_back(what + ": the name is taken (b, h, q_idx, kv_idx, score, jitattn's own and C++/CUDA keywords)");
    if (c.kind == Capture::Kind::tensor) {
      ++tensors;
      if (c.tensor.rank < 1 || c.tensor.rank > kMaxRank)
        r.push_back(what + ": rank=" + std::to_string(c.tensor.rank) + " is not in 1..4");
    } else {
      ++(c.kind == Capture::Kind::f32 ? floats : ints);
    }
  }
  if (tensors > kMaxTensors) r.push_back("variant: " + std::to_string(tensors) + " tensor captures; at most 8");
  if (floats > kMaxScalars) r.push_back("variant: " + std::to_string(floats) + " float captures; at most 8");
  if (ints > kMaxScalars) r.push_back("variant: " + std::to_string(ints) + " int captures; at most 8");
  if (r.empty() && !(mask_.empty() && score_.empty())) {
    jit::VariantCode code;
    code.mask_mod = mask_;
    code.score_mod = score_;
    code.score_grad = grad_;
    code.additive = additive_;
    for (const Capture& c : captures_) {
      jit::CaptureDecl d;
      d.name = c.name;
      if (c.kind == Capture::Kind::tensor) {
        d.kind = jit::CaptureKind::tensor;
        d.type = device_type(c.tensor.type);
        d.rank = c.tensor.rank;
      } else {
        d.kind = c.kind == Capture::Kind::f32 ? jit::CaptureKind::f32 : jit::CaptureKind::i32;
      }
      code.captures.push_back(d);
    }
    made->id = jit::register_variant(code);
  }
  // Two threads' first calls may both get here: the first to publish wins, both return it (the
  // caller's copy keeps it alive even if a setter resets prepared_ meanwhile).
  std::shared_ptr<const Prepared> done = made, expected;
  if (!std::atomic_compare_exchange_strong(&prepared_, &expected, done)) return expected;
  return done;
}

std::vector<std::string> Variant::reasons() const {
  std::vector<std::string> r = prepared()->reasons;
  for (const Capture& c : captures_) {
    if (c.kind != Capture::Kind::tensor) continue;
    const std::string what = "variant capture '" + c.name + "'";
    const CaptureTensor& t = c.tensor;
    if (!t.data) r.push_back(what + ": data is null");
    for (int d = 0; d < t.rank && d < kMaxRank; ++d) {
      if (t.shape[d] < 0 || t.shape[d] > INT32_MAX) r.push_back(what + ": shape[" + std::to_string(d) + "] is not in 0..2^31-1");
      if (t.stride[d] < 0) r.push_back(what + ": stride[" + std::to_string(d) + "] is negative");
    }
  }
  return r;
}

uint64_t Variant::code_id() const { return prepared()->id; }

}  // namespace jitattn
