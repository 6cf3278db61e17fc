#include "jit/signature.h"

#include <cstdio>
#include <cstring>
#include <sstream>
#include <vector>

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace jitattn::jit {

const char* to_string(Op op) {
  switch (op) {
    case Op::fwd: return "fwd";
    case Op::bwd_pre: return "bwd_pre";
    case Op::bwd: return "bwd";
    case Op::bwd_kv: return "bwd_kv";
    case Op::bwd_dq: return "bwd_dq";
    case Op::bwd_post: return "bwd_post";
    case Op::merge: return "merge";
    case Op::decode: return "decode";
    case Op::swiglu_fwd: return "swiglu_fwd";
    case Op::swiglu_bwd: return "swiglu_bwd";
    case Op::block_map: return "block_map";
  }
  return "?";
}

bool uses_bias(Op op) { return op == Op::fwd || op == Op::decode || op == Op::bwd || op == Op::bwd_kv || op == Op::bwd_dq; }

namespace {
enum class KeyLayout { dense, varlen, paged };
struct BiasKindRow {
  const char* name;
  KeyLayout layout;
  bool left, uneven, backward, tensor;
  const char* policy;
  const char* xformers;
};
#define JITATTN_BIAS_ROW(id, name, layout, left, uneven, backward, tensor, policy, xformers) \
  {name, KeyLayout::layout, left, uneven, backward, tensor, policy, xformers},
constexpr BiasKindRow kBiasKindRows[] = {JITATTN_BIAS_KINDS(JITATTN_BIAS_ROW)};
#undef JITATTN_BIAS_ROW
static_assert(sizeof(kBiasKindRows) / sizeof(kBiasKindRows[0]) == sizeof(kAllBiasKinds) / sizeof(kAllBiasKinds[0]));

const BiasKindRow* row_of(BiasKind kind) {
  const size_t i = size_t(kind);
  return i < sizeof(kBiasKindRows) / sizeof(kBiasKindRows[0]) ? &kBiasKindRows[i] : nullptr;
}
}  // namespace

const char* to_string(BiasKind kind) { return row_of(kind) ? row_of(kind)->name : "?"; }
bool is_block_diagonal(BiasKind kind) { return row_of(kind) && row_of(kind)->layout != KeyLayout::dense; }
bool is_paged(BiasKind kind) { return row_of(kind) && row_of(kind)->layout == KeyLayout::paged; }
bool has_left_window(BiasKind kind) { return row_of(kind) && row_of(kind)->left; }
bool has_uneven_blocks(BiasKind kind) { return row_of(kind) && row_of(kind)->uneven; }
bool has_backward(BiasKind kind) { return row_of(kind) && row_of(kind)->backward; }
bool has_tensor_bias(BiasKind kind) { return row_of(kind) && row_of(kind)->tensor; }
const char* policy_template(BiasKind kind) { return row_of(kind) ? row_of(kind)->policy : "?"; }
const char* xformers_biases(BiasKind kind) { return row_of(kind) ? row_of(kind)->xformers : "?"; }

const char* to_string(Family family) {
  switch (family) {
    case Family::mma: return "mma";
    case Family::simt: return "simt";
    case Family::wgmma: return "wgmma";
    case Family::mfma: return "mfma";
    case Family::tma: return "tma";
  }
  return "?";
}

const char* to_string(Backend backend) { return backend == Backend::hip ? "hip" : "cuda"; }

std::optional<Op> parse_op(const std::string& s) {
  for (Op op : kAllOps)
    if (s == to_string(op)) return op;
  return std::nullopt;
}

std::optional<BiasKind> parse_bias_kind(const std::string& s) {
  for (BiasKind k : kAllBiasKinds)
    if (s == to_string(k)) return k;
  return std::nullopt;
}

std::optional<DType> parse_dtype(const std::string& s) {
  for (DType d : {DType::f16, DType::bf16, DType::f32})
    if (s == jitattn::to_string(d)) return d;
  return std::nullopt;
}

std::string Arch::name() const {
  if (backend == Backend::hip) return gfx() ? gfx()->name : "gfx?";
  return "sm_" + std::to_string(sm) + (specific ? "a" : "");
}

const GfxTarget* Arch::gfx() const {
  constexpr size_t n = sizeof(kGfxTargets) / sizeof(kGfxTargets[0]);
  return backend == Backend::hip && sm >= 1 && sm <= n ? &kGfxTargets[sm - 1] : nullptr;
}

std::optional<Arch> Arch::gfx(const std::string& name) {
  const std::string base = name.substr(0, name.find(':'));  // "gfx90a:sramecc+:xnack-" from hipDeviceProp_t
  for (size_t i = 0; i < sizeof(kGfxTargets) / sizeof(kGfxTargets[0]); ++i)
    if (base == kGfxTargets[i].name) return Arch{uint8_t(i + 1), false, Backend::hip};
  return std::nullopt;
}

std::string Arch::rule() {
  std::string gfx;
  for (const auto& t : kGfxTargets) gfx += std::string(gfx.empty() ? "" : ", ") + t.name;
  return "sm_NN or sm_NNa with NN from 80 to 255 (NVIDIA), or one of " + gfx + " (AMD)";
}

std::optional<Arch> Arch::parse(const std::string& s) {
  if (s.rfind("gfx", 0) == 0) return s.find(':') == std::string::npos ? gfx(s) : std::nullopt;
  if (s.rfind("sm_", 0) != 0 || s.size() < 5) return std::nullopt;
  std::string digits = s.substr(3);
  Arch a;
  if (!digits.empty() && digits.back() == 'a') {
    a.specific = true;
    digits.pop_back();
  }
  if (digits.size() < 2 || digits.size() > 3 || digits.find_first_not_of("0123456789") != std::string::npos)
    return std::nullopt;
  const int sm = std::stoi(digits);
  if (sm < 80 || sm > 255) return std::nullopt;
  a.sm = static_cast<uint8_t>(sm);
  return a;
}

bool Signature::operator==(const Signature& o) const { return std::memcmp(this, &o, sizeof(*this)) == 0; }

uint64_t Signature::hash() const { return XXH3_64bits(this, sizeof(*this)); }

std::string TileConfig::name() const {
  return "m" + std::to_string(block_m) + "n" + std::to_string(block_n) + "w" + std::to_string(warps) +
         (stages ? "s" + std::to_string(stages) : "");
}

std::optional<TileConfig> TileConfig::parse(const std::string& s) {
  int m = 0, n = 0, w = 0, st = 0;
  char tail = 0;
  const int got = std::sscanf(s.c_str(), "m%dn%dw%ds%d%c", &m, &n, &w, &st, &tail);
  if (got != 3 && got != 4) return std::nullopt;
  if (m <= 0 || n <= 0 || w <= 0 || m > 256 || n > 256 || w > 16) return std::nullopt;
  if (got == 4 && (st < 2 || st > 16)) return std::nullopt;
  TileConfig t{uint16_t(m), uint16_t(n), uint16_t(w), uint16_t(st)};
  if (t.name() != s) return std::nullopt;  // "m16n64w4x", "s03": not canonical
  return t;
}

std::string KernelSpec::name() const {
  std::ostringstream os;
  os << to_string(sig.op) << '.' << sig.arch().name() << '.' << jitattn::to_string(sig.dtype);
  if (sig.out_dtype != sig.dtype) os << "_to_" << jitattn::to_string(sig.out_dtype);
  os << ".d" << sig.head_dim << ".v" << sig.head_dim_v << '.' << to_string(sig.bias);
  if (sig.variant) {
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(sig.variant));
    os << "+u" << hex;
  }
  os << (sig.lse ? ".lse" : ".nolse") << (sig.dbias ? "_dbias" : "") << (sig.dropout ? "_drop" : "")
     << (sig.odd_pages ? "_oddpages" : "")
     << ".a" << int(sig.align) << '.' << to_string(family) << '_' << tile.name();
  return os.str();
}

namespace {
std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> parts;
  std::string cur;
  for (char c : s) {
    if (c == sep) {
      parts.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  parts.push_back(cur);
  return parts;
}

std::optional<uint16_t> parse_prefixed(const std::string& s, char prefix) {
  if (s.size() < 2 || s[0] != prefix || s.find_first_not_of("0123456789", 1) != std::string::npos)
    return std::nullopt;
  const long v = std::stol(s.substr(1));
  if (v <= 0 || v > 4096) return std::nullopt;
  return uint16_t(v);
}
}  // namespace

std::optional<KernelSpec> KernelSpec::parse(const std::string& name) {
  const auto p = split(name, '.');
  if (p.size() != 9) return std::nullopt;
  KernelSpec spec;
  auto op = parse_op(p[0]);
  auto arch = Arch::parse(p[1]);
  if (!op || !arch) return std::nullopt;
  spec.sig.op = *op;
  spec.sig.set_arch(*arch);
  const auto dt = split(p[2], '_');
  if (dt.size() == 1) {
    auto d = parse_dtype(dt[0]);
    if (!d) return std::nullopt;
    spec.sig.dtype = spec.sig.out_dtype = *d;
  } else if (dt.size() == 3 && dt[1] == "to") {
    auto d = parse_dtype(dt[0]), o = parse_dtype(dt[2]);
    if (!d || !o) return std::nullopt;
    spec.sig.dtype = *d;
    spec.sig.out_dtype = *o;
  } else {
    return std::nullopt;
  }
  auto hd = parse_prefixed(p[3], 'd'), hv = parse_prefixed(p[4], 'v');
  const auto bias_variant = split(p[5], '+');  // kind, then optionally u<16 hex>
  auto bias = parse_bias_kind(bias_variant[0]);
  if (bias_variant.size() > 2) return std::nullopt;
  if (bias_variant.size() == 2) {
    const std::string& u = bias_variant[1];
    if (u.size() != 17 || u[0] != 'u' || u.find_first_not_of("0123456789abcdef", 1) != std::string::npos) return std::nullopt;
    spec.sig.variant = std::stoull(u.substr(1), nullptr, 16);
    if (spec.sig.variant == 0) return std::nullopt;
  }
  auto align = parse_prefixed(p[7], 'a');
  const auto flags = split(p[6], '_');  // lse|nolse, then optional dbias, drop, oddpages
  if (!hd || !hv || !bias || !align || (flags[0] != "lse" && flags[0] != "nolse")) return std::nullopt;
  spec.sig.head_dim = *hd;
  spec.sig.head_dim_v = *hv;
  spec.sig.bias = *bias;
  spec.sig.lse = flags[0] == "lse";
  for (size_t i = 1; i < flags.size(); ++i) {
    if (flags[i] == "dbias") spec.sig.dbias = 1;
    else if (flags[i] == "drop") spec.sig.dropout = 1;
    else if (flags[i] == "oddpages") spec.sig.odd_pages = 1;
    else return std::nullopt;
  }
  spec.sig.align = uint8_t(*align);
  const auto ft = split(p[8], '_');
  if (ft.size() != 2) return std::nullopt;
  if (ft[0] == "mma") spec.family = Family::mma;
  else if (ft[0] == "simt") spec.family = Family::simt;
  else if (ft[0] == "wgmma") spec.family = Family::wgmma;
  else if (ft[0] == "mfma") spec.family = Family::mfma;
  else if (ft[0] == "tma") spec.family = Family::tma;
  else return std::nullopt;
  auto tile = TileConfig::parse(ft[1]);
  if (!tile) return std::nullopt;
  spec.tile = *tile;
  if (spec.name() != name) return std::nullopt;  // e.g. "a016" or "d08": not canonical
  return spec;
}

}  // namespace jitattn::jit
